"""A real `cnnkit serve` process for tests: started on a free port, its stderr collected, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cnnkit


def trained_bundle(folder: Path, synthetic_dir: Path, name: str = "tiny", seed: int = 0) -> Path:
    """TINY_SPEC trained two epochs on the synthetic data (Fashion-MNIST's class names), saved as a bundle."""
    from conftest import TINY_SPEC

    spec = dict(TINY_SPEC, name=name, data={"dataset": "fashion-mnist", "dir": str(synthetic_dir)})
    spec["train"] = dict(spec["train"], epochs=2, seed=seed)
    return cnnkit.train(spec).save(folder / f"{name}.cnnkit")


class ServerProcess:
    """``cnnkit serve ARGS --port 0`` in a child process; ``url`` once it says where it listens.

    ``without`` names modules the child cannot import, as if they were not installed (``httptools``).
    """

    def __init__(self, *args: str, without: tuple[str, ...] = ()):
        env = {**os.environ, "CNNKIT_OFFLINE": "1"}
        hidden = "".join(f"sys.modules[{name!r}] = None; " for name in without)  # import then raises ImportError
        launch = ["-m", "cnnkit"] if not without else ["-c", f"import sys; {hidden}from cnnkit.cli import main; main()"]
        self.process = subprocess.Popen([sys.executable, *launch, "serve", *map(str, args), "--port", "0"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        first = self.process.stderr.readline()
        self.lines.append(first.rstrip("\n"))
        if "cnnkit serve: http://" not in first:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {first}{self.process.stderr.read()}")
        self.address = first.split("http://", 1)[1].split("/", 1)[0]  # 127.0.0.1:PORT
        self.url = f"http://{self.address}"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        """SIGTERM, then the exit code (the process is killed if it has not stopped within 20 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(5)
        return code

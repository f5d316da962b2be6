"""Issue 24, finding 5: a plugin's import cannot corrupt `--json` output or end the command.

Writes below ``sys.stdout`` (``os.write(1, ...)``, C's buffered ``printf``) made `cnnkit layers --json`
invalid; ``os._exit(0)`` at import ended it with exit 0 and no JSON. Each plugin here is a fake
installed distribution, run through the real command in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fakeplugins import CNNKIT, SCALE_MODULE, subprocess_env, write_dist

WRITES_BELOW_STDOUT = SCALE_MODULE + '''
import ctypes, os
os.write(1, b"raw bytes on descriptor 1\\n")
print("a print at import")
sys_stdout = __import__("sys").__stdout__
sys_stdout.write("written to sys.__stdout__\\n")
try:
    ctypes.CDLL(None).printf(b"C printf, buffered\\n")
except (OSError, AttributeError):
    pass
'''

EXITS = '''
import os
os._exit({code})
'''


def cnnkit(*args, site):
    return subprocess.run([*CNNKIT, *args], env=subprocess_env(site), capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(sys.platform == "win32", reason="descriptor and C stdio behaviour checked on POSIX")
def test_writes_below_sys_stdout_at_import_go_to_stderr(tmp_path):
    site = tmp_path / "site"
    write_dist(site, "fake-noisy", "0.1", {"noisy": "fake_noisy_mod:Scale"}, {"fake_noisy_mod": WRITES_BELOW_STDOUT})
    result = cnnkit("layers", "--json", site=site)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)  # valid JSON: nothing the plugin wrote is in it
    assert any(row["type"] == "noisy" and "error" not in row for row in rows)
    for text in ("raw bytes on descriptor 1", "a print at import", "written to sys.__stdout__", "C printf, buffered"):
        assert text in result.stderr, text


@pytest.mark.parametrize("code", [0, 3])
def test_os_exit_at_import_is_a_failed_import_and_the_json_is_printed(tmp_path, code):
    site = tmp_path / "site"
    write_dist(site, "fake-quitter", "0.1", {"quitter": "fake_quitter_mod:Scale"}, {"fake_quitter_mod": EXITS.format(code=code)},
               datasets={"quitting-source": "fake_quitter_mod:Source"})
    result = cnnkit("layers", "--json", site=site)
    assert result.returncode == 0, result.stderr
    row = next(row for row in json.loads(result.stdout) if row["type"] == "quitter")
    assert row["error"] == (f"entry point 'quitter = fake_quitter_mod:Scale' from fake-quitter 0.1 failed to import: ExitDuringImport: "
                            f"it called os._exit({code}) while being imported (cnnkit stopped the exit)")
    assert any(r["type"] == "dense" for r in json.loads(result.stdout))  # the others are listed as before
    datasets = cnnkit("datasets", "--json", site=site)
    assert datasets.returncode == 0, datasets.stderr
    source = next(row for row in json.loads(datasets.stdout) if row["dataset"] == "quitting-source")
    assert "ExitDuringImport: it called os._exit" in source["error"]


def test_a_spec_naming_an_exiting_plugin_fails_with_one_line(tmp_path, spec_file):
    site = tmp_path / "site"
    write_dist(site, "fake-quitter", "0.1", {"quitter": "fake_quitter_mod:Scale"}, {"fake_quitter_mod": EXITS.format(code=0)})
    spec = json.loads(spec_file.read_text())
    spec["layers"].insert(1, {"type": "quitter"})
    spec_file.write_text(json.dumps(spec))
    result = cnnkit("validate", str(spec_file), site=site)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "ExitDuringImport: it called os._exit(0)" in result.stderr and len(result.stderr.splitlines()) == 1


def test_os_exit_is_itself_again_after_the_import(tmp_path):
    # In a child process: on code without the trap, the plugin would end the test run itself.
    site = tmp_path / "site"
    write_dist(site, "fake-quitter", "0.1", {"quitter": "fake_quitter_mod:Scale"}, {"fake_quitter_mod": EXITS.format(code=0)})
    probe = (
        "import os, posix\n"
        "from cnnkit.plugins import registry\n"
        "real = os._exit\n"
        "try:\n"
        "    registry.load('quitter')\n"
        "except registry.RegistryError as exc:\n"
        "    print('refused:', 'ExitDuringImport' in str(exc))\n"
        "print('restored:', os._exit is real and posix._exit is real)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(site), capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "refused: True\nrestored: True\n"), result.stderr

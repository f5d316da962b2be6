"""Issue 3's end-to-end check, for real: a fresh virtual environment, pip install cnnkit and the example
plugin, train a spec that uses its layers, pip uninstall the plugin, and the bundle then names the
distribution to install. Runs tools/plugin_provenance.sh (about 15 s with pip's cache warm)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fresh_venv_install_train_uninstall_names_the_missing_distribution(tmp_path):
    assert shutil.which("bash"), "bash is needed to run tools/plugin_provenance.sh"
    run = subprocess.run(["bash", str(ROOT / "tools" / "plugin_provenance.sh"), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "leaky_relu: cnnkit-extra 0.3.0" in run.stdout
    expected = f"error: {tmp_path}/extra.cnnkit: layer type 'leaky_relu' comes from cnnkit-extra 0.3.0, which is not installed: pip install cnnkit-extra"
    assert expected in run.stdout
    assert "Traceback" not in run.stdout + run.stderr

"""Output files are never clobbered, never torn and never unreadable (issue 10: "Files clobbered or unreadable").

Device nodes are only ever created inside a private mount namespace (`unshare -m` with a tmpfs), so
no test goes near the machine's real /dev. Everything that can be checked before training is: the
tests look for the "training ..." line to tell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cnnkit
from cnnkit import bundle
from cnnkit.cli import app
from conftest import TINY_SPEC, one_line_error

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])




@pytest.fixture
def work(tmp_path, synthetic_dir):
    spec = dict(TINY_SPEC, data={"dataset": "fashion-mnist", "dir": str(synthetic_dir)}, train=dict(TINY_SPEC["train"], epochs=1))
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    (tmp_path / "out").mkdir()
    return tmp_path


def run(work, out, *extra):
    return cli("run", work / "tiny.json", "--out", out, *extra)


def trained(result) -> bool:
    return "training tiny" in result.stdout


# -- what may be replaced --------------------------------------------------------------------------


def test_fifo_as_output_is_refused_before_training(work):
    fifo = work / "out" / "pipe"
    os.mkfifo(fifo)
    one_line_error(run(work, fifo), "FIFO", "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_recognising_our_files_never_blocks_on_a_fifo(tmp_path):
    """is_bundle_file and is_cnnkit_onnx_file (public, and the `recognise` of check_target) look at
    a file's first bytes; on a FIFO a plain open() waits for a writer forever. In a subprocess, so
    a regression fails on the timeout instead of hanging the suite."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code = "import sys; from cnnkit.bundle import is_bundle_file; from cnnkit.export import is_cnnkit_onnx_file; print(is_bundle_file(sys.argv[1]), is_cnnkit_onnx_file(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.split() == ["False", "False"], done.stderr


def test_existing_file_that_is_not_a_bundle_needs_force(work):
    for name, content in (("spec.json", (work / "tiny.json").read_bytes()), ("photo.png", b"\x89PNG\r\n\x1a\n....")):
        target = work / "out" / name
        target.write_bytes(content)
        result = run(work, target)
        one_line_error(result, "refusing to overwrite", "not a cnnkit bundle", "--force")
        assert not trained(result) and target.read_bytes() == content
        forced = run(work, target, "--force", "--quiet")
        assert forced.exit_code == 0, forced.output
        assert bundle.read(target).spec["name"] == "tiny"


def test_existing_bundle_is_replaced_without_force(work):
    target = work / "out" / "m.cnnkit"
    assert run(work, target, "--quiet").exit_code == 0
    first = target.read_bytes()
    assert run(work, target, "--quiet", "--set", "train.seed=3").exit_code == 0
    assert target.read_bytes() != first and bundle.is_bundle_file(target)


def test_symlink_is_followed_and_stays_a_link(work):
    real = work / "out" / "real.cnnkit"
    assert run(work, real, "--quiet").exit_code == 0
    link = work / "out" / "latest.cnnkit"
    link.symlink_to(real.name)
    result = run(work, link, "--quiet", "--set", "train.seed=5")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == "real.cnnkit"
    assert bundle.read(real).spec["train"]["seed"] == 5
    # A link to something that is not a bundle is judged by what it points to.
    (work / "notes.txt").write_text("keep me")
    (work / "out" / "notes.cnnkit").symlink_to(work / "notes.txt")
    one_line_error(run(work, work / "out" / "notes.cnnkit"), "not a cnnkit bundle", "a symlink to")
    assert (work / "notes.txt").read_text() == "keep me"


def test_read_only_bundle_is_kept_unless_forced(work):
    target = work / "out" / "m.cnnkit"
    assert run(work, target, "--quiet").exit_code == 0
    target.chmod(0o444)
    before = target.read_bytes()
    result = run(work, target, "--set", "train.seed=9")
    one_line_error(result, "read-only", "--force")
    assert not trained(result) and target.read_bytes() == before
    assert run(work, target, "--quiet", "--force", "--set", "train.seed=9").exit_code == 0
    assert target.read_bytes() != before


def test_trailing_slash_names_a_folder(work):
    result = run(work, f"{work / 'nodir'}/")
    one_line_error(result, "names a folder")
    assert not trained(result) and not (work / "nodir").exists()


def test_schema_out_follows_the_same_rules(work):
    target = work / "out" / "keep.txt"
    target.write_text("not a schema")
    one_line_error(cli("schema", "--out", target), "refusing to overwrite", "--force")
    assert target.read_text() == "not a schema"
    schema = work / "out" / "spec.schema.json"
    assert cli("schema", "--out", schema).exit_code == 0
    assert cli("schema", "--out", schema).exit_code == 0  # its own earlier output is replaced freely
    assert cli("schema", "--out", target, "--force").exit_code == 0 and json.loads(target.read_text())["$schema"]


# -- checked before training -----------------------------------------------------------------------


def test_file_name_too_long_is_refused_before_training_and_a_long_legal_one_works(work):
    long_ok = work / "out" / ("n" * 240 + ".cnnkit")  # legal, though its temp name would not be
    result = run(work, long_ok, "--quiet")
    assert result.exit_code == 0, result.output
    assert bundle.read(long_ok).spec["name"] == "tiny"
    result = run(work, work / "out" / ("n" * 300 + ".cnnkit"))
    one_line_error(result, "file name is 307 bytes")
    assert not trained(result)


def test_too_little_free_space_is_found_before_training(work, monkeypatch):
    monkeypatch.setattr("cnnkit.bundle.atomic._free_bytes", lambda folder: 1000)
    result = run(work, work / "out" / "m.cnnkit")
    one_line_error(result, "free in")
    assert not trained(result)


def test_unwritable_folder_is_found_before_training(work, monkeypatch):
    real_open = os.open

    def no_create(path, flags, *args, **kwargs):  # what a read-only mount answers
        if flags & os.O_CREAT and str(path).startswith(str(work / "out")):
            raise OSError(30, "Read-only file system")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_create)
    result = run(work, work / "out" / "m.cnnkit")
    one_line_error(result, "cannot create a file in", "Read-only file system")
    assert not trained(result)


def test_batch_that_cannot_fit_in_memory_is_refused_before_training(work, monkeypatch):
    monkeypatch.setattr("cnnkit.runtime.memory.available_memory", lambda: 200_000)
    result = run(work, work / "out" / "m.cnnkit")
    one_line_error(result, "a training batch of 16 needs about", "lower train.batch_size")
    assert not trained(result)


def test_memory_check_counts_no_more_images_than_train_limit(work, monkeypatch):
    """A batch_size above data.train_limit trains batches of train_limit images: no refusal for images that do not exist."""
    monkeypatch.setattr("cnnkit.runtime.memory.available_memory", lambda: 50_000_000)  # far below 100000 images, far above 64
    result = run(work, work / "out" / "m.cnnkit", "--set", "train.batch_size=100000", "--set", "data.train_limit=64", "-q")
    assert result.exit_code == 0, result.output
    result = run(work, work / "out" / "m.cnnkit", "--set", "train.batch_size=100000", "-q")
    one_line_error(result, "a training batch of 100000 needs about")


# -- what is written can be read back --------------------------------------------------------------


@pytest.mark.parametrize("weight, message", [
    (np.zeros(3, np.float32), r"weight '0\.kernel' has shape \[3\], the spec needs \[4, 1, 3, 3\]"),
    (np.zeros((4, 1, 3, 3), np.int32), r"weight '0\.kernel' has dtype int32; cnnkit layers run on floating-point weights"),
])
def test_save_refuses_a_bundle_that_load_would_refuse_and_keeps_the_old_one(tmp_path, tiny_spec, weight, message):
    """save decodes its own bytes and holds them against the model's spec before they replace anything."""
    model = cnnkit.build(tiny_spec)
    good = model.save(tmp_path / "m.cnnkit")
    before = good.read_bytes()
    model.weights["0.kernel"] = weight  # surgery the spec does not allow
    with pytest.raises(cnnkit.BundleError, match=f"^refusing to save {re.escape(str(good))}: {message}$"):
        model.save(good)
    with pytest.raises(cnnkit.BundleError, match=message):  # what load would have said
        cnnkit.load(bundle.write_atomic(tmp_path / "forced.cnnkit", bundle.encode(model)))
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forced.cnnkit", "m.cnnkit"]


# -- temp files ------------------------------------------------------------------------------------


_SLOW_WRITER = """
import os, sys, time
real_fdopen = os.fdopen
class Slow:
    def __init__(self, fh): self.fh = fh
    def __enter__(self): return self
    def __exit__(self, *exc): self.fh.close()
    def flush(self): self.fh.flush()
    def fileno(self): return self.fh.fileno()
    def write(self, data):
        self.fh.write(data[: len(data) // 2]); self.fh.flush()
        print("halfway", flush=True); time.sleep(120)
os.fdopen = lambda fd, mode="r", *a, **k: Slow(real_fdopen(fd, mode)) if "w" in mode else real_fdopen(fd, mode, *a, **k)
"""


def _halfway(args, **kwargs):
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER + textwrap.dedent(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    line = proc.stdout.readline().strip()
    if line != "halfway":
        proc.kill()
        pytest.fail(f"the writer did not get halfway: {line!r} {proc.communicate()[1]}")
    return proc


def test_temp_files_of_killed_writers_are_swept_by_a_save_to_another_name(tmp_path, tiny_spec):
    writer = _halfway(f"from cnnkit import bundle; bundle.write_atomic({str(tmp_path / 'a.cnnkit')!r}, os.urandom(1 << 20))")
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert len(list(tmp_path.iterdir())) == 1  # the dead writer's temp file
    cnnkit.build(tiny_spec).save(tmp_path / "b.cnnkit")
    assert [p.name for p in tmp_path.iterdir()] == ["b.cnnkit"]


def test_sigterm_removes_the_temp_file_and_says_so(work):
    args = ["run", str(work / "tiny.json"), "--out", str(work / "out" / "m.cnnkit"), "--quiet"]
    writer = _halfway(f"from cnnkit.cli import app; app({args!r})")
    os.kill(writer.pid, signal.SIGTERM)
    _, err = writer.communicate()
    assert writer.returncode == 143, err
    assert err.strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert list((work / "out").iterdir()) == []


def test_ctrl_c_right_after_the_rename_says_the_bundle_was_written(work, monkeypatch):
    real_replace = os.replace
    target = work / "out" / "m.cnnkit"

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        if Path(dst) == target:  # not the run folder's files, written before
            raise KeyboardInterrupt  # the Ctrl-C lands just after the bundle's rename returned

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    result = run(work, target, "--quiet")
    line = one_line_error(result, "written completely", str(target), code=130)
    assert not line.endswith("interrupted")
    assert cnnkit.load(target).spec.name == "tiny"


def test_ctrl_c_while_starting_up_is_one_line(tmp_path):
    # Ctrl-C during the first imports (the first ~0.15 s of `cnnkit ...`): the console script's target
    # must turn it into one line. An import hook raises KeyboardInterrupt when pydantic is imported.
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "cnnkit"]
    code = textwrap.dedent(f"""
        import sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "pydantic":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        from importlib.metadata import EntryPoint
        sys.argv = ["cnnkit", "--help"]
        sys.exit(EntryPoint(name="cnnkit", group="console_scripts", value={script.value!r}).load()())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: interrupted"]


# -- device nodes, only inside a private mount namespace -------------------------------------------


def _in_private_mount(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a fresh tmpfs at $D holding a null (1,3) and a zero (1,5) device node."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    mount = tmp_path / "private"
    mount.mkdir()
    setup = f'set -e; D={mount}; mount -t tmpfs -o size=16m cnnkit-test "$D"; mknod "$D/null" c 1 3; mknod "$D/zero" c 1 5; set +e; '
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", setup + script], capture_output=True, text=True,
                          env={**os.environ, "PY": sys.executable})
    if "mount" in proc.stderr and ("Operation not permitted" in proc.stderr or "permission denied" in proc.stderr.lower()):
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert not any(mount.iterdir()), "the tmpfs leaked out of the private namespace"
    return proc


def test_device_nodes_are_never_replaced(tmp_path, work):
    script = f"""
        for target in "$D/null" "$D/zero"; do
            $PY -m cnnkit.cli run {work / 'tiny.json'} --out "$target" --quiet --force 2>>"$D/err"; echo "rc=$?"
            [ -c "$target" ] && echo "still a device"
        done
        $PY -m cnnkit.cli schema --out "$D/null" 2>>"$D/err"; echo "rc=$?"
        [ -c "$D/null" ] && echo "still a device"
        cat "$D/err"
    """
    proc = _in_private_mount(tmp_path, script)
    out = proc.stdout.splitlines()
    assert out[:6] == ["rc=1", "still a device"] * 3, proc.stdout + proc.stderr
    errors = out[6:]
    assert len(errors) == 3 and all(e.startswith("error: ") and "character device, not a regular file" in e for e in errors), errors


def test_device_nodes_as_inputs_are_named_and_not_read(tmp_path, work):
    script = """
        ulimit -v 4000000
        $PY -m cnnkit.cli validate "$D/zero"; echo "rc=$?"
        $PY -m cnnkit.cli inspect "$D/zero"; echo "rc=$?"
    """
    proc = _in_private_mount(tmp_path, script)
    assert proc.stdout.split() == ["rc=1", "rc=1"], proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert errors == [f"error: {tmp_path}/private/zero is a character device, not a spec file",
                      f"error: {tmp_path}/private/zero is a character device, not a bundle"], errors


def test_a_link_to_stdout_is_not_replaced(work):
    # What `--out /dev/stdout` is, without touching /dev: a link to the process's own fd 1, here a pipe.
    link = work / "out" / "stdout"
    link.symlink_to("/proc/self/fd/1")
    for args in (["run", str(work / "tiny.json"), "--out", str(link), "--quiet"], ["schema", "--out", str(link)]):
        proc = subprocess.run([sys.executable, "-m", "cnnkit.cli", *args], capture_output=True)
        assert proc.returncode == 1 and proc.stdout == b"", proc.stderr
        assert proc.stderr.decode().startswith(f"error: cannot write {link} (a symlink to /proc/"), proc.stderr
        assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


def test_library_refusal_names_the_python_keyword(tmp_path, tiny_spec):
    """cnnkit.save over a non-bundle told a Python caller only about the CLI's --force."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(cnnkit.BundleError, match=r"--force replaces it; in Python: force=True"):
        cnnkit.build(tiny_spec).save(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"

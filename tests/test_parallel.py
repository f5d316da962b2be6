"""Batches split over threads: same numbers as one thread, split only when allowed, and the pieces
underneath (CNNKIT_NUM_THREADS, OpenBLAS held to one thread, run_all) doing what they promise."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import cnnkit
from cnnkit.runtime import parallel
from cnnkit.cli import app
from cnnkit.errors import CnnkitError
from cnnkit.layers import Context, conv_blocks
from cnnkit.runtime.model import MIN_PART

from fakeplugins import write_dist

# The seed net's shape of layers, shrunk to 1x12x12 so a batch of a few dozen runs in milliseconds.
SPEC = {
    "name": "split",
    "input": {"shape": [1, 12, 12]},
    "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same"},
        {"type": "relu"},
        {"type": "conv2d", "filters": 4, "kernel_size": 3},
        {"type": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
        {"type": "softmax"},
    ],
}


def forward_and_grads(model, x, dy, train, threads, monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
    # Training works from logits, as cnnkit.train does; inference ends with the softmax.
    y, backprop = model.forward(x, train=train, logits=train)
    if not train:  # inference keeps no layer inputs, so it has no backprop
        with pytest.raises(CnnkitError, match="needs a forward pass with train=True"):
            backprop(dy)
        return y, None
    return y, backprop(dy)


def batch(n: int, model, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *model.input_shape)).astype(np.float32), rng.normal(size=(n, 10)).astype(np.float32)


# -- the model, split -------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("n, parts", [(2 * MIN_PART, 2), (2 * MIN_PART + 1, 2), (4 * MIN_PART + 1, 3)])
def test_a_split_batch_gives_the_numbers_of_one_thread(monkeypatch, run_all_calls, train, n, parts):
    model = cnnkit.build(SPEC)
    x, dy = batch(n, model)
    y1, grads1 = forward_and_grads(model, x, dy, train, 1, monkeypatch)
    assert run_all_calls == []
    y, grads = forward_and_grads(model, x, dy, train, 3, monkeypatch)
    assert run_all_calls == ([parts, parts] if train else [parts])  # forward and backprop, each one task per part
    assert y.shape == y1.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, y1, rtol=1e-5, atol=1e-7)
    if not train:
        return
    assert set(grads) == set(grads1) == set(model.weights)
    for name, g in grads.items():
        # The parts' gradients are summed in another order than one thread's: float32 rounding only.
        np.testing.assert_allclose(g, grads1[name], rtol=1e-5, atol=1e-6 * np.abs(grads1[name]).max(), err_msg=name)


def test_a_batch_below_two_parts_runs_whole_in_the_calling_thread(monkeypatch, run_all_calls):
    model = cnnkit.build(SPEC)
    x, dy = batch(2 * MIN_PART - 1, model)
    y1, grads1 = forward_and_grads(model, x, dy, True, 1, monkeypatch)
    y, grads = forward_and_grads(model, x, dy, True, 4, monkeypatch)
    assert run_all_calls == []
    np.testing.assert_array_equal(y, y1)  # the very same computation, so bit for bit
    for name, g in grads.items():
        np.testing.assert_array_equal(g, grads1[name])


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("extra", [1, -1], ids=["one-row-too-many", "one-row-too-few"])
def test_backprop_rejects_a_dy_that_does_not_match_the_output(monkeypatch, threads, extra):
    # Split, each part reads its own rows of dy: a row too many would be silently ignored.
    model = cnnkit.build(SPEC)
    x, _ = batch(2 * MIN_PART, model)
    _, dy = batch(2 * MIN_PART + extra, model)
    monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
    _, backprop = model.forward(x, train=True, logits=True)
    with pytest.raises(CnnkitError, match=rf"Received: \[{2 * MIN_PART + extra}, 10\]$"):
        backprop(dy)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_parts_are_contiguous_near_equal_and_never_below_min_part(monkeypatch, threads):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
    model = cnnkit.build(SPEC)
    for n in range(6 * MIN_PART):
        parts = model._parts(n, False)
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(hi == lo for (_, hi), (lo, _) in zip(parts, parts[1:]))
        assert len(parts) == max(1, min(threads, n // MIN_PART))
        sizes = [hi - lo for lo, hi in parts]
        assert max(sizes) - min(sizes) <= 1
        assert len(parts) == 1 or min(sizes) >= MIN_PART


# A batch norm written before the contract had ``updates``: it writes its running statistics in
# place and declares neither per_sample_in_training nor per_part_in_training.
IN_PLACE_BATCHNORM = '''
"""Batch norm updating its statistics in place (an older plugin)."""
from cnnkit.layers.batchnorm import BatchNorm2D


class InPlaceBatchNorm(BatchNorm2D):
    per_part_in_training = False

    def forward(self, weights, x, train):
        return super().forward(weights, x, train)
'''


def test_a_layer_neither_per_sample_nor_per_part_stops_the_training_split_only(monkeypatch, run_all_calls, tmp_path):
    write_dist(tmp_path, "fake-inplace-bn", "0.1", {"inplace_bn": "fake_inplace_bn:InPlaceBatchNorm"}, {"fake_inplace_bn": IN_PLACE_BATCHNORM})
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = dict(SPEC, layers=[*SPEC["layers"][:1], {"type": "inplace_bn"}, *SPEC["layers"][1:]])
    model = cnnkit.build(spec)
    assert model.layers[1].layer.batch_coupling == "whole"
    monkeypatch.setattr(conv_blocks, "SPLIT_MIN_MACS", 10**18)  # count the model's splits only, not the convolution's own
    x, dy = batch(4 * MIN_PART, model)
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    model.forward(x, train=False)
    assert run_all_calls == [2]
    running_mean = model.weights["1.running_mean"].copy()
    y, backprop = model.forward(x, train=True, logits=True)
    backprop(dy)
    assert run_all_calls == [2]  # training ran whole: it writes shared weights in place
    # ... and its running statistics took one step towards this batch's conv outputs, not two or none.
    conv_out, _ = model.layers[0].layer.forward({"kernel": model.weights["0.kernel"], "bias": model.weights["0.bias"]}, x, Context(False))
    np.testing.assert_allclose(model.weights["1.running_mean"], 0.9 * running_mean + 0.1 * conv_out.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)


# -- CNNKIT_NUM_THREADS -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "2 threads"])
def test_a_bad_thread_count_is_a_one_line_error(monkeypatch, value):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", value)
    with pytest.raises(CnnkitError) as error:
        parallel.num_threads()
    assert str(error.value) == f"CNNKIT_NUM_THREADS must be a positive integer. Received: {value!r}"


def test_thread_count_from_the_environment_or_the_cores(monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", " 3 ")
    assert parallel.num_threads() == 3
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "")
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parallel.num_threads() == (expected if parallel._openblas() is not None else 1)


def test_a_bad_thread_count_through_the_cli_exits_1_with_one_line(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    bundle = cnnkit.build(SPEC).save(tmp_path / "split.cnnkit")
    np.save(tmp_path / "images.npy", np.zeros((3, 12, 12), np.uint8))
    args = ["predict", str(bundle), str(tmp_path / "images.npy")]
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    assert CliRunner().invoke(app, args).exit_code == 0  # the same command works with a good value
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "abc")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr == "error: CNNKIT_NUM_THREADS must be a positive integer. Received: 'abc'\n"
    assert "Traceback" not in result.output


# -- OpenBLAS held to one thread --------------------------------------------------------------------


@pytest.fixture
def blas():
    """numpy's OpenBLAS set to 2 threads (restored afterwards), so holding it to 1 is visible."""
    blas = parallel._openblas()
    if blas is None:
        if os.environ.get("CI"):
            pytest.fail("cnnkit cannot find numpy's OpenBLAS, but CI runs numpy's wheel, which bundles one")
        pytest.skip("numpy's BLAS is not an OpenBLAS cnnkit can find, so cnnkit leaves its threads alone")
    before = blas.get()
    blas.set(2)
    if blas.get() != 2:
        blas.set(before)
        pytest.skip("OpenBLAS cannot use 2 threads on this machine, so 1 thread would not be visible")
    yield blas
    blas.set(before)


def test_blas_is_single_threaded_inside_and_restored_after(blas):
    with parallel.single_threaded_blas():
        assert blas.get() == 1
        with parallel.single_threaded_blas():
            assert blas.get() == 1
        assert blas.get() == 1  # the outer block is still running
    assert blas.get() == 2
    with pytest.raises(ZeroDivisionError), parallel.single_threaded_blas():
        1 / 0
    assert blas.get() == 2


def test_blas_is_restored_by_the_last_of_two_threads_to_leave(blas):
    first_inside, second_inside, first_left = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with parallel.single_threaded_blas():
            first_inside.set()
            second_inside.wait(5)
        first_left.set()

    def second():
        first_inside.wait(5)
        with parallel.single_threaded_blas():
            second_inside.set()
            first_left.wait(5)
            seen["after the first left"] = blas.get()
        seen["after both left"] = blas.get()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"after the first left": 1, "after both left": 2}


# -- run_all ----------------------------------------------------------------------------------------


def test_run_all_returns_results_in_order_first_task_in_the_caller():
    caller = threading.get_ident()
    results = parallel.run_all([lambda i=i: (i * i, threading.get_ident()) for i in range(5)])
    assert [r for r, _ in results] == [0, 1, 4, 9, 16]
    assert results[0][1] == caller and all(ident != caller for _, ident in results[1:])


@pytest.mark.parametrize("failing", [0, 1], ids=["in the caller", "in a worker"])
def test_run_all_raises_only_after_every_task_finished(failing):
    finished: list[int] = []
    started = threading.Event()

    def task(i):
        if i == 3:  # a slow task, still running when the failing one raises
            started.set()
            time.sleep(0.1)
        else:
            started.wait(5)
        if i == failing:
            raise ValueError(f"task {i} failed")
        finished.append(i)

    with pytest.raises(ValueError, match=f"task {failing} failed"):
        parallel.run_all([lambda i=i: task(i) for i in range(4)])
    assert sorted(finished) == sorted({0, 1, 2, 3} - {failing})


def test_run_all_inside_a_task_runs_serially_without_deadlock():
    results = []

    def outer(i):
        inner = parallel.run_all([lambda j=j: (i, j, threading.get_ident()) for j in range(3)])
        assert {ident for _, _, ident in inner} == {threading.get_ident()}  # all in this task's thread
        return [(a, b) for a, b, _ in inner]

    # More outer tasks than workers: nested calls that waited for a free worker would never get one.
    caller = threading.Thread(target=lambda: results.extend(parallel.run_all([lambda i=i: outer(i) for i in range(4)])), daemon=True)
    caller.start()
    caller.join(10)
    assert not caller.is_alive(), "nested run_all deadlocked"
    assert results == [[(i, j) for j in range(3)] for i in range(4)]


def test_the_callers_numpy_error_state_holds_in_worker_tasks():
    big = np.full(4, 3e38, np.float32)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        parallel.run_all([lambda: None, lambda: big * np.float32(10)])
    with np.errstate(over="ignore"):
        _, product = parallel.run_all([lambda: None, lambda: big * np.float32(10)])
    assert np.isinf(product).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python 3.12+ warns on fork with threads: that is the case tested
def test_a_forked_child_can_still_run_tasks():
    # Start every worker of a pool of 7 (all 8 tasks meet at the barrier) and leave them idle: the
    # child inherits that pool, but none of its threads, and must not hand its tasks to them.
    together = threading.Barrier(8, timeout=5)
    parallel.run_all([together.wait] * 8)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only, never return into pytest
        code = 2  # run_all raised
        try:
            code = 0 if parallel.run_all([lambda i=i: i for i in range(8)]) == list(range(8)) else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("run_all hung in a forked child")
    assert os.waitstatus_to_exitcode(done[1]) == 0

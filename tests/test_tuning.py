"""Machine tuning (block sizes from the OS-reported caches) and the in-layer thread split change speed, never results."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import CnnkitError
from cnnkit.runtime import parallel, tuning
from cnnkit.layers import conv_blocks, conv_gemm

# Every stride-1 strategy (conv 1: full im2col, side by side or image by image; conv 2: shared
# rows; conv 3: side by side, with an input gradient), odd sizes, and a batch below the model's own
# split (2 * MIN_PART), so only the convolutions split over threads.
SPEC = {
    "name": "tuned",
    "input": {"shape": [1, 13, 11]},
    "layers": [
        {"type": "conv2d", "filters": 5, "kernel_size": 3, "padding": "same"},
        {"type": "relu"},
        {"type": "conv2d", "filters": 4, "kernel_size": 5, "padding": 1},
        {"type": "relu"},
        {"type": "conv2d", "filters": 6, "kernel_size": 3, "padding": "same", "use_bias": False},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
        {"type": "softmax"},
    ],
    "train": {"epochs": 2, "batch_size": 13, "optimizer": {"type": "adam", "lr": 0.01}, "seed": 3},
}


REAL_SPARE_CORES = parallel.spare_cores


@pytest.fixture(autouse=True)
def _idle_machine(monkeypatch):
    """The convolutions split only when the machine has cores to spare; tests must not depend on the load."""
    monkeypatch.setattr(parallel, "spare_cores", lambda: True)


def train_steps(monkeypatch, threads: int, block_bytes: int | None, split_min_macs: int) -> dict[str, np.ndarray]:
    """Weights after a few Adam steps on fixed random batches of 13, under the given settings."""
    from cnnkit.runtime.losses import softmax_cross_entropy
    from cnnkit.optim import OPTIMIZERS

    monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
    monkeypatch.setattr(conv_blocks, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(conv_blocks, "SPLIT_MIN_MACS", split_min_macs)
    model = cnnkit.build(SPEC)
    adam = OPTIMIZERS["adam"]
    optimizer = adam(adam.Params(type="adam", lr=0.01), model.weights)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = rng.normal(size=(13, 1, 13, 11)).astype(np.float32)
        labels = rng.integers(0, 10, 13)
        logits, backprop = model.forward(x, train=True, logits=True)
        _, dlogits = softmax_cross_entropy(logits, labels)
        optimizer.step(model.weights, backprop(dlogits))
    probabilities, _ = model.forward(x, train=False)
    return {**model.weights, "probabilities": probabilities}


@pytest.mark.parametrize("max_window", [conv_gemm.MAX_WINDOW, 0], ids=["side-by-side", "image-by-image"])
def test_block_size_and_thread_split_do_not_change_results(monkeypatch, max_window):
    monkeypatch.setattr(conv_gemm, "MAX_WINDOW", max_window)
    calls: list[int] = []
    real = parallel.run_all
    monkeypatch.setattr(parallel, "run_all", lambda tasks: calls.append(len(tasks)) or real(tasks))
    reference = train_steps(monkeypatch, threads=1, block_bytes=None, split_min_macs=conv_blocks.SPLIT_MIN_MACS)
    assert calls == []  # one thread: nothing split
    variants = [
        dict(threads=1, block_bytes=1, split_min_macs=1),  # one image per block
        dict(threads=2, block_bytes=1, split_min_macs=1),  # split in two, one image per block
        dict(threads=3, block_bytes=10**9, split_min_macs=1),  # split in three (chunks 4+4+5), one block per range
        dict(threads=2, block_bytes=6000, split_min_macs=1),  # blocks of a few images, crossing chunk boundaries
    ]
    for settings in variants:
        calls.clear()
        result = train_steps(monkeypatch, **settings)
        if settings["threads"] > 1:
            assert calls and set(calls) == {settings["threads"]}, settings  # the convolutions did split
        for name, array in reference.items():
            np.testing.assert_array_equal(result[name], array, err_msg=f"{name} with {settings}")


def test_bundles_are_byte_identical_whatever_the_tuning(monkeypatch, tiny_spec, tmp_path):
    tiny_spec["layers"][0].update(stride=1, padding="same")  # the tuned stride-1 path
    tiny_spec["train"]["epochs"] = 1
    paths = []
    for threads, block_bytes, split_min_macs in [(1, None, conv_blocks.SPLIT_MIN_MACS), (2, 1, 1)]:
        monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
        monkeypatch.setattr(conv_blocks, "BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(conv_blocks, "SPLIT_MIN_MACS", split_min_macs)
        paths.append(cnnkit.train(tiny_spec).save(tmp_path / f"{threads}.cnnkit"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.parametrize("n, threads, expected", [
    (4, 2, [(0, 4)]),  # one chunk: nothing to split
    (8, 2, [(0, 4), (4, 8)]),
    (13, 2, [(0, 8), (8, 13)]),
    (13, 3, [(0, 4), (4, 8), (8, 13)]),
    (16, 1, [(0, 16)]),
])
def test_image_ranges_hold_whole_chunks_one_per_thread(monkeypatch, n, threads, expected):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", str(threads))
    assert conv_blocks.image_ranges(n, conv_blocks.SPLIT_MIN_MACS) == expected


def test_image_ranges_stay_whole_when_the_work_is_small(monkeypatch):
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    assert conv_blocks.image_ranges(16, conv_blocks.SPLIT_MIN_MACS // 16) == [(0, 16)]  # less than a thread's worth
    assert len(conv_blocks.image_ranges(16, conv_blocks.SPLIT_MIN_MACS // 8)) == 2


def test_block_size_is_a_share_of_the_reported_l2(monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    for index, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"), (3, "Unified", "32768K")]):
        folder = cache / f"index{index}"
        folder.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    monkeypatch.setattr(tuning, "_SYSFS", cache)
    tuning.cache_sizes.cache_clear()
    tuning._derived_block_bytes.cache_clear()
    try:
        assert tuning.cache_sizes() == {"L1d": 48 * 1024, "L2": 2 * 1024**2, "L3": 32 * 1024**2}
        assert tuning.block_bytes() == int(2 * 1024**2 * tuning.L2_SHARE)
        # Nothing reported: the fallback L2.
        monkeypatch.setattr(tuning, "_SYSFS", tmp_path / "missing")
        monkeypatch.setattr(tuning.os, "sysconf", lambda name: -1)
        tuning.cache_sizes.cache_clear()
        tuning._derived_block_bytes.cache_clear()
        assert tuning.cache_sizes() == {}
        assert tuning.block_bytes() == int(tuning.FALLBACK_L2 * tuning.L2_SHARE)
        assert tuning.picks()["l2_assumed"] is True
    finally:
        tuning.cache_sizes.cache_clear()
        tuning._derived_block_bytes.cache_clear()


def test_block_bytes_override(monkeypatch):
    monkeypatch.setenv("CNNKIT_BLOCK_BYTES", "300000")
    assert tuning.block_bytes() == 300000
    assert conv_blocks.block_bytes() == 300000
    for bad in ("0", "-5", "1e6", "lots"):
        monkeypatch.setenv("CNNKIT_BLOCK_BYTES", bad)
        with pytest.raises(CnnkitError, match=rf"CNNKIT_BLOCK_BYTES must be a positive integer. Received: '{bad}'"):
            tuning.block_bytes()


def test_a_busy_machine_gets_no_split(monkeypatch):
    monkeypatch.setattr(parallel, "spare_cores", REAL_SPARE_CORES)
    monkeypatch.setenv("CNNKIT_NUM_THREADS", "2")
    for load, splits in [(0.3, True), (2.9, True), (3.0, False), (9.5, False)]:
        monkeypatch.setattr(parallel.os, "getloadavg", lambda load=load: (load, load, load))
        monkeypatch.setattr(parallel, "_load_checked", (-1.0, False))  # forget the last answer
        assert parallel.spare_cores() is splits
        assert len(conv_blocks.image_ranges(16, conv_blocks.SPLIT_MIN_MACS)) == (2 if splits else 1)


def test_no_load_average_reported_counts_as_spare_cores(monkeypatch):
    monkeypatch.setattr(parallel, "spare_cores", REAL_SPARE_CORES)

    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(parallel.os, "getloadavg", unavailable)
    monkeypatch.setattr(parallel, "_load_checked", (-1.0, False))
    assert parallel.spare_cores() is True


def test_a_bad_setting_is_named_as_such_at_a_models_first_pass_not_blamed_on_a_layer(monkeypatch):
    """Outside `cnnkit run` (predict, evaluate, Python) the first layer to read CNNKIT_BLOCK_BYTES
    used to fail inside the contract check: "layers[0] (conv2d ...): forward failed ..."."""
    monkeypatch.setenv("CNNKIT_BLOCK_BYTES", "abc")
    model = cnnkit.build(SPEC)
    with pytest.raises(CnnkitError) as caught:
        model.forward(np.zeros((2, 1, 13, 11), np.float32))
    assert str(caught.value) == "CNNKIT_BLOCK_BYTES must be a positive integer. Received: 'abc'"

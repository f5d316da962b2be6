"""Data: the strict IDX reader, where Fashion-MNIST is found, downloading it, and images for predict."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import socket
import threading

import numpy as np
import pytest

from cnnkit import DataError
from cnnkit.data import fashion_mnist as fm
from cnnkit.data import load_fashion_mnist, locate, parse_idx, read_idx, read_images
from conftest import REAL_DATA, idx_bytes, synthetic_images, write_dataset, write_idx

# -- IDX -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_raw_and_gz(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 5) * 7 - 11).astype(dtype).reshape(2, 3, 5)
    back = read_idx(write_idx(tmp_path / f"a-idx3-ubyte{suffix}", array))
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_dims_and_values_are_big_endian():
    data = bytes([0, 0, 0x0C, 2]) + (1).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x00\x00\x01\x00" + b"\x00\x01\x00\x00" + b"\xff\xff\xff\xff"
    np.testing.assert_array_equal(parse_idx(data), [[256, 65536, -1]])


def test_gzip_is_detected_by_content_not_name(tmp_path):
    path = tmp_path / "labels.bin"
    path.write_bytes(gzip.compress(idx_bytes(np.array([3, 1, 4], np.uint8))))
    np.testing.assert_array_equal(read_idx(path), [3, 1, 4])


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "bad magic number"),
        (b"\x00", "bad magic number"),
        (b"\x01\x00\x08\x01" + GOOD[4:], "bad magic number"),
        (b"PK\x03\x04rest", "bad magic number"),
        (b"\x00\x00\x07\x02" + GOOD[4:], "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x03", "truncated IDX header"),
        (GOOD + b"\x00", "need 12 data bytes, the file has 13"),
        (GOOD[:-1], "need 12 data bytes, the file has 11"),
        (b"\x00\x00\x08\x04" + b"\xff\xff\xff\xff" * 4, "data bytes, the file has 0"),
    ],
)
def test_malformed_idx_is_a_one_line_data_error(tmp_path, data, fragment):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert fragment in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("mangle", [lambda gz: gz[:-9], lambda gz: gz[:12] + b"\x00" * 8 + gz[20:]])
def test_corrupt_gzip_is_a_data_error(tmp_path, mangle):
    path = tmp_path / "x.gz"
    path.write_bytes(mangle(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))))
    with pytest.raises(DataError, match="gzip|IDX|magic"):
        read_idx(path)


def test_missing_and_unreadable_idx_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path)


# -- finding Fashion-MNIST -------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty stand-ins for every search location; the test fills the ones it needs."""
    env, cache, debian, cwd = (tmp_path / n for n in ("env", "xdg", "debian", "cwd"))
    for folder in (env, cache, debian, cwd):
        folder.mkdir()
    monkeypatch.setenv("CNNKIT_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(fm, "DEBIAN_DIR", debian)
    monkeypatch.chdir(cwd)
    return {"env": env, "cache": cache / "cnnkit" / "fashion-mnist", "debian": debian, "torchvision": cwd / "data" / "FashionMNIST" / "raw"}


def test_search_order_env_cache_debian_torchvision(places):
    for name in ("torchvision", "debian", "cache", "env"):
        write_dataset(places[name], train=4, test=2, gz=name != "torchvision")
    for name in ("env", "cache", "debian", "torchvision"):
        found = locate(download=False)
        assert found.resolve() == places[name].resolve()
        for f in list(found.iterdir())[:1]:
            f.unlink()  # incomplete now: the next place wins
    with pytest.raises(DataError, match="not found"):
        locate(download=False)


@pytest.mark.parametrize("sub", ["fashion-mnist", "FashionMNIST/raw"])
def test_cnnkit_data_subfolders(places, sub):
    write_dataset(places["env"] / sub, train=4, test=2)
    assert locate(download=False) == places["env"] / sub


def test_user_chosen_folders_are_not_verified_against_official_checksums(places, tmp_path):
    write_dataset(places["env"], train=6, test=3)
    data = load_fashion_mnist()
    assert data.source == str(places["env"]) and data.train_images.shape == (6, 28, 28)
    explicit = write_dataset(tmp_path / "mine", train=5, test=4)
    data = load_fashion_mnist(explicit)
    assert data.train_images.shape == (5, 28, 28) and data.test_labels.dtype == np.int64
    assert data.classes[0] == "T-shirt/top" and len(data.classes) == 10
    with pytest.raises(DataError, match="sha256 mismatch"):
        load_fashion_mnist(explicit, verify=True)


@pytest.mark.parametrize("place", ["cache", "debian", "torchvision"])
def test_automatically_found_files_must_be_the_official_dataset(places, place, monkeypatch):
    monkeypatch.delenv("CNNKIT_DATA")  # unset (naming a missing folder is an error of its own)
    write_dataset(places[place], train=4, test=2)
    with pytest.raises(DataError) as info:
        load_fashion_mnist()
    assert "differ from the official Fashion-MNIST" in str(info.value) and "data.dir" in str(info.value)
    assert load_fashion_mnist(verify=False).train_images.shape == (4, 28, 28)


def test_explicit_data_dir_problems(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        load_fashion_mnist(tmp_path / "missing")
    folder = write_dataset(tmp_path / "partial", train=4, test=2)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="lacks Fashion-MNIST files: t10k-labels-idx1-ubyte"):
        load_fashion_mnist(folder)


def test_images_and_labels_must_agree(tmp_path):
    folder = write_dataset(tmp_path / "d", train=4, test=2)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="test images .* do not match"):
        load_fashion_mnist(folder)


def test_limits_take_the_first_examples(synthetic_dir):
    full = load_fashion_mnist(synthetic_dir)
    part = load_fashion_mnist(synthetic_dir, train_limit=7, test_limit=3)
    np.testing.assert_array_equal(part.train_images, full.train_images[:7])
    np.testing.assert_array_equal(part.test_labels, full.test_labels[:3])


# -- downloading -----------------------------------------------------------------------------------


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local HTTP mirror serving tiny .gz files, with FILES pinned to their sha256 sums."""
    root = tmp_path / "mirror"
    write_dataset(root, train=6, test=3, gz=False)
    pinned = {}
    for key, (stem, _) in fm.FILES.items():
        raw = (root / stem).read_bytes()
        (root / f"{stem}.gz").write_bytes(gzip.compress(raw))
        (root / stem).unlink()
        pinned[key] = (stem, hashlib.sha256(raw).hexdigest())
    monkeypatch.setattr(fm, "FILES", pinned)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_downloads_verifies_and_caches(mirror, tmp_path):
    root, url = mirror
    target = tmp_path / "cache"
    assert fm.fetch(target, mirror=url, timeout=5) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{stem}.gz" for stem, _ in fm.FILES.values())
    for stem, _ in fm.FILES.values():  # the next fetch reads nothing: remove the mirror's files
        (root / f"{stem}.gz").unlink()
    fm.fetch(target, mirror=url, timeout=5)
    assert load_fashion_mnist(target, verify=True).train_images.shape == (6, 28, 28)


def test_fetch_rejects_a_checksum_mismatch_and_keeps_nothing(mirror, tmp_path, monkeypatch):
    root, url = mirror
    stem = fm.FILES["train_images"][0]
    (root / f"{stem}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    target = tmp_path / "cache"
    with pytest.raises(DataError, match=f"{stem}.gz: sha256 mismatch"):
        fm.fetch(target, mirror=url, timeout=5)
    (root / f"{stem}.gz").write_bytes(b"<html>not gzip</html>")
    with pytest.raises(DataError, match="got not gzip data"):
        fm.fetch(target, mirror=url, timeout=5)
    assert list(target.iterdir()) == []


def test_fetch_http_error(mirror, tmp_path):
    root, url = mirror
    (root / f"{fm.FILES['test_labels'][0]}.gz").unlink()
    with pytest.raises(DataError, match="cannot download .*t10k-labels-idx1-ubyte.gz.*404"):
        fm.fetch(tmp_path / "cache", mirror=url, timeout=5)


def test_load_downloads_into_the_cache_when_nothing_is_found(mirror, places, monkeypatch):
    _, url = mirror
    monkeypatch.delenv("CNNKIT_DATA")
    monkeypatch.delenv("CNNKIT_OFFLINE")
    monkeypatch.setenv("CNNKIT_FASHION_MNIST_MIRROR", url)
    data = load_fashion_mnist()
    assert data.source == str(places["cache"]) and len(data.train_labels) == 6
    assert len(list(places["cache"].glob("*.gz"))) == 4


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_found_and_download_failed_lists_the_ways_to_get_it(places, monkeypatch):
    monkeypatch.delenv("CNNKIT_OFFLINE")
    monkeypatch.setenv("CNNKIT_FASHION_MNIST_MIRROR", f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(DataError) as info:
        load_fashion_mnist()
    text = str(info.value)
    assert "\n" not in text and "download failed" in text
    for way in ("CNNKIT_DATA", "apt-get install dataset-fashion-mnist", str(places["cache"]), "FashionMNIST/raw", "CNNKIT_FASHION_MNIST_MIRROR"):
        assert way in text
    assert not list(places["cache"].glob("*.gz"))


def test_offline_mode_does_not_download(places):
    with pytest.raises(DataError, match="downloads are off"):
        locate()


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_is_found_and_verified(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    data = load_fashion_mnist(train_limit=100, test_limit=50)
    assert data.source == str(REAL_DATA)
    assert data.train_images.shape == (100, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_labels.shape == (50,) and set(np.unique(data.train_labels)) <= set(range(10))


# -- images for predict ----------------------------------------------------------------------------


def test_png_grayscale_rgb_and_resizing(tmp_path):
    from PIL import Image

    gray = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_images(tmp_path / "g.png", size=(28, 28)), gray[None])
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_images(tmp_path / "rgb.png", size=(28, 28)), gray[None])
    Image.fromarray(np.full((56, 40), 200, np.uint8)).save(tmp_path / "big.jpg")
    big = read_images(tmp_path / "big.jpg", size=(28, 28))
    assert big.shape == (1, 28, 28) and abs(int(big.mean()) - 200) <= 2
    assert read_images(tmp_path / "rgb.png", size=(28, 28), channels=3).shape == (1, 3, 28, 28)
    np.testing.assert_array_equal(read_images(tmp_path / "g.png", invert=True), 255 - gray[None])


def test_npy_and_idx_images(tmp_path):
    images, _ = synthetic_images(3, 0)
    np.save(tmp_path / "x.npy", images)
    np.testing.assert_array_equal(read_images(tmp_path / "x.npy"), images)
    write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    np.testing.assert_array_equal(read_images(tmp_path / "x-idx3-ubyte.gz"), images)


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("notes.txt", b"hello, not an image", "not an image"),
        ("fake.png", b"\x89PNG\r\n\x1a\nbroken", "image"),
        ("x.npy", b"not numpy", "x.npy: not a .npy file (it does not start with the .npy magic string)"),
        ("x.npy", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "x.npy: not a .npy file (it looks like a PNG image)"),  # not NumPy's pickle advice
        ("x.npy", _npy_bytes(np.zeros((1000, 28, 28), np.uint8))[: 128 + 784],  # cut after one image
         "header claims shape [1000, 28, 28] (784,000 bytes) but the file holds 784 bytes of data"),
        ("x.idx", b"\x01\x02\x03\x04", "bad magic"),
    ],
)
def test_unreadable_images_are_data_errors(tmp_path, name, content, fragment):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        read_images(tmp_path / name)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_npy_object_arrays_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj.npy: an object array \(dtype object\); cnnkit reads .npy without pickle"):
        read_images(tmp_path / "obj.npy")


def test_missing_image_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_images(tmp_path / "nope.png")


def test_truncated_and_corrupted_pngs_are_data_errors(tmp_path):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(synthetic_images(1, 0)[0][0]).save(buffer, "PNG")
    png = buffer.getvalue()
    for i, broken in enumerate([png[: len(png) // 2], png[:60], png[:16] + b"\xff" * 8 + png[24:]]):
        (tmp_path / f"{i}.png").write_bytes(broken)
        with pytest.raises(DataError):
            read_images(tmp_path / f"{i}.png")


def test_gzip_bombs_are_refused(tmp_path, monkeypatch):
    from cnnkit.data import idx

    monkeypatch.setattr(idx, "MAX_DECOMPRESSED", 1000)
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(2000, np.uint8))))
    with pytest.raises(DataError, match="gzip bomb"):
        read_idx(path)
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(900, np.uint8))))
    assert read_idx(path).shape == (900,)


def test_multi_member_gzip_is_read_whole(tmp_path):
    data = idx_bytes(np.arange(100, dtype=np.uint8))
    (tmp_path / "two.gz").write_bytes(gzip.compress(data[:50]) + gzip.compress(data[50:]))
    np.testing.assert_array_equal(read_idx(tmp_path / "two.gz"), np.arange(100))


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_images(tmp_path)

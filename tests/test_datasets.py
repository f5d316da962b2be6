"""Dataset sources: the registry and spec form, idx-folder, npz, image-folder (cache, colour), bad data, plugins.

Tiny data is generated here; the equivalence of the sources is shown on a real Fashion-MNIST subset
(marked ``realdata``) written out as PNG folders, an .npz and IDX files.
"""

from __future__ import annotations

import copy
import json
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cnnkit
from cnnkit.cli import app
from cnnkit.data import DATASETS, DatasetSource, SourceParams, load_dataset, load_fashion_mnist
from cnnkit.errors import SpecError
from cnnkit.spec import validate_spec
from cnnkit.training import loop as train_module  # the loop module (cnnkit.train is the function)

from conftest import REAL_DATA, SEED_SPEC, TINY_SPEC, synthetic_images, write_idx
from fakeplugins import write_dist

runner = CliRunner()
realdata = pytest.mark.skipif(not (REAL_DATA / "train-images-idx3-ubyte.gz").is_file(), reason="real Fashion-MNIST not installed")


def spec_with(data: dict, shape=(1, 28, 28), epochs=1) -> dict:
    spec = copy.deepcopy(TINY_SPEC)
    spec["input"]["shape"] = list(shape)
    spec["data"] = data
    spec["train"]["epochs"] = epochs
    return spec


def write_npz(path, x_train, y_train, x_test, y_test, compressed=False, **extra):
    (np.savez_compressed if compressed else np.savez)(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    return path


def write_folder(root, images, labels, classes, ext="png", mode="L"):
    """images (N, H, W) or (N, H, W, 3) uint8 as root/<class>/<index>.<ext>."""
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image, mode if image.ndim == 2 else "RGB").save(root / classes[int(label)] / f"{i:05d}.{ext}")
    return root


def weights_equal(a, b) -> bool:
    return a.weights.keys() == b.weights.keys() and all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- spec form, registry, schema -------------------------------------------------------------------


def test_existing_specs_keep_their_data_section_byte_for_byte():
    seed = validate_spec(json.loads(SEED_SPEC.read_text()))
    assert list(seed.to_dict()["data"].items()) == [("dataset", "fashion-mnist"), ("dir", None), ("train_limit", None), ("test_limit", None)]
    bare = {k: v for k, v in TINY_SPEC.items() if k != "data"}
    assert validate_spec(bare).to_dict()["data"] == seed.to_dict()["data"]


@pytest.mark.parametrize(
    "data, path, fragment",
    [
        ({"dataset": "image-folder"}, "data.path", "required field is missing"),
        ({"dataset": "npz", "path": "a.npz", "mmap": "yes"}, "data.mmap", "boolean"),
        ({"dataset": "npz", "pth": "a.npz"}, "data.pth", "did you mean 'path'"),
        ({"dataset": "fashion-mnist", "path": "x"}, "data.path", "unknown field"),
        ({"dataset": "image-folder", "path": "p", "test_fraction": 1.5}, "data.test_fraction", "less than 1"),
        ({"dataset": "npz", "path": "a.npz", "train_limt": 5}, "data.train_limt", "did you mean 'train_limit'"),
        ({"dataset": "imagefolder"}, "data.dataset", "did you mean 'image-folder'"),
    ],
)
def test_source_params_are_validated_with_json_paths(data, path, fragment):
    with pytest.raises(SpecError) as err:
        validate_spec(spec_with(data))
    assert path in [p for p, _ in err.value.errors] and fragment in str(err.value), str(err.value)


def test_source_params_are_filled_in_beside_dataset_then_general_keys():
    spec = validate_spec(spec_with({"train_limit": 5, "path": "x.npz", "dataset": "npz"}))
    assert list(spec.to_dict()["data"].items()) == [("dataset", "npz"), ("path", "x.npz"), ("mmap", True), ("train_limit", 5), ("test_limit", None)]


def test_builtin_sources_are_registered_like_plugins():
    entries = {e.type: e for e in DATASETS.entries()}
    assert {"fashion-mnist", "idx-folder", "npz", "image-folder", "torchvision"} <= set(entries)
    assert all(entries[name].dist == "cnnkit" for name in ("npz", "image-folder"))
    result = cli("datasets", "--json")
    rows = {r["dataset"]: r for r in json.loads(result.stdout)}
    assert rows["npz"]["dist"] == "cnnkit" and [p["name"] for p in rows["npz"]["params"]] == ["path", "mmap"]


def test_schema_checks_each_source_params():
    jsonschema = pytest.importorskip("jsonschema")
    from cnnkit.spec.schema import spec_schema

    validator = jsonschema.Draft7Validator(spec_schema()[0])

    def errors(data):
        return [e.message for e in validator.iter_errors(spec_with(data))]

    assert errors({"dataset": "image-folder", "path": "p", "resize": None, "train_limit": 3}) == []
    assert errors({"dir": "somewhere"}) == []  # no dataset: fashion-mnist's params apply
    assert any("'path' is a required property" in e for e in errors({"dataset": "image-folder"}))
    assert any("'path' was unexpected" in e for e in errors({"path": "p"}))
    assert any("'mmap' was unexpected" in e for e in errors({"dataset": "image-folder", "path": "p", "mmap": True}))


# -- npz, idx-folder -----------------------------------------------------------------------------------


def test_npz_stored_uncompressed_is_memory_mapped_and_compressed_is_read(tmp_path):
    x, y = synthetic_images(50, 1)
    stored = write_npz(tmp_path / "s.npz", x, y, x[:10], y[:10], classes=np.array([f"c{i}" for i in range(10)]))
    packed = write_npz(tmp_path / "c.npz", x, y, x[:10], y[:10], compressed=True)
    a = load_dataset(validate_spec(spec_with({"dataset": "npz", "path": str(stored)})).data, (1, 28, 28))
    b = load_dataset(validate_spec(spec_with({"dataset": "npz", "path": str(packed)})).data, (1, 28, 28))
    assert isinstance(a.train_images, np.memmap) and not isinstance(b.train_images, np.memmap)
    assert np.array_equal(a.train_images, x) and np.array_equal(b.train_images, x) and np.array_equal(a.test_labels, y[:10])
    assert a.classes == [f"c{i}" for i in range(10)] and b.classes == [str(i) for i in range(10)]


def test_npz_channels_last_colour_images_become_channels_first(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    path = write_npz(tmp_path / "rgb.npz", rgb, np.arange(6) % 2, rgb[:2], np.arange(2))
    data = load_dataset(validate_spec(spec_with({"dataset": "npz", "path": str(path)}, shape=(3, 8, 8))).data, (3, 8, 8))
    assert data.train_images.shape == (6, 3, 8, 8) and np.array_equal(data.train_images[2, 1], rgb[2, :, :, 1])


@pytest.mark.filterwarnings("ignore::cnnkit.training.TrainingWarning")  # a few tiny steps end near chance: not what is tested
def test_channels_last_trains_exactly_like_channels_first(tmp_path, monkeypatch):
    x, y = synthetic_images(64, 9)
    rgb = tinted(x, y.astype(int))  # (N, H, W, 3)
    last = write_npz(tmp_path / "last.npz", rgb, y, rgb[:16], y[:16])
    first = write_npz(tmp_path / "first.npz", rgb.transpose(0, 3, 1, 2), y, rgb[:16].transpose(0, 3, 1, 2), y[:16])
    models = [cnnkit.train(spec_with({"dataset": "npz", "path": str(p)}, shape=(3, 28, 28))) for p in (last, first)]
    monkeypatch.setattr(train_module, "EAGER_BYTES", 0)  # and converted per batch
    models.append(cnnkit.train(spec_with({"dataset": "npz", "path": str(last)}, shape=(3, 28, 28))))
    assert weights_equal(models[0], models[1]) and weights_equal(models[0], models[2])


def test_idx_folder_maps_raw_files_and_names_classes(tmp_path):
    x, y = synthetic_images(30, 3)
    write_idx(tmp_path / "a-images", x)
    write_idx(tmp_path / "a-labels.gz", y)
    data = {"dataset": "idx-folder", "path": str(tmp_path), "train_images": "a-images", "train_labels": "a-labels",
            "test_images": "a-images", "test_labels": "a-labels", "classes": [f"k{i}" for i in range(10)]}
    loaded = load_dataset(validate_spec(spec_with(data)).data, (1, 28, 28))
    assert isinstance(loaded.train_images, np.memmap) and np.array_equal(loaded.train_images, x)
    assert loaded.classes[3] == "k3" and loaded.train_labels.dtype == np.int64


# -- bad data: one line, nothing trained -----------------------------------------------------------------


def bad_npz(tmp_path, case):
    x, y = synthetic_images(20, 1)
    if case == "labels out of range":
        y = y.astype(np.int64)
        y[3] = 12
        return write_npz(tmp_path / "d.npz", x, y, x, y, classes=np.array([str(i) for i in range(10)]))
    if case == "length mismatch":
        return write_npz(tmp_path / "d.npz", x, y[:-1], x, y)
    if case == "object array":
        with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
            for key, value in {"x_train": x, "y_train": np.array([1, "a"], dtype=object), "x_test": x, "y_test": y}.items():
                with zf.open(f"{key}.npy", "w") as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=True)
        return tmp_path / "d.npz"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("labels out of range", ["train labels range over", "12", "10 classes"]),
        ("length mismatch", ["train has 20 images but 19 labels"]),
        ("object array", ["'y_train' is an object array", "without pickle"]),
    ],
)
def test_bad_npz_is_one_line_and_trains_nothing(tmp_path, case, fragments):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_with({"dataset": "npz", "path": str(bad_npz(tmp_path, case))})))
    one_line_error(cli("run", spec, "-q", "--out", tmp_path / "m.cnnkit"), *fragments)
    assert not (tmp_path / "m.cnnkit").exists()


def _folder_case(tmp_path, case):
    x, y = synthetic_images(40, 2)
    root = write_folder(tmp_path / "imgs", x, y, [f"c{i}" for i in range(10)])
    first = sorted((root / "c3").iterdir())[0]
    if case == "empty class":
        (tmp_path / "imgs" / "zz-empty").mkdir()
        return root, {}, ["class folder", "zz-empty", "no PNG or JPEG"]
    if case == "corrupt":
        first.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        return root, {}, [str(first), "cannot read image"]
    if case == "truncated":
        first.write_bytes(first.read_bytes()[:-30])
        return root, {}, [str(first)]
    if case == "mixed sizes":
        Image.new("L", (30, 28)).save(first)
        return root, {"resize": None}, ["mixed picture sizes", str(first), "30x28", "data.resize"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty class", "corrupt", "truncated", "mixed sizes"])
def test_bad_image_folder_is_one_line_and_trains_nothing(tmp_path, case):
    root, extra, fragments = _folder_case(tmp_path, case)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_with({"dataset": "image-folder", "path": str(root), **extra})))
    one_line_error(cli("run", spec, "-q", "--out", tmp_path / "m.cnnkit"), *fragments)
    assert not (tmp_path / "m.cnnkit").exists()


# -- image-folder: split, cache, colour -------------------------------------------------------------------


def test_image_folder_split_is_stratified_seeded_and_cached_until_a_file_changes(tmp_path, monkeypatch):
    x, y = synthetic_images(100, 4)
    root = write_folder(tmp_path / "imgs", x, y, [f"c{i}" for i in range(10)])
    data = validate_spec(spec_with({"dataset": "image-folder", "path": str(root), "test_fraction": 0.25})).data
    first = load_dataset(data, (1, 28, 28))
    assert len(first.train_labels) + len(first.test_labels) == 100 and first.classes == [f"c{i}" for i in range(10)]
    assert set(first.test_labels.tolist()) == set(y.tolist())  # every class is in the test set
    assert isinstance(first.train_images, np.memmap)  # served from the cache file
    from cnnkit.data.sources import image_folder

    def no_decoding(*args):
        raise AssertionError("decoded again although nothing changed")

    with monkeypatch.context() as patch:
        patch.setattr(image_folder, "_decode_all", no_decoding)
        again = load_dataset(data, (1, 28, 28))
    assert np.array_equal(first.test_images, again.test_images) and np.array_equal(first.train_labels, again.train_labels)
    # the first picture of class c0 is the first training example unless held out: change every c0 picture
    for picture in (root / "c0").iterdir():
        Image.fromarray(np.full((28, 28), 7, np.uint8)).save(picture)
    changed = load_dataset(data, (1, 28, 28))
    assert (changed.train_images[changed.train_labels == 0] == 7).all()


def test_image_folder_order_mixes_classes_so_limits_take_every_class(tmp_path):
    x, y = synthetic_images(60, 5)
    root = write_folder(tmp_path / "imgs", x, y, [f"c{i}" for i in range(10)])
    data = validate_spec(spec_with({"dataset": "image-folder", "path": str(root), "test_path": str(root), "train_limit": 10, "cache": False})).data
    assert sorted(load_dataset(data, (1, 28, 28)).train_labels.tolist()) == list(range(10))


def tinted(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, H, W) grayscale -> (N, H, W, 3), each class multiplied by its own colour."""
    colours = np.random.default_rng(7).uniform(0.2, 1.0, (10, 3))
    return (images[..., None] * colours[labels][:, None, None, :]).astype(np.uint8)


def test_colour_image_folder_trains_saves_and_predicts_photos(tmp_path):
    x, y = synthetic_images(400, 6)
    root = write_folder(tmp_path / "imgs", tinted(x, y.astype(int)), y, [f"c{i}" for i in range(10)], ext="jpg")
    spec = spec_with({"dataset": "image-folder", "path": str(root), "test_fraction": 0.25}, shape=(3, 28, 28), epochs=3)
    model = cnnkit.train(spec)
    assert model.metadata["metrics"]["test_accuracy"] > 0.6  # chance is 0.1
    bundle = model.save(tmp_path / "rgb.cnnkit")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.dstack([tinted(x[:1], y[:1].astype(int))[0], np.full((28, 28), 255, np.uint8)])).resize((56, 42)).save(photo)
    result = cli("predict", bundle, photo, "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["converted"] == "RGBA 56x42 -> RGB, resized to 28x28" and row["top"][0]["class"].startswith("c")
    # evaluate reads the test set the bundle's data section names (here: the held-out share, from the cache)
    scores = json.loads(cli("evaluate", bundle, "--json").stdout)
    assert scores["examples"] == model.metadata["test_examples"] and scores["accuracy"] == pytest.approx(model.metadata["metrics"]["test_accuracy"])


def test_grayscale_model_predicts_a_colour_photo_as_grayscale(tmp_path, tiny_spec):
    spec = copy.deepcopy(tiny_spec)
    spec["train"]["epochs"] = 1
    bundle = cnnkit.train(spec).save(tmp_path / "g.cnnkit")
    Image.new("RGB", (28, 28), (200, 10, 10)).save(tmp_path / "red.jpg")
    Image.new("L", (28, 28), 9).save(tmp_path / "gray.png")
    rows = json.loads(cli("predict", bundle, tmp_path / "red.jpg", tmp_path / "gray.png", "--json").stdout)
    assert rows[0]["converted"] == "RGB 28x28 -> grayscale" and "converted" not in rows[1]


# -- memory-mapped training ---------------------------------------------------------------------------------


def test_memory_mapped_training_converts_per_batch_to_the_same_weights(tmp_path, monkeypatch):
    import tracemalloc

    x, y = synthetic_images(3000, 8)
    path = write_npz(tmp_path / "big.npz", x, y, x[:200], y[:200])
    spec = spec_with({"dataset": "npz", "path": str(path)})
    spec["train"]["batch_size"] = 64
    eager = cnnkit.train(spec)
    monkeypatch.setattr(train_module, "EAGER_BYTES", 0)
    tracemalloc.start()
    try:
        lazy = cnnkit.train(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert weights_equal(eager, lazy) and eager.metadata == lazy.metadata
    assert peak < x.size * 4 / 2  # never the whole training set as float32 (9.4 MB here)
    # with a validation split, the held-out share is converted once and the rest per batch
    spec["data"]["validation"] = 0.2
    spec["train"]["epochs"] = 2
    lazy = cnnkit.train(spec)
    monkeypatch.setattr(train_module, "EAGER_BYTES", 512 << 20)
    eager = cnnkit.train(spec)
    assert weights_equal(eager, lazy) and eager.metadata == lazy.metadata and lazy.metadata["validation"]["examples"] == 600


# -- a third-party dataset plugin ----------------------------------------------------------------------------

BLOBS_MODULE = '''
"""A dataset plugin: learnable synthetic squares, n per split."""
import numpy as np
from cnnkit.data import Dataset, DatasetSource, SourceParams


class Blobs(DatasetSource):
    class Params(SourceParams):
        n: int = 200

    def load(self, input_shape):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 2 * self.params.n)
        x = rng.integers(0, 40, (len(y), *input_shape[1:])).astype(np.uint8)
        x[y == 1, :8, :8] = 250
        n = self.params.n
        return Dataset(x[:n], y[:n], x[n:], y[n:], ["plain", "square"], "blobs")
'''


def test_a_dataset_plugin_registers_validates_and_trains(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_dist(site, "fake-data", "1.0", {}, {"fake_blobs": BLOBS_MODULE}, datasets={"blobs": "fake_blobs:Blobs"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(DATASETS, "_resolved", {})
    try:
        spec = spec_with({"dataset": "blobs", "n": 120}, epochs=2)
        spec["layers"][-2]["units"] = 2
        with pytest.raises(SpecError, match=r"data\.n: .*integer"):
            validate_spec({**spec, "data": {"dataset": "blobs", "n": "many"}})
        model = cnnkit.train(spec)
        assert model.spec.data.dataset == "fake-data:blobs" and model.classes == ["plain", "square"]
        assert model.metadata["metrics"]["test_accuracy"] > 0.9
        again = cnnkit.load(model.save(tmp_path / "b.cnnkit"))
        assert again.spec.to_dict()["data"] == {"dataset": "fake-data:blobs", "n": 120, "train_limit": None, "test_limit": None}
        rows = {r["dataset"]: r for r in json.loads(cli("datasets", "--json").stdout)}
        assert rows["blobs"]["dist"] == "fake-data" and rows["blobs"]["params"][0]["name"] == "n"
    finally:
        sys.modules.pop("fake_blobs", None)


# -- the torchvision source without torchvision ----------------------------------------------------------------


def test_torchvision_source_without_torchvision_names_the_pip_command(tmp_path):
    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision is installed here (tests/test_torchvision_venv.py covers it)")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_with({"dataset": "torchvision", "name": "FashionMNIST", "root": str(tmp_path)})))
    one_line_error(cli("run", spec, "-q", "--out", tmp_path / "m.cnnkit"), "pip install 'cnnkit[torchvision]'")


# -- the same real data through every source ------------------------------------------------------------------------


@pytest.mark.realdata
@realdata
def test_real_subset_gives_the_same_model_from_idx_npz_png_folders(tmp_path):
    real = load_fashion_mnist(REAL_DATA, 400, 100, verify=True)
    x, y, xt, yt = real.train_images, real.train_labels, real.test_images, real.test_labels
    base = {"train_limit": 400, "test_limit": 100}

    def trained(data):
        return cnnkit.train(spec_with({**data}, epochs=1))

    reference = trained({"dataset": "fashion-mnist", "dir": str(REAL_DATA), **base})
    # the same arrays as an .npz and as raw IDX files, in the same order: the same weights and scores
    same_order = write_npz(tmp_path / "same.npz", x, y, xt, yt, classes=np.array(real.classes))
    for folder_name, array in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y.astype(np.uint8)),
                               ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt.astype(np.uint8))):
        write_idx(tmp_path / folder_name, array)
    for data in ({"dataset": "npz", "path": str(same_order)}, {"dataset": "idx-folder", "path": str(tmp_path), "classes": real.classes}):
        other = trained(data)
        assert weights_equal(reference, other) and other.metadata["history"] == reference.metadata["history"]
    # PNG folders hold the same pixels; image-folder orders them class by class in turn, so the
    # training order (and so the weights) differs from the IDX order, unless the arrays are put in that
    # order: then an .npz gives exactly the image-folder's model.
    names = [f"{i}-{c.replace('/', '_')}" for i, c in enumerate(real.classes)]
    write_folder(tmp_path / "train", x, y, names)
    write_folder(tmp_path / "test", xt, yt, names)
    data = {"dataset": "image-folder", "path": str(tmp_path / "train"), "test_path": str(tmp_path / "test"), "resize": None}
    train_order, test_order = _class_by_class(y), _class_by_class(yt)
    pictures = load_dataset(validate_spec(spec_with(data)).data, (1, 28, 28))
    assert np.array_equal(pictures.train_images[:, 0], x[train_order]) and np.array_equal(pictures.test_labels, yt[test_order])
    reordered = write_npz(tmp_path / "reordered.npz", x[train_order], y[train_order], xt[test_order], yt[test_order], classes=np.array(names))
    assert weights_equal(trained(data), trained({"dataset": "npz", "path": str(reordered)}))


def _class_by_class(labels: np.ndarray) -> np.ndarray:
    """image-folder's order of examples saved as <index>.png: the first of each class, then the second, ..."""
    per_class = [np.flatnonzero(labels == k) for k in range(10)]
    return np.array([members[i] for i in range(max(map(len, per_class))) for members in per_class if i < len(members)])


def test_evaluate_data_dir_replaces_each_sources_own_folder_field(monkeypatch):
    """`cnnkit evaluate --data-dir` sets the source's folder_key; torchvision's folder is `root` (a
    `path` there was rejected as an unknown field, so evaluating a torchvision bundle elsewhere failed)."""
    from cnnkit.data import Dataset, load_test_set
    from cnnkit.data.sources.torchvision import Torchvision

    for name in ("fashion-mnist", "idx-folder", "npz", "image-folder", "torchvision"):
        cls = DATASETS.load(name)
        assert cls.folder_key in cls.Params.model_fields, name
    seen = []

    def fake_load(self, input_shape):
        seen.append(self.params.root)
        images, labels = synthetic_images(4, 3)
        return Dataset(images, labels, images, labels, [str(i) for i in range(10)], "fake")

    monkeypatch.setattr(Torchvision, "load", fake_load)
    spec = validate_spec(spec_with({"dataset": "torchvision", "name": "FashionMNIST", "root": "where-it-was-trained"}))
    test = load_test_set(spec.data, (1, 28, 28), data_dir="elsewhere", limit=2)
    assert seen == ["elsewhere"] and len(test.test_labels) == 2


def test_dataset_source_contract_problems_are_named():
    from pydantic import BaseModel

    from cnnkit.data import Dataset
    from cnnkit.data.sources.base import contract_problem

    class NoParams(DatasetSource):
        Params = BaseModel

    class Lax(DatasetSource):
        class Params(SourceParams):
            model_config = {"extra": "allow"}

    class Named(DatasetSource):
        class Params(SourceParams):
            dataset: str = "x"

    class NoLoad(DatasetSource):
        class Params(SourceParams):
            path: str = "x"

    class Fine(NoLoad):
        def load(self, input_shape) -> Dataset:
            raise NotImplementedError

    assert contract_problem(NoParams).startswith("NoParams.Params must subclass cnnkit.data.SourceParams")
    assert contract_problem(Lax) == "Lax.Params must reject unknown fields (extra='forbid'). Received: extra='allow'"
    assert contract_problem(Named) == "Named.Params must not declare a field named 'dataset' (a spec uses it to name the source)"
    assert contract_problem(NoLoad) == "NoLoad does not implement load(input_shape)"
    assert contract_problem(Fine) is None

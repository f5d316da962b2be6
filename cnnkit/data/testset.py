"""The test set of a bundle's data section, for `cnnkit evaluate` and `cnnkit report`: only test data
is read, and it can be named anew (``--data``, ``--data-dir``, ``--set data.*``), since a bundle
records its data paths as they were given where it was trained."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError, SpecError
from .dataset import Dataset, checked_test, limit as first
from .sources import DATASETS

if TYPE_CHECKING:
    from ..spec import DataSpec


def load_test_set(
    data: DataSpec,
    input_shape: tuple[int, ...],
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    *,
    test_data: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    classes: list[str] | None = None,
) -> Dataset:
    """The first ``limit`` test examples of a (bundle's) ``data`` section; only test data is read.

    ``test_data`` names the test data alone (the source's ``test_key``: an .npz file for npz, a
    folder of class folders for image-folder, the folder of the IDX test files for fashion-mnist and
    idx-folder). ``data_dir`` replaces the source's folder (its ``folder_key``: fashion-mnist's
    ``dir``, torchvision's ``root``, the others' ``path``). ``overrides`` are ``data.*`` assignments
    as ``--set`` takes them (``data.test_path=...``). ``classes`` are the model's class names: the
    test data's must be the same. A file or folder that is not there is one DataError naming the
    field, where its value came from and the folder a relative path was looked for in.
    """
    from ..spec import apply_overrides, parse_override, validate_data  # the spec package imports data: not at the top

    origin: dict[str, str] = {}
    raw = data.model_dump(mode="json")  # dataset, the source's params, the general keys
    if overrides:
        for assignment in overrides:
            parts, _ = parse_override(assignment)
            if parts[0] != "data" or len(parts) < 2:
                raise SpecError(f"--set here changes only the test data (data.*). Received: {assignment}")
            origin[str(parts[1])] = f"--set {assignment}"
        raw = apply_overrides({"data": raw}, overrides)["data"]
    cls = data.source_class if raw.get("dataset") == data.dataset and data.source_class is not None else DATASETS.load(str(raw.get("dataset")))
    if data_dir is not None:
        raw[cls.folder_key], origin[cls.folder_key] = os.fspath(data_dir), "--data-dir"
    if test_data is not None:
        key = cls.test_key or cls.folder_key
        raw[key], origin[key] = os.fspath(test_data), "--data"
    data = validate_data(raw)  # the source's params checked again, with the paths given here
    source = data.source_class(data.source)
    hint = "name the test data with --data PATH" + ("" if (cls.test_key or cls.folder_key) == cls.folder_key else ", or the data's folder with --data-dir DIR")
    for key in source.test_files():
        _check_exists(data.dataset, key, getattr(source.params, key), origin.get(key, "the bundle's spec"), hint)
    loaded = checked_test(source.load_test(tuple(input_shape), None if classes is None else list(classes)), tuple(input_shape), data.dataset, classes)
    # The whole test set: a spec's data.test_limit (which limits training's per-epoch scoring) is not
    # applied, unless given here (--set data.test_limit=N); with --limit too, the smaller one holds.
    if "test_limit" in origin and data.test_limit is not None:
        limit = data.test_limit if limit is None else min(limit, data.test_limit)
    return first(loaded, None, limit)


def _check_exists(dataset: str, key: str, value: str | None, origin: str, hint: str) -> None:
    """A DataError saying which path was tried, from where, and how to name another, unless it exists."""
    if value is None or os.path.exists(value):
        return
    where = f", looked for in {Path.cwd()}" if not os.path.isabs(value) else ""
    raise DataError(f"{dataset}: data.{key} {value} (from {origin}) not found{where}; {hint}")

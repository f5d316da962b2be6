"""The page at ``/`` in a real headless Chromium (Playwright driving Debian's ``chromium``): choose a
file, see for each served model the class `cnnkit predict` gives for the same file.

Skipped where no browser is installed; `make test` (what CI runs) installs Debian's chromium as root.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from conftest import synthetic_images
from serving import ServerProcess, trained_bundle

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no browser at /usr/bin/chromium: apt-get install chromium (make test does it as root)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, synthetic_dir):
    folder = tmp_path_factory.mktemp("page")
    bundles = trained_bundle(folder, synthetic_dir), trained_bundle(folder, synthetic_dir, name="other", seed=1)
    process = ServerProcess(*bundles, "--quiet")
    yield process, bundles
    assert process.stop() == 0


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def files(folder: Path) -> list[Path]:
    """A 28x28 PNG as the model saw them, a 56x56 RGB JPEG (converted and resized), a .npy of three images."""
    pictures, _ = synthetic_images(3, seed=7)
    Image.fromarray(pictures[0]).save(folder / "garment.png")
    Image.fromarray(pictures[1]).resize((56, 56)).convert("RGB").save(folder / "big photo.jpg", quality=95)
    np.save(folder / "three.npy", pictures)
    return [folder / "garment.png", folder / "big photo.jpg", folder / "three.npy"]


def predicted(bundle: Path, path: Path) -> dict:
    """`cnnkit predict --json --top 5` for the first image of ``path``."""
    result = CliRunner().invoke(app, ["predict", str(bundle), str(path), "--json", "--top", "5"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]


def test_a_chosen_file_shows_the_classes_cnnkit_predict_gives(served, browser, tmp_path):
    server, bundles = served
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for path in files(tmp_path):
        page.goto(server.url + "/")
        page.wait_for_selector("#model-other")  # both cards are there before a file is chosen
        page.set_input_files("#file", str(path))
        for name, bundle in zip(("tiny", "other"), bundles):
            result = page.wait_for_selector(f"#model-{name} .result[data-top]")
            expected = predicted(bundle, path)
            assert result.get_attribute("data-top") == expected["top"][0]["class"], (path.name, name)
            rows = [row.inner_text().split("\n") for row in result.query_selector_all(".image:first-child .row")]
            assert [cls for cls, _ in rows] == [t["class"] for t in expected["top"]]
            shown = [float(percent.removesuffix(" %")) for _, percent in rows]  # one decimal of the 6 the protocol sends
            assert shown == pytest.approx([100 * t["probability"] for t in expected["top"]], abs=0.051)
        if path.suffix == ".npy":
            assert page.inner_text("#model-tiny .image:nth-child(3) .muted") == "image 3 of 3"
        if path.suffix == ".jpg":  # what was done to fit the model, as predict --json says it
            assert expected["converted"] in page.inner_text("#model-tiny .result")
    elsewhere = [url for url in requested if not url.startswith((server.url + "/", "blob:"))]  # blob: the preview of the chosen file
    assert requested and elsewhere == []  # offline: nothing from a CDN


def test_a_file_that_is_no_image_shows_the_error(served, browser, tmp_path):
    server, _ = served
    (tmp_path / "notes.txt").write_text("not a picture")
    page = browser.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#model-tiny")
    page.set_input_files("#file", str(tmp_path / "notes.txt"))
    error = page.wait_for_selector("#model-tiny .error")
    assert error.inner_text() == "notes.txt: not an image Pillow can read (expected PNG, JPEG, ... or .npy / IDX)"

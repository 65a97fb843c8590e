"""The npe2 reader and sample data, through napari itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slide_unet.core import paths
from slide_unet.core.slide import overviews, slide
from slide_unet.napari import reader as napari_reader

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "kidney_pas.ome.tif"
PLUGIN = "napari-slide-unet"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_DIR_ENV, str(tmp_path / "cache"))


@pytest.fixture
def viewer_model():
    from napari.components import ViewerModel
    from napari.plugins import _initialize_plugins

    _initialize_plugins()
    return ViewerModel()


@pytest.fixture
def flat_slide(tmp_path, monkeypatch) -> Path:
    """A single-level tiled RGB slide large enough (for the test) to need overviews."""
    monkeypatch.setattr(slide, "OVERVIEW_THRESHOLD", 512)
    monkeypatch.setattr(overviews, "SMALLEST_SIDE", 256)
    monkeypatch.setattr(overviews, "BAND_ROWS", 256)
    yy, xx = np.mgrid[0:1536, 0:2048]
    image = np.stack([(yy // 8) % 256, (xx // 8) % 256, np.full_like(yy, 200)], -1)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image.astype(np.uint8), tile=(256, 256), photometric="rgb")
    return path


def test_reader_opens_the_sample_as_a_multiscale_rgb_layer_in_microns(viewer_model):
    (layer,) = viewer_model.open(SAMPLE, plugin=PLUGIN)
    assert layer.multiscale
    assert layer.rgb
    assert layer.name == "kidney_pas"
    assert [d.shape for d in layer.data] == [
        (2048, 2048, 3),
        (1024, 1024, 3),
        (512, 512, 3),
        (256, 256, 3),
    ]
    np.testing.assert_allclose(layer.scale, [0.5, 0.5])
    assert str(layer.units[0]) == "micrometer"
    assert list(layer.contrast_limits) == [0, 255]


def test_reader_layer_pixels_are_the_files_pixels(viewer_model):
    (layer,) = viewer_model.open(SAMPLE, plugin=PLUGIN)
    expected = tifffile.imread(SAMPLE, level=2)
    np.testing.assert_array_equal(np.asarray(layer.data[2]), expected)


def test_reader_gives_grayscale_uint16_contrast_from_the_data(viewer_model, tmp_path):
    path = tmp_path / "gray16.tif"
    image = np.linspace(1000, 3000, 300 * 400).reshape(300, 400).astype(np.uint16)
    tifffile.imwrite(path, image, tile=(128, 128))
    (layer,) = viewer_model.open(path, plugin=PLUGIN)
    assert not layer.rgb
    assert not layer.multiscale
    assert list(layer.contrast_limits) == [1000, 3000]


def test_reader_splits_non_rgb_channels_into_layers(viewer_model, tmp_path):
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, np.zeros((5, 64, 64), np.uint16), photometric="minisblack")
    layers = viewer_model.open(path, plugin=PLUGIN)
    assert len(layers) == 5
    assert all(layer.data.shape == (64, 64) for layer in layers)


def test_reader_opens_a_png(viewer_model, tmp_path):
    from PIL import Image

    path = tmp_path / "tile.png"
    Image.fromarray(np.full((40, 60, 3), 7, np.uint8)).save(path)
    (layer,) = viewer_model.open(path, plugin=PLUGIN)
    assert layer.rgb
    assert layer.data.shape == (40, 60, 3)


def test_a_mask_file_opens_as_a_labels_layer_that_score_can_take(viewer_model, tmp_path):
    truth = SAMPLE.with_name("kidney_pas_mask.ome.tif")
    (layer,) = viewer_model.open(truth, plugin=PLUGIN)
    assert type(layer).__name__ == "Labels"
    assert layer.multiscale
    np.testing.assert_allclose(layer.scale, [0.5, 0.5])
    np.testing.assert_array_equal(np.asarray(layer.data[0]), tifffile.imread(truth) != 0)

    from PIL import Image

    red = np.zeros((40, 60, 3), np.uint8)
    red[5:20, 10:30] = (255, 0, 0)  # red on black, as the bueno_pas masks
    Image.fromarray(red).save(tmp_path / "tile.png")
    (layer,) = viewer_model.open(tmp_path / "tile.png", plugin=PLUGIN)
    assert type(layer).__name__ == "Labels"
    np.testing.assert_array_equal(np.asarray(layer.data), red[..., 0] // 255)

    labels = np.zeros((30, 30), np.uint16)
    labels[2:5, 2:5], labels[10:20, 10:20], labels[25:28, 1:4] = 1, 2, 3
    tifffile.imwrite(tmp_path / "nuclei_labels.tif", labels)  # instance ids: named so
    (layer,) = viewer_model.open(tmp_path / "nuclei_labels.tif", plugin=PLUGIN)
    assert type(layer).__name__ == "Labels"
    tifffile.imwrite(tmp_path / "cells.tif", labels)  # the same values, not named a mask
    (layer,) = viewer_model.open(tmp_path / "cells.tif", plugin=PLUGIN)
    assert type(layer).__name__ == "Image"


def test_reading_a_slide_imports_neither_torch_nor_scipy_ndimage_nor_the_widgets():
    script = (
        "import sys, json\n"
        "from slide_unet.napari.reader import read_slide_layers\n"
        f"read_slide_layers({str(SAMPLE)!r})\n"
        "print(json.dumps(sorted(m for m in ('torch', 'scipy.ndimage', 'slide_unet.napari.jobs', "
        "'slide_unet.napari.segment_widget', 'napari', 'qtpy', "
        "'slide_unet.core.inference.segment') if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"not an image at all", b"II*\x00" + b"\x00" * 4],
    ids=["empty", "text", "broken-tiff-header"],
)
def test_get_reader_returns_none_for_files_it_cannot_read(tmp_path, content):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    assert napari_reader.napari_get_reader(str(path)) is None


def test_get_reader_returns_none_for_other_extensions_and_several_files(tmp_path):
    assert napari_reader.napari_get_reader(str(tmp_path / "table.csv")) is None
    assert napari_reader.napari_get_reader([str(SAMPLE), str(SAMPLE)]) is None
    assert napari_reader.napari_get_reader(str(tmp_path / "missing.tif")) is None


def test_headless_open_of_a_flat_slide_builds_and_caches_its_overviews(viewer_model, flat_slide):
    (layer,) = viewer_model.open(flat_slide, plugin=PLUGIN)
    assert layer.multiscale
    assert [d.shape[:2] for d in layer.data] == [(1536, 2048), (768, 1024), (384, 512), (192, 256)]
    with slide.open_slide(flat_slide) as reopened:
        assert not reopened.needs_overviews
        assert len(reopened.levels) == 4
    lowest = np.asarray(layer.data[-1])
    full = tifffile.imread(flat_slide).astype(float)
    expected = full.reshape(192, 8, 256, 8, 3).mean(axis=(1, 3))
    assert np.abs(lowest - expected).max() <= 2


@pytest.mark.gui
def test_sample_data_opens_image_and_expert_mask_in_a_real_viewer(viewer):
    viewer.open_sample(PLUGIN, "kidney_pas")
    kinds = {type(layer).__name__ for layer in viewer.layers}
    assert kinds == {"Image", "Labels"}
    labels = next(layer for layer in viewer.layers if type(layer).__name__ == "Labels")
    image = next(layer for layer in viewer.layers if type(layer).__name__ == "Image")
    np.testing.assert_allclose(labels.scale, image.scale)
    mask = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert set(np.unique(mask)) == {0, 1}


@pytest.mark.gui
@pytest.mark.viewer(show=True)  # a hidden canvas renders black here
def test_flat_slide_fills_in_while_overviews_build_in_the_background(viewer, qtbot, flat_slide):
    (layer,) = viewer.open(flat_slide, plugin=PLUGIN)
    cache = overviews.OverviewCache.for_slide(slide.open_slide(flat_slide))
    qtbot.waitUntil(lambda: cache.complete, timeout=30_000)

    def shows_the_slide() -> bool:
        # The synthetic slide's blue channel is 200 everywhere: once the
        # overview is in, the rendered canvas shows it.
        blue = viewer.screenshot(canvas_only=True, flash=False)[..., 2].astype(int)
        return (np.abs(blue - 200) <= 2).mean() > 0.2

    qtbot.waitUntil(shows_the_slide, timeout=10_000)
    # The worker's finished signal swaps the cache in; under load it can be
    # delivered after the live levels have already drawn the slide.
    qtbot.waitUntil(lambda: not isinstance(layer.data[-1], overviews.LiveLevel), timeout=10_000)


def test_a_damaged_mask_store_shows_its_intact_edits_and_says_what_was_lost(
    viewer, tmp_path
) -> None:
    from slide_unet.core.errors import MaskStoreWarning
    from slide_unet.core.masks.store import MaskStore

    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, np.full((2048, 2048), 200, np.uint8), tile=(256, 256))
    store = MaskStore.for_slide(path, (2048, 2048), None)
    edit = np.zeros((2048, 2048), np.uint8)
    edit[100:300, 100:300] = 1
    edit[-300:-100, -300:-100] = 1
    store.write(0, 0, edit, edited=True)
    chunks = sorted(p for p in (store.path / "0" / "c").rglob("*") if p.is_file())
    chunks[-1].write_bytes(b"damaged on disk")

    with pytest.warns(MaskStoreWarning, match="damaged"):
        layers = viewer.open(path, plugin=PLUGIN)
    restored = [layer for layer in layers if layer.name.endswith("mask (autosaved)")]
    assert len(restored) == 1
    shown = np.asarray(restored[0].data[:, :])
    assert shown[100:300, 100:300].all()  # the intact edit is shown
    assert not shown[1024:, 1024:].any()  # the damaged chunk reads as empty
    assert (store.path.parent / f"{store.path.name}.damaged").is_dir()


def _qupath_geojson(path: Path) -> dict:
    """A QuPath-style export (pixel-edge rings, classes) of two classes, written to ``path``."""

    def feature(x0, y0, x1, y1, name):
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return {
            "type": "Feature",
            "id": f"{name}-{x0}-{y0}",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": name}},
        }

    data = {
        "type": "FeatureCollection",
        "features": [
            feature(100, 200, 400, 500, "Glomerulus"),
            feature(1500, 1600, 1800, 1700, "Glomerulus"),
            feature(900, 50, 1000, 90, "Tumor"),
        ],
    }
    path.write_text(json.dumps(data))
    return data


def _expected_geojson_labels(shape: tuple[int, int]) -> np.ndarray:
    expected = np.zeros(shape, np.uint8)
    expected[200:500, 100:400] = 1
    expected[1600:1700, 1500:1800] = 1
    expected[50:90, 900:1000] = 2
    return expected


def test_a_qupath_geojson_beside_its_slide_opens_lined_up_with_it(viewer, tmp_path):
    import shutil

    slide_path = tmp_path / "biopsy.ome.tif"
    shutil.copy(SAMPLE, slide_path)
    geojson = tmp_path / "biopsy.geojson"
    _qupath_geojson(geojson)
    (image, *_) = viewer.open(slide_path, plugin=PLUGIN)
    (layer,) = viewer.open(geojson, plugin=PLUGIN)
    assert type(layer).__name__ == "Labels"
    assert layer.name == "biopsy.geojson [1 Glomerulus, 2 Tumor]"
    assert not layer.multiscale
    assert tuple(layer.data.shape) == (2048, 2048)
    np.testing.assert_array_equal(np.asarray(layer.data), _expected_geojson_labels((2048, 2048)))
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    np.testing.assert_allclose(layer.extent.world, image.extent.world)
    assert layer.metadata["mpp"] == pytest.approx(0.5)
    assert layer.metadata["classes"] == {1: "Glomerulus", 2: "Tumor"}


def test_a_big_slides_geojson_opens_multiscale_each_level_drawn_to_scale(
    viewer, tmp_path, monkeypatch
):
    import shutil

    monkeypatch.setattr(napari_reader, "GEOJSON_OVERVIEW", 512)
    shutil.copy(SAMPLE, tmp_path / "biopsy.ome.tif")
    geojson = tmp_path / "biopsy.geojson"
    _qupath_geojson(geojson)
    (layer,) = viewer.open(geojson, plugin=PLUGIN)
    assert layer.multiscale
    assert [tuple(level.shape) for level in layer.data] == [(2048, 2048), (1024, 1024), (512, 512)]
    expected = _expected_geojson_labels((2048, 2048))
    np.testing.assert_array_equal(np.asarray(layer.data[0]), expected)
    np.testing.assert_array_equal(np.asarray(layer.data[2]), expected[2::4, 2::4])
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))


def test_a_geojson_without_its_slide_beside_it_says_how_to_open_it(viewer, errors, tmp_path):
    geojson = tmp_path / "alone.geojson"
    _qupath_geojson(geojson)
    assert viewer.open(geojson, plugin=PLUGIN) == []
    assert len(viewer.layers) == 0
    assert len(errors) == 1
    assert "no slide named alone" in errors[0]
    assert "Score or Review" in errors[0]
    assert "slide-unet export alone.geojson --image" in errors[0]

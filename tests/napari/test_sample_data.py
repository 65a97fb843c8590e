"""Tests of the bundled sample slide, its expert mask and the npe2 sample function."""

from __future__ import annotations

import importlib.util
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from slide_unet.core.masks.rle import rle_decode
from slide_unet.core.masks.rle_csv import read_rle_csv
from slide_unet.napari import sample_data

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_ROOT / "sample_data"
IMAGE = SAMPLE_DIR / "kidney_pas.ome.tif"
MASK = SAMPLE_DIR / "kidney_pas_mask.ome.tif"
CSV = SAMPLE_DIR / "kidney_pas_mask.csv"
#: Must match SAMPLE_TILES in scripts/make_sample_data.py (row-major 2x2 mosaic).
SAMPLE_TILES = ("10063", "10149", "10172", "10210")


def _ome_pixels(tif: tifffile.TiffFile) -> dict[str, str]:
    root = ET.fromstring(tif.ome_metadata)
    pixels = next(el for el in root.iter() if el.tag.endswith("}Pixels"))
    return dict(pixels.attrib)


def test_files_exist() -> None:
    for path in (IMAGE, MASK, CSV, SAMPLE_DIR / "README.md"):
        assert path.is_file(), path
    # Small enough to ship in the wheel.
    assert IMAGE.stat().st_size < 5e6


def test_readme_lists_the_tiles() -> None:
    text = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    for stem in SAMPLE_TILES:
        assert stem in text
    assert "10.17632/k7nvtgn2x6.3" in text
    assert "CC BY 4.0" in text


def test_script_tiles_match() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_sample_data", REPO_ROOT / "scripts" / "make_sample_data.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.SAMPLE_TILES == SAMPLE_TILES


def test_image_pyramid_and_pixel_size() -> None:
    with tifffile.TiffFile(IMAGE) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.axes == "YXS"
        assert series.dtype == np.uint8
        assert [level.shape for level in series.levels] == [
            (2048 >> k, 2048 >> k, 3) for k in range(4)
        ]
        page = tif.pages[0]
        assert page.is_tiled
        assert (page.tilelength, page.tilewidth) == (256, 256)
        assert page.compression == tifffile.COMPRESSION.JPEG
        pixels = _ome_pixels(tif)
        data = series.asarray()
    assert float(pixels["PhysicalSizeX"]) == 0.5
    assert float(pixels["PhysicalSizeY"]) == 0.5
    assert pixels["PhysicalSizeXUnit"] == pixels["PhysicalSizeYUnit"] == "µm"
    assert data.shape == (2048, 2048, 3)
    assert data.std() > 10  # a real image, not blank


def test_mask_tiff_equals_rle_csv() -> None:
    with tifffile.TiffFile(MASK) as tif:
        series = tif.series[0]
        assert series.axes == "YX"
        assert [level.shape for level in series.levels] == [(2048 >> k,) * 2 for k in range(4)]
        assert float(_ome_pixels(tif)["PhysicalSizeX"]) == 0.5
        mask = series.asarray()
        overview = series.levels[1].asarray()
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    assert set(np.unique(overview)) <= {0, 1}
    header = CSV.read_text(encoding="utf-8").splitlines()[0]
    assert header == "id,predicted"
    np.testing.assert_array_equal(rle_decode(read_rle_csv(CSV, "kidney_pas"), mask.shape), mask)


def test_mask_equals_expert_masks(shared_data: Path) -> None:
    folder = shared_data / "glomeruli" / "bueno_pas"
    mask = tifffile.imread(MASK)
    image = tifffile.imread(IMAGE)
    for i, stem in enumerate(SAMPLE_TILES):
        row, col = divmod(i, 2)
        window = np.s_[row * 1024 : (row + 1) * 1024, col * 1024 : (col + 1) * 1024]
        expected = np.asarray(Image.open(folder / "masks" / f"{stem}.png").convert("RGB"))
        np.testing.assert_array_equal(mask[window], expected[..., 0] > 0, err_msg=stem)
        # The image is the same tile, up to JPEG loss.
        original = np.asarray(Image.open(folder / "images" / f"{stem}.png").convert("RGB"))
        error = np.abs(image[window].astype(np.int16) - original).mean()
        assert error < 5, stem


# --- the npe2 sample-data function -----------------------------------------------


def test_sample_data_dir() -> None:
    folder = sample_data.sample_data_dir()
    assert (folder / "kidney_pas.ome.tif").resolve() == IMAGE.resolve()


def test_kidney_pas_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def read_slide_layers(path: str) -> list[tuple[Any, dict[str, Any], str]]:
        calls.append(path)
        return [(["level0"], {"name": "kidney_pas", "scale": (0.5, 0.5)}, "image")]

    fake = types.ModuleType("slide_unet.napari.reader")
    fake.read_slide_layers = read_slide_layers  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "slide_unet.napari.reader", fake)

    layers = sample_data.kidney_pas_sample()
    assert [Path(p).resolve() for p in calls] == [IMAGE.resolve()]
    assert len(layers) == 2
    assert layers[0][2] == "image"
    data, kwargs, kind = layers[1]
    assert kind == "labels"
    assert kwargs == {"name": "kidney_pas expert mask", "scale": (0.5, 0.5), "opacity": 0.5}
    assert data.shape == (2048, 2048)
    assert data.dtype == np.uint8


def test_sample_module_is_napari_free() -> None:
    source = Path(sample_data.__file__).read_text(encoding="utf-8")
    top_level = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top_level if "napari" in line or "qt" in line.lower()]


def test_kidney_pas_sample_with_real_reader() -> None:
    reader = pytest.importorskip("slide_unet.napari.reader")
    if not hasattr(reader, "read_slide_layers"):
        pytest.skip("slide_unet.napari.reader.read_slide_layers not written yet")
    layers = sample_data.kidney_pas_sample()
    assert [layer[2] for layer in layers][-1] == "labels"
    assert "image" in [layer[2] for layer in layers]
    image_kwargs, mask_kwargs = layers[0][1], layers[-1][1]
    assert tuple(mask_kwargs["scale"]) == tuple(image_kwargs.get("scale", (0.5, 0.5)))[-2:]
    if "units" in image_kwargs:
        assert tuple(mask_kwargs["units"]) == tuple(image_kwargs["units"])[-2:]

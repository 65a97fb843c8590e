"""Tests of the cached overview levels of large single-level slides.

Thresholds and band sizes are shrunk so that a slide of a couple of megapixels
behaves like a 30,000 x 45,000 one.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from slide_unet import open_slide
from slide_unet.core.slide import overviews, tiff_level
from slide_unet.core.slide import slide as slide_module
from slide_unet.core.slide.overviews import OverviewCache
from slide_unet.core.slide.tiff_level import TiffLevelReader

BAND_ROWS = 256
SMALLEST_SIDE = 256


@pytest.fixture(autouse=True)
def small_overviews(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder, and overview sizes scaled down for small slides."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SLIDE_UNET_CACHE_DIR", str(cache))
    monkeypatch.setattr(slide_module, "OVERVIEW_THRESHOLD", 1000)
    monkeypatch.setattr(overviews, "SMALLEST_SIDE", SMALLEST_SIDE)
    monkeypatch.setattr(overviews, "BAND_ROWS", BAND_ROWS)
    monkeypatch.setattr(overviews, "CHUNK_SIDE", 128)
    # Dask chunks no taller than a band, so each tile is decoded once per build.
    monkeypatch.setattr(tiff_level, "TARGET_CHUNK_SIDE", 256)
    return cache / "overviews"


def reference_halve(image: np.ndarray) -> np.ndarray:
    """2x2 area average in float, the last row/column repeated for odd sizes."""
    data = image.astype(np.float64)
    if data.shape[0] % 2:
        data = np.concatenate([data, data[-1:]], axis=0)
    if data.shape[1] % 2:
        data = np.concatenate([data, data[:, -1:]], axis=1)
    return (data[0::2, 0::2] + data[1::2, 0::2] + data[0::2, 1::2] + data[1::2, 1::2]) / 4


def assert_halves(smaller: np.ndarray, larger: np.ndarray) -> None:
    """``smaller`` is the 2x2 average of ``larger``, to within rounding."""
    expected = reference_halve(larger)
    assert smaller.shape == expected.shape
    error = np.abs(smaller.astype(np.float64) - expected)
    assert error.max() <= 1, f"off by up to {error.max()}"
    assert error.mean() < 0.5


def flat_rgb(
    slides: SimpleNamespace, tmp_path: Path, height: int = 1100, width: int = 1300, **options: Any
) -> Path:
    """A flat, tiled RGB slide at 0.5 µm/px, over the (shrunk) overview threshold."""
    image = slides.rgb_image(height, width, seed=height + width)
    options.setdefault("compression", None)
    options.setdefault("resolution", (1e4 / 0.5, 1e4 / 0.5))
    options.setdefault("resolutionunit", "CENTIMETER")
    return slides.write_tiled(tmp_path / "flat.tif", image, tile=256, **options)


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the overviews were built again")


# -- when overviews are needed -----------------------------------------------------


def test_large_flat_slide_needs_overviews(slides, tmp_path: Path, small_overviews: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path, 1500, 2100, compression="zlib")) as slide:
        assert slide.is_flat_and_large
        assert slide.needs_overviews
        assert len(slide.levels) == 1
        cache = slide.overview_cache
        assert cache is not None
        assert not cache.complete
        assert cache.path.parent == small_overviews
        assert cache.path.name.startswith("flat-")
        assert cache.path.name.endswith(".ome.zarr")
        # 2100 -> 1050 -> 525 -> 263 -> 132: halving stops once a side fits in 256.
        assert cache.shapes == [
            (750, 1050, 3),
            (375, 525, 3),
            (188, 263, 3),
            (94, 132, 3),
        ]
    assert not small_overviews.exists()  # opening writes nothing


def test_small_or_pyramidal_slides_need_no_overviews(slides, tmp_path: Path) -> None:
    small = slides.write_tiled(
        tmp_path / "small.tif", slides.rgb_image(900, 1000), compression="zlib"
    )
    pyramid = slides.write_ome_pyramid(
        tmp_path / "p.ome.tif", slides.rgb_image(1500, 2100), levels=2
    )
    for path in (small, pyramid):
        with open_slide(path) as slide:
            assert not slide.needs_overviews
            assert slide.overview_cache is None
            assert slide.build_overviews() is False
            assert len(slide.levels) == (2 if path == pyramid else 1)


# -- the build ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width"), [(1500, 2100), (1199, 1501)], ids=["even", "odd-sizes"]
)
def test_build_overviews_writes_2x2_averages_of_each_level(
    slides, tmp_path: Path, height: int, width: int
) -> None:
    path = flat_rgb(slides, tmp_path, height, width)
    full = tifffile.imread(path)
    progress: list[tuple[int, int]] = []
    with open_slide(path) as slide:
        assert slide.build_overviews(progress=lambda done, total: progress.append((done, total)))
        assert not slide.needs_overviews
        levels = [np.asarray(level.compute()) for level in slide.levels]
        shapes = [level.shape for level in slide.levels]
        assert slide.downsamples[1] == pytest.approx(2, rel=1e-3)
        assert slide.level_mpp(1) == pytest.approx(2 * 0.5, rel=1e-3)
    bands = -(-height // BAND_ROWS)
    assert progress == [(i, bands) for i in range(1, bands + 1)]
    assert len(levels) > 2
    assert shapes[0] == (height, width, 3)
    np.testing.assert_array_equal(levels[0], full)
    for k in range(1, len(levels)):
        assert levels[k].dtype == np.uint8
        assert shapes[k] == (-(-shapes[k - 1][0] // 2), -(-shapes[k - 1][1] // 2), 3)
        assert_halves(levels[k], levels[k - 1])
    assert max(shapes[-1][:2]) <= SMALLEST_SIDE < max(shapes[-2][:2])


def test_uint16_gray_slide_gets_gray_uint16_overviews(slides, tmp_path: Path) -> None:
    image = slides.gray_image(1100, 1299, "uint16", seed=3)
    path = slides.write_striped(tmp_path / "gray16.tif", image, rowsperstrip=16)
    with open_slide(path) as slide:
        assert slide.needs_overviews
        assert slide.build_overviews()
        levels = [np.asarray(level.compute()) for level in slide.levels]
        cache_path = slide.overview_cache.path
    assert [level.shape for level in levels] == [(1100, 1299), (550, 650), (275, 325), (138, 163)]
    np.testing.assert_array_equal(levels[0], image)
    for k in range(1, len(levels)):
        assert levels[k].dtype == np.uint16
        assert_halves(levels[k], levels[k - 1])
    group = zarr.open_group(cache_path, mode="r")
    multiscales = group.attrs["ome"]["multiscales"][0]
    assert [axis["name"] for axis in multiscales["axes"]] == ["y", "x"]
    assert group["1"].shape == (550, 650)
    assert group["1"].dtype == np.uint16


def test_build_streams_bands_and_decodes_each_tile_once(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boxes: list[tuple[slice, ...]] = []
    original = TiffLevelReader.read

    def recording_read(self: TiffLevelReader, box: tuple[slice, ...]) -> np.ndarray:
        boxes.append(box)
        return original(self, box)

    monkeypatch.setattr(TiffLevelReader, "read", recording_read)
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        chunks = slide.levels[0].npartitions
        slide.build_overviews()
    # Never the whole slide at once: no read is taller than a band...
    assert max(box[0].stop - box[0].start for box in boxes) <= BAND_ROWS
    # ... and no tile is decoded twice.
    assert len(boxes) == chunks
    assert len({tuple((s.start, s.stop) for s in box) for box in boxes}) == chunks


# -- the cache ----------------------------------------------------------------------


def test_reopening_uses_the_cache_without_building(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = flat_rgb(slides, tmp_path)
    with open_slide(path) as slide:
        slide.build_overviews()
        built = [np.asarray(level.compute()) for level in slide.levels[1:]]
    monkeypatch.setattr(OverviewCache, "build", _refuse)
    monkeypatch.setattr(OverviewCache, "iter_build", _refuse)
    with open_slide(path) as slide:
        assert not slide.needs_overviews
        assert len(slide.levels) == 1 + len(built)
        for level, expected in zip(slide.levels[1:], built, strict=True):
            np.testing.assert_array_equal(level.compute(), expected)
        assert slide.build_overviews() is True  # nothing to do
        assert len(slide.levels) == 1 + len(built)


def test_modified_file_gets_a_new_cache_key(slides, tmp_path: Path) -> None:
    path = flat_rgb(slides, tmp_path)
    with open_slide(path) as slide:
        slide.build_overviews()
        old_cache = slide.overview_cache.path
        old_key = overviews.slide_key(path)

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched
    assert overviews.slide_key(path) != old_key
    with open_slide(path) as slide:
        assert slide.needs_overviews
        assert len(slide.levels) == 1
        assert slide.overview_cache.path != old_cache

    path.write_bytes(path.read_bytes() + b"\0" * 16)  # rewritten, another size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    with open_slide(path) as slide:
        assert slide.needs_overviews
        assert slide.overview_cache.path != old_cache
    assert old_cache.is_dir()  # the old entry is left alone, not reused


def test_same_file_keeps_its_key(slides, tmp_path: Path) -> None:
    path = flat_rgb(slides, tmp_path)
    assert overviews.slide_key(path) == overviews.slide_key(Path(str(path)))
    with open_slide(path) as first, open_slide(path) as second:
        assert first.overview_cache.path == second.overview_cache.path


def test_cancelling_leaves_no_cache_and_no_temporary_folder(
    slides, tmp_path: Path, small_overviews: Path
) -> None:
    progress: list[tuple[int, int]] = []
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        done = slide.build_overviews(
            progress=lambda done, total: progress.append((done, total)),
            cancelled=lambda: bool(progress),
        )
        assert done is False
        assert progress == [(1, slide.overview_cache.band_count())]
        assert slide.needs_overviews
        assert len(slide.levels) == 1
        assert not slide.overview_cache.path.exists()
    leftovers = list(small_overviews.iterdir()) if small_overviews.exists() else []
    assert leftovers == []
    assert not list(small_overviews.parent.rglob("*.tmp-*"))


def test_build_after_a_cancel_completes(slides, tmp_path: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        assert slide.build_overviews(cancelled=lambda: True) is False
        assert slide.build_overviews() is True
        assert len(slide.levels) > 1


def test_closing_the_build_generator_cancels_it(
    slides, tmp_path: Path, small_overviews: Path
) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        steps = slide.overview_cache.iter_build(slide.levels[0])
        assert next(steps) == (1, slide.overview_cache.band_count())
        prefix = slide.overview_cache.path.name + ".tmp-"
        assert [p.name.startswith(prefix) for p in small_overviews.iterdir()] == [True]
        steps.close()
        assert list(small_overviews.iterdir()) == []
        assert not slide.overview_cache.complete


def test_cache_is_ome_zarr_0_5_with_scale_transforms(slides, tmp_path: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        slide.build_overviews()
        cache = slide.overview_cache
        shapes = cache.shapes
    group = zarr.open_group(cache.path, mode="r")
    assert group.metadata.zarr_format == 3
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    (multiscale,) = ome["multiscales"]
    axes = multiscale["axes"]
    assert [axis["name"] for axis in axes] == ["c", "y", "x"]
    assert [axis["type"] for axis in axes] == ["channel", "space", "space"]
    assert all(axis.get("unit") == "micrometer" for axis in axes[1:])
    datasets = multiscale["datasets"]
    assert [d["path"] for d in datasets] == [str(k) for k in range(1, len(shapes) + 1)]
    for k, (dataset, shape) in enumerate(zip(datasets, shapes, strict=True), start=1):
        (transform,) = dataset["coordinateTransformations"]
        assert transform["type"] == "scale"
        assert transform["scale"] == pytest.approx([1.0, 0.5 * 2**k, 0.5 * 2**k])
        array = group[dataset["path"]]
        assert array.shape == (3, *shape[:2])  # CYX on disk
        assert array.dtype == np.uint8


def test_cache_without_pixel_size_has_unitless_scales(slides, tmp_path: Path) -> None:
    path = flat_rgb(slides, tmp_path, resolution=None, resolutionunit=None, metadata=None)
    with open_slide(path) as slide:
        assert slide.mpp is None
        slide.build_overviews()
        cache_path = slide.overview_cache.path
    multiscale = zarr.open_group(cache_path, mode="r").attrs["ome"]["multiscales"][0]
    assert all("unit" not in axis for axis in multiscale["axes"])
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales[0] == [1.0, 2.0, 2.0]


def test_stale_or_foreign_cache_folder_is_not_complete(slides, tmp_path: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        cache = slide.overview_cache
        cache.path.mkdir(parents=True)  # an empty folder (say, a crashed old version)
        assert not cache.complete
        assert slide.needs_overviews
        assert slide.build_overviews()
        assert cache.complete


# -- live levels ----------------------------------------------------------------------

KEYS = [
    (slice(None), slice(None)),
    (slice(10, 200), slice(33, 301)),
    (slice(0, 400, 3), slice(5, None, 2)),
    (Ellipsis,),
    (5,),
    (-1,),
    (np.int64(7), Ellipsis),
    (Ellipsis, 1),
    (slice(100, 110), 20, 2),
    (slice(None), slice(None), slice(0, 2)),
    (slice(700, 800),),  # past the end of the first level
]


def test_live_levels_read_zeros_before_the_build_and_pixels_after(slides, tmp_path: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        cache = slide.overview_cache
        live = cache.live_levels()
        assert [level.shape for level in live] == cache.shapes
        assert all(level.dtype == np.uint8 for level in live)
        assert all(level.ndim == 3 for level in live)
        assert len(live[0]) == cache.shapes[0][0]
        for level in live:
            before = np.asarray(level)
            assert before.shape == level.shape
            assert not before.any()

        slide.build_overviews()
        built = [np.asarray(level.compute()) for level in slide.levels[1:]]
    for level, expected in zip(live, built, strict=True):
        np.testing.assert_array_equal(np.asarray(level), expected)
        np.testing.assert_array_equal(level[...], expected)


def test_live_levels_support_napari_style_keys(slides, tmp_path: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        live = slide.overview_cache.live_levels()[0]
        before = [live[key] for key in KEYS]
        slide.build_overviews()
        expected = np.asarray(slide.levels[1].compute())
    for key, zeros in zip(KEYS, before, strict=True):
        assert zeros.shape == expected[key].shape, key
        assert zeros.dtype == np.uint8
        assert not zeros.any(), key
        after = live[key]
        assert after.shape == expected[key].shape, key
        np.testing.assert_array_equal(after, expected[key], err_msg=repr(key))


def test_live_levels_show_a_running_build_band_by_band(slides, tmp_path: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        cache = slide.overview_cache
        live = cache.live_levels()[0]
        steps = cache.iter_build(slide.levels[0])
        next(steps)  # one band of 256 rows: 128 rows of the first overview
        rows = cache.rows_done[0]
        assert 0 < rows < cache.shapes[0][0]
        partial = np.asarray(live)
        assert partial[rows:].max() == 0
        assert partial[:rows].any()
        for _ in steps:
            pass
        assert cache.complete
        final = np.asarray(live)
    np.testing.assert_array_equal(partial[:rows], final[:rows])


def test_every_live_level_fills_in_band_by_band_not_only_the_largest(
    slides, tmp_path: Path
) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        cache = slide.overview_cache
        live = cache.live_levels()
        assert len(live) >= 2
        lowest = live[-1]
        seen = []
        for done, total in cache.iter_build(slide.levels[0]):
            if done < total:
                seen.append(int(np.asarray(lowest).any(axis=(1, 2)).sum()))
        assert cache.complete
    # The zoomed-out view gains rows while the build runs, band after band.
    assert seen[0] > 0
    assert all(b > a for a, b in itertools.pairwise(seen))


def test_live_level_of_a_gray_slide_is_2d(slides, tmp_path: Path) -> None:
    image = slides.gray_image(1100, 1299, "uint16", seed=4)
    path = slides.write_striped(tmp_path / "gray16.tif", image, rowsperstrip=16)
    with open_slide(path) as slide:
        live = slide.overview_cache.live_levels()
        assert live[0].shape == (550, 650)
        assert live[0][3:9, 4].shape == (6,)
        slide.build_overviews()
        expected = np.asarray(slide.levels[1].compute())
    np.testing.assert_array_equal(live[0][3:9, 4], expected[3:9, 4])
    assert live[0][-1, -1] == expected[-1, -1]


# -- regressions ---------------------------------------------------------------------


def test_deep_pyramids_stay_right_when_levels_outnumber_band_rows(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overviews, "SMALLEST_SIDE", 64)
    monkeypatch.setattr(overviews, "BAND_ROWS", 16)  # 5 levels need bands of 32 rows
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        assert len(slide.overview_cache.shapes) == 5
        slide.build_overviews()
        levels = [np.asarray(level.compute()) for level in slide.levels]
    for k in range(1, len(levels)):
        assert_halves(levels[k], levels[k - 1])


def test_live_levels_read_negative_steps(slides, tmp_path: Path) -> None:
    with open_slide(flat_rgb(slides, tmp_path)) as slide:
        live = slide.overview_cache.live_levels()[0]
        slide.build_overviews()
        expected = np.asarray(slide.levels[1].compute())
    np.testing.assert_array_equal(live[::-1], expected[::-1])

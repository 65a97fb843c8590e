"""Tests of the streamed object table (slide_unet.core.objects.measure and .table)."""

from __future__ import annotations

import csv
import math
import sys
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage
from scipy.spatial import ConvexHull

import slide_unet
from slide_unet.core.errors import Cancelled, InputError
from slide_unet.core.masks.io import write_mask
from slide_unet.core.objects.measure import measure
from slide_unet.core.objects.table import ObjectTable, column_names

SQRT2 = math.sqrt(2)


def square_perimeter(n: int) -> float:
    """Crofton (4 directions) perimeter of an n x n square, from its 2 x 2 windows by hand:
    4 corner windows, then n - 1 windows along each side."""
    return math.pi / 2 + math.pi / (2 * SQRT2) + (n - 1) * (math.pi / 2 + math.pi / SQRT2)


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def blobs(shape: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """Ellipses of many sizes, some touching, and scattered single pixels."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=bool)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for _ in range(n):
        y, x, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(1, 20)
        mask |= ((yy - y) / (r * rng.uniform(0.3, 1))) ** 2 + ((xx - x) / r) ** 2 <= 1
    mask |= rng.random(shape) > 0.998
    return mask


def corner_hull_area(pixels: np.ndarray) -> float:
    """Area of the convex hull of the corners of the pixels ``(rows, cols)``, directly."""
    ys, xs = pixels
    corners = np.concatenate([np.column_stack([ys + a, xs + b]) for a in (0, 1) for b in (0, 1)])
    return ConvexHull(corners).volume


# --- hand-computable shapes ---------------------------------------------------------------------


def test_square_has_its_area_centroid_box_perimeter_and_solidity_one() -> None:
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:6, 3:7] = 1
    table = measure(mask, mpp=0.5)
    assert len(table) == 1
    row = next(table.rows())
    assert row["id"] == 1
    assert row["area_um2"] == 16 * 0.25
    assert row["pixels"] == 16
    assert (row["centroid_y_um"], row["centroid_x_um"]) == (3.5 * 0.5, 4.5 * 0.5)
    box = [row[f"bbox_{k}_um"] for k in ("y0", "x0", "y1", "x1")]
    assert box == [1.0, 1.5, 3.0, 3.5]
    assert row["solidity"] == 1.0
    assert row["perimeter_um"] == pytest.approx(square_perimeter(4) * 0.5)
    assert row["equivalent_diameter_um"] == pytest.approx(math.sqrt(4 * 4.0 / math.pi))
    assert math.isnan(row["mean_probability"])


def test_l_shape_solidity_is_its_area_over_the_exact_hull_of_its_pixel_squares() -> None:
    # A 4 x 4 square less its top-right 2 x 2: the hull of the pixel squares is the
    # 4 x 4 square less the triangle (0, 2), (0, 4), (2, 4): 16 - 2 = 14.
    mask = np.zeros((6, 6), dtype=bool)
    mask[1:3, 1:3] = True
    mask[3:5, 1:5] = True
    table = measure(mask)
    assert table["pixels"].tolist() == [12]
    assert table["solidity"][0] == pytest.approx(12 / 14, abs=1e-12)


def test_disc_has_the_equivalent_diameter_of_its_diameter_and_perimeter_near_2_pi_r() -> None:
    table = measure(disc((240, 260), (120, 130), 50), mpp=2.0)
    assert len(table) == 1
    assert table["equivalent_diameter_um"][0] == pytest.approx(100 * 2.0, rel=0.01)
    assert table["perimeter_um"][0] == pytest.approx(2 * math.pi * 50 * 2.0, rel=0.02)
    assert 0.97 < table["solidity"][0] < 1
    assert table["centroid_y_um"][0] == pytest.approx(240.0)
    assert table["centroid_x_um"][0] == pytest.approx(260.0)


def test_without_a_pixel_size_the_columns_are_in_pixels() -> None:
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[1:3, 1:4] = 1
    table = measure(mask)
    assert table.names == column_names("px")
    assert table.unit == "px"
    assert table["area_px2"].tolist() == [6]
    assert table["bbox_x1_px"].tolist() == [4]
    assert table.total_area == 6


def test_empty_mask_gives_an_empty_table_with_every_column() -> None:
    table = measure(np.zeros((30, 40), dtype=np.uint8), mpp=1.0, block=8)
    assert len(table) == 0
    assert table.names == column_names("um")
    assert all(len(v) == 0 for v in table.columns.values())


def test_instance_ids_are_foreground_and_objects_are_8_connected_components() -> None:
    mask = np.zeros((8, 8), dtype=np.uint16)
    mask[1:3, 1:3] = 5
    mask[3, 3] = 9  # touches the first by a corner: one object
    mask[6, 6] = 5  # the same id, apart: another object
    assert measure(mask)["pixels"].tolist() == [5, 1]


# --- across blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 3, 7, 16])
def test_objects_straddling_block_edges_are_measured_as_in_one_block(block: int) -> None:
    mask = disc((60, 70), (30, 35), 20)
    mask[5:50, 10:16] = True  # a bar crossing many blocks, joined to the disc
    mask[55, 0:70] = True  # a line along the whole width
    mask[np.arange(40), np.arange(40) + 30] = True  # a diagonal through block corners
    whole = measure(mask, mpp=0.5, block=4096)
    cut = measure(mask, mpp=0.5, block=block)
    assert len(cut) == len(whole) == 2
    for name in whole.names:
        np.testing.assert_allclose(cut[name], whole[name], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("block", [5, 32, 4096])
def test_many_objects_match_scikit_image_regionprops(block: int) -> None:
    skm = pytest.importorskip("skimage.measure")
    mask = blobs((300, 340), 60, seed=block)
    labels, n = ndimage.label(mask, np.ones((3, 3)))
    props = skm.regionprops(labels)
    table = measure(mask, block=block)
    assert len(table) == n
    np.testing.assert_array_equal(table["id"], [p.label for p in props])
    np.testing.assert_array_equal(table["pixels"], [p.area for p in props])
    np.testing.assert_allclose(table["centroid_y_px"], [p.centroid[0] for p in props])
    np.testing.assert_allclose(table["centroid_x_px"], [p.centroid[1] for p in props])
    for k, name in enumerate(("bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px")):
        np.testing.assert_array_equal(table[name], [p.bbox[k] for p in props])
    np.testing.assert_allclose(table["perimeter_px"], [p.perimeter_crofton for p in props])
    np.testing.assert_allclose(
        table["equivalent_diameter_px"], [p.equivalent_diameter_area for p in props]
    )
    hulls = [corner_hull_area(np.nonzero(labels == p.label)) for p in props]
    np.testing.assert_allclose(table["solidity"], table["pixels"] / np.array(hulls), rtol=1e-12)


def test_chunked_inputs_give_the_numpy_table() -> None:
    mask = blobs((200, 230), 30, seed=3).astype(np.uint8)
    expected = measure(mask, block=50)
    stored = zarr.create_array(
        zarr.storage.MemoryStore(), shape=mask.shape, chunks=(64, 64), dtype="u1"
    )
    stored[:] = mask
    for array in (da.from_array(mask, chunks=(40, 70)), stored):
        table = measure(array, block=50)
        for name in expected.names:
            np.testing.assert_allclose(table[name], expected[name], err_msg=name)


def test_mean_probability_is_each_objects_mean_over_its_pixels() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[1:4, 1:4] = 1
    mask[10:18, 5:15] = 1
    probabilities = np.linspace(0, 1, 400).reshape(20, 20)
    table = measure(mask, probabilities=probabilities, block=6)
    expected = [probabilities[1:4, 1:4].mean(), probabilities[10:18, 5:15].mean()]
    np.testing.assert_allclose(table["mean_probability"], expected)


def test_uint8_probabilities_are_divided_by_255_and_their_zeros_are_unknown() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[1:4, 1:4] = 1
    mask[10:18, 5:15] = 1
    mask[6:8, 17:19] = 1  # painted by hand: no probability known
    quantised = np.zeros((20, 20), np.uint8)
    quantised[1:4, 1:4] = 255
    quantised[10:18, 5:15] = np.arange(80).reshape(8, 10) + 150
    quantised[10, 5] = 0  # one pixel of it unknown: left out of the mean
    table = measure(mask, probabilities=quantised, block=6)
    known = quantised[10:18, 5:15][quantised[10:18, 5:15] > 0]
    # Numbered by first pixel: the square, the painted speck (row 6), the rectangle.
    np.testing.assert_allclose(table["mean_probability"], [1.0, np.nan, known.mean() / 255])
    with pytest.raises(InputError, match="float"):
        measure(mask, probabilities=quantised.astype(np.int32))


# --- files --------------------------------------------------------------------------------------


def test_pixel_size_comes_from_an_ome_tiff_mask_written_by_write_mask(tmp_path: Path) -> None:
    mask = np.zeros((64, 80), dtype=np.uint8)
    mask[10:20, 30:50] = 1
    path = write_mask(mask, tmp_path / "mask.ome.tif", mpp=0.25)
    table = measure(path)
    assert table.mpp == pytest.approx(0.25)
    assert table["area_um2"].tolist() == pytest.approx([200 * 0.0625])
    assert measure(path, mpp=2.0)["area_um2"].tolist() == [800.0]  # a given pixel size wins


def test_csv_reads_back_with_a_header_row_and_an_empty_missing_value(tmp_path: Path) -> None:
    mask = blobs((120, 150), 12, seed=5)
    table = measure(mask, mpp=0.5)
    path = table.write(tmp_path / "objects.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(column_names("um"))
    assert len(rows) == len(table)
    for name in table.names:
        if name == "mean_probability":
            assert {r[name] for r in rows} == {""}
        else:
            np.testing.assert_array_equal([float(r[name]) for r in rows], table[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["objects.csv"]  # no temporary left


def test_parquet_round_trip_keeps_types_and_pixel_size(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    table = measure(blobs((100, 100), 8, seed=7), mpp=0.5)
    read = pq.read_table(table.write(tmp_path / "objects.parquet"))
    assert read.column_names == list(table.names)
    assert read.column("id").to_pylist() == table["id"].tolist()
    np.testing.assert_array_equal(read.column("area_um2").to_numpy(), table["area_um2"])
    assert read.schema.metadata[b"slide_unet.mpp"] == b"0.5"


def test_parquet_without_pyarrow_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    table = measure(np.ones((3, 3), dtype=np.uint8))
    with pytest.raises(
        InputError, match=r"needs pyarrow: pip install 'napari-slide-unet\[parquet\]'"
    ):
        table.write(tmp_path / "objects.parquet")
    assert list(tmp_path.iterdir()) == []


# --- bad inputs, progress, cancel --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.zeros((2, 3, 4))}, r"must be 2-D .* got shape \(2, 3, 4\)"),
        ({"mask": np.zeros((0, 4))}, r"the mask is empty"),
        ({"mask": np.zeros((4, 4)), "probabilities": np.zeros((4, 5))}, r"\(4, 5\) do not match"),
        ({"mask": np.zeros((4, 4)), "mpp": -1.0}, r"mpp=-1.0 is not a usable pixel size"),
    ],
)
def test_bad_inputs_are_one_clear_error(kwargs: dict, message: str) -> None:
    mask = kwargs.pop("mask")
    with pytest.raises(InputError, match=message):
        measure(mask, **kwargs)


def test_unknown_table_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"unknown table format '.xlsx'; supported: .csv, .parquet"
    ):
        measure(np.ones((2, 2))).write(tmp_path / "objects.xlsx")


def test_progress_reaches_the_total_and_cancel_stops(tmp_path: Path) -> None:
    mask = blobs((50, 50), 5, seed=1)
    seen: list[tuple[int, int]] = []
    measure(mask, block=20, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 9) for k in range(1, 10)]
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        measure(mask, block=20, cancel=stop)


def test_public_api_exports_measure_and_the_table() -> None:
    assert slide_unet.measure is measure
    assert slide_unet.ObjectTable is ObjectTable

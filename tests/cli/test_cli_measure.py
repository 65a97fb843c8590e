"""Tests of ``slide-unet measure``, as a user runs it."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from slide_unet import cli
from slide_unet.core.masks.io import read_mask, write_mask
from slide_unet.core.objects.measure import measure

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
SAMPLE_IMAGE = SAMPLE / "kidney_pas.ome.tif"
SAMPLE_MASK = SAMPLE / "kidney_pas_mask.ome.tif"
SAMPLE_RLE = SAMPLE / "kidney_pas_mask.csv"

LINE = re.compile(
    r"^(?P<n>\d+) objects, total area (?P<area>[\d.e+]+) µm², measured in [\d.]+ s; "
    r"wrote (?P<out>.+)$"
)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_measure_writes_one_row_per_object_in_microns_and_says_how_many(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "objects.csv"
    assert cli.main(["measure", str(SAMPLE_MASK), "-o", str(out)]) == 0
    match = LINE.match(capsys.readouterr().out.strip())
    assert match is not None
    expected = measure(SAMPLE_MASK)
    rows = read_rows(out)
    assert int(match["n"]) == len(rows) == len(expected) > 0
    assert float(match["area"]) == pytest.approx(expected.total_area, rel=1e-5)
    assert [float(r["area_um2"]) for r in rows] == expected["area_um2"].tolist()
    assert expected.mpp == pytest.approx(0.5)


def test_rle_mask_takes_its_size_and_pixel_size_from_the_slide(tmp_path: Path, capsys) -> None:
    out = tmp_path / "objects.csv"
    argv = ["measure", str(SAMPLE_RLE), "--image", str(SAMPLE_IMAGE), "-o", str(out), "--json"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unit"] == "um"
    assert result["mpp"] == pytest.approx(0.5)
    assert result["output"] == str(out)
    expected = measure(read_mask(SAMPLE_MASK), mpp=0.5)
    assert result["objects"] == len(expected)
    assert result["total_area"] == pytest.approx(expected.total_area)
    assert [int(r["pixels"]) for r in read_rows(out)] == expected["pixels"].tolist()


def test_mpp_option_wins_and_without_any_pixel_size_the_table_is_in_pixels(
    tmp_path: Path, capsys
) -> None:
    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[5:15, 10:30] = 1
    png = write_mask(mask, tmp_path / "mask.png")  # no pixel size recorded
    out = tmp_path / "px.csv"
    assert cli.main(["measure", str(png), "-o", str(out)]) == 0
    assert "total area 200 px (no pixel size" in capsys.readouterr().out
    assert read_rows(out)[0]["area_px2"] == "200"
    assert cli.main(["measure", str(png), "--mpp", "2", "-o", str(out)]) == 0
    assert read_rows(out)[0]["area_um2"] == "800.0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "objects.xlsx"], "unknown table format '.xlsx'; supported: .csv, .parquet"),
        (["-o", "objects.csv", "--mpp", "0"], "--mpp=0.0 is not a usable pixel size"),
        (["-o", "objects.csv", "--image", str(SAMPLE_MASK.parent / "none.tif")], "none.tif"),
    ],
)
def test_bad_input_exits_1_with_one_line(tmp_path: Path, capsys, argv, message) -> None:
    argv = [a if not a.startswith("objects") else str(tmp_path / a) for a in argv]
    assert cli.main(["measure", str(SAMPLE_MASK), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("slide-unet measure: error: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_a_mask_of_another_size_than_the_slide_is_refused(tmp_path: Path, capsys) -> None:
    small = write_mask(np.ones((10, 10), dtype=np.uint8), tmp_path / "small.ome.tif", mpp=0.5)
    out = tmp_path / "objects.csv"
    assert cli.main(["measure", str(small), "--image", str(SAMPLE_IMAGE), "-o", str(out)]) == 1
    assert "mask shape (10, 10) does not match image" in capsys.readouterr().err
    assert not out.exists()


def test_measure_never_writes_over_its_mask(tmp_path: Path, capsys) -> None:
    rle = tmp_path / "mask.csv"
    shutil.copy(SAMPLE_RLE, rle)
    before = rle.read_bytes()
    argv = ["measure", str(rle), "--image", str(SAMPLE_IMAGE), "-o", str(rle)]
    assert cli.main(argv) == 1
    assert "would write over the input" in capsys.readouterr().err
    assert rle.read_bytes() == before


def test_a_mask_store_gives_each_object_its_kept_mean_probability(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slide_unet.core.masks.store import MaskStore
    from slide_unet.core.paths import MASKS_DIR_ENV

    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))
    mask = np.zeros((600, 700), np.uint8)
    mask[10:40, 10:50] = 1
    mask[300:380, 400:460] = 1
    quantised = np.zeros(mask.shape, np.uint8)
    quantised[10:40, 10:50] = 204  # 0.8
    quantised[300:380, 400:460] = 153  # 0.6
    store = MaskStore.for_key("measure-cli", mask.shape, 0.5)
    store.write(0, 0, mask)
    store.write_probability(0, 0, quantised)
    out = tmp_path / "objects.csv"
    assert cli.main(["measure", str(store.path), "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["probabilities"] is True
    rows = read_rows(out)
    assert [round(float(r["mean_probability"]), 6) for r in rows] == [0.8, 0.6]
    assert cli.main(["measure", str(store.path), "-o", str(out), "--no-probabilities"]) == 0
    assert [r["mean_probability"] for r in read_rows(out)] == ["", ""]
    assert "mean probabilities" not in capsys.readouterr().out


#: (y0, x0, side) in pixels: B ends on the tile line at 1024 px.
A, B, C, D, F = (100, 100, 5), (1004, 300, 20), (500, 500, 10), (200, 700, 40), (50, 900, 8)


def _squares(*squares: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros((1100, 1100), dtype=np.uint8)
    for y0, x0, side in squares:
        mask[y0 : y0 + side, x0 : x0 + side] = 1
    return mask


def _qupath(path: Path, classes: dict[str, list[tuple[int, int, int]]]) -> Path:
    features = []
    for name, squares in classes.items():
        for y0, x0, side in squares:
            ring = [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": {"objectType": "annotation", "classification": {"name": name}},
                }
            )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_review_writes_the_rows_in_the_review_docks_order_with_rank_and_reason(
    tmp_path: Path, capsys
) -> None:
    from slide_unet.core.objects.review import measure_for_review, review_queue

    pred = _squares(A, B, D, F)  # F is not in the truth; C is not in the prediction
    truth = _squares(A, B, C, D)
    pred_path = write_mask(pred, tmp_path / "pred.ome.tif", mpp=0.5)
    truth_path = write_mask(truth, tmp_path / "truth.ome.tif", mpp=0.5)
    out = tmp_path / "queue.csv"
    argv = ["measure", str(pred_path), "--review", "--truth", str(truth_path), "-o", str(out)]
    assert cli.main(argv) == 0
    said = capsys.readouterr().out
    assert "in review order (1 false positive, 1 miss, 1 cut by a tile edge, 2 small)" in said
    rows = read_rows(out)
    assert [r["review_reason"] for r in rows] == [
        "false positive",
        "miss",
        "cut by a tile edge",
        "small",
        "small",
    ]
    assert [int(r["review_rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["pixels"]) for r in rows] == [64, 100, 400, 25, 1600]
    assert float(rows[1]["bbox_y0_um"]) == C[0] * 0.5  # the miss, where the truth has it
    assert list(rows[0])[-2:] == ["review_rank", "review_reason"]
    # The dock's code path: the same order.
    table, truths, hit, found = measure_for_review(pred, truth, mpp=0.5)
    entries = review_queue(table, truth=truths, hit=hit, found=found)
    source = [truths if e.in_truth else table for e in entries]
    expected = [int(s["pixels"][e.row]) for s, e in zip(source, entries, strict=True)]
    assert [int(r["pixels"]) for r in rows] == expected


def test_review_without_truth_puts_the_least_sure_first_from_a_mask_store(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slide_unet.core.masks.store import MaskStore
    from slide_unet.core.paths import MASKS_DIR_ENV

    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))
    mask = _squares(A, C, D)
    quantised = np.zeros(mask.shape, np.uint8)
    for (y0, x0, side), value in zip((A, C, D), (250, 130, 200), strict=True):
        quantised[y0 : y0 + side, x0 : x0 + side] = value
    store = MaskStore.for_key("measure-review", mask.shape, 0.5)
    store.write(0, 0, mask)
    store.write_probability(0, 0, quantised)
    out = tmp_path / "queue.parquet" if _has_pyarrow() else tmp_path / "queue.csv"
    assert cli.main(["measure", str(store.path), "--review", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["review"]["low probability"] == 3
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    else:
        rows = read_rows(out)
    assert [int(r["pixels"]) for r in rows] == [100, 1600, 25]  # 0.51, 0.78, 0.98
    assert {r["review_reason"] for r in rows} == {"low probability"}


def _has_pyarrow() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def test_review_against_a_qupath_geojson_takes_the_class_asked_for(tmp_path: Path, capsys) -> None:
    pred_path = write_mask(_squares(A, B, D), tmp_path / "pred.ome.tif", mpp=0.5)
    geojson = _qupath(tmp_path / "qupath.geojson", {"Glomerulus": [A, B, C, D], "Tumor": [F]})
    out = tmp_path / "queue.csv"
    base = ["measure", str(pred_path), "--review", "--truth", str(geojson), "-o", str(out)]
    assert cli.main([*base, "--classification", "Glomerulus"]) == 0
    assert [r["review_reason"] for r in read_rows(out)][:1] == ["miss"]
    assert sum(r["review_reason"] == "miss" for r in read_rows(out)) == 1
    assert cli.main(base) == 0  # every class: the Tumor is missed too
    assert sum(r["review_reason"] == "miss" for r in read_rows(out)) == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--truth", "truth.tif"], "pass --review"),
        (["--review", "--classification", "Tumor"], "--classification is for the --truth mask"),
        (["--review", "--truth", "nowhere.tif"], "nowhere.tif"),
    ],
)
def test_review_options_out_of_place_exit_1_with_one_line(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    pred_path = write_mask(_squares(A), tmp_path / "pred.ome.tif", mpp=0.5)
    extra = [str(tmp_path / a) if a.endswith(".tif") else a for a in extra]
    out = tmp_path / "queue.csv"
    assert cli.main(["measure", str(pred_path), "-o", str(out), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert not out.exists()

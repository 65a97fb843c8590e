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

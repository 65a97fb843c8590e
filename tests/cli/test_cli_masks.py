"""Tests of ``slide-unet score`` and ``slide-unet export``, as a user runs them.

Each test calls :func:`slide_unet.cli.main` and checks what it prints (or the
files it writes) against the library computed on the same arrays.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from scipy import ndimage

import slide_unet
from slide_unet import cli
from slide_unet.core.masks import geojson as geojson_module
from slide_unet.core.masks import pyramids as mask_pyramids
from slide_unet.core.masks.rle_csv import write_rle_csv
from slide_unet.core.masks.store import MaskStore

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
SAMPLE_IMAGE = SAMPLE / "kidney_pas.ome.tif"
SAMPLE_MASK = SAMPLE / "kidney_pas_mask.ome.tif"
SAMPLE_RLE = SAMPLE / "kidney_pas_mask.csv"
SAMPLE_SHAPE = (2048, 2048)

SCORE_LINE = re.compile(
    r"^(?P<name>\S+): Dice (?P<dice>[\d.]+)  IoU (?P<iou>[\d.]+)  tile Dice (?P<tile>[\d.]+)  "
    r"objects P (?P<p>[\d.]+) R (?P<r>[\d.]+) F1 (?P<f1>[\d.]+) "
    r"\(TP (?P<tp>\d+), FP (?P<fp>\d+), FN (?P<fn>\d+)\)$"
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIDE_UNET_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sample_mask() -> np.ndarray:
    return np.asarray(slide_unet.read_mask(SAMPLE_MASK))


@pytest.fixture(scope="module")
def perturbed(sample_mask: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample mask with one glomerulus erased and another moved 200 px left."""
    labels, n = ndimage.label(sample_mask, structure=np.ones((3, 3)))
    assert n == 4
    mask = sample_mask.copy()
    mask[labels == 1] = 0
    moved = labels == 2
    mask[moved] = 0
    mask[np.roll(moved, -200, axis=1)] = 1
    return slide_unet.write_mask(mask, tmp_path_factory.mktemp("perturbed") / "pred.ome.tif")


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def score_line(scores: Any, name: str) -> str:
    """The line ``slide-unet score`` prints for ``scores`` (as the user reads it)."""
    return (
        f"{name}: Dice {scores.dice:.4f}  IoU {scores.iou:.4f}  "
        f"tile Dice {scores.tile_dice_mean:.4f}  objects P {scores.object_precision:.3f} "
        f"R {scores.object_recall:.3f} F1 {scores.object_f1:.3f} "
        f"(TP {scores.true_positives}, FP {scores.false_positives}, "
        f"FN {scores.false_negatives})"
    )


def assert_one_line_error(status: int, out: str, err: str, command: str) -> str:
    assert status == 1
    assert out == ""
    assert err.startswith(f"slide-unet {command}: error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def blobs(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = 1
    return mask


def write_tif(path: Path, mask: np.ndarray) -> Path:
    tifffile.imwrite(path, mask)
    return path


# -- score: single files -----------------------------------------------------------


def test_score_sample_mask_against_its_own_rle_is_perfect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(capsys, "score", SAMPLE_MASK, SAMPLE_RLE)
    assert (status, err) == (0, "")
    (line,) = out.splitlines()
    found = SCORE_LINE.match(line)
    assert found, line
    assert found["name"] == "kidney_pas_mask"
    assert float(found["dice"]) == 1.0
    assert float(found["iou"]) == 1.0
    assert float(found["f1"]) == 1.0
    assert (found["tp"], found["fp"], found["fn"]) == ("4", "0", "0")


def test_score_rle_prediction_against_tiff_truth_is_perfect_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "score", SAMPLE_RLE, SAMPLE_MASK, "--json")
    assert status == 0
    result = json.loads(out)
    assert result["dice"] == 1.0
    assert result["object_f1"] == 1.0
    assert result["shape"] == list(SAMPLE_SHAPE)


def test_score_prints_the_libraries_scores_of_a_perturbed_mask(
    perturbed: Path, sample_mask: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = slide_unet.score(slide_unet.read_mask(perturbed), sample_mask)
    # One erased (FN), one moved away from its partner (FP + FN), two kept.
    assert (expected.true_positives, expected.false_positives) == (2, 1)
    assert expected.false_negatives == 2
    assert 0 < expected.dice < 1
    status, out, err = run(capsys, "score", perturbed, SAMPLE_RLE)
    assert (status, err) == (0, "")
    assert out.splitlines() == [score_line(expected, "pred")]


def test_score_json_parses_with_the_libraries_values(
    perturbed: Path, sample_mask: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = slide_unet.score(slide_unet.read_mask(perturbed), sample_mask)
    status, out, _ = run(capsys, "score", perturbed, SAMPLE_RLE, "--json")
    assert status == 0
    result = json.loads(out)
    assert result["name"] == "pred"
    assert result["pred"] == str(perturbed)
    assert result["truth"] == str(SAMPLE_RLE)
    for key in (
        "dice",
        "iou",
        "tile_dice_mean",
        "object_precision",
        "object_recall",
        "object_f1",
        "true_positives",
        "false_positives",
        "false_negatives",
        "n_pred_objects",
        "n_true_objects",
        "intersection",
        "pred_pixels",
        "true_pixels",
    ):
        assert result[key] == pytest.approx(getattr(expected, key)), key
    assert "tiles" not in result


def test_score_json_with_tiles_has_the_per_tile_table(
    perturbed: Path, sample_mask: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("score", perturbed, SAMPLE_RLE, "--json", "--tiles", "--tile", 512)
    status, out, _ = run(capsys, *argv)
    assert status == 0
    result = json.loads(out)
    expected = slide_unet.score(slide_unet.read_mask(perturbed), sample_mask, tile=512)
    assert result["tile"] == 512
    assert len(result["tiles"]) == 16  # 2048 / 512 = 4 x 4
    assert result["tiles"] == expected.tiles.records()
    assert result["tile_dice_mean"] == pytest.approx(expected.tile_dice_mean)
    first = result["tiles"][0]
    assert {"row", "col", "y", "x", "height", "width", "dice"} <= set(first)


# -- score: folders and multi-row RLE ----------------------------------------------


SMALL = (64, 80)
TRUTHS = {
    "a": blobs(SMALL, [(4, 4, 20, 30), (40, 50, 60, 75)]),
    "b": blobs(SMALL, [(10, 10, 50, 40)]),
    "c": blobs(SMALL, [(2, 2, 12, 12), (30, 30, 44, 44), (50, 60, 62, 78)]),
}
PREDS = {
    "a": blobs(SMALL, [(4, 4, 20, 30)]),  # one object missed
    "b": blobs(SMALL, [(12, 10, 50, 44)]),  # slightly off
    "c": TRUTHS["c"],  # perfect
}


@pytest.fixture
def mask_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Predictions in mixed formats, truths as plain TIFF, plus unpaired files."""
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    slide_unet.write_mask(PREDS["a"], pred / "a.png")
    slide_unet.write_mask(PREDS["b"], pred / "b.ome.tif")
    slide_unet.write_mask(PREDS["c"], pred / "c.geojson")
    slide_unet.write_mask(PREDS["a"], pred / "unpaired.png")
    (pred / "notes.txt").write_text("not a mask")
    for name, mask in TRUTHS.items():
        write_tif(truth / f"{name}.tif", mask)
    return pred, truth


def test_score_folders_pairs_by_stem_across_formats_and_prints_mean_dice(
    mask_folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pred, truth = mask_folders
    status, out, err = run(capsys, "score", pred, truth)
    assert (status, err) == (0, "")
    expected = {n: slide_unet.score(PREDS[n], TRUTHS[n]) for n in "abc"}
    mean = sum(s.dice for s in expected.values()) / 3
    assert out.splitlines() == [
        score_line(expected["a"], "a"),
        score_line(expected["b"], "b"),
        score_line(expected["c"], "c"),
        f"mean Dice over 3 masks: {mean:.4f}",
    ]
    assert "unpaired" not in out


def test_score_folders_json_gives_mean_dice_and_pairs(
    mask_folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pred, truth = mask_folders
    status, out, _ = run(capsys, "score", pred, truth, "--json")
    assert status == 0
    result = json.loads(out)
    assert set(result) == {"mean_dice", "pairs"}
    assert [p["name"] for p in result["pairs"]] == ["a", "b", "c"]
    assert [Path(p["pred"]).name for p in result["pairs"]] == ["a.png", "b.ome.tif", "c.geojson"]
    assert [Path(p["truth"]).name for p in result["pairs"]] == ["a.tif", "b.tif", "c.tif"]
    dices = [slide_unet.dice(PREDS[n], TRUTHS[n]) for n in "abc"]
    assert [p["dice"] for p in result["pairs"]] == pytest.approx(dices)
    assert result["mean_dice"] == pytest.approx(sum(dices) / 3)
    assert result["pairs"][2]["object_f1"] == 1.0


def test_score_multi_row_rle_csv_against_folder_named_by_ids(
    mask_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, truth = mask_folders
    csv = write_rle_csv(tmp_path / "submission.csv", {n: PREDS[n] for n in "cab"})
    status, out, _ = run(capsys, "score", csv, truth, "--json")
    assert status == 0
    pairs = json.loads(out)["pairs"]
    assert sorted(p["name"] for p in pairs) == ["a", "b", "c"]
    for pair in pairs:
        n = pair["name"]
        assert pair["dice"] == pytest.approx(slide_unet.dice(PREDS[n], TRUTHS[n])), n
        assert pair["shape"] == list(SMALL)


def test_score_folder_against_multi_row_rle_truth_takes_sizes_from_the_masks(
    mask_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, truth_folder = mask_folders
    truth_csv = write_rle_csv(tmp_path / "train.csv", TRUTHS, column="encoding")
    status, out, _ = run(capsys, "score", truth_folder, truth_csv)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 4
    assert all(" Dice 1.0000 " in line for line in lines[:3])
    assert lines[3] == "mean Dice over 3 masks: 1.0000"


def test_score_id_picks_one_row_of_an_rle_csv(
    mask_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, truth = mask_folders
    csv = write_rle_csv(tmp_path / "submission.csv", PREDS)
    status, out, _ = run(capsys, "score", csv, truth, "--id", "b")
    assert status == 0
    assert out.splitlines() == [score_line(slide_unet.score(PREDS["b"], TRUTHS["b"]), "b")]


def test_score_pred_id_chooses_the_row_of_a_multi_row_csv_against_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_rle_csv(tmp_path / "submission.csv", PREDS)
    truth = write_tif(tmp_path / "truth.tif", TRUTHS["a"])
    status, out, _ = run(capsys, "score", csv, truth, "--pred-id", "a", "--json")
    assert status == 0
    assert json.loads(out)["dice"] == pytest.approx(slide_unet.dice(PREDS["a"], TRUTHS["a"]))


def test_score_multi_row_csv_against_one_file_without_id_lists_the_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_rle_csv(tmp_path / "submission.csv", PREDS)
    truth = write_tif(tmp_path / "truth.tif", TRUTHS["a"])
    err = assert_one_line_error(*run(capsys, "score", csv, truth), "score")
    assert "holds 3 masks" in err
    assert "a, b, c" in err


# -- score: RLE on both sides ------------------------------------------------------


def test_score_two_rle_csvs_without_shape_asks_for_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = assert_one_line_error(*run(capsys, "score", SAMPLE_RLE, SAMPLE_RLE), "score")
    assert "--shape" in err


def test_score_two_rle_csvs_with_shape_works(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "score", SAMPLE_RLE, SAMPLE_RLE, "--shape", "2048,2048", "--json")
    assert status == 0
    result = json.loads(out)
    assert result["dice"] == 1.0
    assert result["shape"] == list(SAMPLE_SHAPE)
    assert result["n_true_objects"] == 4


def test_score_rle_with_too_small_shape_is_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = assert_one_line_error(
        *run(capsys, "score", SAMPLE_RLE, SAMPLE_RLE, "--shape", "100,100"), "score"
    )
    assert "past the end" in err


def test_score_bad_shape_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["score", str(SAMPLE_RLE), str(SAMPLE_RLE), "--shape", "big"])
    assert exc.value.code == 2
    assert "HEIGHT,WIDTH" in capsys.readouterr().err


# -- score: errors -----------------------------------------------------------------


def test_score_mismatched_shapes_names_both_shapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = write_tif(tmp_path / "pred.tif", np.zeros((60, 80), np.uint8))
    truth = write_tif(tmp_path / "truth.tif", np.zeros((64, 80), np.uint8))
    err = assert_one_line_error(*run(capsys, "score", pred, truth), "score")
    assert "(60, 80)" in err
    assert "(64, 80)" in err


def test_score_swapped_height_and_width_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = write_tif(tmp_path / "pred.tif", np.zeros((80, 64), np.uint8))
    truth = write_tif(tmp_path / "truth.tif", np.zeros((64, 80), np.uint8))
    err = assert_one_line_error(*run(capsys, "score", pred, truth), "score")
    assert "(80, 64)" in err
    assert "(64, 80)" in err
    assert "swapped" in err


def test_score_rle_shape_that_differs_from_the_truth_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 4096 x 1024 has as many pixels as the sample, so the RLE decodes fine.
    err = assert_one_line_error(
        *run(capsys, "score", SAMPLE_RLE, SAMPLE_MASK, "--shape", "4096,1024"), "score"
    )
    assert "(4096, 1024)" in err
    assert "(2048, 2048)" in err


@pytest.mark.parametrize("side", ["pred", "truth"])
def test_score_missing_file_is_one_line_error(
    side: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.tif"
    args = (missing, SAMPLE_MASK) if side == "pred" else (SAMPLE_MASK, missing)
    err = assert_one_line_error(*run(capsys, "score", *args), "score")
    assert str(missing) in err
    assert "no such file" in err


def test_score_folders_without_common_names_list_some_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    mask = blobs(SMALL, [(1, 1, 5, 5)])
    for name in ("slide1", "slide2"):
        slide_unet.write_mask(mask, pred / f"{name}.png")
    for name in ("other1", "other2"):
        write_tif(truth / f"{name}.tif", mask)
    err = assert_one_line_error(*run(capsys, "score", pred, truth), "score")
    assert "no pairs" in err
    assert "slide1" in err
    assert "other2" in err


# -- score: zarr stores ------------------------------------------------------------


def ome_zarr_labels(mask: np.ndarray, path: Path) -> Path:
    """OME-Zarr labels as this package exports them (NGFF 0.4, zarr format 2)."""
    return slide_unet.write_mask(mask, path)


def plain_zarr_array(mask: np.ndarray, path: Path) -> Path:
    """A bare zarr array, no OME metadata (zarr format 3)."""
    array = zarr.create_array(path, shape=mask.shape, chunks=(32, 32), dtype=mask.dtype)
    array[...] = mask
    return path


def mask_store(mask: np.ndarray, path: Path) -> Path:
    """The autosave store of a mask (what Segment and hand edits write), copied to ``path``."""
    store = MaskStore.for_key(f"cli-{path.name}", mask.shape)
    store.write(0, 0, mask, edited=True)
    shutil.copytree(store.path, path)
    return path


ZARR_KINDS: dict[str, Callable[[np.ndarray, Path], Path]] = {
    "ome-zarr": ome_zarr_labels,
    "plain-zarr": plain_zarr_array,
    "mask-store": mask_store,
}


@pytest.mark.parametrize("side", ["pred", "truth"])
@pytest.mark.parametrize("kind", list(ZARR_KINDS))
def test_score_takes_a_zarr_store_on_either_side(
    kind: str, side: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ZARR_KINDS[kind](PREDS["b"], tmp_path / "b.zarr")
    other = write_tif(tmp_path / "b.tif", TRUTHS["b"])
    pred, truth = (store, other) if side == "pred" else (other, store)

    status, out, err = run(capsys, "score", pred, truth)

    assert (status, err) == (0, "")
    pred_mask, truth_mask = (
        (PREDS["b"], TRUTHS["b"]) if side == "pred" else (TRUTHS["b"], PREDS["b"])
    )
    assert out.splitlines() == [score_line(slide_unet.score(pred_mask, truth_mask), "b")]


def test_score_two_zarr_stores_against_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = mask_store(PREDS["a"], tmp_path / "a-autosave.zarr")
    truth = ome_zarr_labels(TRUTHS["a"], tmp_path / "a.ome.zarr")
    status, out, _ = run(capsys, "score", pred, truth, "--json")
    assert status == 0
    result = json.loads(out)
    assert result["dice"] == pytest.approx(slide_unet.dice(PREDS["a"], TRUTHS["a"]))
    assert (result["true_positives"], result["false_negatives"]) == (1, 1)


def test_score_folders_pair_zarr_stores_by_name_like_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    ome_zarr_labels(PREDS["a"], pred / "a.ome.zarr")
    plain_zarr_array(PREDS["b"], pred / "b.zarr")
    # A store folder named without .zarr is still one mask, not a folder of masks.
    mask_store(PREDS["c"], pred / "c")
    (pred / "not-a-mask").mkdir()  # an ordinary folder is passed over
    write_tif(truth / "a.tif", TRUTHS["a"])
    ome_zarr_labels(TRUTHS["b"], truth / "b.ome.zarr")
    write_tif(truth / "c.tif", TRUTHS["c"])

    status, out, _ = run(capsys, "score", pred, truth, "--json")

    assert status == 0
    pairs = json.loads(out)["pairs"]
    assert [(Path(p["pred"]).name, Path(p["truth"]).name) for p in pairs] == [
        ("a.ome.zarr", "a.tif"),
        ("b.zarr", "b.ome.zarr"),
        ("c", "c.tif"),
    ]
    dices = [slide_unet.dice(PREDS[n], TRUTHS[n]) for n in "abc"]
    assert [p["dice"] for p in pairs] == pytest.approx(dices)


def test_score_zarr_store_against_an_rle_csv_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ome_zarr_labels(PREDS["c"], tmp_path / "c.ome.zarr")
    csv = write_rle_csv(tmp_path / "train.csv", TRUTHS, column="encoding")
    status, out, _ = run(capsys, "score", store, csv, "--truth-id", "c", "--json")
    assert status == 0
    assert json.loads(out)["dice"] == 1.0


def test_score_a_zarr_named_folder_that_is_no_store_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "pred.zarr"
    empty.mkdir()
    truth = write_tif(tmp_path / "pred.tif", TRUTHS["a"])
    err = assert_one_line_error(*run(capsys, "score", empty, truth), "score")
    assert "pred.zarr" in err
    assert "not a zarr store" in err


def test_score_rgb_photo_as_truth_is_not_a_mask(
    slides, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(slides.rgb_image(*SMALL)).save(photo)
    pred = write_tif(tmp_path / "pred.tif", TRUTHS["a"])
    err = assert_one_line_error(*run(capsys, "score", pred, photo), "score")
    assert "photo.png" in err
    assert "not a mask" in err


def test_score_sample_slide_as_truth_is_not_a_mask(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = assert_one_line_error(*run(capsys, "score", SAMPLE_MASK, SAMPLE_IMAGE), "score")
    assert "not a mask" in err


# -- export --------------------------------------------------------------------------


EXPORT_SUFFIXES = [".ome.tif", ".zarr", ".geojson", ".png", ".csv"]


@pytest.mark.parametrize("suffix", EXPORT_SUFFIXES)
def test_export_sample_rle_reads_back_as_the_sample_mask(
    suffix: str, tmp_path: Path, sample_mask: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / f"kidney{suffix}"
    status, out, err = run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--image", SAMPLE_IMAGE)
    assert (status, err) == (0, "")
    assert out == f"wrote {out_path}\n"
    back = np.asarray(slide_unet.read_mask(out_path, shape=SAMPLE_SHAPE))
    assert back.shape == SAMPLE_SHAPE
    np.testing.assert_array_equal(back != 0, sample_mask != 0)


def test_export_shows_a_progress_bar_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    out_path = tmp_path / "kidney.ome.tif"
    status, out, err = run(capsys, "export", SAMPLE_MASK, "-o", out_path)
    assert (status, out) == (0, f"wrote {out_path}\n")
    # 2048 rows: 4 bands of 512, then 1 overview level; the bar redraws in place.
    frames = err.split("\r")[1:]
    assert [f.split("] ")[1].strip() for f in frames] == [f"{k}/5" for k in range(1, 6)]
    assert frames[-1] == f"exporting [{'#' * 30}] 5/5\n"


def test_export_with_shape_instead_of_image(
    tmp_path: Path, sample_mask: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.ome.tif"
    status, _, _ = run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--shape", "2048x2048")
    assert status == 0
    np.testing.assert_array_equal(slide_unet.read_mask(out_path), sample_mask)


def test_export_rle_to_ome_tiff_takes_the_pixel_size_from_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.ome.tif"
    assert run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--image", SAMPLE_IMAGE)[0] == 0
    with slide_unet.open_slide(out_path) as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert slide.shape[:2] == SAMPLE_SHAPE


def test_export_rle_to_ome_zarr_takes_the_pixel_size_from_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.zarr"
    assert run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--image", SAMPLE_IMAGE)[0] == 0
    assert mask_pyramids.read_ome_zarr(out_path)[1] == pytest.approx(0.5)


def test_export_mpp_option_overrides_the_images_pixel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.ome.tif"
    status = run(
        capsys, "export", SAMPLE_RLE, "-o", out_path, "--image", SAMPLE_IMAGE, "--mpp", 0.25
    )[0]
    assert status == 0
    with slide_unet.open_slide(out_path) as slide:
        assert slide.mpp == pytest.approx(0.25)


def test_export_rle_with_shape_only_records_no_pixel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.ome.tif"
    assert run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--shape", "2048,2048")[0] == 0
    with slide_unet.open_slide(out_path) as slide:
        assert slide.mpp is None


def test_export_ome_tiff_to_zarr_keeps_its_own_pixel_size(
    tmp_path: Path, sample_mask: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.zarr"
    assert run(capsys, "export", SAMPLE_MASK, "-o", out_path)[0] == 0
    mask, mpp = mask_pyramids.read_ome_zarr(out_path)
    assert mpp == pytest.approx(0.5)
    np.testing.assert_array_equal(np.asarray(mask), sample_mask)


def test_export_ome_tiff_to_csv_gives_the_bundled_rle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney_pas.csv"
    assert run(capsys, "export", SAMPLE_MASK, "-o", out_path, "--json")[0] == 0
    written = out_path.read_text().splitlines()
    bundled = SAMPLE_RLE.read_text().splitlines()
    assert written[0] == "id,predicted"
    # The row is named after the mask file; the run lengths are the bundled ones.
    assert written[1].split(",") == ["kidney_pas_mask", bundled[1].split(",")[1]]


def test_export_json_names_input_and_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.png"
    status, out, _ = run(capsys, "export", SAMPLE_MASK, "-o", out_path, "--json")
    assert status == 0
    assert json.loads(out) == {"input": str(SAMPLE_MASK), "output": str(out_path)}


def test_export_csv_keeps_the_row_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "copy.csv"
    assert run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--shape", "2048,2048")[0] == 0
    assert out_path.read_text() == SAMPLE_RLE.read_text()


def test_export_id_picks_a_row_of_a_multi_row_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_rle_csv(tmp_path / "submission.csv", PREDS)
    out_path = tmp_path / "b.tif"
    assert run(capsys, "export", csv, "-o", out_path, "--id", "b", "--shape", "64,80")[0] == 0
    np.testing.assert_array_equal(slide_unet.read_mask(out_path), PREDS["b"])


def test_export_rle_without_shape_or_image_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.ome.tif"
    err = assert_one_line_error(*run(capsys, "export", SAMPLE_RLE, "-o", out_path), "export")
    assert "shape" in err
    assert not out_path.exists()


def test_export_unknown_extension_is_one_line_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "kidney.bmp"
    err = assert_one_line_error(
        *run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--shape", "2048,2048"), "export"
    )
    assert "unknown mask format '.bmp'" in err
    assert ".ome.tif" in err
    assert ".geojson" in err
    assert list(tmp_path.iterdir()) == []


def test_export_missing_input_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = assert_one_line_error(
        *run(capsys, "export", tmp_path / "none.csv", "-o", tmp_path / "x.png"), "export"
    )
    assert "none.csv" in err
    assert list(tmp_path.iterdir()) == []


def _fail_tiff(monkeypatch: pytest.MonkeyPatch, seen: list[list[str]], folder: Path) -> None:
    real = mask_pyramids._tiles

    def failing(band: np.ndarray, tile: int) -> Iterator[np.ndarray]:
        for i, piece in enumerate(real(band, tile)):
            if i == 3:
                seen.append(sorted(p.name for p in folder.iterdir()))
                raise OSError(28, "No space left on device (simulated)")
            yield piece

    monkeypatch.setattr(mask_pyramids, "_tiles", failing)


def _fail_zarr(monkeypatch: pytest.MonkeyPatch, seen: list[list[str]], folder: Path) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        seen.append(sorted(p.name for p in folder.iterdir()))
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(mask_pyramids, "_ngff_metadata", failing)


def _fail_geojson(monkeypatch: pytest.MonkeyPatch, seen: list[list[str]], folder: Path) -> None:
    real = geojson_module.iter_mask_features

    def failing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        features = real(*args, **kwargs)
        yield next(features)
        seen.append(sorted(p.name for p in folder.iterdir()))
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(geojson_module, "iter_mask_features", failing)


@pytest.mark.parametrize(
    ("suffix", "fail"),
    [(".ome.tif", _fail_tiff), (".zarr", _fail_zarr), (".geojson", _fail_geojson)],
    ids=["ome-tiff", "ome-zarr", "geojson"],
)
def test_export_failing_midway_leaves_the_existing_output_unchanged(
    suffix: str,
    fail: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out_path = out_dir / f"kidney{suffix}"
    # An earlier, complete export of a different mask.
    old_mask = blobs(SMALL, [(5, 5, 30, 30)])
    slide_unet.write_mask(old_mask, out_path)
    before = {p.relative_to(out_dir): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}

    seen: list[list[str]] = []
    fail(monkeypatch, seen, out_dir)
    err = assert_one_line_error(
        *run(capsys, "export", SAMPLE_RLE, "-o", out_path, "--image", SAMPLE_IMAGE), "export"
    )
    assert "No space left on device" in err
    # The writer had started: a temporary output sat next to the old one.
    assert len(seen) == 1
    assert any(name.startswith(f".{out_path.name}.tmp-") for name in seen[0]), seen
    after = {p.relative_to(out_dir): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in out_dir.iterdir()] == [out_path.name]
    back = slide_unet.read_mask(out_path, shape=SMALL)
    np.testing.assert_array_equal(np.asarray(back), old_mask)


# -- real data ---------------------------------------------------------------------


def test_score_bueno_red_on_black_mask_against_itself_is_perfect(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask = shared_data / "glomeruli" / "bueno_pas" / "masks" / "10063.png"
    if not mask.is_file():
        pytest.skip(f"{mask} not found")
    assert np.asarray(Image.open(mask)).ndim == 3  # RGB, red on black
    status, out, _ = run(capsys, "score", mask, mask, "--json")
    assert status == 0
    result = json.loads(out)
    assert result["dice"] == 1.0
    assert result["object_f1"] == 1.0
    assert result["n_true_objects"] > 0


def test_score_bueno_mask_against_its_quadrant_of_the_sample_mask_is_perfect(
    shared_data: Path,
    sample_mask: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The sample is a mosaic; tile 10063 is its top-left quadrant.
    mask = shared_data / "glomeruli" / "bueno_pas" / "masks" / "10063.png"
    if not mask.is_file():
        pytest.skip(f"{mask} not found")
    quadrant = write_tif(tmp_path / "10063.tif", sample_mask[:1024, :1024])
    status, out, _ = run(capsys, "score", quadrant, mask, "--json")
    assert status == 0
    assert json.loads(out)["dice"] == 1.0

"""Scores: Dice, IoU, per-tile Dice, object matching (slide_unet.core.scoring.metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from scipy import ndimage

from slide_unet.core.scoring.metrics import (
    CONFUSION_NAMES,
    Cancelled,
    confusion_overlay,
    dice,
    iou,
    match_objects,
    score,
    tile_dice,
)

EIGHT = np.ones((3, 3), dtype=bool)


def square(shape: tuple[int, int], y: int, x: int, side: int, value: int = 1) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[y : y + side, x : x + side] = value
    return mask


def naive_match(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> tuple[int, ...]:
    """(TP, n_pred, n_true) from scipy labels of the whole masks and every overlapping pair."""
    lp, n_pred = ndimage.label(pred != 0, EIGHT)
    lt, n_true = ndimage.label(truth != 0, EIGHT)
    area_p, area_t = np.bincount(lp.ravel()), np.bincount(lt.ravel())
    both = (lp > 0) & (lt > 0)
    pairs, inter = np.unique(np.stack([lp[both], lt[both]]), axis=1, return_counts=True)
    union = area_p[pairs[0]] + area_t[pairs[1]] - inter
    return int(np.count_nonzero(inter / union >= threshold)), n_pred, n_true


# --- hand-made cases with known scores ----------------------------------------------------------


def test_two_squares_one_shifted() -> None:
    # 4 x 4 squares, the second moved one pixel down and right: overlap 3 x 3.
    pred, truth = square((10, 10), 2, 2, 4), square((10, 10), 3, 3, 4, value=255)
    assert dice(pred, truth) == pytest.approx(2 * 9 / 32)
    assert iou(pred, truth) == pytest.approx(9 / 23)
    match = match_objects(pred, truth)  # IoU 9/23 < 0.5: no match
    assert (match.true_positives, match.false_positives, match.false_negatives) == (0, 1, 1)
    assert match.f1 == 0.0
    assert match_objects(pred, truth, iou_threshold=0.35).true_positives == 1


def test_small_shift_still_matches() -> None:
    pred, truth = square((30, 30), 5, 5, 10), square((30, 30), 6, 5, 10)
    match = match_objects(pred, truth)  # IoU 90 / 110
    assert (match.true_positives, match.precision, match.recall, match.f1) == (1, 1.0, 1.0, 1.0)
    assert match.ious.tolist() == [pytest.approx(90 / 110)]
    assert (match.pred_ids.tolist(), match.true_ids.tolist()) == ([1], [1])


def test_split_object() -> None:
    truth = square((12, 12), 1, 1, 10)
    pred = truth.copy()
    pred[:, 8] = 0  # left part 10 x 7 = 70 px (IoU 0.7), right part 10 x 2 (IoU 0.2)
    match = match_objects(pred, truth)
    assert (match.n_pred, match.n_true) == (2, 1)
    assert (match.true_positives, match.false_positives, match.false_negatives) == (1, 1, 0)
    assert (match.precision, match.recall) == (0.5, 1.0)
    assert match.f1 == pytest.approx(2 / 3)
    assert dice(pred, truth) == pytest.approx(2 * 90 / 190)


def test_merged_objects() -> None:
    truth = np.zeros((12, 20), dtype=np.uint8)
    truth[1:11, 1:6] = 1  # A: 50 px
    truth[1:7, 9:14] = 2  # B: 30 px
    pred = (truth > 0).astype(np.uint8)
    pred[3:5, 6:9] = 1  # a 6 px bridge: one object of 86 px
    match = match_objects(pred, truth)
    assert (match.n_pred, match.n_true) == (1, 2)
    assert (match.true_positives, match.false_positives, match.false_negatives) == (1, 0, 1)
    assert match.ious.tolist() == [pytest.approx(50 / 86)]
    assert match.true_ids.tolist() == [1]


def test_greedy_matching_below_half_takes_best_iou_then_lowest_ids() -> None:
    pred = np.zeros((1, 9), np.uint8)
    pred[0, :7] = 1  # one object of 7 px
    truth = np.zeros((1, 9), np.uint8)
    truth[0, 0:2] = truth[0, 3:7] = 1  # IoU 2/7 and 4/7
    match = match_objects(pred, truth, iou_threshold=0.25)
    assert (match.true_positives, match.false_negatives) == (1, 1)
    assert match.true_ids.tolist() == [2]
    truth[0, 3:7] = 0
    truth[0, 4:6] = 1  # two true objects of 2 px: IoU 2/7 each, a tie
    match = match_objects(pred, truth, iou_threshold=0.25)
    assert match.true_ids.tolist() == [1]


def test_exactly_half_iou_is_a_match() -> None:
    pred = np.zeros((1, 5), np.uint8)
    pred[0, :2] = 1
    truth = np.zeros((1, 5), np.uint8)
    truth[0, :1] = 1  # IoU 1/2
    assert match_objects(pred, truth).true_positives == 1


def test_empty_masks_score_one() -> None:
    empty = np.zeros((5, 6), dtype=np.uint8)
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    match = match_objects(empty, empty)
    assert (match.precision, match.recall, match.f1, match.true_positives) == (1.0, 1.0, 1.0, 0)
    scores = score(empty, empty, tile=4)
    assert (scores.dice, scores.tile_dice_mean, scores.tile_dice_mean_nonempty) == (1.0, 1.0, 1.0)
    assert scores.object_f1 == 1.0
    zero = np.zeros((0, 0), dtype=bool)
    assert dice(zero, zero) == 1.0
    assert score(zero, zero).object_f1 == 1.0


def test_empty_against_non_empty_scores_zero() -> None:
    empty, full = np.zeros((5, 6), dtype=bool), square((5, 6), 1, 1, 3)
    for pred, truth in ((empty, full), (full, empty)):
        assert dice(pred, truth) == 0.0
        assert iou(pred, truth) == 0.0
        match = match_objects(pred, truth)
        assert (match.precision, match.recall, match.f1) == (0.0, 0.0, 0.0)


def test_any_nonzero_is_foreground() -> None:
    bools = square((8, 8), 1, 1, 4).astype(bool)
    other = square((8, 8), 2, 2, 4)
    for pred in (bools, bools.astype(np.uint8) * 255, bools.astype(np.uint16) * 7):
        assert dice(pred, other) == pytest.approx(2 * 9 / 32)
    assert dice([[0, 3], [0, 0]], [[0, 1], [0, 0]]) == 1.0  # nested lists work too


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^prediction shape \(3, 4\) does not match truth \(4, 3\)$"
    ):
        dice(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="does not match"):
        score(zarr.zeros((3, 4), dtype="u1"), da.zeros((3, 5)))
    with pytest.raises(ValueError, match="must be 2-D"):
        iou(np.zeros((3, 4, 3)), np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match="iou_threshold"):
        match_objects(np.zeros((3, 4)), np.zeros((3, 4)), iou_threshold=0)
    with pytest.raises(ValueError, match="tile must be"):
        tile_dice(np.zeros((3, 4)), np.zeros((3, 4)), tile=0)
    with pytest.raises(ValueError, match="connectivity"):
        score(np.zeros((3, 4)), np.zeros((3, 4)), connectivity=6)


# --- per-tile Dice ------------------------------------------------------------------------------


def test_tile_dice_table() -> None:
    pred = np.zeros((5, 7), dtype=np.uint8)
    truth = np.zeros((5, 7), dtype=np.uint8)
    pred[0:2, 0:2] = truth[0:2, 0:2] = 1  # tile (0, 0): perfect
    pred[0, 4] = 1  # tile (0, 1): a false positive only
    truth[4, 6] = truth[4, 5] = 1  # tile (1, 1), an edge tile of 1 x 3: missed
    tiles = tile_dice(pred, truth, tile=4)
    assert tiles.dice.shape == (2, 2)
    assert tiles.dice.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert tiles.empty.tolist() == [[False, False], [True, False]]
    assert tiles.mean == 0.5
    assert tiles.mean_nonempty == pytest.approx(1 / 3)
    assert tiles.slide_dice == pytest.approx(dice(pred, truth))
    records = tiles.records()
    assert records[3] == {
        "row": 1,
        "col": 1,
        "y": 4,
        "x": 4,
        "height": 1,
        "width": 3,
        "intersection": 0,
        "pred_pixels": 0,
        "true_pixels": 2,
        "dice": 0.0,
    }
    json.dumps(records)


def test_dice_map_is_the_grid_with_nan_where_both_masks_are_empty() -> None:
    pred = np.zeros((5, 7), dtype=np.uint8)
    truth = np.zeros((5, 7), dtype=np.uint8)
    pred[0:2, 0:2] = truth[0:2, 0:2] = 1  # tile (0, 0): perfect
    pred[0:2, 4] = truth[0, 4] = 1  # tile (0, 1): Dice 2/3
    truth[4, 6] = 1  # tile (1, 1): missed; tile (1, 0) empty in both
    grid = tile_dice(pred, truth, tile=4).dice_map()
    assert grid.dtype == np.float32
    np.testing.assert_allclose(grid, [[1.0, 2 / 3], [np.nan, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("block", [3, 4, 5, 64])
def test_tile_dice_does_not_depend_on_blocks(block: int) -> None:
    rng = np.random.default_rng(block)
    pred, truth = rng.random((37, 29)) < 0.3, rng.random((37, 29)) < 0.3
    reference = tile_dice(pred, truth, tile=6, block=1024)
    for p, t in ((pred, truth), (zarr.array(pred, chunks=(block, block)), da.from_array(truth))):
        tiles = tile_dice(p, t, tile=6, block=block)
        np.testing.assert_array_equal(tiles.intersection, reference.intersection)
        np.testing.assert_array_equal(tiles.pred_pixels, reference.pred_pixels)
        np.testing.assert_array_equal(tiles.true_pixels, reference.true_pixels)


def test_tiny_tiles_in_big_blocks() -> None:
    rng = np.random.default_rng(0)
    pred, truth = rng.random((40, 50)) < 0.5, rng.random((40, 50)) < 0.5
    tiles = tile_dice(pred, truth, tile=2)  # 500 tiles in one block: the reduceat path
    expected = (pred & truth).reshape(20, 2, 25, 2).sum(axis=(1, 3))
    np.testing.assert_array_equal(tiles.intersection, expected)


# --- chunked inputs give exactly the numpy results ----------------------------------------------


def blobs(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grown = ndimage.binary_dilation(rng.random(shape) < 0.004, EIGHT, iterations=3)
    return grown ^ (rng.random(shape) < 0.01)


def perturbed(mask: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shifted = np.roll(mask, (1, -2), axis=(0, 1))
    return ndimage.binary_dilation(shifted) if rng.random() < 0.5 else shifted


@pytest.mark.parametrize(("chunks", "block"), [((8, 8), 8), ((13, 9), 26), ((50, 50), 50)])
def test_chunked_scores_equal_numpy_scores(chunks: tuple[int, int], block: int) -> None:
    truth = blobs((120, 150), seed=block)
    pred = perturbed(truth, seed=block)
    expected = score(pred, truth, tile=16, block=4096)
    tp, n_pred, n_true = naive_match(pred, truth)
    assert (expected.true_positives, expected.n_pred_objects, expected.n_true_objects) == (
        tp,
        n_pred,
        n_true,
    )
    pairs = [
        (zarr.array(pred.astype(np.uint8), chunks=chunks), da.from_array(truth, chunks=chunks)),
        (da.from_array(pred, chunks=chunks), zarr.array(truth, chunks=chunks)),
        (pred, truth),
    ]
    for p, t in pairs:
        got = score(p, t, tile=16, block=block)
        assert got.as_dict(tiles=True) == expected.as_dict(tiles=True)
        np.testing.assert_array_equal(got.objects.pred_ids, expected.objects.pred_ids)
        np.testing.assert_array_equal(got.objects.true_ids, expected.objects.true_ids)
        assert dice(p, t, block=block) == expected.dice


def test_object_ids_are_scipy_labels_of_the_whole_mask() -> None:
    truth = blobs((64, 64), seed=5)
    pred = perturbed(truth, seed=5)
    match = match_objects(zarr.array(pred, chunks=(10, 10)), truth, block=10)
    lp, _ = ndimage.label(pred, EIGHT)
    lt, _ = ndimage.label(truth, EIGHT)
    for a, b, value in zip(match.pred_ids, match.true_ids, match.ious, strict=True):
        inter = np.count_nonzero((lp == a) & (lt == b))
        assert value == pytest.approx(inter / np.count_nonzero((lp == a) | (lt == b)))


def test_objects_crossing_block_corners_diagonally() -> None:
    truth = np.zeros((16, 16), dtype=bool)
    truth[np.arange(16), np.arange(16)] = True  # one diagonal object through every block corner
    truth[np.arange(16), 15 - np.arange(16)] = True
    pred = truth.copy()
    pred[7:9, 7:9] = False  # cut at the centre: 4 arms, each IoU 7/30
    for block in (2, 4, 8):
        match = match_objects(da.from_array(pred, chunks=block), truth, block=block)
        assert (match.n_pred, match.n_true, match.true_positives) == (4, 1, 0)
        assert match_objects(truth, truth, block=block).f1 == 1.0


# --- properties ---------------------------------------------------------------------------------

masks = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    elements=st.sampled_from([0, 0, 0, 1, 255]),
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_dice_properties(data: st.DataObject) -> None:
    pred = data.draw(masks)
    truth = data.draw(hnp.arrays(np.uint8, pred.shape, elements=st.sampled_from([0, 0, 1, 9])))
    d = dice(pred, truth)
    assert d == dice(truth, pred)
    assert 0.0 <= d <= 1.0
    assert (d == 1.0) == np.array_equal(pred != 0, truth != 0)
    assert iou(pred, truth) == pytest.approx(d / (2 - d))


@settings(max_examples=40, deadline=None)
@given(mask=masks, block=st.integers(1, 10))
def test_a_mask_against_itself_scores_one(mask: np.ndarray, block: int) -> None:
    scores = score(mask, mask, tile=5, block=block)
    assert (scores.dice, scores.iou, scores.object_f1) == (1.0, 1.0, 1.0)
    assert scores.tile_dice_mean == 1.0
    assert scores.false_positives == scores.false_negatives == 0


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_blocks_do_not_change_any_score(data: st.DataObject) -> None:
    pred = data.draw(masks)
    truth = data.draw(hnp.arrays(np.uint8, pred.shape, elements=st.sampled_from([0, 0, 1])))
    block = data.draw(st.integers(1, 9))
    chunked = score(da.from_array(pred, chunks=block), truth, tile=4, block=block)
    whole = score(pred, truth, tile=4)
    assert chunked.as_dict(tiles=True) == whole.as_dict(tiles=True)
    assert (whole.true_positives, whole.n_pred_objects, whole.n_true_objects) == naive_match(
        pred, truth
    )


# --- score, overlay, callbacks ------------------------------------------------------------------


def test_score_as_dict_is_plain_json() -> None:
    pred, truth = square((20, 20), 2, 2, 6), square((20, 20), 3, 2, 6)
    scores = score(pred, truth, tile=8)
    out = json.loads(json.dumps(scores.as_dict()))
    assert out["dice"] == pytest.approx(2 * 30 / 72)
    assert out["object_f1"] == 1.0
    assert out["shape"] == [20, 20]
    assert (out["true_positives"], out["tile"], out["iou_threshold"]) == (1, 8, 0.5)
    assert "tiles" not in out
    assert len(scores.as_dict(tiles=True)["tiles"]) == 9
    assert scores.objects.as_dict()["f1"] == 1.0


def test_confusion_overlay() -> None:
    pred = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    truth = np.array([[0, 255, 0, 255]], dtype=np.uint8)
    expected = [[0, 1, 2, 3]]
    assert [CONFUSION_NAMES[v] for v in expected[0]] == [
        "true negative",
        "true positive",
        "false positive",
        "false negative",
    ]
    overlay = confusion_overlay(pred, truth)
    assert overlay.dtype == np.uint8
    assert overlay.tolist() == expected
    lazy = confusion_overlay(zarr.array(pred), da.from_array(truth, chunks=(1, 1)))
    assert isinstance(lazy, da.Array)
    assert lazy.compute().tolist() == expected
    big_p, big_t = blobs((40, 60), 1), blobs((40, 60), 2)
    lazy = confusion_overlay(da.from_array(big_p, chunks=7), zarr.array(big_t, chunks=(9, 9)))
    np.testing.assert_array_equal(lazy.compute(), confusion_overlay(big_p, big_t))


def test_progress_and_cancel() -> None:
    pred = zarr.array(blobs((30, 30), 1), chunks=(10, 10))
    calls: list[tuple[int, int]] = []
    score(pred, pred, block=10, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (9, 9)
    assert len(calls) == 9
    with pytest.raises(Cancelled):
        match_objects(pred, pred, block=10, cancelled=lambda: True)


# --- real data ----------------------------------------------------------------------------------


def test_real_glomeruli_against_a_perturbed_copy(shared_data: Path) -> None:
    folder = shared_data / "glomeruli" / "bueno_pas" / "masks"
    files = sorted(folder.glob("*.png"))
    if len(files) < 18:
        pytest.skip(f"expected 18 masks in {folder}")
    # The 18 expert masks (RGB, red glomeruli) side by side: 3 x 6 tiles, 3072 x 6144.
    tiles = [np.asarray(Image.open(f))[..., 0] > 0 for f in files[:18]]
    truth = np.block([tiles[r * 6 : (r + 1) * 6] for r in range(3)])
    labels, n_true = ndimage.label(truth, EIGHT)
    rng = np.random.default_rng(7)
    pred = np.zeros_like(truth)
    for k in range(1, n_true + 1):
        obj = labels == k
        if k % 7 == 0:
            continue  # removed: a false negative
        obj = np.roll(obj, tuple(rng.integers(-6, 7, size=2)), axis=(0, 1))
        pred |= ndimage.binary_dilation(obj, iterations=2) if k % 3 == 0 else obj
    pred[100:180, 100:160] = True  # a false positive blob (the top-left tile has none there)

    expected = naive_match(pred, truth)
    whole = score(pred, truth, tile=1024)
    assert (whole.true_positives, whole.n_pred_objects, whole.n_true_objects) == expected
    assert whole.false_negatives >= n_true // 7
    assert whole.false_positives >= 1
    assert 0.8 < whole.dice < 1.0
    chunked = score(
        zarr.array(pred.astype(np.uint8) * 255, chunks=(512, 512)),
        da.from_array(truth, chunks=(1000, 700)),
        tile=1024,
        block=1000,
    )
    assert chunked.as_dict(tiles=True) == whole.as_dict(tiles=True)

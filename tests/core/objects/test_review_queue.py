"""The review queue's order, its tile-edge rule, object pixels and the review log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.objects.measure import measure
from slide_unet.core.objects.review import (
    CUT,
    FALSE_POSITIVE,
    MISSED,
    OTHER,
    ReviewLog,
    cut_by_tile_edge,
    object_key,
    object_pixels,
    overlaps,
    review_queue,
)


def _squares(shape: tuple[int, int], *squares: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for y0, x0, side in squares:
        mask[y0 : y0 + side, x0 : x0 + side] = 1
    return mask


@pytest.mark.parametrize(
    ("square", "cut"),
    [
        ((100, 100, 10), False),  # inside a tile
        ((54, 100, 10), True),  # ends on the line at 64
        ((64, 100, 10), True),  # starts on it
        ((60, 100, 10), False),  # crosses it: stitched whole, not cut
        ((0, 100, 10), True),  # the top border
        ((150, 100, 10), True),  # the bottom border (160 px high)
    ],
)
def test_an_object_is_cut_when_its_box_ends_on_a_tile_line_or_the_border(square, cut) -> None:
    table = measure(_squares((160, 200), square))
    assert cut_by_tile_edge(table, tile=64).tolist() == [cut]


def test_queue_puts_false_positives_then_misses_then_cut_then_the_smallest() -> None:
    shape = (200, 200)
    pred = _squares(shape, (10, 10, 8), (100, 100, 4), (30, 120, 20), (54, 10, 10), (150, 150, 6))
    truth = _squares(shape, (10, 10, 8), (30, 120, 20), (54, 10, 10), (150, 150, 6), (80, 20, 9))
    pred[100:104, 100:104] = 1  # no truth under it: a false positive
    table, truths = measure(pred), measure(truth)
    hit = overlaps(table, pred, truth)
    found = overlaps(truths, truth, pred)
    queue = review_queue(table, truth=truths, hit=hit, found=found, tile=64)
    assert [e.kind for e in queue] == [FALSE_POSITIVE, MISSED, CUT, OTHER, OTHER, OTHER]
    assert [int((truths if e.kind == MISSED else table)["pixels"][e.row]) for e in queue] == [
        16,
        81,
        100,
        36,
        64,
        400,
    ]
    assert queue[1].key.startswith("missed:")


def test_object_pixels_picks_the_object_of_its_box_not_a_neighbour_poking_in() -> None:
    window = np.zeros((10, 10), dtype=np.uint8)
    window[0, :] = 1
    window[:, 9] = 1  # the object: an L spanning the box
    window[5:7, 2:4] = 1  # another object inside its box
    own = object_pixels(window, 19)
    assert own.sum() == 19
    assert not own[5:7, 2:4].any()


def test_the_log_survives_a_reload_and_keys_are_boxes_and_pixels(tmp_path: Path) -> None:
    table = measure(_squares((50, 50), (5, 6, 3)))
    key = object_key(table, 0)
    assert key == "5,6,8,9,9"
    log = ReviewLog(tmp_path / "review.json")
    log.mark(key, "accepted")
    again = ReviewLog(tmp_path / "review.json")
    assert again.verdict(key) == "accepted"
    (tmp_path / "review.json").write_text("not json")
    assert ReviewLog(tmp_path / "review.json").marks == {}


def test_with_probabilities_the_least_sure_come_first_after_false_positives_and_misses() -> None:
    from slide_unet.core.objects.review import PROBABILITY

    shape = (200, 200)
    #           a: cut (0.9)  b: 0.6      c: 0.95       d: 0.6, cut  e: painted (unknown)
    squares = [(0, 10, 8), (100, 100, 4), (30, 120, 20), (54, 10, 10), (150, 150, 6)]
    pred = _squares(shape, *squares)
    pred[170:174, 20:24] = 1  # f: no truth under it, 0.99: a false positive even so
    quantised = np.zeros(shape, np.uint8)
    for (y0, x0, side), value in zip(squares, [230, 153, 242, 153, 0], strict=True):
        quantised[y0 : y0 + side, x0 : x0 + side] = value
    quantised[170:174, 20:24] = 252
    truth = pred.copy()
    truth[170:174, 20:24] = 0
    truth[80:89, 20:29] = 1  # a miss
    table, truths = measure(pred, probabilities=quantised), measure(truth)
    hit, found = overlaps(table, pred, truth), overlaps(truths, truth, pred)
    queue = review_queue(table, truth=truths, hit=hit, found=found, tile=64)
    pixels = [int((truths if e.kind == MISSED else table)["pixels"][e.row]) for e in queue]
    kinds = [e.kind for e in queue]
    # FP, miss; then by probability: d and b tie at 0.6 (d is cut: first), a, c; then e.
    assert kinds == [FALSE_POSITIVE, MISSED, CUT, PROBABILITY, CUT, PROBABILITY, OTHER]
    assert pixels == [16, 81, 100, 16, 64, 400, 36]
    # Without probabilities: the order the queue had before they were kept.
    plain = review_queue(measure(pred), truth=truths, hit=hit, found=found, tile=64)
    assert [e.kind for e in plain] == [FALSE_POSITIVE, MISSED, CUT, CUT, OTHER, OTHER, OTHER]


@pytest.mark.parametrize("block", [64, 100, 2048])
def test_overlaps_read_by_squares_agree_with_each_object_labelled_whole(block, tmp_path) -> None:
    """Objects inside a square, crossing the grid, touching the truth by one pixel or
    not at all: the same answer however the mask is cut into reads, from a chunked
    zarr array as from memory."""
    import zarr
    from scipy import ndimage

    rng = np.random.default_rng(7)
    pred = (ndimage.gaussian_filter(rng.random((300, 260)), 3) > 0.52).astype(np.uint8)
    truth = (ndimage.gaussian_filter(rng.random((300, 260)), 3) > 0.53).astype(np.uint8)
    truth[0, 0] = 1
    pred[0, 0] = 1  # a one-pixel object touching the truth in its only pixel
    labels, count = ndimage.label(pred, np.ones((3, 3), bool))
    assert count > 40
    expected = {}
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        own = labels[found] == index
        key = f"{found[0].start},{found[1].start},{found[0].stop},{found[1].stop},{own.sum()}"
        expected[key] = bool(truth[found][own].any())
    assert 0 < sum(expected.values()) < count  # both answers occur
    stored = zarr.open_array(tmp_path / "pred.zarr", mode="w", shape=pred.shape, chunks=(64, 64))
    stored[:] = pred
    table = measure(pred)
    for source in (pred, stored):
        hit = overlaps(table, source, truth, block=block)
        got = {object_key(table, row): bool(hit[row]) for row in range(len(table))}
        assert got == expected

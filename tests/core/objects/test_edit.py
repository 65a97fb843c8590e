"""Tests of the object-level mask corrections (slide_unet.core.objects.edit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from slide_unet.core.masks.io import read_mask
from slide_unet.core.objects import edit
from slide_unet.core.objects.edit import Change

EIGHT = np.ones((3, 3), dtype=bool)


def count_objects(mask: np.ndarray, connectivity: int = 8) -> int:
    return ndimage.label(mask != 0, EIGHT if connectivity == 8 else None)[1]


def applied(mask: np.ndarray, change: Change) -> np.ndarray:
    out = mask.copy()
    change.apply(out)
    return out


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def two_overlapping_discs() -> np.ndarray:
    """Two round objects (radius 25 and 22) fused by a neck: centres 45 px apart."""
    shape = (80, 120)
    return (disk(shape, (40, 35), 25) | disk(shape, (40, 80), 22)).astype(np.uint8)


def window_with_everything() -> np.ndarray:
    """Objects, a hole, a speck and a spur: something for every tool to change."""
    mask = two_overlapping_discs()
    mask[35:45, 30:40] = 0  # a hole
    mask[5, 110] = 1  # a speck
    mask[70:72, 100:118] = 1  # a thin bar
    return mask


# -- Change --------------------------------------------------------------------------------


def test_change_len_bool_and_apply() -> None:
    mask = np.zeros((4, 5), dtype=np.uint8)
    change = Change((np.array([0, 3]), np.array([1, 4])), np.array([2, 9], dtype=np.uint8))
    assert len(change) == 2
    assert change
    change.apply(mask)
    assert mask[0, 1] == 2
    assert mask[3, 4] == 9
    assert mask.sum() == 11
    empty = Change.empty(np.uint8)
    assert len(empty) == 0
    assert not empty


def test_change_between_lists_differences() -> None:
    before = np.zeros((3, 3), dtype=np.uint16)
    after = before.copy()
    after[1, 2] = 300
    change = Change.between(before, after)
    assert len(change) == 1
    assert change.values.dtype == np.uint16
    np.testing.assert_array_equal(applied(before, change), after)


TOOLS: dict[str, Callable[[np.ndarray], Change]] = {
    "delete": lambda m: edit.delete_object(m, 40, 20),
    "remove_small": lambda m: edit.remove_small_objects(m, 5, None),
    "fill_holes": lambda m: edit.fill_holes(m),
    "open": lambda m: edit.smooth(m, 3, None, "open"),
    "close": lambda m: edit.smooth(m, 3, None, "close"),
    "open-close": lambda m: edit.smooth(m, 3, None, "open-close"),
    "merge": lambda m: edit.merge_objects(m, [(40, 60), (71, 110)]),
    "split": lambda m: edit.split_object(m, 40, 80),
}


@pytest.mark.parametrize("tool", TOOLS)
def test_change_lists_only_changed_pixels(tool: str) -> None:
    mask = window_with_everything()
    before = mask.copy()
    change = TOOLS[tool](mask)
    np.testing.assert_array_equal(mask, before)  # the window itself is not modified
    assert change
    rows, cols = change.indices
    assert rows.dtype.kind == cols.dtype.kind == "i"
    assert change.values.dtype == mask.dtype
    assert (mask[rows, cols] != change.values).all()
    # Each pixel once: one undo step restores it.
    assert len({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}) == len(change)


# -- delete ----------------------------------------------------------------------------------


def test_delete_object_removes_only_the_clicked_object() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[1:3, 1:3] = 1
    mask[3, 3] = 1  # touches the square only at a corner: same 8-connected object
    mask[6:9, 6:9] = 1
    change = edit.delete_object(mask, 1.6, 2.4)  # rounded to pixel (2, 2)
    assert len(change) == 5
    out = applied(mask, change)
    assert out[:5, :5].sum() == 0
    assert out[6:9, 6:9].sum() == 9


def test_delete_object_keeps_instance_ids_of_other_objects() -> None:
    mask = np.zeros((6, 6), dtype=np.uint16)
    mask[0:2, 0:2] = 300
    mask[4:6, 4:6] = 7
    out = applied(mask, edit.delete_object(mask, 0, 0))
    assert set(np.unique(out)) == {0, 7}


@pytest.mark.parametrize("point", [(0, 5), (-1, 2), (2, 99)])
def test_delete_object_on_background_or_outside_changes_nothing(point: tuple[int, int]) -> None:
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[2:4, 2:4] = 1
    assert not edit.delete_object(mask, *point)


# -- remove small ----------------------------------------------------------------------------


def test_remove_small_objects_uses_square_microns() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[1:5, 1:5] = 1  # 16 px = 4 µm² at 0.5 µm/px
    mask[10:15, 10:15] = 1  # 25 px = 6.25 µm²
    out = applied(mask, edit.remove_small_objects(mask, 5.0, 0.5))
    assert out[1:5, 1:5].sum() == 0
    assert out[10:15, 10:15].sum() == 25
    # An object of exactly the minimum area stays.
    assert not edit.remove_small_objects(mask, 4.0, 0.5)


def test_remove_small_objects_without_pixel_size_counts_pixels() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[1:5, 1:5] = 1
    mask[10:15, 10:15] = 1
    assert len(edit.remove_small_objects(mask, 17, None)) == 16
    with pytest.raises(ValueError, match="mpp"):
        edit.remove_small_objects(mask, 17, 0)


# -- fill holes ------------------------------------------------------------------------------


def test_fill_holes_fills_enclosed_background_with_the_objects_value() -> None:
    mask = np.zeros((10, 10), dtype=np.uint16)
    mask[2:8, 2:8] = 500
    mask[4:6, 3:6] = 0
    change = edit.fill_holes(mask)
    assert len(change) == 6
    assert (change.values == 500).all()


def test_fill_holes_leaves_background_open_to_the_window_border() -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[0:5, 0:5] = 1
    mask[0:3, 1:3] = 0  # a bay open at the top edge: maybe not a hole past the window
    assert not edit.fill_holes(mask)


def test_fill_holes_diagonal_ring_encloses_its_inside() -> None:
    # A diamond of single pixels touching at corners is one 8-connected object,
    # and it closes the pixel inside it.
    mask = np.zeros((5, 5), dtype=np.uint8)
    mask[1, 2] = mask[2, 1] = mask[2, 3] = mask[3, 2] = 1
    change = edit.fill_holes(mask)
    assert len(change) == 1
    assert (int(change.indices[0][0]), int(change.indices[1][0])) == (2, 2)


def test_fill_holes_around_an_island_takes_the_enclosing_objects_value() -> None:
    mask = np.zeros((11, 11), dtype=np.uint8)
    mask[1:10, 1:10] = 4
    mask[2:9, 2:9] = 0
    mask[5, 5] = 9  # an island in the lake
    out = applied(mask, edit.fill_holes(mask))
    assert (out[2:9, 2:9] == 4).sum() == 48
    assert out[5, 5] == 9


def test_fill_holes_maximum_area_in_square_microns() -> None:
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:8, 2:8] = 1
    mask[4:6, 4:6] = 0  # 4 px = 1 µm² at 0.5 µm/px
    mask[2:14, 12:24] = 1
    mask[4:12, 14:22] = 0  # 64 px = 16 µm²
    assert len(edit.fill_holes(mask, max_hole_um2=1.0, mpp=0.5)) == 4
    assert len(edit.fill_holes(mask, max_hole_um2=16.0, mpp=0.5)) == 68


# -- smooth ----------------------------------------------------------------------------------


def test_smooth_open_removes_a_spur_thinner_than_the_disk() -> None:
    mask = np.zeros((50, 60), dtype=np.uint8)
    mask[10:30, 10:30] = 1
    mask[19:22, 30:45] = 1  # 3 px wide spur
    change = edit.smooth(mask, radius_um=1.0, mpp=0.5, operation="open")  # 2 px disk
    out = applied(mask, change)
    assert out[19:22, 32:45].sum() == 0
    assert (change.values == 0).all()
    assert out[12:28, 12:28].all()


def test_smooth_close_fills_a_narrow_notch() -> None:
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[10:30, 10:30] = 1
    mask[10:20, 19:21] = 0  # notch 2 px wide
    out = applied(mask, edit.smooth(mask, 2, None, "close"))
    # Filled but for its mouth, which stays on the object's straight edge.
    assert out[11:20, 19:21].all()
    assert out[10, 19:21].sum() == 0


def test_smooth_keeps_objects_cut_by_the_window_border() -> None:
    mask = np.zeros((30, 30), dtype=np.uint8)
    mask[0:10, 0:30] = 1  # a band across the window, along its top edge
    for operation in ("open", "close", "open-close"):
        assert not edit.smooth(mask, 3, None, operation)


def test_smooth_close_gives_added_pixels_the_nearest_objects_value() -> None:
    mask = np.zeros((20, 30), dtype=np.uint16)
    mask[5:15, 2:12] = 3
    mask[5:15, 14:26] = 900  # a 2 px gap between two instances
    change = edit.smooth(mask, 2, None, "close")
    out = applied(mask, change)
    assert out[8, 12] == 3
    assert out[8, 13] == 900
    assert set(np.unique(change.values)) == {3, 900}


def test_smooth_rejects_unknown_operation_and_bad_radius() -> None:
    mask = np.ones((5, 5), dtype=np.uint8)
    with pytest.raises(ValueError, match="operation"):
        edit.smooth(mask, 1, None, "dilate")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="radius"):
        edit.smooth(mask, 0, None)


# -- merge -----------------------------------------------------------------------------------


def test_merge_objects_joins_them_through_their_convex_hull() -> None:
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask |= disk(mask.shape, (20, 12), 8).astype(np.uint8) * 2
    mask[disk(mask.shape, (20, 45), 8)] = 5
    change = edit.merge_objects(mask, [(20, 12), (20, 45), (0, 0)])
    out = applied(mask, change)
    assert count_objects(out) == 1
    assert (change.values == 2).all()  # the first point's object
    assert (mask[change.indices] == 0).all()  # only background changed
    assert out[20, 30] == 2  # the gap between them
    assert out[0:8, :].sum() == 0  # nothing outside the hull


def test_merge_objects_joins_thin_objects_far_apart_on_a_diagonal() -> None:
    # The hull of two single pixels is a line; it is filled with no gap.
    mask = np.zeros((30, 30), dtype=np.uint8)
    mask[2, 3] = mask[25, 11] = 1
    out = applied(mask, edit.merge_objects(mask, [(2, 3), (25, 11)]))
    assert count_objects(out, connectivity=4) == 1


def test_merge_objects_needs_two_different_objects() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[1:4, 1:4] = 1
    with pytest.raises(ValueError, match="at least two different objects"):
        edit.merge_objects(mask, [(1, 1), (3, 3), (8, 8)])


# -- split -----------------------------------------------------------------------------------


def test_split_object_leaves_two_8_connected_parts() -> None:
    mask = two_overlapping_discs()
    change = edit.split_object(mask, 40, 35)
    out = applied(mask, change)
    labels, count = ndimage.label(out, EIGHT)
    assert count == 2
    assert labels[40, 35] != labels[40, 80]
    assert (change.values == 0).all()
    # The cut runs across the neck (the circles meet near column 59), not elsewhere.
    assert change.indices[1].min() >= 50
    assert change.indices[1].max() <= 65
    assert len(change) < 60


@pytest.mark.parametrize("flip", [False, True])
def test_split_object_cut_along_a_diagonal_separates_8_connected_parts(flip: bool) -> None:
    # Centres on a diagonal: the meeting line is diagonal, where a one-pixel
    # line would leave the parts touching at corners.
    shape = (100, 100)
    mask = (disk(shape, (30, 30), 20) | disk(shape, (56, 56), 20)).astype(np.uint8)
    assert count_objects(mask) == 1
    if flip:
        mask = np.ascontiguousarray(mask[:, ::-1])
    out = applied(mask, edit.split_object(mask, 30, 69 if flip else 30))
    assert count_objects(out, connectivity=8) == 2


def test_split_object_into_three_pieces() -> None:
    shape = (60, 130)
    mask = (
        disk(shape, (30, 25), 20) | disk(shape, (30, 60), 20) | disk(shape, (30, 95), 20)
    ).astype(np.uint8)
    assert count_objects(mask) == 1
    out = applied(mask, edit.split_object(mask, 30, 60, pieces=3))
    labels, count = ndimage.label(out, EIGHT)
    assert count == 3
    assert len({labels[30, 25], labels[30, 60], labels[30, 95]}) == 3


def test_split_object_keeps_the_instance_value() -> None:
    mask = two_overlapping_discs().astype(np.uint16) * 1234
    out = applied(mask, edit.split_object(mask, 40, 35))
    assert set(np.unique(out)) == {0, 1234}


def test_split_object_refuses_a_round_object_and_background() -> None:
    mask = disk((60, 60), (30, 30), 20).astype(np.uint8)
    with pytest.raises(ValueError, match="neck"):
        edit.split_object(mask, 30, 30)
    with pytest.raises(ValueError, match="no object"):
        edit.split_object(mask, 0, 0)
    with pytest.raises(ValueError, match="pieces"):
        edit.split_object(two_overlapping_discs(), 40, 35, pieces=1)


# -- real data -------------------------------------------------------------------------------


def test_tools_on_an_expert_glomerulus_mask(shared_data: Path) -> None:
    mask = np.asarray(read_mask(shared_data / "glomeruli/bueno_pas/masks/10014.png"))
    assert set(np.unique(mask)) == {0, 1}
    labels, count = ndimage.label(mask, EIGHT)
    assert count >= 1
    rows, cols = np.nonzero(labels == 1)
    area = rows.size

    change = edit.delete_object(mask, rows[area // 2], cols[area // 2])
    out = applied(mask, change)
    assert len(change) == area
    assert count_objects(out) == count - 1
    assert out.sum() == mask.sum() - area

    # An expert outline is smooth and solid already: smoothing by 1 µm moves
    # a sliver of its pixels, and no object appears or disappears.
    smoothed = applied(mask, edit.smooth(mask, 1.0, 0.5, "open-close"))
    assert abs(int(smoothed.sum()) - int(mask.sum())) < 0.01 * mask.sum()
    assert count_objects(smoothed) == count
    assert not edit.remove_small_objects(mask, 100.0, 0.5)

"""Removing small objects from masks of any size, block by block."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage

from slide_unet.core.inference.postprocess import drop_small_objects, min_pixels


def _reference(mask: np.ndarray, least: int) -> np.ndarray:
    labels, _ = ndimage.label(mask, np.ones((3, 3)))
    areas = np.bincount(labels.ravel())
    keep = areas >= least
    keep[0] = False
    return (keep[labels] * mask).astype(mask.dtype)


def test_min_pixels_converts_square_microns_at_the_pixel_size() -> None:
    assert min_pixels(100.0, 0.5) == 400
    assert min_pixels(10.0, None) == 10
    with pytest.raises(ValueError, match="0 or more"):
        min_pixels(-1.0, 0.5)


def test_drop_small_objects_matches_whole_image_labelling_across_chunks(tmp_path) -> None:
    rng = np.random.default_rng(3)
    mask = (ndimage.gaussian_filter(rng.random((700, 900)), 4) > 0.52).astype(np.uint8)
    # One object that crosses many chunk borders and is large in total but
    # small in each chunk: measured whole, it must stay.
    mask[100:103, 0:900] = 1
    array = zarr.create_array(
        store=str(tmp_path / "m.zarr"), shape=mask.shape, chunks=(128, 128), dtype="uint8"
    )
    array[:] = mask
    expected = _reference(mask, 60)
    removed = drop_small_objects(array, 60, block=128)
    assert removed > 0
    np.testing.assert_array_equal(array[:], expected)
    assert array[101, 450] == 1


def test_drop_small_objects_calls_the_writer_with_the_changed_box_only() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[2:4, 2:4] = 1  # 4 pixels: dropped
    mask[20:40, 20:40] = 1  # kept
    writes = []
    removed = drop_small_objects(mask, 5, block=32, write=lambda y, x, b: writes.append((y, x, b)))
    assert removed == 1
    assert len(writes) == 1
    y, x, block = writes[0]
    assert (y, x, block.shape) == (2, 2, (2, 2))  # only the box of what changed
    assert not block.any()


def test_drop_small_objects_with_a_threshold_of_one_changes_nothing() -> None:
    mask = np.eye(8, dtype=np.uint8)
    assert drop_small_objects(mask, 1) == 0
    np.testing.assert_array_equal(mask, np.eye(8, dtype=np.uint8))

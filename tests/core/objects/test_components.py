"""Tests of streaming connected-component labelling (slide_unet.core.objects.components)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from slide_unet.core.errors import Cancelled
from slide_unet.core.masks.blocks import BlockGrid
from slide_unet.core.objects.components import (
    BlockLabeller,
    label_chunked,
    squeeze_empty,
)

EIGHT = np.ones((3, 3), dtype=bool)


def scipy_labels(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    return ndimage.label(np.asarray(mask) != 0, EIGHT if connectivity == 8 else None)


def assert_same_as_scipy(mask: np.ndarray, labels, connectivity: int = 8) -> None:
    """Labels, count, areas and boxes equal scipy.ndimage on the whole mask."""
    ref, n = scipy_labels(mask, connectivity)
    assert labels.n_objects == n
    np.testing.assert_array_equal(labels.to_numpy(), ref)
    np.testing.assert_array_equal(labels.areas, np.bincount(ref.ravel(), minlength=n + 1))
    assert labels.object_slices() == ndimage.find_objects(ref)


# --- hand-made cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 3, 4, 8])
def test_diagonal_line_through_block_corners_is_one_object_with_8_connectivity(block: int) -> None:
    for mask in (np.eye(8, dtype=bool), np.fliplr(np.eye(8, dtype=bool))):
        labels = label_chunked(mask, block=block)
        assert labels.n_objects == 1
        assert labels.areas[1] == 8
        assert labels.object_slices() == [(slice(0, 8), slice(0, 8))]
        assert label_chunked(mask, connectivity=4, block=block).n_objects == 8


def test_corner_pixels_of_four_blocks_join_only_diagonally() -> None:
    # Blocks of 2 x 2: pixels (1, 1) and (2, 2) touch only at the corner shared by four blocks;
    # (1, 2) and (2, 1) likewise, the other way.
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[1, 1] = mask[2, 2] = 1
    assert label_chunked(mask, block=2).n_objects == 1
    assert label_chunked(mask, block=2, connectivity=4).n_objects == 2
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[1, 2] = mask[2, 1] = 7
    assert label_chunked(mask, block=2).n_objects == 1
    assert label_chunked(mask, block=2, connectivity=4).n_objects == 2


def test_u_shape_joined_only_in_a_later_block_row() -> None:
    # Two arms that meet only at the bottom, three block rows below where they start.
    mask = np.zeros((12, 9), dtype=bool)
    mask[:, 1] = mask[:, 7] = True
    mask[11, 1:8] = True
    labels = label_chunked(mask, block=3)
    assert labels.n_objects == 1
    assert_same_as_scipy(mask, labels)


def test_spiral_needs_many_merges() -> None:
    mask = np.zeros((31, 31), dtype=bool)
    y0, x0, y1, x1 = 0, 0, 30, 30
    while y0 <= y1 and x0 <= x1:
        mask[y0, x0 : x1 + 1] = mask[y0 : y1 + 1, x1] = True
        mask[y1, x0 : x1 + 1] = True
        mask[y0 + 2 : y1 + 1, x0] = True
        y0, x0, y1, x1 = y0 + 2, x0 + 2, y1 - 2, x1 - 2
        if y0 <= y1:
            mask[y0, x0 - 1] = True
    for block in (2, 5, 7, 31):
        assert_same_as_scipy(mask, label_chunked(mask, block=block))


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (1, 1), (7, 3)])
def test_empty_mask_has_no_objects(shape: tuple[int, int]) -> None:
    labels = label_chunked(np.zeros(shape, np.uint8), block=2)
    assert labels.n_objects == 0
    assert labels.areas.tolist() == [shape[0] * shape[1]]
    assert labels.to_numpy().shape == shape


def test_full_mask_is_one_object() -> None:
    labels = label_chunked(np.full((9, 11), 255, np.uint8), block=4)
    assert labels.n_objects == 1
    assert labels.areas.tolist() == [0, 99]
    assert labels.bboxes[1].tolist() == [0, 0, 9, 11]


def test_any_nonzero_value_is_foreground() -> None:
    instances = np.array([[0, 3, 0], [0, 9, 0], [2, 0, 0]], dtype=np.uint16)
    labels = label_chunked(instances, block=2)
    assert labels.n_objects == 1  # instance ids are binarised; 8-connectivity joins them
    assert labels.areas[1] == 3


# --- chunked inputs -----------------------------------------------------------------------------


def random_blobs(shape: tuple[int, int], seed: int, density: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seeds = rng.random(shape) < density
    return ndimage.binary_dilation(seeds, EIGHT, iterations=2) ^ (rng.random(shape) < 0.02)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize(("chunks", "block"), [((16, 16), 16), ((10, 7), 20), ((33, 50), 64)])
def test_dask_and_zarr_masks_label_like_scipy(
    connectivity: int, chunks: tuple[int, int], block: int
) -> None:
    mask = random_blobs((97, 131), seed=block)
    stored = zarr.array(mask.astype(np.uint8) * 255, chunks=chunks)
    lazy = da.from_array(mask, chunks=chunks)
    for source in (stored, lazy):
        labels = label_chunked(source, connectivity=connectivity, block=block)
        assert_same_as_scipy(mask, labels, connectivity)


def test_blocks_yields_global_labels_block_by_block() -> None:
    mask = random_blobs((50, 70), seed=3)
    labels = label_chunked(zarr.array(mask, chunks=(8, 8)), block=16)
    ref, _ = scipy_labels(mask)
    seen = np.zeros(mask.shape, dtype=bool)
    for slices, block in labels.blocks():
        np.testing.assert_array_equal(block, ref[slices])
        seen[slices] = True
    assert seen.all()
    assert labels.grid.block_shape == (16, 16)


def test_changed_source_is_detected() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = True
    labels = label_chunked(mask, block=3)
    mask[1, 4] = True  # a new object in block (0, 1)
    with pytest.raises(RuntimeError, match="changed"):
        labels.to_numpy()


# --- block grid ---------------------------------------------------------------------------------


def test_block_grid_follows_chunks() -> None:
    assert BlockGrid.for_arrays((10_000, 10_000), 4096).block_shape == (4096, 4096)
    z = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(10_000, 10_000), chunks=(1000, 300), dtype="u1"
    )
    assert BlockGrid.for_arrays(z.shape, 4096, [z]).block_shape == (4000, 3900)
    d = da.zeros((10_000, 10_000), chunks=(6000, 20_000))  # a chunk over 2 blocks: not followed
    assert BlockGrid.for_arrays(d.shape, 4096, [np.zeros(1), d]).block_shape == (6000, 4096)
    small = BlockGrid.for_arrays((5, 7), 4096)
    assert small.block_shape == (5, 7)
    assert len(small) == 1
    with pytest.raises(ValueError, match="block must be a positive"):
        BlockGrid.for_arrays((5, 5), 0)


def test_block_grid_follows_zarr_shards() -> None:
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(5000, 5000),
        chunks=(256, 256),
        shards=(2048, 2048),
        dtype="u1",
    )
    assert BlockGrid.for_arrays(z.shape, 4096, [z]).block_shape == (4096, 4096)
    assert BlockGrid.for_arrays(z.shape, 3000, [z]).block_shape == (2048, 2048)


# --- squeezing empty rows and columns --------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, max_side=24), elements=st.booleans())
)
def test_squeezing_keeps_labels_and_their_order(mask: np.ndarray) -> None:
    mask = mask & (np.random.default_rng(mask.size).random(mask.shape) < 0.3)  # sparser
    squeezed = squeeze_empty(mask, most=1.0)
    assert squeezed is not None
    for structure in (EIGHT, None):
        full, n = ndimage.label(mask, structure)
        small, m = ndimage.label(squeezed.apply(mask), structure)
        assert m == n
        np.testing.assert_array_equal(small, squeezed.apply(full))


# --- properties against scipy -----------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    mask=hnp.arrays(
        bool, hnp.array_shapes(min_dims=2, max_dims=2, max_side=30), elements=st.booleans()
    ),
    keep=st.floats(0.05, 1.0),
    block=st.integers(1, 12),
    connectivity=st.sampled_from([4, 8]),
)
def test_labels_equal_scipy_for_any_block_size(
    mask: np.ndarray, keep: float, block: int, connectivity: int
) -> None:
    mask = mask & (np.random.default_rng(block).random(mask.shape) < keep)
    labels = label_chunked(mask, connectivity=connectivity, block=block)
    assert_same_as_scipy(mask, labels, connectivity)


# --- callbacks and errors -----------------------------------------------------------------------


def test_progress_and_cancel() -> None:
    mask = random_blobs((40, 40), seed=1)
    calls: list[tuple[int, int]] = []
    label_chunked(mask, block=16, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 9) for k in range(1, 10)]
    with pytest.raises(Cancelled):
        label_chunked(mask, block=16, cancelled=lambda: True)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"2-D \(height, width\), got shape \(2, 3, 4\)"):
        label_chunked(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        label_chunked(np.zeros((2, 3)), connectivity=6)
    labeller = BlockLabeller(BlockGrid((4, 4), (2, 2)))
    with pytest.raises(ValueError, match=r"should have shape \(2, 2\)"):
        labeller.add(np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="only 0 of 4 blocks"):
        labeller.finish()
    for _ in range(4):
        labeller.add(np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="already been added"):
        labeller.add(np.zeros((2, 2), bool))
    assert labeller.finish().n_objects == 0
    with pytest.raises(ValueError, match="without a source"):
        next(labeller.finish().blocks())

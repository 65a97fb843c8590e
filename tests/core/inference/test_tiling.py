"""Tile grids, exact resampling and tissue detection (slide_unet.core.inference.tiling)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slide_unet.core.inference.tiling import (
    apply_taps,
    block_output_taps,
    make_grid,
    reflect_index,
    resample_taps,
)
from slide_unet.core.slide.tissue import tissue_mask


def test_reflect_index_mirrors_symmetrically_at_both_ends() -> None:
    index = np.arange(-4, 9)
    assert reflect_index(index, 5).tolist() == [3, 2, 1, 0, 0, 1, 2, 3, 4, 4, 3, 2, 1]


@pytest.mark.parametrize("ratio", [1.0, 0.25, 0.77, 1.3, 2.0, 3.7])
def test_resample_taps_of_a_window_are_the_windows_of_the_whole(ratio: float) -> None:
    whole = resample_taps(0, 200, ratio)
    part = resample_taps(37, 151, ratio)
    np.testing.assert_allclose(part.weight.sum(axis=1), 1, rtol=1e-6)
    # Same taps pixel by pixel: whatever tile a pixel falls in, its value is the same.
    signal = np.random.default_rng(0).random(int(260 * ratio) + 10).astype(np.float32)

    def values(taps: np.ndarray, weight: np.ndarray) -> np.ndarray:
        index = reflect_index(taps, len(signal))
        return apply_taps(signal, index, weight, axis=0)

    np.testing.assert_array_equal(
        values(part.index, part.weight), values(whole.index, whole.weight)[37:151]
    )


def test_resample_taps_identity_and_box_means() -> None:
    taps = resample_taps(5, 9, 1.0)
    assert taps.identity
    assert taps.index[:, 0].tolist() == [5, 6, 7, 8]
    # Enlarging by 2: bilinear between neighbours, centres at half pixels.
    up = resample_taps(0, 4, 0.5)
    row = np.array([0.0, 4.0, 8.0], np.float32)
    values = apply_taps(row, reflect_index(up.index, 3), up.weight, axis=0)
    np.testing.assert_allclose(values, [0.0, 1.0, 3.0, 5.0])
    # A constant stays constant whatever the ratio (weights are normalised).
    ones = np.ones(50, np.float32)
    for ratio in (0.3, 1.7, 2.0, 4.0):
        t = resample_taps(0, 10, ratio)
        np.testing.assert_allclose(apply_taps(ones, reflect_index(t.index, 50), t.weight, 0), 1)


@pytest.mark.parametrize(
    ("shape", "region", "scale", "tile"),
    [
        ((1000, 777), (0, 1000, 0, 777), 1.0, 256),
        ((1000, 777), (13, 901, 250, 700), 1.0, 192),
        ((4000, 3000), (0, 4000, 0, 3000), 4.0, 256),
        ((4000, 3000), (123, 3456, 7, 2999), 2.6, 320),
        ((999, 1001), (0, 999, 0, 1001), 0.5, 256),
        ((64, 80), (0, 64, 0, 80), 1.3, 160),
    ],
)
def test_blocks_tile_the_region_exactly_and_tiles_cover_what_blocks_need(
    shape: tuple[int, int], region: tuple[int, int, int, int], scale: float, tile: int
) -> None:
    halo, multiple = 32, 16
    grid = make_grid(shape, region, scale=scale, tile=tile, halo=halo, multiple=multiple)
    assert grid.tile <= tile
    assert grid.tile % multiple == 0
    assert grid.block % grid.store_chunk == 0
    y0, y1, x0, x1 = region
    cover = np.zeros((y1 - y0, x1 - x0), np.int32)
    kept = grid.tile - 2 * halo
    for block in grid.blocks():
        cover[block.y0 - y0 : block.y1 - y0, block.x0 - x0 : block.x1 - x0] += 1
        # Blocks start on the store's chunk grid (disjoint writers).
        assert (block.y0 - y0) % grid.store_chunk == 0
        assert (block.x0 - x0) % grid.store_chunk == 0
        # Tiles sit on the model's pooling grid.
        assert block.tile_y % multiple == 0
        assert block.tile_x % multiple == 0
        # Every tap with weight falls in the tile's kept centre.
        rows, cols = block_output_taps(grid, block)
        for taps in (rows, cols):
            live = taps.index[taps.weight > 0]
            assert live.min() >= 0
            assert live.max() < kept
    assert (cover == 1).all()
    assert grid.working_shape == (math.ceil(shape[0] / scale), math.ceil(shape[1] / scale))


@pytest.mark.parametrize(
    ("region", "scale", "tile"),
    [
        ((0, 20000, 0, 30000), 4.0, 752),
        ((2148, 10240, 11301, 19456), 4.0, 752),
        ((13, 901, 250, 700), 1.0, 800),
    ],
)
def test_aligned_blocks_lie_on_the_images_grid_and_still_tile_the_region(
    region: tuple[int, int, int, int], scale: float, tile: int
) -> None:
    grid = make_grid(
        (20000, 30000), region, scale=scale, tile=tile, halo=96, multiple=16, align=512
    )
    assert grid.block % 512 == 0
    y0, y1, x0, x1 = region
    cover = np.zeros((y1 - y0, x1 - x0), np.int32)
    for block in grid.blocks():
        cover[block.y0 - y0 : block.y1 - y0, block.x0 - x0 : block.x1 - x0] += 1
        # Every edge inside the region is on the image's grid of 512: whole chunks.
        for edge, border in ((block.y0, y0), (block.y1, y1), (block.x0, x0), (block.x1, x1)):
            assert edge == border or edge % 512 == 0
    assert (cover == 1).all()
    # No more blocks than an unaligned grid of the same block side needs, plus one a side.
    rows, cols = grid.shape
    assert rows <= -(-(y1 - y0) // grid.block) + 1
    assert cols <= -(-(x1 - x0) // grid.block) + 1
    if y0 % 512 == 0:
        assert rows == -(-(y1 - y0) // grid.block)


def test_a_block_too_large_for_the_alignment_falls_back_to_tidy_blocks() -> None:
    grid = make_grid(
        (2000, 2000), (0, 2000, 0, 2000), scale=1.0, tile=256, halo=32, multiple=16, align=512
    )
    assert grid.block < 512
    assert grid.block % 64 == 0


def test_grid_prefers_tidy_blocks_for_the_store() -> None:
    whole = (0, 20000, 0, 20000)
    grid = make_grid((20000, 20000), whole, scale=1.0, tile=1024, halo=128, multiple=16)
    assert (grid.block, grid.tile) == (768, 1024)
    big = make_grid((20000, 20000), whole, scale=4.0, tile=1024, halo=128, multiple=16)
    assert big.block % 64 == 0
    assert big.store_chunk <= 2048
    assert big.block % big.store_chunk == 0


def test_grid_picks_the_block_that_costs_least_model_work() -> None:
    # 8192 is 16 blocks of 512 but 14.2 of 576: the smaller block runs fewer pixels.
    grid = make_grid((8192, 8192), (0, 8192, 0, 8192), scale=1.0, tile=768, halo=96, multiple=16)
    assert (grid.block, grid.tile, len(grid)) == (512, 704, 256)
    assert 256 * 704**2 < 15 * 15 * 768**2


def test_grid_refuses_a_tile_with_no_room_inside_the_halo() -> None:
    with pytest.raises(ValueError, match="halo"):
        make_grid((100, 100), (0, 100, 0, 100), scale=1.0, tile=64, halo=32, multiple=16)


# -- tissue ----------------------------------------------------------------------------


def _half_tissue(height: int = 600, width: int = 800, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 242, np.uint8)
    image += rng.integers(0, 6, image.shape, dtype=np.uint8)
    pink = np.array([200, 110, 170]) + rng.integers(-30, 30, (height, width // 2, 3))
    image[:, : width // 2] = np.clip(pink, 0, 255)
    return image


def test_tissue_mask_finds_stained_tissue_and_not_white_background() -> None:
    found = tissue_mask(_half_tissue())
    assert found is not None
    assert found.mask[:, :390].all()
    assert not found.mask[:, 420:].any()
    assert found.any_in(0, 100, 350, 410)
    assert not found.any_in(0, 600, 450, 800)
    assert 0.45 < found.fraction < 0.55


def test_tissue_mask_uses_a_small_pyramid_level_with_the_right_scale() -> None:
    image = _half_tissue(2048, 2048)
    levels = [image, image[::4, ::4], image[::16, ::16]]
    found = tissue_mask(levels, mpp=1.0, target_mpp=5.0)
    assert found is not None
    assert found.mask.shape == levels[1].shape[:2]
    assert found.downsample == (4.0, 4.0)
    assert not found.any_in(0, 2048, 1100, 2048)


def test_tissue_mask_of_a_lone_array_reads_every_nth_pixel_near_the_target_scale() -> None:
    image = _half_tissue(2048, 2048)
    found = tissue_mask(image, mpp=2.0, target_mpp=16.0)  # no pyramid: a step of 8
    assert found is not None
    assert found.mask.shape == (256, 256)
    assert found.downsample == (8.0, 8.0)
    assert found.any_in(0, 2048, 0, 1000)
    assert not found.any_in(0, 2048, 1100, 2048)
    assert tissue_mask(image).mask.shape == (2048, 2048)  # pixel size unknown: all of it


def test_tissue_mask_skips_gray_fluorescence_and_big_levels() -> None:
    gray = np.full((300, 300), 240, np.uint8)
    assert tissue_mask(gray) is None
    dark = np.zeros((300, 300, 3), np.uint8)
    dark[100:150, 100:150, 1] = 200  # green cells on black: fluorescence
    assert tissue_mask(dark) is None

    class Lazy:  # a chunked array too big to decode for a tissue mask
        shape = (100_000, 100_000, 3)
        ndim = 3
        dtype = np.dtype(np.uint8)

    assert tissue_mask([Lazy()]) is None

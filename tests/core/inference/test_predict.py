"""Tiled segmentation (core.inference.segment): exactness, scale, tissue, outputs, control."""

from __future__ import annotations

import itertools
import math
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slide_unet.core.devices import resolve_device
from slide_unet.core.errors import Cancelled
from slide_unet.core.inference import pipeline
from slide_unet.core.inference.planning import plan_segmentation
from slide_unet.core.inference.segment import create_output, run_blocks, segment
from slide_unet.core.inference.tiling import apply_taps, reflect_index, resample_taps
from slide_unet.core.masks.io import read_mask
from slide_unet.core.model.unet import UNet


def normalise(image: np.ndarray, model: UNet) -> torch.Tensor:
    """``image`` as the model's input, normalised as its card says."""
    x = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None] / 255
    mean = torch.tensor(model.card.normalization["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.card.normalization["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def whole_pass(model: UNet, x: torch.Tensor) -> np.ndarray:
    """One model pass over the whole normalised image (zero-padded to a valid shape)."""
    height, width = x.shape[2:]
    m = model.multiple
    padded = F.pad(x, (0, (-width) % m, 0, (-height) % m))
    return model.predict(padded)[0, 0, :height, :width].numpy()


# -- exactness -------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [160, 224, 352])
def test_tiled_output_equals_a_whole_image_pass_away_from_the_border(
    random_rgb, tiny_unet, tile: int
) -> None:
    model = tiny_unet()
    image = random_rgb(301, 419)
    # fp32: the reference is a float32 pass (CPUs with native bf16 default to bf16).
    exact = {"tissue": False, "device": "cpu", "precision": "fp32"}
    probs = segment(image, model, tile=tile, probabilities=True, **exact)
    assert probs.dtype == np.float32
    assert probs.shape == image.shape[:2]
    whole = whole_pass(model, normalise(image, model))
    h = model.halo
    inner = (slice(h, -h), slice(h, -h))
    np.testing.assert_allclose(probs[inner], whole[inner], atol=1e-4, rtol=0)
    assert np.ptp(whole[inner]) > 1e-3  # the test would be empty on a flat output

    mask = segment(image, model, tile=tile, threshold=0.5, **exact)
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    expected = (whole > 0.5).astype(np.uint8)
    clear = np.abs(whole - 0.5) > 1e-4
    np.testing.assert_array_equal(mask[inner][clear[inner]], expected[inner][clear[inner]])


def test_tta_averages_the_eight_rotations_and_flips_of_each_tile(random_rgb, tiny_unet) -> None:
    model = tiny_unet()
    image = random_rgb(256, 320, seed=3)  # sides on the pooling grid: flips keep it
    exact = {"tissue": False, "device": "cpu", "precision": "fp32", "probabilities": True}
    tta = segment(image, model, tile=256, tta=True, **exact)
    views = []
    for flip in (False, True):
        for turns in range(4):
            view = np.rot90(image[:, ::-1] if flip else image, turns)
            prob = np.rot90(segment(np.ascontiguousarray(view), model, tile=256, **exact), -turns)
            views.append(prob[:, ::-1] if flip else prob)
    h = model.halo
    inner = (slice(h, -h), slice(h, -h))
    np.testing.assert_allclose(tta[inner], np.mean(views, axis=0)[inner], atol=1e-4, rtol=0)
    plain = views[0]
    assert np.abs(tta - plain)[inner].max() > 1e-3  # it is not the plain pass
    mask = segment(image, model, tile=256, tta=True, tissue=False, device="cpu")
    assert set(np.unique(mask)) <= {0, 1}


def test_tile_size_does_not_change_the_result_even_at_the_border(random_rgb, tiny_unet) -> None:
    # Mirrored context is absolute, not per tile, so tilings agree everywhere.
    model = tiny_unet()
    image = random_rgb(250, 333, seed=1)
    runs = [
        segment(image, model, tile=t, probabilities=True, tissue=False, device="cpu")
        for t in (160, 256)
    ]
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5, rtol=0)


def _reference_at_scale(
    model: UNet, level: np.ndarray, full_shape: tuple[int, int], level_down: int, scale: float
) -> np.ndarray:
    """Resample the whole level to working scale, one model pass, back to full resolution."""
    ratio = scale / level_down
    work_h, work_w = (math.ceil(n / scale) for n in full_shape)
    rows, cols = resample_taps(0, work_h, ratio), resample_taps(0, work_w, ratio)
    working = apply_taps(level, reflect_index(rows.index, level.shape[0]), rows.weight, 0)
    working = apply_taps(working, reflect_index(cols.index, level.shape[1]), cols.weight, 1)
    probs = whole_pass(model, normalise(working, model))
    back_r = resample_taps(0, full_shape[0], 1 / scale)
    back_c = resample_taps(0, full_shape[1], 1 / scale)
    out = apply_taps(probs, np.clip(back_r.index, 0, work_h - 1), back_r.weight, 0)
    return apply_taps(out, np.clip(back_c.index, 0, work_w - 1), back_c.weight, 1)


@pytest.mark.parametrize(("working_mpp", "level"), [(2.0, 2), (1.3, 1), (0.35, 0)])
def test_tiled_output_equals_a_whole_pass_at_the_working_scale(
    random_rgb, slides, tiny_unet, tmp_path: Path, working_mpp: float, level: int
) -> None:
    image = random_rgb(560, 720, seed=2)
    path = slides.write_ome_pyramid(
        tmp_path / "s.ome.tif", image, levels=3, compression="zlib", mpp=0.5
    )
    model = tiny_unet(working_mpp=working_mpp)
    plan = plan_segmentation(path, model, tile=192, tissue=False, device="cpu")
    assert plan.level == level
    probs = segment(
        path, model, tile=192, probabilities=True, tissue=False, device="cpu", precision="fp32"
    )
    assert probs.shape == image.shape[:2]
    scale = working_mpp / 0.5
    down = 2**level
    reference = _reference_at_scale(model, image[::down, ::down], image.shape[:2], down, scale)
    margin = math.ceil((model.halo + 3) * scale)
    inner = (slice(margin, -margin), slice(margin, -margin))
    np.testing.assert_allclose(probs[inner], reference[inner], atol=1e-4, rtol=0)


def test_region_equals_the_same_window_of_a_whole_slide_run(random_rgb, tiny_unet) -> None:
    model = tiny_unet()
    image = random_rgb(300, 400, seed=3)
    whole = segment(image, model, tile=192, probabilities=True, tissue=False, device="cpu")
    for region in [(37, 201, 55, 333), (0, 90, 310, 400), (251, 300, 0, 17)]:
        y0, y1, x0, x1 = region
        part = segment(
            image, model, region=region, tile=192, probabilities=True, tissue=False, device="cpu"
        )
        assert part.shape == (y1 - y0, x1 - x0)
        np.testing.assert_allclose(part, whole[y0:y1, x0:x1], atol=1e-5, rtol=0)


# -- scale and geometry ------------------------------------------------------------------


@pytest.fixture
def red_slide(slides, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 0.5 µm pyramidal OME-TIFF: a red rectangle on black."""
    image = np.zeros((1024, 1536, 3), np.uint8)
    image[200:520, 300:900, 0] = 255
    path = slides.write_ome_pyramid(
        tmp_path / "red.ome.tif", image, levels=3, compression="zlib", mpp=0.5
    )
    return path, image


@pytest.mark.parametrize(
    ("working_mpp", "level", "slack"),
    [(0.5, 0, 0), (2.0, 2, 0), (1.0, 1, 0), (1.3, 1, 2), (0.3, 0, 1)],
)
def test_objects_land_in_place_at_full_resolution(
    red_threshold,
    red_slide: tuple[Path, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    working_mpp: float,
    level: int,
    slack: int,
) -> None:
    path, image = red_slide
    read_shapes = set()
    real_read = pipeline.read_box

    def spy(level_array: Any, *box: int) -> np.ndarray:
        read_shapes.add(tuple(level_array.shape[:2]))
        return real_read(level_array, *box)

    monkeypatch.setattr(pipeline, "read_box", spy)
    model = red_threshold(working_mpp=working_mpp)
    mask = segment(path, model, tissue=False, device="cpu")
    assert mask.shape == image.shape[:2]
    assert read_shapes == {(1024 // 2**level, 1536 // 2**level)}
    truth = image[..., 0] > 0
    if working_mpp == 0.5:
        np.testing.assert_array_equal(mask, truth)
    # Only pixels within `slack` of the rectangle's edges may differ (at integer
    # scales only its corners, which bilinear interpolation rounds off).
    wrong = np.argwhere(mask != truth)
    near_rows = (np.abs(wrong[:, 0] - 200) <= slack) | (np.abs(wrong[:, 0] - 519) <= slack)
    near_cols = (np.abs(wrong[:, 1] - 300) <= slack) | (np.abs(wrong[:, 1] - 899) <= slack)
    assert (near_rows | near_cols).all()
    if slack == 0:
        assert len(wrong) <= 4
    assert abs(int(mask.sum()) - int(truth.sum())) < 0.01 * truth.sum()


def test_pixel_size_from_argument_then_card_default_for_arrays(red_threshold) -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    model = red_threshold(working_mpp=2.0)
    assert plan_segmentation(image, model, mpp=0.5, device="cpu").scale == 4.0
    model.card.default_input_mpp = 1.0
    assert plan_segmentation(image, model, device="cpu").scale == 2.0
    assert plan_segmentation(image, model, mpp=0.25, device="cpu").scale == 8.0
    model.card.default_input_mpp = None
    with pytest.warns(UserWarning, match="pixel size is unknown"):
        assert plan_segmentation(image, model, device="cpu").scale == 1.0


def test_channels_rgba_gray_and_16_bit_are_matched_to_the_model(random_rgb, tiny_unet) -> None:
    model = tiny_unet()
    rgb = random_rgb(150, 170, seed=4)
    run = {"tile": 160, "probabilities": True, "tissue": False, "device": "cpu"}
    run["precision"] = "fp32"  # compared with a float32 pass
    base = segment(rgb, model, **run)
    rgba = np.concatenate([rgb, np.full((150, 170, 1), 7, np.uint8)], axis=2)
    np.testing.assert_allclose(segment(rgba, model, **run), base, atol=1e-6)
    wide = rgb.astype(np.uint16) * 257
    np.testing.assert_allclose(segment(wide, model, **run), base, atol=1e-5)
    gray = rgb[..., 1]
    np.testing.assert_allclose(
        segment(gray, model, **run),
        segment(np.repeat(gray[..., None], 3, 2), model, **run),
        atol=1e-6,
    )
    gray_model = tiny_unet(channels="gray")
    luma = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(
        np.float32
    )
    x = torch.from_numpy(luma)[None, None] / 255
    gray_norm = gray_model.card.normalization
    x = (x - gray_norm["mean"][0]) / gray_norm["std"][0]
    whole = whole_pass(gray_model, x)
    h = gray_model.halo
    np.testing.assert_allclose(
        segment(rgb, gray_model, **run)[h:-h, h:-h], whole[h:-h, h:-h], atol=1e-4
    )


# -- tissue ------------------------------------------------------------------------------


def test_background_blocks_are_not_run_and_stay_zero(red_threshold) -> None:
    image = np.full((1024, 1024, 3), 244, np.uint8)
    rng = np.random.default_rng(5)
    image[:, :400] = np.clip(
        np.array([200, 110, 170]) + rng.integers(-30, 30, (1024, 400, 3)), 0, 255
    )
    model = red_threshold(tile=256)
    everything = segment(image, model, tissue=False, device="cpu")
    assert model.tiles == 16
    assert everything[:, 512:].all()  # white is "red above half" for this model
    model.tiles = 0
    mask = segment(image, model, device="cpu")
    assert model.tiles == 8
    assert not mask[:, 512:].any()
    np.testing.assert_array_equal(mask[:, :512], everything[:, :512])


def test_chunk_cache_decodes_each_chunk_once_for_overlapping_tiles(random_rgb) -> None:
    import dask.array as da

    image = random_rgb(300, 400, seed=7)

    class Counting:
        shape, dtype, ndim = image.shape, image.dtype, 3
        reads = 0

        def __getitem__(self, index: Any) -> np.ndarray:
            Counting.reads += 1
            return image[index]

    level = da.from_array(Counting(), chunks=(64, 64, 3), asarray=True)
    Counting.reads = 0  # dask may peek while building the array
    cache = pipeline.ChunkCache(level, max_bytes=2**30)
    boxes = [(y, y + 150, x, x + 150) for y in range(0, 151, 50) for x in range(0, 251, 50)]
    for y0, y1, x0, x1 in boxes:
        np.testing.assert_array_equal(cache.read(y0, y1, x0, x1), image[y0:y1, x0:x1])
    assert Counting.reads == math.ceil(300 / 64) * math.ceil(400 / 64)
    small = pipeline.ChunkCache(level, max_bytes=64 * 64 * 3 * 4)  # four chunks
    np.testing.assert_array_equal(small.read(10, 290, 5, 395), image[10:290, 5:395])
    assert small._bytes <= 64 * 64 * 3 * 4


# -- outputs -----------------------------------------------------------------------------


@pytest.fixture
def small_slide(random_rgb, slides, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    image = random_rgb(300, 420, seed=6)
    return slides.write_ome_pyramid(
        folder / "slide.ome.tif", image, levels=2, compression="zlib", mpp=0.5
    )


@pytest.mark.parametrize("suffix", [".zarr", ".ome.tif", ".png", ".csv"])
def test_outputs_files_equal_to_the_array(
    tiny_unet, small_slide: Path, tmp_path: Path, suffix: str
) -> None:
    model = tiny_unet()
    probs = segment(small_slide, model, tile=192, device="cpu", probabilities=True)
    run = {"tile": 192, "device": "cpu", "threshold": float(np.median(probs))}
    expected = segment(small_slide, model, **run)
    assert 0 < expected.sum() < expected.size
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / f"mask{suffix}"
    result = segment(small_slide, model, out=out, **run)
    assert sorted(p.name for p in folder.iterdir()) == [out.name]
    if suffix == ".zarr":
        assert result.read_only
        np.testing.assert_array_equal(result[...], expected)
        assert result.attrs["slide_unet"]["mpp"] == 0.5
    else:
        assert result == out
        np.testing.assert_array_equal(np.asarray(read_mask(out, shape=expected.shape)), expected)


@pytest.mark.parametrize("out", [None, "mask.zarr", "mask.ome.tif"])
def test_min_object_area_removes_small_objects_in_square_microns(
    red_threshold, tmp_path: Path, out: str | None
) -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    image[10:20, 10:20, 0] = 255  # 100 px = 25 µm² at 0.5 µm/px: removed
    image[50:100, 50:150, 0] = 255  # 5000 px = 1250 µm²: kept
    image[150:199, 250:299, 0] = 255  # 2401 px = 600.25 µm²: kept
    image[150:155, 10:14, 0] = 255  # 20 px: removed
    model = red_threshold(tile=64)  # many blocks: objects are measured whole across them
    run = {"mpp": 0.5, "tissue": False, "device": "cpu"}
    plain = segment(image, model, **run)
    assert plain.sum() == 100 + 5000 + 2401 + 20
    target = tmp_path / out if out else None
    result = segment(image, model, out=target, min_object_um2=600.0, **run)
    mask = plain.copy()
    mask[10:20, 10:20] = 0
    mask[150:155, 10:14] = 0
    if out is None:
        np.testing.assert_array_equal(result, mask)
    else:
        np.testing.assert_array_equal(np.asarray(read_mask(target, shape=mask.shape)), mask)
        assert sorted(p.name for p in tmp_path.iterdir()) == [out]
    # an unknown pixel size: the area is in pixels
    unknown = segment(image, model, tissue=False, device="cpu", min_object_um2=2401)
    np.testing.assert_array_equal(unknown, mask)
    with pytest.raises(ValueError, match="min_object_um2 must be 0 or a positive area"):
        segment(image, model, min_object_um2=-1.0, **run)
    with pytest.raises(ValueError, match="not with probabilities"):
        segment(image, model, min_object_um2=10.0, probabilities=True, **run)


def test_the_model_cards_minimum_object_area_applies_unless_another_is_given(
    red_threshold, tmp_path: Path
) -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    image[10:20, 10:20, 0] = 255  # 100 px = 25 µm² at 0.5 µm/px
    image[50:100, 50:150, 0] = 255  # 5000 px = 1250 µm²
    model = red_threshold(tile=64)
    model.card.min_object_um2 = 600.0  # what its cross-validation chose
    run = {"mpp": 0.5, "tissue": False, "device": "cpu"}
    by_default = segment(image, model, **run)
    assert by_default.sum() == 5000  # the speck is gone
    assert segment(image, model, min_object_um2=0.0, **run).sum() == 5100  # 0: keep all
    assert segment(image, model, min_object_um2=10.0, **run).sum() == 5100
    target = tmp_path / "mask.ome.tif"
    segment(image, model, out=target, **run)
    assert np.asarray(read_mask(target, shape=image.shape[:2])).sum() == 5000
    probabilities = segment(image, model, probabilities=True, **run)  # not for probabilities
    assert (probabilities[10:20, 10:20] > 0.5).all()


def test_an_array_given_as_out_is_filled_in_place(red_threshold) -> None:
    image = np.zeros((300, 260, 3), np.uint8)
    image[100:200, 50:120, 0] = 255
    out = np.full((100, 200), 9, np.uint8)
    result = segment(image, red_threshold(), region=(50, 150, 20, 220), out=out, device="cpu")
    assert result is out
    np.testing.assert_array_equal(out, image[50:150, 20:220, 0] > 0)
    with pytest.raises(ValueError, match=r"out has shape \(100, 200\); the region needs"):
        segment(image, red_threshold(), out=out, device="cpu")


def _tissue_left_white_right() -> np.ndarray:
    """Reddish tissue on the left 400 columns, white glass on the right."""
    image = np.full((1024, 1024, 3), 244, np.uint8)
    rng = np.random.default_rng(5)
    image[:, :400] = np.clip(
        np.array([200, 110, 170]) + rng.integers(-30, 30, (1024, 400, 3)), 0, 255
    )
    return image


def test_an_out_array_loses_its_earlier_result_only_where_a_cancelled_run_finished(
    red_threshold,
) -> None:
    image = _tissue_left_white_right()
    run = {"tile": 256, "batch_size": 1, "device": "cpu"}
    fresh = segment(image, red_threshold(tile=256), **run)
    earlier = np.full(fresh.shape, 7, np.uint8)  # another model's result, say
    out = earlier.copy()
    event = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 1:
            event.set()

    with pytest.raises(Cancelled):
        segment(image, red_threshold(tile=256), out=out, progress=progress, cancel=event, **run)
    # The first block (256 px, top left) was replaced by the new result; nothing else moved.
    np.testing.assert_array_equal(out[:256, :256], fresh[:256, :256])
    outside = out != 7
    outside[:256, :256] = False
    assert not outside.any()  # background blocks (x >= 512) are not cleared by a cancelled run
    # Run to the end: every block replaced, background cleared: the fresh result.
    segment(image, red_threshold(tile=256), out=out, **run)
    np.testing.assert_array_equal(out, fresh)


def test_progress_runs_once_over_model_clearing_and_small_objects_and_cancel_stops_each(
    red_threshold,
) -> None:
    image = _tissue_left_white_right()
    image[600:604, 100:104] = (255, 0, 0)  # a speck the small-object pass removes
    run = {"tile": 256, "batch_size": 1, "device": "cpu", "mpp": 0.5, "min_object_um2": 50.0}
    calls: list[tuple[int, int]] = []
    out = np.ones((1024, 1024), np.uint8)
    segment(image, red_threshold(tile=256), out=out, progress=lambda *a: calls.append(a), **run)
    total = calls[0][1]
    assert all(t == total for _, t in calls)
    assert calls[-1] == (total, total)
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(calls))
    # 8 tissue blocks run, 8 background blocks cleared, then the small-object passes.
    assert total > 16
    assert (8, total) in calls
    assert (16, total) in calls
    assert not out[:, 512:].any()

    for stop_at in (10, total - 1):  # during clearing, during small-object removal
        seen: list[int] = []
        event = threading.Event()

        def progress(
            done: int, of: int, stop_at: int = stop_at, seen: list = seen, event=event
        ) -> None:
            seen.append(done)
            if done >= stop_at:
                event.set()

        with pytest.raises(Cancelled):
            segment(
                image,
                red_threshold(tile=256),
                out=np.ones((1024, 1024), np.uint8),
                progress=progress,
                cancel=event,
                **run,
            )
        assert max(seen) < total


class AlignedOut(np.ndarray):
    """An output array asking for blocks aligned to 256 on the image's grid."""

    block_alignment = 256


def test_blocks_aligned_to_an_output_give_the_same_result(random_rgb, tiny_unet) -> None:
    image = random_rgb(700, 900, seed=3)
    run = {"tile": 256, "tissue": False, "device": "cpu", "precision": "fp32"}
    region = (37, 650, 101, 877)
    plain = segment(image, tiny_unet(), region=region, **run)
    out = np.zeros(plain.shape, np.uint8).view(AlignedOut)
    segment(image, tiny_unet(), region=region, out=out, **run)
    np.testing.assert_array_equal(np.asarray(out), plain)
    plan = plan_segmentation(image, tiny_unet(), region=region, tile=256, device="cpu")
    assert plan.grid.block % 256  # the plain plan is not aligned: the test means something


def test_zarr_output_chunks_follow_the_blocks(
    tiny_unet, small_slide: Path, tmp_path: Path
) -> None:
    model = tiny_unet()
    plan = plan_segmentation(small_slide, model, tile=192, device="cpu")
    array = segment(small_slide, model, tile=192, device="cpu", out=tmp_path / "m.zarr")
    assert array.chunks == (
        min(plan.grid.store_chunk, plan.shape[0]),
        min(plan.grid.store_chunk, plan.shape[1]),
    )
    assert plan.grid.block % plan.grid.store_chunk == 0


def test_too_big_for_memory_asks_for_out(red_threshold, monkeypatch: pytest.MonkeyPatch) -> None:
    from slide_unet.core.inference import segment as predict

    monkeypatch.setattr(predict, "MAX_IN_MEMORY_PIXELS", 1000)
    with pytest.raises(ValueError, match="out="):
        segment(np.zeros((100, 100, 3), np.uint8), red_threshold(), device="cpu")


def test_blocks_can_run_in_parts_into_one_store(
    tiny_unet, small_slide: Path, tmp_path: Path
) -> None:
    # What scale-out does: a picklable plan, disjoint blocks, one zarr store.
    from slide_unet.core.slide.slide import open_slide

    model = tiny_unet()
    probs = segment(small_slide, model, tile=160, device="cpu", probabilities=True)
    run = {"tile": 160, "device": "cpu", "tissue": False, "threshold": float(np.median(probs))}
    expected = segment(small_slide, model, **run)
    assert 0 < expected.sum() < expected.size
    plan = plan_segmentation(small_slide, model, **run)
    plan = pickle.loads(pickle.dumps(plan))
    assert plan.source == str(small_slide)
    store = create_output(plan, tmp_path / "shared.zarr")
    n = len(plan.blocks)
    assert n > 4

    def part(indices: range, model: UNet) -> None:
        with open_slide(plan.source) as slide:
            run_blocks(plan, indices, model=model, slide=slide, out_array=store, device="cpu")

    workers = [threading.Thread(target=part, args=(range(k, n, 2), tiny_unet())) for k in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    np.testing.assert_array_equal(store[...], expected)


def test_run_blocks_finds_the_planned_level_or_says_it_is_missing(
    red_threshold, small_slide: Path
) -> None:
    from slide_unet.core.slide.slide import open_slide

    model = red_threshold(working_mpp=1.0)
    plan = plan_segmentation(small_slide, model, device="cpu", tissue=False)
    assert (plan.level, plan.level_shape) == (1, (150, 210))
    with open_slide(small_slide) as slide:
        expected = segment(slide, model, device="cpu", tissue=False)
        out = np.zeros(plan.shape, np.uint8)
        every = range(len(plan.blocks))
        run_blocks(plan, every, model=model, slide=slide.levels[1:], out_array=out)
        np.testing.assert_array_equal(out, expected)
        with pytest.raises(ValueError, match=r"no level of shape \(150, 210\)"):
            run_blocks(plan, [0], model=model, slide=slide.levels[:1], out_array=out)


# -- progress, cancel, failure -------------------------------------------------------------


def test_progress_counts_blocks_up_to_the_total(random_rgb, tiny_unet) -> None:
    calls: list[tuple[int, int]] = []
    segment(
        random_rgb(300, 300),
        tiny_unet(),
        tile=160,
        batch_size=2,
        tissue=False,
        device="cpu",
        progress=lambda done, total: calls.append((done, total)),
    )
    total = calls[0][1]
    assert total > 2
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert all(b[0] > a[0] for a, b in itertools.pairwise(calls))


@pytest.mark.parametrize("suffix", [".zarr", ".ome.tif"])
@pytest.mark.parametrize("kind", ["callable", "event"])
def test_cancel_after_the_first_batch_leaves_nothing_behind(
    tiny_unet, small_slide: Path, tmp_path: Path, suffix: str, kind: str
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    event = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= 1:
            event.set()

    cancel = event if kind == "event" else event.is_set
    with pytest.raises(Cancelled):
        segment(
            small_slide,
            tiny_unet(),
            tile=160,
            batch_size=1,
            tissue=False,
            device="cpu",
            out=folder / f"mask{suffix}",
            progress=progress,
            cancel=cancel,
        )
    assert max(seen) == 1
    assert list(folder.iterdir()) == []


def test_a_failing_model_leaves_no_output(tiny_unet, small_slide: Path, tmp_path: Path) -> None:
    model = tiny_unet()
    calls = []

    def explode(module: Any, args: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom")

    model.register_forward_pre_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        segment(small_slide, model, tile=160, batch_size=1, device="cpu", out=tmp_path / "m.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_out_of_memory_halves_the_batch_and_warns_once(
    random_rgb, tiny_unet, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_unet()
    image = random_rgb(300, 300)
    expected = segment(image, model, tile=160, tissue=False, device="cpu", probabilities=True)
    real = pipeline.ModelRunner._forward
    sizes = []

    def tight(self: pipeline.ModelRunner, x: torch.Tensor) -> np.ndarray:
        sizes.append(len(x))
        if len(x) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, x)

    monkeypatch.setattr(pipeline.ModelRunner, "_forward", tight)
    with pytest.warns(RuntimeWarning, match="out of cpu memory") as record:
        got = segment(
            image, model, tile=160, batch_size=4, tissue=False, device="cpu", probabilities=True
        )
    assert len(record) == 1
    assert sizes[:3] == [4, 2, 1]
    np.testing.assert_allclose(got, expected, atol=1e-6)


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_refused_with_what_was_expected(tiny_unet) -> None:
    model = tiny_unet()
    with pytest.raises(ValueError, match=r"3 channels.*5 channels.*expected YX"):
        segment(np.zeros((64, 64, 5), np.uint8), model, device="cpu")
    image = np.zeros((100, 120, 3), np.uint8)
    with pytest.raises(ValueError, match=r"0 <= y0 < y1 <= 100 and 0 <= x0 < x1 <= 120"):
        segment(image, model, region=(0, 50, 100, 200), device="cpu")
    with pytest.raises(ValueError, match=r"y0 < y1"):
        segment(image, model, region=(50, 50, 0, 10), device="cpu")
    with pytest.raises(ValueError, match=r"region must be \(y0, y1, x0, x1\)"):
        segment(image, model, region=(1, 2, 3), device="cpu")
    with pytest.raises(ValueError, match="multiples of 8"):
        segment(image, model, tile=100, device="cpu")
    with pytest.raises(ValueError, match="precision"):
        segment(image, model, precision="int4", device="cpu")
    with pytest.raises(ValueError, match="unknown output format"):
        segment(image, model, out="mask.jpeg2", device="cpu")
    with pytest.raises(ValueError, match="probabilities"):
        segment(image, model, out="mask.ome.tif", probabilities=True, device="cpu")
    with pytest.raises(ValueError, match="YX or YXC"):
        segment(np.zeros((2, 3, 4, 5), np.uint8), model, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_when_absent_is_a_clear_error(red_threshold) -> None:
    with pytest.raises(ValueError, match=r"'cuda' is not available.*available: cpu"):
        segment(np.zeros((64, 64, 3), np.uint8), red_threshold(), device="cuda")


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has a GPU"
)
def test_auto_precision_on_the_cpu_is_bf16_only_with_native_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from slide_unet.core import devices

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.resolve_precision("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.resolve_precision("auto", cpu) is None
    assert devices.resolve_precision("fp32", cpu) is None
    assert devices.resolve_precision("auto", torch.device("mps")) is None


def test_auto_device_is_the_cpu_without_a_gpu() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-ish")

"""Tests of the per-slide mask store (slide_unet.core.masks.store).

Level and chunk sizes are shrunk so that masks of a few hundred pixels have
several overview levels, several chunks and several rebuild tiles.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from slide_unet.core import paths
from slide_unet.core.errors import MaskStoreError, MaskStoreWarning
from slide_unet.core.masks import store as mask_store
from slide_unet.core.masks import store_layout
from slide_unet.core.masks.io import read_mask
from slide_unet.core.masks.pyramids import halve_max
from slide_unet.core.masks.store import MaskStore

CHUNK = 32


@pytest.fixture(autouse=True)
def small_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private masks folder, and sizes scaled down for small masks."""
    folder = tmp_path / "masks"
    monkeypatch.setenv(paths.MASKS_DIR_ENV, str(folder))
    monkeypatch.setattr(store_layout, "SMALLEST_SIDE", 24)
    monkeypatch.setattr(store_layout, "CHUNK_SIDE", CHUNK)
    monkeypatch.setattr(mask_store, "REBUILD_TILE", 64)
    return folder


def slide_file(folder: Path, name: str = "slide.tif", size: int = 100) -> Path:
    """A stand-in slide file: the store key reads only its path and size."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\0" * size)
    return path


def pyramid(level0: np.ndarray, levels: int) -> list[np.ndarray]:
    """The 2x2-maximum pyramid rebuilt from scratch."""
    out = [level0]
    while len(out) < levels:
        out.append(halve_max(out[-1]))
    return out


def assert_pyramid(store: MaskStore, expected0: np.ndarray) -> None:
    np.testing.assert_array_equal(np.asarray(store.level0[:]), expected0)
    for k, (array, expected) in enumerate(
        zip(store.levels, pyramid(expected0, len(store.levels)), strict=True)
    ):
        np.testing.assert_array_equal(np.asarray(array[:]), expected, err_msg=f"level {k}")


# -- where stores live -----------------------------------------------------------------------


def test_masks_dir_follows_the_environment(small_stores: Path) -> None:
    assert paths.masks_dir() == small_stores


def test_same_slide_maps_to_the_same_store(tmp_path: Path) -> None:
    path = slide_file(tmp_path / "slides")
    first = MaskStore.for_slide(path, (50, 60), mpp=0.5)
    again = MaskStore.for_slide(tmp_path / "slides" / ".." / "slides" / "slide.tif", (50, 60))
    assert again.path == first.path
    assert first.path.parent == paths.masks_dir()
    assert first.path.name.startswith("slide-")
    assert again.mpp == 0.5
    assert again.slide == str(path.resolve())


def test_a_different_file_or_shape_maps_to_another_store(tmp_path: Path) -> None:
    store = MaskStore.for_slide(slide_file(tmp_path / "a"), (50, 60))
    bigger = MaskStore.for_slide(slide_file(tmp_path / "b", size=101), (50, 60))
    elsewhere = MaskStore.for_slide(slide_file(tmp_path / "c"), (50, 60))
    other_shape = MaskStore.for_slide(tmp_path / "a" / "slide.tif", (60, 50))
    paths = {store.path, bigger.path, elsewhere.path, other_shape.path}
    assert len(paths) == 4


def test_for_key_names_stores_of_images_without_a_file() -> None:
    store = MaskStore.for_key("napari layer: kidney 3/4", (40, 40))
    assert store.path.name.startswith("napari_layer_kidney_3_4-")
    assert MaskStore.for_key("napari layer: kidney 3/4", (40, 40)).path == store.path
    assert MaskStore.for_key("napari layer: kidney 3/4", (40, 41)).path != store.path
    assert MaskStore.existing_for_key("another", (40, 40)) is None
    assert MaskStore.existing_for_key("napari layer: kidney 3/4", (40, 40)) is not None
    assert MaskStore.for_key("k", (4, 4)).slide is None


def test_for_slide_without_create_does_not_make_a_store(tmp_path: Path) -> None:
    path = slide_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="no mask store"):
        MaskStore.for_slide(path, (30, 30), create=False)
    assert not paths.masks_dir().exists() or not any(paths.masks_dir().iterdir())


# -- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "shapes"),
    [
        ((20, 10), [(20, 10)]),
        ((97, 50), [(97, 50), (49, 25), (25, 13), (13, 7)]),
        ((1, 200), [(1, 200), (1, 100), (1, 50), (1, 25), (1, 13)]),
    ],
)
def test_levels_halve_with_ceil_down_to_the_smallest_side(
    shape: tuple[int, int], shapes: list[tuple[int, int]]
) -> None:
    store = MaskStore.for_key("layout", shape)
    assert [tuple(a.shape) for a in store.levels] == shapes
    # Full resolution in chunks twice the overviews' side: the engine's blocks write fewer.
    assert store.level0.chunks == (min(2 * CHUNK, shape[0]), min(2 * CHUNK, shape[1]))
    assert all(a.dtype == np.uint8 for a in store.levels)


def test_level0_chunk_side_is_a_parameter() -> None:
    store = MaskStore.for_key("chunky", (100, 100), chunk=48)
    assert store.level0.chunks == (48, 48)
    assert store.levels[1].chunks == (CHUNK, CHUNK)


def test_attributes_record_what_the_mask_is(tmp_path: Path) -> None:
    path = slide_file(tmp_path)
    store = MaskStore.for_slide(path, (30, 40), mpp=0.25, source="segment glomeruli")
    info = store.info
    assert info["version"] == store_layout.FORMAT_VERSION
    assert info["shape"] == [30, 40]
    assert info["slide"] == str(path.resolve())
    assert store.source == "segment glomeruli"
    assert not store.edited
    assert store.created == store.modified
    assert store.created.tzinfo is not None
    assert store.regions == []
    store.add_region(0, 10, 5, 20)
    assert store.regions == [(0, 10, 5, 20)]
    store.touch(edited=False, source="segment glomeruli, then edited")
    assert not store.edited
    assert store.source == "segment glomeruli, then edited"
    store.touch()
    assert store.edited
    assert store.modified >= store.created


def test_the_store_opens_as_an_ome_zarr_label_image() -> None:
    store = MaskStore.for_key("ome", (40, 30), mpp=0.5)
    block = np.zeros((40, 30), dtype=np.uint8)
    block[3:9, 4:7] = 1
    store.write(0, 0, block)
    mask, mpp = mask_store_read(store.path)
    np.testing.assert_array_equal(mask, block)
    assert mpp == pytest.approx(0.5)


def mask_store_read(path: Path) -> tuple[np.ndarray, float | None]:
    from slide_unet.core.masks.pyramids import read_ome_zarr

    array, mpp = read_ome_zarr(path)
    np.testing.assert_array_equal(np.asarray(read_mask(path)), np.asarray(array))
    return np.asarray(array), mpp


# -- writing ---------------------------------------------------------------------------------


def test_write_round_trip_and_a_fresh_store_object_sees_it(tmp_path: Path) -> None:
    path = slide_file(tmp_path)
    store = MaskStore.for_slide(path, (70, 90))
    block = (np.arange(20 * 30).reshape(20, 30) % 3 == 0).astype(np.uint8)
    store.write(41, 55, block)
    expected = np.zeros((70, 90), dtype=np.uint8)
    expected[41:61, 55:85] = block
    assert_pyramid(store, expected)
    reopened = MaskStore.for_slide(path, (70, 90), create=False)
    assert_pyramid(reopened, expected)
    np.testing.assert_array_equal(np.asarray(reopened.dask_levels()[0]), expected)


@pytest.mark.parametrize("shape", [(97, 203), (64, 64), (1, 150), (130, 1), (255, 129)])
def test_overviews_equal_a_pyramid_rebuilt_from_scratch_after_random_writes(
    shape: tuple[int, int],
) -> None:
    rng = np.random.default_rng(sum(shape))
    store = MaskStore.for_key(f"random {shape}", shape)
    expected = np.zeros(shape, dtype=np.uint8)
    for i in range(24):
        h, w = (int(rng.integers(1, s + 1)) for s in shape)
        if i % 4 == 0:  # against the bottom-right border
            y0, x0 = shape[0] - h, shape[1] - w
        elif i % 4 == 1:  # aligned, as the engine's blocks: overviews halved in memory
            y0, x0 = (int(rng.integers(0, s // 8 + 1)) * 8 for s in shape)
            y0, x0 = min(y0, shape[0] - 1) // 8 * 8, min(x0, shape[1] - 1) // 8 * 8
            h, w = min(h // 8 * 8 or 8, shape[0] - y0), min(w // 8 * 8 or 8, shape[1] - x0)
        else:
            y0, x0 = (int(rng.integers(0, s - n + 1)) for s, n in zip(shape, (h, w), strict=True))
        block = (rng.random((h, w)) < rng.choice([0.0, 0.02, 0.5])).astype(np.uint8)
        store.write(y0, x0, block)
        expected[y0 : y0 + h, x0 : x0 + w] = block
    assert_pyramid(store, expected)


@pytest.mark.parametrize("shape", [(97, 203), (255, 129), (300, 300)])
def test_deferred_overviews_are_exact_after_a_flush(
    shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mask_store, "DEFER_SECONDS", 3600.0)  # only the flush rebuilds
    rng = np.random.default_rng(sum(shape) + 1)
    store = MaskStore.for_key(f"deferred {shape}", shape)
    assert len(store.levels) > 2
    expected = np.zeros(shape, dtype=np.uint8)
    for i in range(30):
        h, w = (int(rng.integers(1, s // 2 + 1)) for s in shape)
        if i % 2:  # aligned, as the engine's blocks
            y0, x0 = (
                int(rng.integers(0, (s - n) // 8 + 1)) * 8
                for s, n in zip(shape, (h, w), strict=True)
            )
        else:
            y0, x0 = (int(rng.integers(0, s - n + 1)) for s, n in zip(shape, (h, w), strict=True))
        block = (rng.random((h, w)) < 0.3).astype(np.uint8)
        store.write(y0, x0, block, defer=True)
        expected[y0 : y0 + h, x0 : x0 + w] = block
    np.testing.assert_array_equal(np.asarray(store.level0[:]), expected)  # at once
    assert store.info["stale"]  # the waiting overviews, recorded on disk
    store.flush_overviews()
    assert_pyramid(store, expected)
    assert store.info["stale"] == []


def test_deferred_overviews_left_by_a_killed_process_are_rebuilt_on_open(
    small_stores: Path,
) -> None:
    store = MaskStore.for_key("killed while deferring", (300, 300))
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from slide_unet.core.masks import store as mask_store, store_layout
        store_layout.SMALLEST_SIDE, store_layout.CHUNK_SIDE = 24, 32
        mask_store.DEFER_SECONDS = 3600
        store = mask_store.MaskStore({str(store.path)!r})
        store.write(40, 64, np.ones((100, 120), np.uint8), defer=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    expected = np.zeros((300, 300), np.uint8)
    expected[40:140, 64:184] = 1
    assert MaskStore(store.path).info["stale"] == []  # rebuilt when opened
    assert_pyramid(MaskStore(store.path), expected)


def test_overviews_keep_instance_ids_by_the_maximum() -> None:
    store = MaskStore.for_key("ids", (50, 50), dtype=np.uint16)
    block = np.zeros((3, 3), dtype=np.uint16)
    block[0, 0], block[2, 2] = 7, 1000
    store.write(11, 11, block)
    assert store.levels[1][5, 5] == 7
    assert store.levels[1][6, 6] == 1000
    assert int(np.asarray(store.levels[-1][:]).max()) == 1000


def test_update_overviews_after_writing_level0_directly() -> None:
    store = MaskStore.for_key("direct", (100, 77))
    expected = np.zeros((100, 77), dtype=np.uint8)
    expected[33:35, 70:77] = 1
    expected[99, 0] = 1
    store.level0[33:35, 70:77] = 1
    store.level0[99, 0] = 1
    assert int(np.asarray(store.levels[-1][:]).max()) == 0  # not yet
    store.update_overviews(33, 35, 70, 77)
    store.update_overviews(99, 100, 0, 1, edited=True)
    assert_pyramid(store, expected)
    assert store.edited
    store.update_overviews(-5, 1000, -5, 1000)  # clipped to the mask
    assert_pyramid(store, expected)


def test_write_marks_hand_edits_and_bumps_the_change_time() -> None:
    store = MaskStore.for_key("edits", (40, 40))
    created = store.modified
    store.write(0, 0, np.ones((2, 2), dtype=np.uint8))
    assert not store.edited
    assert store.modified >= created
    store.write(0, 0, np.zeros((2, 2), dtype=bool), edited=True)
    assert store.edited
    assert int(np.asarray(store.level0[:]).max()) == 0


def test_write_rejects_blocks_that_do_not_fit() -> None:
    store = MaskStore.for_key("fit", (20, 20))
    with pytest.raises(ValueError, match="does not fit"):
        store.write(15, 0, np.ones((6, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        store.write(-1, 0, np.ones((2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        store.write(0, 0, np.ones((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"values 0\.\.300"):
        store.write(0, 0, np.array([[0, 300]], dtype=np.int64))
    with pytest.raises(ValueError, match="threshold or round"):
        store.write(0, 0, np.full((2, 2), 0.7, dtype=np.float32))
    store.write(0, 0, np.array([[0, 255]], dtype=np.int64))  # fits: stored as uint8
    assert store.level0[0, 1] == 255


def test_concurrent_writes_from_two_threads_to_different_regions() -> None:
    # Interleaved stripes of 3 columns share every chunk and every overview
    # pixel pair, so unserialised read-modify-writes would lose some.
    shape = (96, 96)
    store = MaskStore.for_key("threads", shape)
    rng = np.random.default_rng(7)
    expected = (rng.random(shape) < 0.3).astype(np.uint8)
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            other = MaskStore.for_key("threads", shape)  # its own object, same lock
            for x0 in range(first, shape[1], 6):
                for y0 in range(0, shape[0], 32):
                    other.write(y0, x0, expected[y0 : y0 + 32, x0 : x0 + 3], edited=True)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(first,)) for first in (0, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_pyramid(store, expected)


# -- finding a saved mask again --------------------------------------------------------------


def test_existing_is_none_before_and_the_store_after_an_edit(tmp_path: Path) -> None:
    path = slide_file(tmp_path)
    assert MaskStore.existing(path, (40, 50)) is None
    store = MaskStore.for_slide(path, (40, 50))
    store.write(10, 10, np.ones((5, 5), dtype=np.uint8), edited=True)
    found = MaskStore.existing(path, (40, 50))
    assert found is not None
    assert found.path == store.path
    assert found.edited
    assert int(np.asarray(found.level0[10:15, 10:15]).sum()) == 25
    assert MaskStore.existing(path, (40, 51)) is None


def test_dask_levels_show_later_writes_when_read_again() -> None:
    store = MaskStore.for_key("dask", (60, 60))
    before = store.dask_levels()
    assert [tuple(a.shape) for a in before] == [tuple(a.shape) for a in store.levels]
    store.write(0, 0, np.ones((4, 4), dtype=np.uint8))
    after = store.dask_levels()
    assert after[0].name != before[0].name  # no task cache can serve old chunks
    assert int(after[0].sum().compute()) == 16
    assert int(after[-1][0, 0].compute()) == 1


def test_clear_erases_the_mask_and_keeps_the_store() -> None:
    store = MaskStore.for_key("clear", (50, 70))
    store.write(5, 5, np.ones((30, 40), dtype=np.uint8), edited=True)
    store.add_region(0, 50, 0, 70)
    store.clear()
    assert store.path.is_dir()
    assert all(int(np.asarray(a[:]).max()) == 0 for a in store.levels)
    assert not store.edited
    assert store.regions == []
    store.write(0, 0, np.ones((2, 2), dtype=np.uint8))  # still writable
    assert int(np.asarray(MaskStore(store.path).level0[:]).sum()) == 4


def test_delete_removes_the_store() -> None:
    store = MaskStore.for_key("delete", (20, 20))
    store.delete()
    assert not store.path.exists()
    assert MaskStore.existing_for_key("delete", (20, 20)) is None


def test_other_pixel_type_is_refused() -> None:
    MaskStore.for_key("typed", (20, 20))
    with pytest.raises(MaskStoreError, match="holds uint8 pixels, uint16 were asked"):
        MaskStore.for_key("typed", (20, 20), dtype=np.uint16)
    with pytest.raises(ValueError, match="integer labels"):
        MaskStore.for_key("float", (20, 20), dtype=np.float32)


# -- crashes and damage ----------------------------------------------------------------------


def test_a_crash_while_creating_leaves_no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = store_layout.build_store

    def crash(folder: Path, *args: object) -> None:
        real_build(folder, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(store_layout, "build_store", crash)
    with pytest.raises(KeyboardInterrupt):
        MaskStore.for_key("crash", (30, 30))
    assert list(paths.masks_dir().iterdir()) == []
    monkeypatch.undo()
    assert MaskStore.existing_for_key("crash", (30, 30)) is None


def damage(store: MaskStore) -> None:
    meta = store.path / "zarr.json"
    meta.write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))


def test_a_damaged_store_is_reported(tmp_path: Path) -> None:
    path = slide_file(tmp_path)
    damage(MaskStore.for_slide(path, (30, 30)))
    with pytest.raises(MaskStoreError, match="damaged mask store"):
        MaskStore.existing(path, (30, 30))
    with pytest.raises(MaskStoreError, match="damaged mask store"):
        MaskStore.for_slide(path, (30, 30), create=False)


def test_create_recovers_the_chunks_of_a_store_whose_metadata_was_lost(tmp_path: Path) -> None:
    path = slide_file(tmp_path)
    old = MaskStore.for_slide(path, (30, 30))
    old.write(0, 0, np.ones((3, 3), dtype=np.uint8), edited=True)
    damage(old)
    with pytest.warns(MaskStoreWarning, match="1 full-resolution chunks recovered"):
        new = MaskStore.for_slide(path, (30, 30))
    assert new.path == old.path
    assert new.edited  # it may hold hand edits: a new segmentation backs it up first
    assert int(np.asarray(new.level0[:]).sum()) == 9
    aside = [p for p in new.path.parent.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1
    assert (aside[0] / "0").is_dir()  # the store as found is kept too


def test_create_moves_aside_a_damaged_store_with_nothing_to_recover(tmp_path: Path) -> None:
    path = slide_file(tmp_path)
    damage(MaskStore.for_slide(path, (30, 30)))
    with pytest.warns(MaskStoreWarning, match="moved to"):
        new = MaskStore.for_slide(path, (30, 30))
    assert not new.edited
    assert len([p for p in new.path.parent.iterdir() if ".damaged-" in p.name]) == 1


def test_backup_is_a_complete_copy_that_later_writes_do_not_touch() -> None:
    store = MaskStore.for_key("backup", (300, 200))
    edit = np.zeros((300, 200), np.uint8)
    edit[10:50, 20:60] = 1
    store.write(0, 0, edit, edited=True)
    copy = MaskStore(store.backup())
    store.clear()
    assert copy.edited
    np.testing.assert_array_equal(copy.level0[:], edit)
    np.testing.assert_array_equal(np.asarray(read_mask(copy.path)), edit)
    assert not store.level0[:].any()


def test_backups_keep_the_newest_three_complete_copies(tmp_path: Path) -> None:
    store = MaskStore.for_key("backups", (600, 700), 0.5)
    made = []
    for value in range(1, 6):
        store.write(0, 0, np.full((10, 10), value, np.uint8), edited=True)
        made.append(store.backup())
    kept = store.backups()
    assert kept == made[-3:]  # oldest first, the two oldest deleted
    assert [int(MaskStore(path).level0[0, 0]) for path in kept] == [3, 4, 5]
    with pytest.raises(ValueError, match="keep at least 1"):
        store.backup(keep=0)


# -- the ledger ------------------------------------------------------------------------------


def test_a_ledger_snapshot_answers_as_the_ledger_did_from_one_read(tmp_path: Path) -> None:
    from slide_unet.core.masks.ledger import CELL, Ledger

    ledger = Ledger(tmp_path / "store", (5 * CELL, 6 * CELL - 7))
    region = (0, 5 * CELL, 0, 6 * CELL - 7)
    boxes = [
        (i * CELL, min(5 * CELL, (i + 2) * CELL), j * CELL, min(6 * CELL - 7, (j + 2) * CELL))
        for i in range(0, 5, 2)
        for j in range(0, 6, 2)
    ]
    empty = ledger.snapshot(region, "a")  # no ledger yet
    assert not any(empty.holds(b) or empty.edited(b) for b in boxes)
    ledger.record((0, 2 * CELL, 0, 4 * CELL), "a")
    ledger.record((2 * CELL, 4 * CELL, 0, 6 * CELL - 7), "b")  # up to the slide's edge
    ledger.mark_edited([(CELL + 5, CELL + 6, 3 * CELL, 3 * CELL + 1)])
    for signature in ("a", "b", "c", ("a", "b"), {"b", "c"}, ()):
        snapshot = ledger.snapshot(region, signature)
        for box in boxes:
            assert snapshot.holds(box) == ledger.holds(box, signature), (signature, box)
            assert snapshot.edited(box) == ledger.edited(box), box
    # A box across both results is held by either of them, not by one alone.
    across = (CELL, 3 * CELL, 0, 2 * CELL)
    assert ledger.holds(across, ("a", "b"))
    assert not ledger.holds(across, "a")
    done = ledger.done_map({"a", "b"})
    assert done(across)
    assert not done((0, 2 * CELL, 2 * CELL, 4 * CELL))  # edited there
    part = ledger.snapshot((0, 2 * CELL, 0, 2 * CELL), "a")
    assert part.holds((0, 2 * CELL, 0, 2 * CELL))
    with pytest.raises(ValueError, match="not inside"):
        part.holds((0, 2 * CELL, 0, 3 * CELL))

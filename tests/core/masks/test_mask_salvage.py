"""A damaged mask store gives back every intact chunk and names what it lost."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slide_unet.core.errors import MaskStoreWarning
from slide_unet.core.masks.salvage import TolerantLevel, damaged_folder, read_region, salvage
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.store_layout import CHUNK_SIDE
from slide_unet.core.masks.windows import StoreWindow

SIDE = 4 * CHUNK_SIDE


def _edited_store(tmp_path: Path) -> tuple[Path, MaskStore, np.ndarray]:
    """A slide whose store holds hand edits in two level-0 chunks, far apart."""
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, np.full((SIDE, SIDE), 200, np.uint8), tile=(256, 256))
    store = MaskStore.for_slide(path, (SIDE, SIDE), 0.5)
    edit = np.zeros((SIDE, SIDE), np.uint8)
    edit[100:300, 100:300] = 1  # in the first level-0 chunk
    edit[-300:-100, -300:-100] = 1  # in the last one
    store.write(0, 0, edit, edited=True)
    return path, store, edit


def _chunk_files(store: MaskStore, level: int = 0) -> list[Path]:
    return sorted(p for p in (store.path / str(level) / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_chunk_reads_as_empty_and_the_intact_ones_are_all_there(tmp_path, how) -> None:
    _, store, edit = _edited_store(tmp_path)
    first, last = _chunk_files(store)
    content = last.read_bytes()
    damaged = b"\x00garbage" * 40 if how == "garbage" else content[: len(content) // 2]
    last.write_bytes(damaged)
    # What a plain read does: it fails, so nothing at all was shown.
    with pytest.raises(RuntimeError, match="blosc"):
        np.asarray(store.level0[:, :])

    with pytest.warns(MaskStoreWarning) as said:
        got = read_region(store, 0, 0, SIDE, 0, SIDE)
    expected = edit.copy()
    side = store.level0.chunks[0]
    expected[-side:, -side:] = 0  # the damaged chunk's part
    np.testing.assert_array_equal(got, expected)
    assert got[100:300, 100:300].all()  # the intact edit is there
    message = str(said[0].message)
    assert str(store.path) in message
    assert "damaged" in message
    assert damaged_folder(store).name in message

    # The damaged bytes are kept aside, and the store works again where they were.
    kept = _chunk_files_under(damaged_folder(store))
    assert [p.read_bytes() for p in kept] == [damaged]
    assert first.is_file()
    assert not last.exists()
    store.write(SIDE - 50, SIDE - 50, np.ones((20, 20), np.uint8), edited=True)
    assert np.asarray(store.level0[SIDE - 50 : SIDE - 30, SIDE - 50 : SIDE - 30]).all()


def _chunk_files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_one_damaged_chunk_is_named_once(tmp_path) -> None:
    _, store, _ = _edited_store(tmp_path)
    _chunk_files(store)[-1].write_bytes(b"not blosc")
    with pytest.warns(MaskStoreWarning):
        read_region(store, 0, 0, SIDE, 0, SIDE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_region(store, 0, 0, SIDE, 0, SIDE)  # set aside: now a plain empty chunk


def test_a_viewer_level_never_fails_and_slices_like_an_array(tmp_path) -> None:
    _, store, _edit = _edited_store(tmp_path)
    _chunk_files(store, 1)[-1].write_bytes(b"broken")
    level = TolerantLevel(store, 1)
    assert level.shape == store.levels[1].shape
    assert level.dtype == np.uint8
    with pytest.warns(MaskStoreWarning, match="level 1"):
        whole = np.asarray(level)
    assert whole[50:150, 50:150].all()  # the first edit, halved
    assert level[10:20:2, 5:9].shape == (5, 4)
    assert level[30:10, :].shape == (0, level.shape[1])


def test_salvage_sets_every_damaged_chunk_aside_and_reports_a_deleted_one(tmp_path) -> None:
    _, store, _ = _edited_store(tmp_path)
    first, last = _chunk_files(store)
    last.write_bytes(b"junk")
    first.unlink()  # zarr reads a missing chunk as zeros: only the overview tells
    with pytest.warns(MaskStoreWarning) as said:
        found = salvage(store)
    assert len(found) == 2
    assert any("does not decode" in line for line in found)
    assert any("missing" in line and "(0, 0)" in line for line in found)
    assert len(said) == 1  # one notification for everything
    assert not last.exists()
    assert _chunk_files_under(damaged_folder(store))


def test_salvage_of_a_whole_store_finds_nothing(tmp_path) -> None:
    _, store, _ = _edited_store(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert salvage(store) == []
    assert not damaged_folder(store).exists()


def test_a_store_whose_metadata_was_deleted_comes_back_with_its_edits(tmp_path) -> None:
    path, store, edit = _edited_store(tmp_path)
    for meta in store.path.rglob("zarr.json"):
        meta.unlink()
    with pytest.warns(MaskStoreWarning, match="rebuilt"):
        again = MaskStore.existing(path, (SIDE, SIDE), 0.5)
    assert again is not None
    assert again.edited
    np.testing.assert_array_equal(np.asarray(again.level0[:, :]), edit)
    kept = [p for p in store.path.parent.iterdir() if ".damaged-" in p.name]
    assert len(kept) == 1


def test_a_window_over_a_damaged_store_shows_the_intact_edits(tmp_path) -> None:
    _, store, edit = _edited_store(tmp_path)
    _chunk_files(store)[-1].write_bytes(b"junk")
    window = StoreWindow(store, (0, SIDE, 0, SIDE))
    with pytest.warns(MaskStoreWarning):
        shown = np.asarray(window[:, :])
    np.testing.assert_array_equal(shown[:1024, :1024], edit[:1024, :1024])
    assert not shown[1024:, 1024:].any()

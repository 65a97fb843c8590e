"""Mask store windows: write-through for the engine, autosaved in the background for painting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.masks.io import read_mask
from slide_unet.core.masks.pyramids import halve_max
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import (
    AUTOSAVE_SECONDS,
    AutosavedWindow,
    StoreWindow,
    flush_windows,
    reload_windows,
)
from slide_unet.core.paths import MASKS_DIR_ENV

TRUTH = Path(__file__).resolve().parents[3] / "sample_data" / "kidney_pas_mask.ome.tif"
REGION = (300, 800, 1000, 1700)


@pytest.fixture(autouse=True)
def _private_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return read_mask(TRUTH)


def _store(truth: np.ndarray, key: str = "windows") -> MaskStore:
    store = MaskStore.for_key(key, truth.shape, 0.5)
    store.write(0, 0, truth)
    return store


def _assert_overviews_match(store: MaskStore) -> None:
    level = np.asarray(store.level0[:])
    for k in range(1, len(store.levels)):
        level = halve_max(level)
        np.testing.assert_array_equal(np.asarray(store.levels[k][:]), level)


def _wait_for(condition, seconds: float) -> float:
    """Poll ``condition`` until it holds; return how long that took (fails past ``seconds``)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.01)
    return time.monotonic() - start


KEYS = [
    (slice(None), slice(None)),
    (slice(10, 400, 3), slice(-50, None)),
    (7, slice(2, 9)),
    (Ellipsis, 4),
    (np.array([0, 5, -1, 250]), np.array([3, -2, 0, 699])),
    (np.array([], np.intp), np.array([], np.intp)),
    "mask",
    (-1, -1),
]


@pytest.mark.parametrize("kind", [StoreWindow, AutosavedWindow])
def test_a_window_indexes_like_the_numpy_array_it_stands_for(truth, kind) -> None:
    store = _store(truth)
    written: list[tuple[int, int, int, int]] = []
    if kind is StoreWindow:
        window = StoreWindow(store, REGION, on_write=written.append)
    else:
        window = AutosavedWindow(store, REGION, on_saved=written.append)
    reference = truth[300:800, 1000:1700].copy()
    for key in KEYS:
        if isinstance(key, str):
            key = (np.zeros(window.shape, bool),)
            key[0][10:20, 30:35] = True
        np.testing.assert_array_equal(window[key], reference[key])
        value = 1 - reference[key]  # a change wherever it writes
        window[key] = value
        reference[key] = value
        if kind is AutosavedWindow:
            window.flush()
        np.testing.assert_array_equal(np.asarray(store.level0[300:800, 1000:1700]), reference)
    np.testing.assert_array_equal(np.asarray(window), reference)
    assert written  # boxes in store pixels, inside the region
    assert all(300 <= y0 < y1 <= 800 and 1000 <= x0 < x1 <= 1700 for y0, y1, x0, x1 in written)
    assert written[-1] == (799, 800, 1699, 1700)
    with pytest.raises(IndexError):
        window[500, 0]
    _assert_overviews_match(store)
    assert store.edited


def test_an_autosaved_window_changes_memory_at_once_and_the_store_within_the_delay(
    truth,
) -> None:
    store = _store(truth)
    window = AutosavedWindow(store, REGION)
    rows, cols = np.mgrid[40:60, 40:60]
    window[rows.ravel(), cols.ravel()] = 1  # a brush dab, as napari paints
    assert window[50, 50] == 1
    assert store.level0[340, 1040] == truth[340, 1040] == 0  # not written by the dab itself
    assert not store.edited
    took = _wait_for(lambda: store.level0[350, 1050] == 1, AUTOSAVE_SECONDS + 2.0)
    assert took >= AUTOSAVE_SECONDS * 0.5  # batched, not written per dab
    expected = truth.copy()
    expected[340:360, 1040:1060] = 1
    np.testing.assert_array_equal(np.asarray(store.level0[:]), expected)
    _assert_overviews_match(store)
    # The saver marks the store edited just after the pixels land: wait for the mark too.
    _wait_for(lambda: store.edited and window.pending == 0, 2.0)
    assert store.edited
    assert window.pending == 0


def test_reads_return_copies_so_napari_undo_history_keeps_the_old_pixels(truth) -> None:
    window = AutosavedWindow(_store(truth), REGION)
    rows, cols = np.array([1, 2]), np.array([3, 4])
    before = window[rows, cols]
    block = window[0:10, 0:10]
    window[0:10, 0:10] = 7
    window[rows, cols] = 5
    assert not (block == 7).any()
    assert not (before == 5).any()


def test_values_that_do_not_fit_the_mask_are_refused_and_change_nothing(truth) -> None:
    window = AutosavedWindow(_store(truth), REGION)
    with pytest.raises(ValueError, match="do not fit a uint8 mask"):
        window[0:2, 0:2] = 300
    with pytest.raises(ValueError, match="whole numbers"):
        window[0:2, 0:2] = 0.5
    assert window.pending == 0


def test_a_failed_save_keeps_the_edits_and_a_later_save_writes_them(
    truth, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(truth)
    errors: list[BaseException] = []
    window = AutosavedWindow(store, REGION, on_error=errors.append)
    real = MaskStore.write_blocks

    def disk_full(self, blocks, *, edited=False):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MaskStore, "write_blocks", disk_full)
    window[0:5, 0:5] = 1
    window[100:105, 100:105] = 1
    with pytest.raises(OSError, match="No space"):
        window.flush()
    _wait_for(lambda: len(errors) == 1, AUTOSAVE_SECONDS + 2.0)
    time.sleep(3 * AUTOSAVE_SECONDS)  # the background saver retries, and fails again
    assert len(errors) == 1  # told once per failing streak, not at every retry
    assert window.pending == 2
    assert isinstance(window.save_error, OSError)
    monkeypatch.setattr(MaskStore, "write_blocks", real)
    _wait_for(lambda: window.pending == 0, AUTOSAVE_SECONDS * 3 + 2.0)
    assert window.save_error is None
    assert store.level0[300:305, 1000:1005].all()
    assert store.level0[400:405, 1100:1105].all()


def test_a_new_window_of_the_store_sees_edits_not_yet_saved(truth) -> None:
    store = _store(truth)
    first = AutosavedWindow(store, (0, 2048, 0, 2048), delay=60.0)  # no autosave in time
    first[5, 5] = 1
    assert store.level0[5, 5] == 0
    second = AutosavedWindow(store, (0, 100, 0, 100))
    assert second[5, 5] == 1
    first.close()
    second.close()


def test_reload_takes_what_the_engine_wrote_and_keeps_pending_strokes(truth) -> None:
    store = _store(truth)
    window = AutosavedWindow(store, (0, 2048, 0, 2048), delay=60.0)
    np.asarray(window)  # everything loaded, as napari shows it
    window[10, 10] = 1  # a stroke not yet saved
    store.write(0, 0, np.ones((64, 64), np.uint8) * 0)  # the engine writes a block of 0s
    reload_windows(store, (0, 64, 0, 64))
    assert window[10, 10] == 1  # saved before the reload, then read back
    assert store.level0[10, 10] == 1
    assert not window[20:64, 20:64].any()
    flush_windows(store)
    window.close()
    with pytest.raises(ValueError, match="closed"):
        window[0, 0] = 1


def test_kill_9_loses_at_most_the_last_autosave_delay_of_strokes(tmp_path: Path, truth) -> None:
    store = _store(truth, key="killed")
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        import numpy as np
        from slide_unet.core.masks.store import MaskStore
        from slide_unet.core.masks.windows import AutosavedWindow, AUTOSAVE_SECONDS

        store = MaskStore({str(store.path)!r})
        window = AutosavedWindow(store, (0, 2048, 0, 2048))
        window[100:110, 100:110] = 1          # an early stroke
        time.sleep(AUTOSAVE_SECONDS + 1.0)   # more than the autosave delay
        window[200:210, 200:210] = 1          # the last stroke, just before the crash
        print("painted", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert "painted" in done.stdout
    after = MaskStore(store.path)
    assert after.level0[100:110, 100:110].all()  # older than the delay: on disk
    assert after.edited
    _assert_overviews_match(after)
    # The last stroke may or may not have made it; nothing else changed.
    changed = np.asarray(after.level0[:]) != truth
    changed[100:110, 100:110] = False
    changed[200:210, 200:210] = False
    assert not changed.any()
    assert os.path.isdir(after.path)


def test_edits_not_yet_saved_are_saved_when_the_program_exits(truth) -> None:
    store = _store(truth, key="exiting")
    script = textwrap.dedent(
        f"""
        from slide_unet.core.masks.store import MaskStore
        from slide_unet.core.masks.windows import AutosavedWindow

        window = AutosavedWindow(MaskStore({str(store.path)!r}), (0, 2048, 0, 2048), delay=60)
        window[100:110, 100:110] = 1  # then the program ends, long before the autosave
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "could not autosave" not in done.stderr
    assert MaskStore(store.path).level0[100:110, 100:110].all()

"""One writer at a time on a mask store, across processes; readers never wait."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.errors import StoreBusyError
from slide_unet.core.masks.pyramids import halve_max
from slide_unet.core.masks.store import BUSY_WAIT_SECONDS, MaskStore
from slide_unet.core.masks.windows import AutosavedWindow
from slide_unet.core.paths import MASKS_DIR_ENV

SHAPE = (512, 600)


@pytest.fixture(autouse=True)
def _private_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))


def _run(script: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_writing_at_once_lose_no_row_and_no_record() -> None:
    store = MaskStore.for_key("two writers", SHAPE)
    script = """
        import sys, time
        import numpy as np
        from slide_unet.core.errors import StoreBusyError
        from slide_unet.core.masks.store import MaskStore
        store = MaskStore(sys.argv[1])
        first = int(sys.argv[2])
        for row in range(first, 512, 2):  # interleaved with the other process's rows
            try:
                store.write(row, 0, np.ones((1, 600), np.uint8))
                store.add_region(row, row + 1, 0, 600)
            except StoreBusyError as error:  # allowed: told, nothing half-done
                print("busy", error, flush=True)
                break
            print(row, flush=True)
            time.sleep(0.005)  # a writer does other work between writes
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(store.path), str(first)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (0, 1)
    ]
    written: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        written += [int(line) for line in out.split() if line.isdigit()]
    assert len(written) > 400  # both wrote, nearly always everything
    after = MaskStore(store.path)
    level0 = np.asarray(after.level0[:])
    assert level0[written].all()  # every row a writer was told is written, is
    assert {r[0] for r in after.regions} == set(written)  # and so is every record
    assert len(after.regions) == len(written)
    expected = level0
    for k in range(1, len(after.levels)):  # and the overviews are in step
        expected = halve_max(expected)
        np.testing.assert_array_equal(np.asarray(after.levels[k][:]), expected)


def test_a_second_writer_waits_then_is_told_who_holds_the_store() -> None:
    store = MaskStore.for_key("busy", SHAPE)
    store.write(0, 0, np.ones((10, 10), np.uint8))
    holder = _run(
        f"""
        import time
        from slide_unet.core.masks.store import MaskStore
        store = MaskStore({str(store.path)!r})
        with store.writing("segmenting with glomeruli"):
            print("holding", flush=True)
            time.sleep(60)
        """
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        with pytest.raises(StoreBusyError) as caught:
            store.write(100, 100, np.ones((5, 5), np.uint8))
        waited = time.monotonic() - started
        assert BUSY_WAIT_SECONDS * 0.9 <= waited < BUSY_WAIT_SECONDS + 3
        message = str(caught.value)
        assert f"process {holder.pid}" in message
        assert "segmenting with glomeruli" in message
        assert caught.value.pid == holder.pid
        # Readers are never blocked, and nothing was written.
        assert store.level0[0, 0] == 1
        assert store.level0[100, 100] == 0
        assert store.edited is False
    finally:
        holder.kill()
        holder.wait()
    # A killed holder releases the store (the operating system drops its lock).
    store.write(100, 100, np.ones((5, 5), np.uint8))
    assert store.level0[100, 100] == 1


def test_an_autosaved_window_keeps_its_edits_while_the_store_is_busy() -> None:
    store = MaskStore.for_key("busy window", SHAPE)
    holder = _run(
        f"""
        import sys, time
        from slide_unet.core.masks.store import MaskStore
        store = MaskStore({str(store.path)!r})
        with store.writing("segmenting with nuclei"):
            print("holding", flush=True)
            sys.stdin.readline() if False else time.sleep(8)
        """
    )
    errors: list[BaseException] = []
    try:
        assert holder.stdout.readline().strip() == "holding"
        window = AutosavedWindow(store, (0, 512, 0, 600), delay=0.1, on_error=errors.append)
        window[10:20, 10:20] = 1
        deadline = time.monotonic() + BUSY_WAIT_SECONDS + 5
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert errors
        assert isinstance(errors[0], StoreBusyError)
        assert "segmenting with nuclei" in str(errors[0])
        assert window.pending  # kept, to be saved later
        assert store.level0[15, 15] == 0
    finally:
        holder.wait(timeout=60)
    deadline = time.monotonic() + 20
    while store.level0[15, 15] == 0:
        assert time.monotonic() < deadline, "the edit was not saved once the store was free"
        time.sleep(0.1)
    assert len(errors) == 1  # told once
    window.close()


def test_threads_of_one_process_share_the_hold() -> None:
    store = MaskStore.for_key("threads", SHAPE)
    done = []

    def write(row: int) -> None:
        store.write(row, 0, np.ones((1, 600), np.uint8))
        done.append(row)

    with store.writing("a long run"):
        threads = [threading.Thread(target=write, args=(row,)) for row in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert sorted(done) == list(range(8))
    assert not Path(f"{store.path}.owner").exists()  # the hold is over
    assert os.getpid()  # this process held it all along, without waiting on itself

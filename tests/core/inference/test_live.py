"""The live segmenter (issue 18) without Qt: blocks nearest the centre first, nothing
computed twice, hand edits never written over, a new request drops the old queue."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.inference.live import LiveSegmenter
from slide_unet.core.inference.segment import segment
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.paths import MASKS_DIR_ENV
from slide_unet.core.slide.slide import open_slide

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "kidney_pas.ome.tif"
WHOLE = (0, 2048, 0, 2048)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MaskStore:
    """The sample's store in a folder of this test's own: a store left in the session's
    shared folder would come back as a layer when a later test opens the sample."""
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))
    with open_slide(SAMPLE) as slide:
        return MaskStore.for_slide(SAMPLE, slide.shape[:2], slide.mpp)


def _live(store: MaskStore, **options: object) -> LiveSegmenter:
    options.setdefault("precision", "fp32")  # exactly independent of the tiling
    return LiveSegmenter(SAMPLE, store, "glomeruli", device="cpu", **options)


def test_blocks_land_nearest_the_centre_first_and_meet_without_seams(store: MaskStore) -> None:
    landed: list[tuple[int, int, int, int]] = []
    with _live(store, on_block=landed.append) as live:
        queued = live.request(WHOLE, centre=(1800, 300))
        assert queued[0] == (1024, 2048, 0, 1024)  # the block holding the centre
        assert live.wait(timeout=120)
    assert landed[0] == queued[0]  # the centre's block alone, first: shown soonest
    assert sorted(landed) == sorted(queued)
    assert len(landed) == 4
    assert live.calls < 4  # the others ran side by side, fewer calls
    # Four block calls give the mask one call on the whole slide gives, every object kept
    # (the card's minimum area is for whole-region runs: an object cut by a block's
    # edge would be measured in part).
    whole = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", min_object_um2=0)
    np.testing.assert_array_equal(np.asarray(store.level0[:]), whole)
    assert whole.any()  # the sample has glomeruli: the comparison is not of two blanks


def test_a_revisit_costs_no_model_call_and_new_settings_are_a_new_result(
    store: MaskStore,
) -> None:
    with _live(store) as live:
        live.request((0, 1024, 0, 2048))
        assert live.wait(timeout=120)
        calls = live.calls
        assert calls >= 1
        assert store.ledger.holds((0, 1024, 0, 2048), live.signature)
        assert live.request((0, 1024, 0, 2048)) == []  # panned back: all done
        assert live.wait(timeout=10)
        assert live.calls == calls
        assert set(live.request(WHOLE)) == {(1024, 2048, 0, 1024), (1024, 2048, 1024, 2048)}
        assert live.wait(timeout=120)
        assert store.ledger.holds(WHOLE, live.signature)
    # Another threshold is another result: every block runs again, into the same store.
    with _live(store, threshold=0.9) as stricter:
        assert len(stricter.request(WHOLE)) == 4
        assert stricter.wait(timeout=120)
        assert stricter.calls >= 1  # blocks without tissue are cleared, not run
    assert store.ledger.holds(WHOLE, stricter.signature)
    assert not store.ledger.holds((0, 1, 0, 1), live.signature)  # replaced


def test_a_hand_edit_survives_live_passing_over_it(store: MaskStore) -> None:
    edit = np.full((100, 100), 1, np.uint8)
    store.write(50, 50, edit, edited=True)  # a painted square in the first block
    with _live(store) as live:
        queued = live.request(WHOLE)
        assert (0, 1024, 0, 1024) not in queued
        assert len(queued) == 3
        assert live.wait(timeout=120)
    np.testing.assert_array_equal(np.asarray(store.level0[50:150, 50:150]), edit)
    assert not np.asarray(store.level0[0:1024, 0:1024])[200:, 200:].any()  # untouched


def test_a_new_request_drops_what_left_the_view(store: MaskStore) -> None:
    release = threading.Event()
    landed: list[tuple[int, int, int, int]] = []

    def hold_first(box: tuple[int, int, int, int]) -> None:
        landed.append(box)
        release.wait(timeout=60)

    with _live(store, on_block=hold_first) as live:
        first = live.request((0, 1024, 0, 2048), centre=(0, 0))
        assert first == [(0, 1024, 0, 1024), (0, 1024, 1024, 2048)]
        while not landed:  # the first block is written; its callback holds the worker
            threading.Event().wait(0.02)
        # The view moves to the bottom row: the top row's second block is dropped.
        moved = live.request((1024, 2048, 0, 2048))
        assert (0, 1024, 1024, 2048) not in moved
        release.set()
        assert live.wait(timeout=120)
    assert landed == [(0, 1024, 0, 1024), *moved]
    assert not store.ledger.holds((0, 1024, 1024, 2048), live.signature)
    assert not live._thread.is_alive()  # closed: no work left behind


def test_live_skips_what_the_segment_button_did_with_the_same_settings(
    store: MaskStore,
) -> None:
    from slide_unet.core.inference.into_store import segment_into_store
    from slide_unet.core.inference.options import SegmentOptions

    store.write(0, 0, np.ones((64, 64), np.uint8), edited=True)
    segment_into_store(
        store,
        str(SAMPLE),
        (0, 1024, 0, 2048),
        SegmentOptions(model="glomeruli", device="cpu"),
        progress=None,
        cancel=threading.Event(),
        landed=lambda box: None,
    )
    # The button wrote over the edit (after a backup): Live may now pass there.
    assert not store.ledger.edited((0, 64, 0, 64))
    with _live(store, precision="auto") as live:
        assert set(live.request(WHOLE)) == {(1024, 2048, 0, 1024), (1024, 2048, 1024, 2048)}
        assert live.wait(timeout=120)
    with _live(store, precision="auto", tta=True) as other:
        assert len(other.request(WHOLE)) == 4  # other settings: another result
        other.cancel()
        assert other.wait(timeout=120)


def _button(store: MaskStore, region: tuple[int, int, int, int], **kwargs: object) -> dict:
    from slide_unet.core.inference.into_store import segment_into_store
    from slide_unet.core.inference.options import SegmentOptions

    cancel = kwargs.pop("cancel", threading.Event())
    landed = kwargs.pop("landed", lambda box: None)
    kwargs.setdefault("model", "glomeruli")
    kwargs.setdefault("min_object_um2", 0.0)  # every object kept, unless a test says
    options = SegmentOptions(device="cpu", precision="fp32", **kwargs)  # type: ignore[arg-type]
    return segment_into_store(
        store, str(SAMPLE), region, options, progress=None, cancel=cancel, landed=landed
    )


def test_the_segment_button_skips_the_blocks_live_did_and_does_the_rest(
    store: MaskStore,
) -> None:
    # The sample is one 2048-pixel block of the button's plan; Live did three of its
    # four 1024-pixel squares, so the button runs the fourth alone (smaller tile).
    with _live(store) as live:
        live.request((0, 1024, 0, 2048))
        assert live.wait(timeout=120)
        live.request((1024, 2048, 0, 1024))  # a new request drops what is still queued
        assert live.wait(timeout=120)
    # A mark the engine would write over if it ran those squares again (not a hand
    # edit: the ledger still says they hold Live's result).
    seen = np.ones((2048, 2048), bool)
    seen[1024:, 1024:] = False
    store.write(0, 0, seen.astype(np.uint8), edited=False)
    _button(store, WHOLE)
    level0 = np.asarray(store.level0[:])
    assert level0[seen].all()  # skipped: neither run nor cleared
    whole = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", min_object_um2=0)
    np.testing.assert_array_equal(level0[~seen], whole[~seen])  # the fourth ran
    assert whole[~seen].any()  # ...and holds glomeruli: not a comparison of blanks
    assert store.ledger.holds(WHOLE, live.signature)


def test_a_block_half_done_runs_whole_as_cheaper_than_its_halves(store: MaskStore) -> None:
    """Two 1024-pixel squares' tiles cost about the model work of their 2048-pixel
    block's one tile: the button runs the block whole (same pixels, fewer calls)."""
    with _live(store) as live:
        live.request((0, 1024, 0, 2048))
        assert live.wait(timeout=120)
    store.write(0, 0, np.ones((1024, 2048), np.uint8), edited=False)  # a mark, as above
    _button(store, WHOLE)
    whole = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", min_object_um2=0)
    np.testing.assert_array_equal(np.asarray(store.level0[:]), whole)  # the mark is gone


def test_a_cancelled_button_run_keeps_its_finished_blocks_for_the_next(
    store: MaskStore,
) -> None:
    from slide_unet.core.errors import Cancelled

    cancel = threading.Event()
    landed: list[tuple[int, int, int, int]] = []

    def first_then_stop(box: tuple[int, int, int, int]) -> None:
        landed.append(box)
        cancel.set()

    # Four blocks of 1024 pixels (tile 480), one a batch: stopped after the first.
    with pytest.raises(Cancelled):
        _button(store, WHOLE, tile=480, batch_size=1, cancel=cancel, landed=first_then_stop)
    with _live(store) as live:
        done = [
            b
            for b in [
                (0, 1024, 0, 1024),
                (0, 1024, 1024, 2048),
                (1024, 2048, 0, 1024),
                (1024, 2048, 1024, 2048),
            ]
            if store.ledger.holds(b, live.signature)
        ]
        assert 0 < len(done) < 4  # what landed is recorded, the rest is not
        assert len(live.request(WHOLE)) == 4 - len(done)
        live.cancel()
        assert live.wait(timeout=120)


def test_with_a_minimum_object_area_blocks_hold_every_object_until_the_run_ends(
    store: MaskStore,
) -> None:
    """A block that landed holds the result with every object (Live's) until the run
    removes small objects over the whole region: a cancelled run's blocks count."""
    from slide_unet.core.errors import Cancelled

    cancel = threading.Event()
    with pytest.raises(Cancelled):
        _button(
            store,
            WHOLE,
            min_object_um2=1000.0,
            tile=480,  # blocks of 1024 pixels, four
            batch_size=1,
            cancel=cancel,
            landed=lambda box: cancel.set(),
        )
    with _live(store) as live:
        assert store.ledger.signatures() == [live.signature]  # every object kept, so far
        assert 0 < len(live.request(WHOLE)) < 4
        live.cancel()
        assert live.wait(timeout=120)
    _button(store, WHOLE, min_object_um2=1000.0)
    cleaned = store.ledger.signatures()[-1]
    assert cleaned.startswith(f"{live.signature}+min ")
    assert store.ledger.holds(WHOLE, cleaned)
    expected = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", min_object_um2=1000)
    np.testing.assert_array_equal(np.asarray(store.level0[:]) != 0, expected != 0)


def test_live_shows_a_button_result_with_small_objects_removed_and_the_button_reuses_lives(
    store: MaskStore,
) -> None:
    """Live keeps every object; a button run with an area takes Live's blocks and
    removes the small objects over all of them; Live then has nothing to redo."""
    with _live(store) as live:  # three of the button's block's four squares
        live.request((0, 1024, 0, 2048))
        assert live.wait(timeout=120)
        live.request((1024, 2048, 0, 1024))
        assert live.wait(timeout=120)
    landed: list[tuple[int, int, int, int]] = []
    _button(store, WHOLE, min_object_um2=1000.0, landed=landed.append)
    # Only the fourth ran; what else landed is the removal's writes and the region.
    squares = [b for b in landed if b[1] - b[0] == b[3] - b[2] == 1024]
    assert squares == [(1024, 2048, 1024, 2048)]
    expected = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", min_object_um2=1000)
    np.testing.assert_array_equal(np.asarray(store.level0[:]) != 0, expected != 0)
    with _live(store) as again:
        assert again.request(WHOLE) == []  # the cleaned result will do
        assert again.wait(timeout=120)
        assert again.calls == 0
    # Other settings are another result: neither the cleaned one nor Live's will do.
    with _live(store, tta=True) as other:
        assert len(other.request(WHOLE)) == 4
        other.cancel()
        assert other.wait(timeout=120)


def test_the_button_applies_the_model_cards_minimum_object_area_and_says_so(
    store: MaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from slide_unet.core.inference.segment import segment
    from slide_unet.core.model.store import load_model, save_model
    from slide_unet.core.paths import MODELS_DIR_ENV

    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    base = load_model("glomeruli")
    card = dataclasses.replace(base.card, name="glomeruli-cv", min_object_um2=1000.0)
    save_model(base, "glomeruli-cv", card)
    result = _button(store, WHOLE, model="glomeruli-cv", min_object_um2=None)  # the card's
    assert result["min_object_um2"] == 1000.0  # what the widget tells the user
    expected = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", min_object_um2=1000)
    plain = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", min_object_um2=0)
    assert plain.sum() > expected.sum()  # the sample has specks under 1,000 µm²
    np.testing.assert_array_equal(np.asarray(store.level0[:]) != 0, expected != 0)


def test_the_worker_sets_its_own_torch_threads_and_no_other_threads(store: MaskStore) -> None:
    import torch

    before = torch.get_num_threads()
    seen: dict[str, int] = {}

    def landed(_box: object) -> None:
        seen["worker"] = torch.get_num_threads()

    with _live(store, threads=before + 1, on_block=landed) as live:
        live.request((0, 1024, 0, 1024))
        assert live.wait(120)
    later = threading.Thread(target=lambda: seen.setdefault("new", torch.get_num_threads()))
    later.start()
    later.join()
    seen["main"] = torch.get_num_threads()
    assert seen == {"worker": before + 1, "new": before, "main": before}

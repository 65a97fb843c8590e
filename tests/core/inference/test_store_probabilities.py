"""The mask store keeps the model's probabilities beside the mask (issue 19): the
Segment button's run and Live write them, ``clear()`` drops them, and measuring the
store gives each object the mean probability it was segmented with."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.inference.live import LiveSegmenter
from slide_unet.core.inference.segment import segment
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import ProbabilityWindow
from slide_unet.core.objects.measure import measure
from slide_unet.core.paths import MASKS_DIR_ENV
from slide_unet.core.slide.slide import open_slide

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "kidney_pas.ome.tif"
WHOLE = (0, 2048, 0, 2048)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MaskStore:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))
    with open_slide(SAMPLE) as slide:
        return MaskStore.for_slide(SAMPLE, slide.shape[:2], slide.mpp)


def _button(store: MaskStore, region: tuple[int, int, int, int], **kwargs: object) -> dict:
    from slide_unet.core.inference.into_store import segment_into_store
    from slide_unet.core.inference.options import SegmentOptions

    options = SegmentOptions(model="glomeruli", device="cpu", precision="fp32", **kwargs)
    return segment_into_store(
        store,
        str(SAMPLE),
        region,
        options,
        progress=None,
        cancel=threading.Event(),
        landed=lambda box: None,
    )


def test_the_segment_button_keeps_probabilities_and_measure_reads_them(
    store: MaskStore,
) -> None:
    assert store.probability is None  # none until a run writes some
    _button(store, WHOLE)
    stored = store.probability
    assert stored is not None
    assert stored.dtype == np.uint8
    assert tuple(stored.shape) == store.shape
    assert tuple(stored.chunks) == tuple(store.level0.chunks)
    quantised = np.asarray(stored[:])
    mask = np.asarray(store.level0[:])
    assert mask.any()
    # The run's own probabilities: exactly what the engine gives beside its mask.
    expected = segment(SAMPLE, "glomeruli", device="cpu", precision="fp32", probabilities=True)
    assert np.abs(quantised / 255 - expected).max() <= 1 / 255 + 1e-6
    assert (quantised[mask > 0] > 127).all()  # foreground is above the 0.5 threshold
    # The object table of the store's mask, with its probabilities.
    table = measure(mask, mpp=store.mpp, probabilities=stored)
    means = table["mean_probability"]
    assert len(table) > 0
    assert np.isfinite(means).all()
    assert ((means >= 0.5) & (means <= 1)).all()
    # clear() drops them with the mask.
    store.clear()
    assert store.probability is None
    assert not (store.path / "probability").exists()


def test_live_writes_probabilities_for_the_blocks_it_runs(store: MaskStore) -> None:
    with LiveSegmenter(SAMPLE, store, "glomeruli", device="cpu", precision="fp32") as live:
        live.request((0, 1024, 0, 1024))
        assert live.wait(timeout=120)
    quantised = np.asarray(store.probability[:])
    assert quantised[:1024, :1024].any()
    assert not quantised[1024:].any()  # not run there
    assert not quantised[:, 1024:].any()
    mask = np.asarray(store.level0[:1024, :1024])
    assert (quantised[:1024, :1024][mask > 0] > 127).all()


def test_a_probability_window_writes_at_its_offset_and_reads_zeros_before(
    store: MaskStore,
) -> None:
    window = ProbabilityWindow(store, (100, 300, 200, 500))
    assert window.shape == (200, 300)
    assert not np.asarray(window).any()  # nothing written: unknown, 0
    block = np.full((50, 60), 201, np.uint8)
    window[10:60, 20:80] = block
    np.testing.assert_array_equal(np.asarray(store.probability[110:160, 220:280]), block)
    assert int(np.asarray(store.probability[:]).astype(np.int64).sum()) == 201 * 50 * 60
    np.testing.assert_array_equal(window[10:60, 20:80], block)
    with pytest.raises(IndexError):
        window[np.array([1, 2]), 3] = 9

"""Live in a real napari window (issue 18): the mask follows the view as it moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.paths import CACHE_DIR_ENV, MASKS_DIR_ENV
from slide_unet.napari.layers import camera_of, visible_region

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "kidney_pas.ome.tif"
PLUGIN = "napari-slide-unet"
WAIT_MS = 120_000


@pytest.fixture(autouse=True)
def _private_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))


def _look_at(viewer, centre: tuple[float, float], microns: float) -> None:
    camera = camera_of(viewer)
    camera.center = centre
    camera.zoom = float(min(viewer.canvas.size)) / microns


def _settled(qtbot, widget) -> None:
    """Wait for the camera to settle, the request to be made and every block to land."""
    live = widget.live
    qtbot.waitUntil(lambda: live.segmenter is not None, timeout=WAIT_MS)
    requests = live.requests
    qtbot.waitUntil(lambda: live.requests > requests or not live._settle.isActive(), timeout=5000)
    qtbot.waitUntil(lambda: live.segmenter.pending == 0, timeout=WAIT_MS)
    qtbot.wait(2 * 250)  # the batched refresh


def test_live_follows_the_view_and_a_revisit_costs_no_model_call(viewer, dock, qtbot) -> None:
    image = viewer.open(SAMPLE, plugin=PLUGIN)[0]
    widget = dock("Segment")
    widget.model.value = "glomeruli"
    _look_at(viewer, (256.0, 256.0), 400.0)  # the top-left corner (world units: µm)
    widget.live_switch.value = True
    live = widget.live
    _settled(qtbot, widget)
    store = live.store
    segmenter = live.segmenter
    first = segmenter.calls
    assert first >= 1
    y0, y1, x0, x1 = visible_region(viewer, image)
    assert store.ledger.holds((y0, y1, x0, x1), segmenter.signature)
    assert not store.ledger.holds((1536, 2048, 1536, 2048), segmenter.signature)  # not seen

    # Pan to the opposite corner: its blocks run; then back: nothing runs.
    _look_at(viewer, (768.0, 768.0), 400.0)
    _settled(qtbot, widget)
    after_pan = segmenter.calls
    assert after_pan > first
    _look_at(viewer, (256.0, 256.0), 400.0)
    _settled(qtbot, widget)
    assert segmenter.calls == after_pan
    shown = widget.layer.data[0] if widget.layer.multiscale else widget.layer.data
    assert np.asarray(shown[:]).any()  # glomeruli in the Labels layer

    # Live off: no more work, whatever the camera does.
    widget.live_switch.value = False
    assert widget.live is None
    _look_at(viewer, (512.0, 512.0), 1024.0)
    qtbot.wait(600)
    assert segmenter.calls == after_pan


def test_zoomed_far_out_live_asks_to_zoom_in_instead_of_queuing(
    viewer, dock, qtbot, monkeypatch
) -> None:
    from slide_unet.napari import live_view

    monkeypatch.setattr(live_view, "MAX_VIEW_MPX", 0.01)  # the sample is small: shrink it
    viewer.open(SAMPLE, plugin=PLUGIN)
    widget = dock("Segment")
    widget.model.value = "glomeruli"
    _look_at(viewer, (512.0, 512.0), 1024.0)
    widget.live_switch.value = True
    qtbot.waitUntil(lambda: widget.live.segmenter is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "zoom in" in widget.status.value, timeout=5000)
    assert widget.live.segmenter.pending == 0
    assert widget.live.segmenter.calls == 0
    widget.live_switch.value = False


def test_new_settings_start_a_new_result_and_hand_edits_survive_it(viewer, dock, qtbot) -> None:
    viewer.open(SAMPLE, plugin=PLUGIN)
    widget = dock("Segment")
    widget.model.value = "glomeruli"
    _look_at(viewer, (256.0, 256.0), 400.0)
    widget.live_switch.value = True
    _settled(qtbot, widget)
    store, before = widget.live.store, widget.live.segmenter.signature
    painted = np.full((64, 64), 1, np.uint8)
    store.write(100, 100, painted, edited=True)  # what the layer's autosave writes
    widget.advanced.threshold.value = 0.9  # another setting: another result
    assert widget.live is not None
    _settled(qtbot, widget)
    segmenter = widget.live.segmenter
    assert segmenter.signature != before
    assert segmenter.calls >= 1  # the view ran again with the new threshold...
    np.testing.assert_array_equal(np.asarray(store.level0[100:164, 100:164]), painted)
    assert not store.ledger.holds((0, 1024, 0, 1024), segmenter.signature)  # ...but not there
    # A setting Live does not use (it keeps small objects) leaves the view running.
    from slide_unet.napari.segment_widget import LIVE_SETTINGS

    assert {w.name for w in (*widget.settings, *widget.advanced)} >= LIVE_SETTINGS
    live = widget.live
    widget.advanced.min_object_um2.value = 500.0
    assert widget.live is live
    widget.live_switch.value = False

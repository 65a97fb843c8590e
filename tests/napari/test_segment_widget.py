"""The Segment widget, as a user drives it: open the sample, segment, cancel, reopen."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.inference.segment import segment
from slide_unet.core.masks.io import read_mask
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.paths import CACHE_DIR_ENV, MASKS_DIR_ENV
from slide_unet.core.scoring.metrics import dice
from slide_unet.napari.layers import camera_of

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "kidney_pas.ome.tif"
TRUTH = ROOT / "sample_data" / "kidney_pas_mask.ome.tif"
PLUGIN = "napari-slide-unet"
WAIT_MS = 240_000


@pytest.fixture(autouse=True)
def _private_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))


def _open(viewer, dock):
    layers = viewer.open(SAMPLE, plugin=PLUGIN)
    widget = dock("Segment")
    widget.model.value = "glomeruli"
    return layers[0], widget


def _run(qtbot, widget, region: str):
    widget.settings.region.value = region
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        assert job is not None
    return job


def _look_at(viewer, centre: tuple[float, float], microns: float) -> None:
    """Centre the view on ``centre`` (µm) with about ``microns`` across the canvas."""
    camera = camera_of(viewer)
    camera.center = centre
    camera.zoom = float(min(viewer.canvas.size)) / microns


def _mask(layer) -> np.ndarray:
    data = layer.data[0] if layer.multiscale else layer.data
    return np.asarray(data[:])


def test_viewport_run_fills_only_the_region_on_screen_and_matches_the_engine(
    viewer, dock, qtbot
) -> None:
    image, widget = _open(viewer, dock)
    # Look at the top-left quarter of the slide (world units are microns).
    _look_at(viewer, (256.0, 256.0), 512.0)
    _run(qtbot, widget, "Viewport")
    result = widget.last_result
    assert result is not None
    y0, y1, x0, x1 = result["region"]
    assert 0 <= y0 < y1 <= 2048
    assert 0 <= x0 < x1 <= 2048
    assert (y1 - y0) * (x1 - x0) < 2048 * 2048 / 2  # a part, not the whole slide
    labels = next(layer for layer in viewer.layers if layer.name == "kidney_pas mask")
    assert labels.scale[-1] == pytest.approx(image.scale[-1])
    mask = _mask(labels)
    expected = segment(SAMPLE, "glomeruli", region=(y0, y1, x0, x1))
    np.testing.assert_array_equal(mask[y0:y1, x0:x1], expected)
    outside = mask.copy()
    outside[y0:y1, x0:x1] = 0
    assert not outside.any()


def test_whole_slide_run_gives_the_cli_mask_and_its_dice(viewer, dock, qtbot) -> None:
    _, widget = _open(viewer, dock)
    progress: list[tuple[int, int]] = []
    widget.settings.region.value = "Whole slide"
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        job.signals.progress.connect(lambda done, total: progress.append((done, total)))
    assert progress
    assert progress[-1][0] == progress[-1][1]
    mask = _mask(widget.layer)
    np.testing.assert_array_equal(mask, segment(SAMPLE, "glomeruli"))
    assert dice(mask, read_mask(TRUTH)) > 0.8
    assert widget.run_button.enabled


def test_cancel_stops_the_run_and_the_widget_stays_usable(viewer, dock, qtbot, errors) -> None:
    _, widget = _open(viewer, dock)
    widget.settings.region.value = "Whole slide"
    widget.advanced.tile.value = 256  # many small tiles: time to cancel midway
    seen: list[int] = []

    def first_tile(done: int, total: int) -> None:
        seen.append(total)
        widget.cancel()

    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        job.signals.progress.connect(first_tile)
    assert widget.status.value.startswith("cancelled")
    assert widget.run_button.enabled
    assert not widget.cancel_button.enabled
    assert errors == []  # a cancel is not an error
    assert seen
    assert len(seen) < seen[0]


def _progress_bars(viewer, description: str) -> list:
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    return [
        bar
        for bar in viewer.window._qt_window.findChildren(QtLabeledProgressBar)
        if bar.description_label.text().startswith(description)
    ]


def test_the_progress_bar_shows_the_blocks_done_and_an_eta_while_it_runs(
    viewer, dock, qtbot
) -> None:
    _, widget = _open(viewer, dock)
    widget.settings.region.value = "Whole slide"
    widget.advanced.tile.value = 256  # many blocks
    shown: list[tuple[int, int, int, str]] = []

    def look(done: int, total: int) -> None:  # runs after the job's own handler
        for bar in _progress_bars(viewer, "Segmenting kidney_pas"):
            shown.append(
                (done, bar._get_value(), bar.qt_progress_bar.maximum(), bar.eta_label.text())
            )

    frozen: list[int] = []
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        job.signals.progress.connect(look)
        job.signals.progress.connect(lambda *_: frozen.append(gc.get_freeze_count()))
    # While it ran, napari's objects were kept out of full collections (a 231 ms
    # pause of the window otherwise); afterwards the collector has them back.
    assert min(frozen) > 0
    assert gc.get_freeze_count() == 0
    # What the bar shows moves with the work (at most once a second), not 0.
    middle = [entry for entry in shown if 0 < entry[1] < entry[2]]
    assert middle, shown
    for done, value, maximum, _eta in shown:
        assert value <= done
        assert maximum > 0
    assert any("<" in eta for *_, eta in middle)  # tqdm's "elapsed<remaining"


def test_cancelling_a_second_run_keeps_the_earlier_mask_outside_its_finished_blocks(
    viewer, dock, qtbot, errors
) -> None:
    _, widget = _open(viewer, dock)
    _run(qtbot, widget, "Whole slide")
    store = widget.layer.data.store
    # A hand-drawn square far from where the next run starts (its first block is the top left).
    rows, cols = np.mgrid[1900:1940, 1900:1940]
    widget.layer.data_setitem((rows.ravel(), cols.ravel()), 1)
    earlier = _mask(widget.layer)
    widget.advanced.tile.value = 256
    widget.advanced.threshold.value = 0.95  # another result, so replaced blocks show

    def first_block(done: int, total: int) -> None:
        if done >= 1:
            widget.cancel()

    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        job.signals.progress.connect(first_block)
    assert widget.status.value.startswith("cancelled")
    assert errors == []
    on_disk = np.asarray(MaskStore(store.path).level0[:])
    changed = on_disk != earlier
    assert changed.sum() < changed.size // 8  # at most the few blocks it finished
    assert on_disk[1900:1940, 1900:1940].all()  # the hand edit is still there
    np.testing.assert_array_equal(_mask(widget.layer), on_disk)
    assert len(store.backups()) == 1  # the hand edit was also copied aside first


def test_a_segmented_mask_comes_back_when_the_slide_is_reopened(
    viewer, dock, qtbot, reopened
) -> None:
    _, widget = _open(viewer, dock)
    _run(qtbot, widget, "Whole slide")
    segmented = _mask(widget.layer)
    assert segmented.any()

    layers = reopened(SAMPLE)
    image, restored = layers
    assert image.name == "kidney_pas"
    assert restored.name.startswith("kidney_pas mask (glomeruli, 20")
    np.testing.assert_array_equal(_mask(restored), segmented)
    assert tuple(restored.units) == tuple(image.units)


def test_no_image_layer_is_one_clear_notification(viewer, dock, errors) -> None:
    widget = dock("Segment")
    # Docked, the device picker still lists this machine's devices.
    assert {"auto", "cpu"} <= set(widget.settings.device.choices)
    assert widget.run() is None
    assert len(errors) == 1
    assert "no image layer" in errors[0]
    assert len(viewer.layers) == 0


def test_hand_edits_are_autosaved_and_come_back_when_the_slide_is_reopened(
    viewer, dock, qtbot, reopened
) -> None:
    _, widget = _open(viewer, dock)
    _look_at(viewer, (256.0, 256.0), 256.0)
    _run(qtbot, widget, "Viewport")
    labels = widget.layer
    # A hand edit through napari's own history-recording path (brush and
    # tools use the same one), then the window goes away.
    rows, cols = np.mgrid[1500:1540, 1500:1540]
    labels.data_setitem((rows.ravel(), cols.ravel()), 1)
    edited = _mask(labels)

    layers = reopened(SAMPLE)
    restored = [layer for layer in layers if layer.name.endswith("mask (autosaved)")]
    assert len(restored) == 1
    np.testing.assert_array_equal(_mask(restored[0]), edited)
    assert restored[0].scale[-1] == pytest.approx(layers[0].scale[-1])


def test_the_segment_widget_shows_the_cross_validated_figure_and_its_spread() -> None:
    from types import SimpleNamespace

    from slide_unet.napari.pickers import model_summary

    cv = SimpleNamespace(working_mpp=2.0, validation={"mean_dice": 0.9123, "sd_over_folds": 0.031})
    assert model_summary(cv) == "works at 2 µm/px, cross-validated Dice 0.912 ± 0.031"
    one_split = SimpleNamespace(working_mpp=None, validation={"mean_dice": 0.9311})
    assert model_summary(one_split) == "validation Dice 0.931"
    counted = SimpleNamespace(working_mpp=None, validation={"mean_dice": 0.9311, "n_images": 3})
    assert model_summary(counted) == "validation Dice 0.931 on 3 held-out images"
    chosen = SimpleNamespace(
        working_mpp=2.0, min_object_um2=1875.0, validation={"mean_dice": 0.9, "sd_over_folds": 0.1}
    )
    assert model_summary(chosen) == (
        "works at 2 µm/px, cross-validated Dice 0.900 ± 0.100, drops objects under 1,875 µm²"
    )


def test_the_form_is_built_from_segment_options_and_read_back_into_them(dock) -> None:
    from slide_unet.core.inference.options import SegmentOptions
    from slide_unet.core.model.store import load_model

    widget = dock("Segment")
    widget.model.value = "glomeruli"
    # Labels and defaults from the one declaration; None shown as the form's 0.
    assert widget.advanced.tile.label == "Tile (px)"
    assert widget.advanced.tile.value == 0
    assert widget.advanced.threshold.value == 0.0
    assert widget.settings.device.value == SegmentOptions().device
    # The form's 0s are None again ("the model's"): the core never sees a 0 tile.
    # The minimum object area is the picked model's own, shown as a number.
    own = load_model("glomeruli").card.min_object_um2
    assert own > 0  # the bundled card's, chosen by its cross-validation
    assert widget.options() == SegmentOptions(model="glomeruli", min_object_um2=own)
    widget.advanced.tile.value = 256
    widget.advanced.threshold.value = 0.7
    widget.advanced.tta.value = True
    options = widget.options(mpp=0.5)
    assert (options.tile, options.threshold, options.tta, options.mpp) == (256, 0.7, True, 0.5)
    assert options.batch_size is None


def test_picking_a_model_puts_its_own_minimum_object_area_in_the_form(
    dock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from slide_unet.core.model.store import load_model, save_model
    from slide_unet.core.paths import MODELS_DIR_ENV

    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
    base = load_model("glomeruli")
    card = dataclasses.replace(base.card, name="glomeruli-cv", min_object_um2=1500.0)
    save_model(base, "glomeruli-cv", card)
    widget = dock("Segment")
    widget.refresh_models(select="glomeruli-cv")
    assert widget.advanced.min_object_um2.value == 1500.0
    assert widget.options().min_object_um2 == 1500.0
    widget.advanced.min_object_um2.value = 0.0  # the user keeps every object
    assert widget.options().min_object_um2 == 0.0
    widget.model.value = "glomeruli"  # the bundled card's own (its cross-validation's)
    assert widget.advanced.min_object_um2.value == base.card.min_object_um2 != 1500.0
    widget.model.value = "glomeruli-cv"
    assert widget.advanced.min_object_um2.value == 1500.0

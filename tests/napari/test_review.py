"""The Review widget in a real napari viewer: the order of the queue, Next and Previous,
Reject as one undo step and Undo reject (also on a slide's store too large to edit, and
through an Edit here window), the keys, and progress kept in a slide's mask store across a
reopen."""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
import pytest

from slide_unet.core.masks.io import read_mask
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.objects.review import CUT, FALSE_POSITIVE, MISSED, OTHER, REVIEW_FILE
from slide_unet.core.paths import MASKS_DIR_ENV
from slide_unet.napari.layers import camera_of
from slide_unet.napari.review_widget import ReviewWidget

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "kidney_pas.ome.tif"
SAMPLE_MASK = ROOT / "sample_data" / "kidney_pas_mask.ome.tif"
PLUGIN = "napari-slide-unet"
MPP = 0.5
#: (y0, x0, side) in pixels: B ends on the tile line at 1024 px.
A, B, C, D = (100, 100, 5), (1004, 300, 20), (500, 500, 10), (200, 700, 40)


@pytest.fixture(autouse=True)
def _private_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))


def _mask(*squares: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros((1100, 1100), dtype=np.uint8)
    for y0, x0, side in squares:
        mask[y0 : y0 + side, x0 : x0 + side] = 1
    return mask


def _centre(square: tuple[int, int, int]) -> tuple[float, float]:
    y0, x0, side = square
    return ((y0 + (side - 1) / 2) * MPP, (x0 + (side - 1) / 2) * MPP)


@pytest.fixture
def widget(dock) -> ReviewWidget:
    widget = dock("Review")
    assert isinstance(widget, ReviewWidget)
    return widget


def _add(viewer, mask: np.ndarray, name: str):
    return viewer.add_labels(mask, name=name, scale=(MPP, MPP), metadata={"mpp": MPP})


def _build(widget: ReviewWidget, qtbot) -> None:
    with qtbot.waitSignal(widget.finished, timeout=60_000):
        assert widget.build() is not None
    assert widget.queue


def _at(viewer, square) -> None:
    np.testing.assert_allclose(camera_of(viewer).center[-2:], _centre(square), atol=1.0)


def test_without_truth_cut_objects_come_first_then_the_smallest(viewer, widget, qtbot) -> None:
    _add(viewer, _mask(A, B, C, D), "mask")
    widget.reset_choices()
    _build(widget, qtbot)
    assert [e.kind for e in widget.queue] == [CUT, OTHER, OTHER, OTHER]
    assert [int(widget.table["pixels"][e.row]) for e in widget.queue] == [400, 25, 100, 1600]
    assert widget.position == 0
    _at(viewer, B)
    assert widget.progress.text() == "0 of 4 reviewed"
    widget.next_button.click()
    _at(viewer, A)
    widget.next_button.click()
    _at(viewer, C)
    widget.previous_button.click()
    _at(viewer, A)
    assert widget.current.text().startswith("2 of 4: small")


def test_the_keys_walk_the_queue_while_the_dock_is_open(viewer, widget, qtbot) -> None:
    from app_model.types import KeyBinding

    _add(viewer, _mask(A, B, C, D), "mask")
    widget.reset_choices()
    _build(widget, qtbot)
    viewer.keymap[KeyBinding.from_str(".")](viewer)
    _at(viewer, A)
    viewer.keymap[KeyBinding.from_str(",")](viewer)
    _at(viewer, B)


def test_with_truth_false_positives_then_misses_come_first(viewer, widget, qtbot) -> None:
    E = (700, 900, 30)
    _add(viewer, _mask(B, C, E), "truth")
    _add(viewer, _mask(A, B, C, D), "prediction")
    widget.reset_choices()
    widget.layer.value = viewer.layers["prediction"]
    widget.truth_layer.value = viewer.layers["truth"]
    _build(widget, qtbot)
    kinds = [e.kind for e in widget.queue]
    assert kinds == [FALSE_POSITIVE, FALSE_POSITIVE, MISSED, CUT, OTHER]
    _at(viewer, A)  # the smallest false positive first
    widget.next_button.click()
    _at(viewer, D)
    widget.next_button.click()
    _at(viewer, E)  # the miss, shown where the truth has it
    assert not widget.reject_button.isEnabled()  # nothing to erase in the mask


def test_reject_erases_the_object_in_one_undo_step(viewer, widget, qtbot) -> None:
    mask = _mask(A, B, C, D)
    layer = _add(viewer, mask.copy(), "mask")
    widget.reset_choices()
    _build(widget, qtbot)
    widget.next_button.click()  # A
    assert widget.reject()
    expected = mask.copy()
    y0, x0, side = A
    expected[y0 : y0 + side, x0 : x0 + side] = 0
    np.testing.assert_array_equal(np.asarray(layer.data), expected)
    assert widget.progress.text() == "1 of 4 reviewed"
    _at(viewer, C)  # moved on
    layer.undo()
    np.testing.assert_array_equal(np.asarray(layer.data), mask)


def test_accepted_progress_is_kept_in_the_store_and_resumes_after_reopening(
    viewer, widget, qtbot, reopened
) -> None:
    truth = read_mask(SAMPLE_MASK)
    store = MaskStore.for_slide(SAMPLE, truth.shape, MPP)
    store.write(0, 0, truth)
    store.touch(edited=True)
    layers = viewer.open(SAMPLE, plugin=PLUGIN)
    mask_layer = layers[-1]
    widget.reset_choices()
    widget.layer.value = viewer.layers[mask_layer.name]
    _build(widget, qtbot)
    assert len(widget.queue) == 4
    widget.accept()
    widget.accept()
    assert widget.progress.text() == "2 of 4 reviewed"
    assert (store.path / REVIEW_FILE).is_file()
    first_two = [e.key for e in widget.queue[:2]]

    reopened(SAMPLE)
    again = napari.current_viewer()
    _dock, resumed = again.window.add_plugin_dock_widget(PLUGIN, "Review")
    resumed.reset_choices()
    with qtbot.waitSignal(resumed.finished, timeout=60_000):
        assert resumed.build() is not None
    assert resumed.progress.text() == "2 of 4 reviewed"
    assert resumed.position == 2  # resumes at the first object not reviewed
    assert [resumed.log.verdict(k) for k in first_two] == ["accepted", "accepted"]


def test_a_store_with_probabilities_puts_the_least_sure_first_and_says_how_sure(
    viewer, widget, qtbot
) -> None:
    from slide_unet.core.objects.review import PROBABILITY
    from slide_unet.napari.layer_data import mask_layer_kwargs
    from slide_unet.napari.mask_layer import attach_store

    mask = _mask(A, B, C, D)
    store = MaskStore.for_key("review-probability", mask.shape, MPP)
    store.write(0, 0, mask)
    quantised = np.zeros(mask.shape, np.uint8)
    for (y0, x0, side), value in zip((A, B, C, D), (250, 240, 200, 130), strict=True):
        quantised[y0 : y0 + side, x0 : x0 + side] = value
    store.write_probability(0, 0, quantised)
    data, kwargs = mask_layer_kwargs(store, "slide mask", scale=(MPP, MPP))
    layer = viewer.add_labels(data, **kwargs)
    attach_store(layer, store)
    widget.reset_choices()
    widget.layer.value = layer
    _build(widget, qtbot)
    # D (0.51), C (0.78), B (0.94, cut), A (0.98): lowest mean probability first.
    assert [int(widget.table["pixels"][e.row]) for e in widget.queue] == [1600, 100, 400, 25]
    assert [e.kind for e in widget.queue] == [PROBABILITY, PROBABILITY, CUT, PROBABILITY]
    _at(viewer, D)
    assert widget.current.text() == "1 of 4: object, 400.0 µm², mean probability 0.51"


def test_a_truth_file_puts_the_object_erased_from_the_mask_first_as_a_miss(
    viewer, widget, qtbot, tmp_path
) -> None:
    from slide_unet.core.masks.io import write_mask
    from slide_unet.napari.truth_choice import FILE

    truth_path = write_mask(_mask(A, B, C, D), tmp_path / "truth.ome.tif")
    _add(viewer, _mask(A, B, D), "prediction")  # C erased
    widget.reset_choices()
    widget.truth_source.value = FILE
    assert not widget.truth_file.native.isHidden()
    assert widget.truth_layer.native.isHidden()
    widget.truth_file.value = truth_path
    assert widget.truth_class.native.isHidden()  # not a GeoJSON
    _build(widget, qtbot)
    assert [e.kind for e in widget.queue] == [MISSED, CUT, OTHER, OTHER]
    assert int(widget.truth_table["pixels"][widget.queue[0].row]) == 100
    _at(viewer, C)  # shown where the truth has it, in the mask's place
    assert "in the truth" in widget.current.text()
    assert not widget.reject_button.isEnabled()


def test_a_geojson_truth_file_is_read_by_the_class_picked(viewer, widget, qtbot, tmp_path) -> None:
    import json

    from slide_unet.napari.truth_choice import ALL_CLASSES, FILE

    def feature(square, name):
        y0, x0, side = square
        ring = [[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side], [x0, y0]]
        return {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "annotation", "classification": {"name": name}},
        }

    E = (700, 900, 30)  # a Tumor, not a Glomerulus
    features = [feature(s, "Glomerulus") for s in (A, B, C, D)] + [feature(E, "Tumor")]
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    _add(viewer, _mask(A, B, D), "prediction")  # C erased
    widget.reset_choices()
    widget.truth_source.value = FILE
    widget.truth_file.value = path
    assert not widget.truth_class.native.isHidden()
    assert list(widget.truth_class.choices) == [ALL_CLASSES, "Glomerulus", "Tumor"]
    widget.truth_class.value = "Glomerulus"
    _build(widget, qtbot)
    assert [e.kind for e in widget.queue] == [MISSED, CUT, OTHER, OTHER]
    _at(viewer, C)
    widget.truth_class.value = ALL_CLASSES
    _build(widget, qtbot)
    assert [e.kind for e in widget.queue] == [MISSED, MISSED, CUT, OTHER, OTHER]
    _at(viewer, C)  # the smallest miss first, then the Tumor
    widget.next_button.click()
    _at(viewer, E)


def test_a_missing_truth_file_is_one_clear_error(viewer, widget, errors, tmp_path) -> None:
    from slide_unet.napari.truth_choice import FILE

    _add(viewer, _mask(A, B), "prediction")
    widget.reset_choices()
    widget.truth_source.value = FILE
    widget.truth_file.value = tmp_path / "nowhere.geojson"
    assert widget.build() is None
    assert len(errors) == 1
    assert "no such truth file" in errors[0]


def test_accept_reject_and_undo_have_keys_while_the_dock_is_open(viewer, widget, qtbot) -> None:
    from app_model.types import KeyBinding

    from slide_unet.napari.review_widget import ACCEPT_KEY, REJECT_KEY, UNDO_KEY

    mask = _mask(A, B, C, D)
    layer = _add(viewer, mask.copy(), "mask")
    widget.reset_choices()
    _build(widget, qtbot)
    first = widget.queue[0].key
    viewer.keymap[KeyBinding.from_str(ACCEPT_KEY)](viewer)  # B, accepted
    assert widget.log.verdict(first) == "accepted"
    _at(viewer, A)
    viewer.keymap[KeyBinding.from_str(REJECT_KEY)](viewer)  # A, erased
    y0, x0, side = A
    assert not np.asarray(layer.data)[y0 : y0 + side, x0 : x0 + side].any()
    assert widget.progress.text() == "2 of 4 reviewed"
    viewer.keymap[KeyBinding.from_str(UNDO_KEY)](viewer)
    np.testing.assert_array_equal(np.asarray(layer.data), mask)
    assert widget.progress.text() == "1 of 4 reviewed"
    _at(viewer, A)  # shown again, to be judged again
    assert not widget.undo_button.isEnabled()
    assert ACCEPT_KEY in widget.accept_button.text()


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mask of 1100² counts as one too large for an editable layer."""
    from slide_unet.napari import layer_data

    monkeypatch.setattr(layer_data, "EDITABLE_PIXELS", 512 * 512)


def _store_view(viewer, mask: np.ndarray, key: str) -> tuple[MaskStore, object]:
    from slide_unet.napari.layer_data import mask_layer_kwargs
    from slide_unet.napari.mask_layer import attach_store

    store = MaskStore.for_key(key, mask.shape, MPP)
    store.write(0, 0, mask)
    data, kwargs = mask_layer_kwargs(store, "slide mask", scale=(MPP, MPP))
    view = viewer.add_labels(data, **kwargs)
    attach_store(view, store)
    assert view.multiscale
    return store, view


def _erased(mask: np.ndarray, square: tuple[int, int, int]) -> np.ndarray:
    y0, x0, side = square
    out = mask.copy()
    out[y0 : y0 + side, x0 : x0 + side] = 0
    return out


def test_reject_on_a_slide_too_large_to_edit_erases_in_its_store_and_undo_puts_it_back(
    viewer, widget, qtbot, large, errors
) -> None:
    mask = _mask(A, B, C, D)
    store, view = _store_view(viewer, mask, "review-large")
    widget.reset_choices()
    widget.layer.value = view
    _build(widget, qtbot)
    widget.next_button.click()  # A
    assert widget.reject()
    assert errors == []
    on_disk = MaskStore(store.path)  # as a restart would find it
    np.testing.assert_array_equal(np.asarray(on_disk.level0[:]), _erased(mask, A))
    assert on_disk.edited  # a hand edit: Live will not segment over it
    y0, x0, side = A
    assert not np.asarray(view.data[0][y0 : y0 + side, x0 : x0 + side]).any()  # shown
    assert np.asarray(view.data[0][C[0] : C[0] + 1, C[1] : C[1] + 1]).all()
    assert widget.progress.text() == "1 of 4 reviewed"
    _at(viewer, C)

    assert widget.undo_reject()
    np.testing.assert_array_equal(np.asarray(MaskStore(store.path).level0[:]), mask)
    assert np.asarray(view.data[0][y0 : y0 + side, x0 : x0 + side]).all()
    assert widget.progress.text() == "0 of 4 reviewed"
    _at(viewer, A)
    assert not widget.undo_button.isEnabled()
    assert widget.undo_reject() is False  # nothing left to undo


def test_reject_where_an_edit_window_holds_the_object_goes_through_the_window(
    viewer, widget, dock, qtbot, large
) -> None:
    mask = _mask(A, B, C, D)
    store, view = _store_view(viewer, mask, "review-window")
    camera = camera_of(viewer)
    camera.center = (300 * MPP, 300 * MPP)
    camera.zoom = min(viewer.canvas.size) / (600 * MPP)
    correct = dock("Correct")
    correct.layer.value = view
    window = correct.edit_here()
    wy0, wy1, wx0, wx1 = window.region
    assert wy0 <= A[0] < A[0] + A[2] <= wy1
    assert wx0 <= A[1] < A[1] + A[2] <= wx1
    widget.reset_choices()
    widget.layer.value = view
    _build(widget, qtbot)
    widget.next_button.click()  # A
    assert widget.reject()
    y0, x0, side = A
    square = (slice(y0 - wy0, y0 - wy0 + side), slice(x0 - wx0, x0 - wx0 + side))
    assert not np.asarray(window.layer.data)[square].any()
    window.layer.undo()  # one napari undo step in the window
    assert np.asarray(window.layer.data)[square].all()
    window.layer.redo()
    assert not np.asarray(window.layer.data)[square].any()
    correct.done()  # saves the window to the store and closes it
    np.testing.assert_array_equal(np.asarray(MaskStore(store.path).level0[:]), _erased(mask, A))

    assert widget.undo_reject()  # the window is gone: put back in the store
    np.testing.assert_array_equal(np.asarray(MaskStore(store.path).level0[:]), mask)


def test_a_speck_is_shown_with_what_is_around_it(viewer, widget, qtbot) -> None:
    from slide_unet.napari.focus import FILL, MIN_VIEW_PIXELS

    _add(viewer, _mask((300, 300, 1), C), "mask")  # a one-pixel object, then C
    widget.reset_choices()
    _build(widget, qtbot)
    assert int(widget.table["pixels"][widget.queue[0].row]) == 1
    _at(viewer, (300, 300, 1))
    shown = min(viewer.canvas.size) / camera_of(viewer).zoom / MPP  # pixels across
    assert shown == pytest.approx(MIN_VIEW_PIXELS / FILL, rel=0.01)  # not a pixel filling half
    widget.next_button.click()  # C, 10 px: also shown as that smallest box
    shown = min(viewer.canvas.size) / camera_of(viewer).zoom / MPP
    assert shown == pytest.approx(MIN_VIEW_PIXELS / FILL, rel=0.01)

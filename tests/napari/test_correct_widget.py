"""The Correct widget and its Edit here window, in a real napari viewer, on the
sample's expert glomerulus mask (2048 x 2048 px at 0.5 µm/px, four glomeruli)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from scipy import ndimage

from slide_unet.core.masks.io import read_mask
from slide_unet.core.masks.pyramids import halve_max
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import AUTOSAVE_SECONDS
from slide_unet.core.objects import edit
from slide_unet.core.paths import MASKS_DIR_ENV
from slide_unet.napari import layer_data
from slide_unet.napari.correct_widget import CorrectWidget
from slide_unet.napari.edit_window import window_region
from slide_unet.napari.layer_data import mask_layer_kwargs
from slide_unet.napari.layers import camera_of, visible_region
from slide_unet.napari.mask_layer import attach_store

pytestmark = pytest.mark.gui

TRUTH = Path(__file__).resolve().parents[2] / "sample_data" / "kidney_pas_mask.ome.tif"
MPP = 0.5
EIGHT = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    mask = read_mask(TRUTH)
    assert mask.shape == (2048, 2048)
    assert ndimage.label(mask, EIGHT)[1] == 4
    return mask


@pytest.fixture(autouse=True)
def _private_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))


@pytest.fixture
def widget(dock) -> CorrectWidget:
    """The widget as napari adds it: through the manifest (Layers > Annotate > Correct)."""
    widget = dock("Correct")
    assert isinstance(widget, CorrectWidget)
    return widget


def _add(viewer, mask: np.ndarray, name: str = "truth"):
    return viewer.add_labels(mask, name=name, scale=(MPP, MPP), metadata={"mpp": MPP})


def _objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(np.asarray(mask) != 0, EIGHT)


def _inside(mask: np.ndarray, index: int) -> tuple[int, int]:
    """A pixel deep inside object ``index`` (its distance-transform maximum)."""
    labels, _ = _objects(mask)
    # Padded: past the image's edge is not inside the object.
    distance = ndimage.distance_transform_edt(np.pad(labels == index, 1))[1:-1, 1:-1]
    return tuple(int(v) for v in np.unravel_index(np.argmax(distance), mask.shape))


def _click(viewer, layer, pixel: tuple[float, float]) -> None:
    """A real left click on the canvas, on the centre of a pixel of ``layer``."""
    canvas = viewer.window._qt_viewer.canvas
    world = layer.data_to_world(pixel)
    x, y = canvas.view.scene.transform.map([world[-1], world[-2], 0, 1])[:2]
    QTest.mouseClick(canvas.native, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))


def _arm(widget: CorrectWidget, tool: str) -> None:
    widget.tool_buttons[tool].click()
    assert widget.armed == tool


def _undoes_in_one_step(layer, before: np.ndarray) -> None:
    layer.undo()
    np.testing.assert_array_equal(np.asarray(layer.data), before)
    assert not layer._undo_history  # one tool use was one undo step


# -- the tools on an ordinary Labels layer -------------------------------------------


def test_delete_one_object_by_a_click_and_undo_restores_it_exactly(
    viewer, widget, truth, errors
) -> None:
    layer = _add(viewer, truth.copy())
    labels, _ = _objects(truth)
    at = _inside(truth, 2)
    _arm(widget, "delete")
    _click(viewer, layer, at)
    expected = truth.copy()
    expected[labels == 2] = 0
    np.testing.assert_array_equal(layer.data, expected)
    assert widget.armed is None  # one click, one deletion
    assert widget.status.text() == f"deleted 1 object ({int((labels == 2).sum()):,} px)"
    _undoes_in_one_step(layer, truth)
    assert errors == []


def test_shift_d_arms_delete_and_the_undo_button_undoes(viewer, widget, truth) -> None:
    layer = _add(viewer, truth.copy())
    layer.mode = "paint"
    canvas = viewer.window._qt_viewer.canvas.native
    QTest.keyClick(canvas, Qt.Key.Key_D, Qt.KeyboardModifier.ShiftModifier)
    assert widget.armed == "delete"
    assert layer.mode == "pan_zoom"
    _click(viewer, layer, _inside(truth, 1))
    assert layer.mode == "paint"  # back to what the user had
    assert _objects(layer.data)[1] == 3
    widget.undo_button.click()
    np.testing.assert_array_equal(layer.data, truth)


def test_a_drag_pans_and_deletes_nothing(viewer, widget, truth) -> None:
    layer = _add(viewer, truth.copy())
    _arm(widget, "delete")
    canvas = viewer.window._qt_viewer.canvas.native
    start = QPoint(canvas.width() // 2, canvas.height() // 2)
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
    QTest.mouseMove(canvas, start + QPoint(40, 30))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=start + QPoint(40, 30))
    np.testing.assert_array_equal(layer.data, truth)
    assert widget.armed == "delete"  # still waiting for a click


def test_remove_small_objects_removes_exactly_those_below_the_area_in_square_microns(
    viewer, widget, truth
) -> None:
    mask = truth.copy()
    # Specks of 1, 64, 400 and 2,500 px (0.25, 16, 100, 625 µm²) on the background.
    for side, (y, x) in zip(
        (1, 8, 20, 50), ((20, 20), (20, 60), (20, 120), (20, 200)), strict=True
    ):
        mask[y : y + side, x : x + side] = 1
    layer = _add(viewer, mask.copy())
    widget.settings.min_area.value = 26_400.0  # between the glomeruli's areas
    assert widget.settings.min_area.label == "Min. area (µm²)"
    assert widget.remove_small_objects()
    labels, count = _objects(mask)
    areas = np.bincount(labels.ravel())[1:] * MPP**2
    small = np.flatnonzero(areas < 26_400.0) + 1
    assert 0 < len(small) < count
    assert len(small) == 6
    expected = mask.copy()
    expected[np.isin(labels, small)] = 0
    np.testing.assert_array_equal(layer.data, expected)
    assert widget.status.text().startswith("removed 6 objects smaller than 26400 µm²")
    _undoes_in_one_step(layer, mask)


def test_without_a_pixel_size_areas_are_pixels_and_the_form_says_so(viewer, widget) -> None:
    mask = np.zeros((200, 200), np.uint8)
    mask[10:15, 10:15] = 1  # 25 px
    mask[50:60, 50:60] = 1  # 100 px
    layer = viewer.add_labels(mask.copy(), name="plain")
    assert widget.settings.min_area.label == "Min. area (px)"
    assert "in pixels" in widget.pixel_info.text()
    widget.settings.min_area.value = 50.0
    widget.remove_small_objects()
    assert layer.data[10:15, 10:15].sum() == 0
    assert layer.data[50:60, 50:60].all()


def test_fill_holes_fills_holes_up_to_the_area_and_undoes_in_one_step(
    viewer, widget, truth
) -> None:
    mask = truth.copy()
    big = _inside(truth, 1)
    small = _inside(truth, 2)
    mask[big[0] - 10 : big[0] + 10, big[1] - 10 : big[1] + 10] = 0  # 400 px = 100 µm²
    mask[small[0] - 3 : small[0] + 3, small[1] - 3 : small[1] + 3] = 0  # 36 px = 9 µm²
    layer = _add(viewer, mask.copy())
    widget.settings.max_hole.value = 50.0
    assert widget.fill_holes()
    expected = mask.copy()
    expected[small[0] - 3 : small[0] + 3, small[1] - 3 : small[1] + 3] = 1
    np.testing.assert_array_equal(layer.data, expected)
    assert widget.status.text() == "filled 1 hole (36 px)"
    widget.settings.max_hole.value = 0.0  # every hole
    assert widget.fill_holes()
    np.testing.assert_array_equal(layer.data, truth)
    layer.undo()
    np.testing.assert_array_equal(layer.data, expected)


def test_smooth_cuts_a_spur_fills_a_notch_and_undoes_in_one_step(viewer, widget, truth) -> None:
    mask = truth.copy()
    labels, _ = _objects(truth)
    rows, cols = np.nonzero(labels == 1)
    top = int(rows.min())
    left = int(cols[rows == top].min())
    mask[top - 30 : top, left : left + 2] = 1  # a 2 px wide spur sticking out
    y, x = _inside(truth, 3)
    mask[y - 1 : y + 1, x - 40 : x + 40] = 0  # a 2 px crack through the object
    layer = _add(viewer, mask.copy())
    widget.settings.radius.value = 2.0  # µm: 4 px
    widget.settings.operation.value = "open-close"
    assert widget.smooth()
    result = np.asarray(layer.data)
    assert not result[top - 30 : top - 5, left : left + 2].any()  # spur gone
    assert result[y - 1 : y + 1, x - 30 : x + 30].all()  # crack closed
    expected = mask.copy()
    edit.smooth(mask, 2.0, MPP, "open-close").apply(expected)
    np.testing.assert_array_equal(result, expected)
    _undoes_in_one_step(layer, mask)


def test_merge_two_objects_by_two_clicks_and_undo(viewer, widget, truth) -> None:
    layer = _add(viewer, truth.copy())
    first, second = _inside(truth, 1), _inside(truth, 2)
    _arm(widget, "merge")
    _click(viewer, layer, first)
    assert widget.armed == "merge"
    assert "second" in widget.status.text()
    np.testing.assert_array_equal(layer.data, truth)  # nothing yet
    _click(viewer, layer, second)
    labels, count = _objects(layer.data)
    assert labels[first] == labels[second]
    assert count <= 3
    assert widget.status.text().startswith("merged 2 objects")
    assert widget.armed is None
    _undoes_in_one_step(layer, truth)


def test_split_cuts_a_dumbbell_in_two_and_undo(viewer, widget, truth) -> None:
    mask = truth.copy()
    yy, xx = np.mgrid[:2048, :2048]
    # Two discs joined by a narrow bar, on empty background at the bottom left.
    mask[(yy - 1900) ** 2 + (xx - 100) ** 2 <= 40**2] = 1
    mask[(yy - 1900) ** 2 + (xx - 260) ** 2 <= 40**2] = 1
    mask[1896:1904, 100:260] = 1
    assert _objects(mask)[1] == 5
    layer = _add(viewer, mask.copy())
    _arm(widget, "split")
    _click(viewer, layer, (1900, 100))
    labels, count = _objects(layer.data)
    assert count == 6
    assert labels[1900, 100] != labels[1900, 260]
    np.testing.assert_array_equal(np.asarray(layer.data)[:1700], mask[:1700])  # others kept
    assert widget.status.text().startswith("split 1 object into 2 parts")
    _undoes_in_one_step(layer, mask)


# -- bad input ------------------------------------------------------------------------


def test_no_labels_layer_is_one_notification_per_action_and_changes_nothing(
    viewer, widget, errors
) -> None:
    viewer.add_image(np.zeros((64, 64)), name="image")
    for action in (widget.remove_small_objects, widget.fill_holes, widget.smooth):
        assert action() is False
    widget.tool_buttons["delete"].click()
    assert widget.edit_here() is None
    assert len(errors) == 5
    assert all("no Labels layer" in message for message in errors)
    assert widget.armed is None
    assert not widget.tool_buttons["delete"].isChecked()
    assert [layer.name for layer in viewer.layers] == ["image"]


def test_clicking_background_or_splitting_a_round_object_notifies_once_and_changes_nothing(
    viewer, widget, truth, errors
) -> None:
    layer = _add(viewer, truth.copy())
    _arm(widget, "delete")
    _click(viewer, layer, (5, 5))  # background
    assert len(errors) == 1
    assert "no object under the click" in errors[0]
    _arm(widget, "split")
    _click(viewer, layer, _inside(truth, 2))  # a round glomerulus: no neck
    assert len(errors) == 2
    assert "cannot split" in errors[1]
    _arm(widget, "merge")
    _click(viewer, layer, _inside(truth, 1))
    _click(viewer, layer, _inside(truth, 1))  # the same object twice
    assert len(errors) == 3
    assert "two different objects" in errors[2]
    np.testing.assert_array_equal(layer.data, truth)
    assert not layer._undo_history
    assert widget.armed is None


def test_edit_here_on_a_small_layer_says_it_is_editable_as_it_is(
    viewer, widget, truth, errors
) -> None:
    _add(viewer, truth.copy())
    assert widget.edit_here() is None
    assert len(errors) == 1
    assert "editable as it is" in errors[0]
    assert len(viewer.layers) == 1


# -- store-backed masks: autosave, and Edit here ---------------------------------------


def _store(truth: np.ndarray) -> MaskStore:
    store = MaskStore.for_key("correct-test", truth.shape, MPP)
    store.write(0, 0, truth)
    return store


def _store_layer(viewer, store: MaskStore):
    data, kwargs = mask_layer_kwargs(store, "slide mask", scale=(MPP, MPP))
    layer = viewer.add_labels(data, **kwargs)
    attach_store(layer, store)
    return layer


def _assert_store_holds(path: Path, expected: np.ndarray, *, edited: bool = True) -> None:
    """A fresh store from disk has ``expected`` and overviews that match it, at the
    latest a little after the autosave delay (edits reach the disk in the background)."""
    store = MaskStore(path)
    wanted = [expected]
    for _ in range(1, len(store.levels)):
        wanted.append(halve_max(wanted[-1]))

    def on_disk() -> list[np.ndarray]:
        return [np.asarray(level[:]) for level in store.levels]

    def landed() -> bool:
        return store.edited == edited and all(
            np.array_equal(got, want) for got, want in zip(on_disk(), wanted, strict=True)
        )

    # The writer lands level 0, then the overviews, then the store's record (the
    # edited mark): wait for all of them (waiting on level 0 alone, then on the
    # levels alone, each failed once in a fresh-clone CI run).
    deadline = time.monotonic() + AUTOSAVE_SECONDS + 2.0
    while time.monotonic() < deadline and not landed():
        time.sleep(0.05)
    for got, want in zip(on_disk(), wanted, strict=True):
        np.testing.assert_array_equal(got, want)
    assert store.edited == edited


def test_a_tool_on_a_store_backed_layer_is_on_disk_and_so_is_its_undo(
    viewer, widget, truth
) -> None:
    store = _store(truth)
    layer = _store_layer(viewer, store)
    assert not layer.multiscale
    labels, _ = _objects(truth)
    _arm(widget, "delete")
    _click(viewer, layer, _inside(truth, 3))
    expected = truth.copy()
    expected[labels == 3] = 0
    _assert_store_holds(store.path, expected)
    widget.undo_button.click()
    _assert_store_holds(store.path, truth)


def test_a_reopened_autosave_layer_is_watched_by_the_tools(viewer, widget, truth) -> None:
    store = _store(truth)
    data, kwargs = mask_layer_kwargs(store, "slide mask (autosaved)", scale=(MPP, MPP))
    layer = viewer.add_labels(data, **kwargs)  # as the reader restores it: not watched
    widget.settings.min_area.value = 26_400.0
    assert widget.remove_small_objects()
    _assert_store_holds(store.path, np.asarray(layer.data[:]))
    assert _objects(np.asarray(store.level0[:]))[1] == 2


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample counts as a slide too large for one editable layer."""
    monkeypatch.setattr(layer_data, "EDITABLE_PIXELS", 1024 * 1024)


def _look_at(viewer, centre_px: tuple[float, float], side_px: float) -> None:
    camera = camera_of(viewer)
    camera.center = (centre_px[0] * MPP, centre_px[1] * MPP)
    camera.zoom = min(viewer.canvas.size) / (side_px * MPP)


def test_a_multiscale_mask_needs_edit_here_first(viewer, widget, truth, large, errors) -> None:
    store = _store(truth)
    view = _store_layer(viewer, store)
    assert view.multiscale
    assert "press Edit here" in widget.pixel_info.text()
    assert widget.remove_small_objects() is False
    widget.tool_buttons["delete"].click()
    assert len(errors) == 2
    assert all("press Edit here" in message for message in errors)
    assert widget.armed is None
    _assert_store_holds(store.path, truth, edited=False)


def test_edit_here_writes_through_to_the_store_and_its_overviews(
    viewer, widget, truth, large, errors, qtbot
) -> None:
    store = _store(truth)
    view = _store_layer(viewer, store)
    _look_at(viewer, _inside(truth, 1), 600)
    expected_region = window_region(visible_region(viewer, view), truth.shape)
    window = widget.edit_here()
    assert window is not None
    assert errors == []
    y0, y1, x0, x1 = window.region
    assert window.region == expected_region
    assert (y1 - y0, x1 - x0) == (1024, 1024)  # the view, grown to the smallest window
    layer = window.layer
    assert not layer.multiscale
    assert layer.editable
    assert layer.mode == "paint"
    np.testing.assert_allclose(layer.translate, (y0 * MPP, x0 * MPP))
    np.testing.assert_allclose(layer.scale, view.scale)
    np.testing.assert_array_equal(np.asarray(layer.data), truth[y0:y1, x0:x1])
    assert widget.layer.value is layer

    # Paint in the window (napari's own history path, as the brush): on disk within a second.
    rows, cols = np.mgrid[10:50, 10:50]
    layer.data_setitem((rows.ravel(), cols.ravel()), 1)
    expected = truth.copy()
    expected[y0 + 10 : y0 + 50, x0 + 10 : x0 + 50] = 1
    _assert_store_holds(store.path, expected)
    # napari's brush and fill too.
    layer.paint((100, 900), 1)
    layer.undo()
    _assert_store_holds(store.path, expected)
    # Undo in the window is in the store too.
    layer.undo()
    _assert_store_holds(store.path, truth)

    # The object tools act on the window when the view (or the window) is picked.
    widget.layer.value = view
    at = _inside(truth, 1)
    _arm(widget, "delete")
    _click(viewer, layer, (at[0] - y0, at[1] - x0))
    labels, _ = _objects(truth)
    deleted = truth.copy()
    deleted[(labels == 1)] = 0
    whole = ((labels == 1)[y0:y1, x0:x1]).sum() == (labels == 1).sum()
    assert whole  # the glomerulus lies inside the window
    # The view is refreshed once the burst of writes is saved.
    with qtbot.waitSignal(window._timer.timeout, timeout=5000):
        pass
    _assert_store_holds(store.path, deleted)

    widget.done_button.click()
    assert layer not in viewer.layers
    assert view in viewer.layers
    assert widget.window is None
    assert widget.layer.value is view
    _assert_store_holds(store.path, deleted)
    assert errors == []


def test_a_brush_dab_lands_in_memory_and_reaches_the_store_within_a_second(
    viewer, widget, truth, large, recwarn
) -> None:
    store = _store(truth)
    view = _store_layer(viewer, store)
    view.units = ("µm", "µm")
    _look_at(viewer, (1024, 1024), 2000)
    window = widget.edit_here()
    layer = window.layer
    assert tuple(layer.units) == tuple(view.units)  # no "Inconsistent units" warning
    assert not [w for w in recwarn if "units" in str(w.message).lower()]
    y0, _, x0, _ = window.region
    layer.brush_size = 20
    layer.selected_label = 1
    written_before = store.modified
    layer.paint((300, 300), 1)  # one dab of napari's brush
    assert layer.data[300, 300] == 1  # in the layer at once
    assert store.level0[y0 + 300, x0 + 300] == 0  # the dab itself wrote nothing to disk
    assert store.modified == written_before
    deadline = time.monotonic() + AUTOSAVE_SECONDS + 1.0
    while store.level0[y0 + 300, x0 + 300] == 0 or not store.edited:
        assert time.monotonic() < deadline, "not saved within a second"
        time.sleep(0.02)


def test_export_and_score_of_the_view_include_a_stroke_not_yet_autosaved(
    viewer, dock, widget, truth, large, qtbot, tmp_path
) -> None:
    store = _store(truth)
    view = _store_layer(viewer, store)
    _look_at(viewer, (1024, 1024), 2000)
    window = widget.edit_here()
    window.array.delay = 3600.0  # the autosave would come far too late
    y0, _, x0, _ = window.region
    window.layer.data_setitem((np.array([5]), np.array([5])), 1)
    assert store.level0[y0 + 5, x0 + 5] == 0  # only in the window so far

    export = dock("Export")
    export.layer.value = view
    export.options["format"].value = "pyramidal OME-TIFF"
    export.options["path"].value = tmp_path / "view.ome.tif"
    with qtbot.waitSignal(export.finished, timeout=60_000):
        export.export_button.native.click()
    assert read_mask(tmp_path / "view.ome.tif")[y0 + 5, x0 + 5] == 1  # saved first


def test_removing_the_window_layer_by_hand_loses_nothing(viewer, widget, truth, large) -> None:
    store = _store(truth)
    view = _store_layer(viewer, store)
    _look_at(viewer, (1024, 1024), 4000)  # zoomed out: the window is bounded
    window = widget.edit_here()
    y0, y1, x0, x1 = window.region
    assert (y1 - y0, x1 - x0) == (2048, 2048)  # all of the small sample
    window.layer.data_setitem((np.array([0]), np.array([0])), 1)
    viewer.layers.remove(window.layer)
    assert widget.window is None
    expected = truth.copy()
    expected[0, 0] = 1
    _assert_store_holds(store.path, expected)
    assert view in viewer.layers


# -- the edit window's pieces -----------------------------------------------------------


def test_window_region_is_the_view_bounded_and_centred() -> None:
    shape = (20_000, 30_000)
    assert window_region((0, 10_000, 0, 10_000), shape) == (2952, 7048, 2952, 7048)
    assert window_region((100, 300, 29_900, 30_000), shape) == (0, 1024, 28_976, 30_000)
    assert window_region((0, 500, 0, 700), (600, 800)) == (0, 600, 0, 800)


def test_a_dask_view_is_given_fresh_arrays_so_napari_shows_the_edit(
    viewer, widget, truth, qtbot
) -> None:
    store = _store(truth)
    _, kwargs = mask_layer_kwargs(store, "slide mask", scale=(MPP, MPP))
    kwargs["multiscale"] = True
    view = viewer.add_labels(store.dask_levels(), **kwargs)
    attach_store(view, store)
    before = view.data[0].name
    window = widget.edit_here()
    window.layer.data_setitem((np.array([0]), np.array([0])), 1)
    with qtbot.waitSignal(window._timer.timeout, timeout=5000):
        pass
    # napari caches dask chunks by task name: new names, so nothing stale is shown.
    assert view.data[0].name != before
    assert view.data[0][0, 0].compute() == 1
    assert view.multiscale


def test_on_a_large_layer_the_tools_work_on_the_visible_region_only(viewer, widget) -> None:
    mask = np.zeros((6000, 6000), np.uint8)
    mask[100:104, 100:104] = 1  # on screen
    mask[5000:5004, 5000:5004] = 1  # off screen
    layer = _add(viewer, mask.copy(), name="large")
    _look_at(viewer, (300, 300), 800)
    widget.settings.min_area.value = 100.0
    assert widget.remove_small_objects()
    assert not layer.data[100:104, 100:104].any()
    assert layer.data[5000:5004, 5000:5004].all()
    assert "visible region" in widget.status.text()

"""The Objects widget in a real napari viewer: measure a mask, its table, histogram,
scope, clicks that move the view, saving, and re-measuring after an edit."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from slide_unet.core.masks.store import MaskStore
from slide_unet.core.objects.measure import measure
from slide_unet.core.paths import MASKS_DIR_ENV
from slide_unet.napari import layer_data
from slide_unet.napari.layer_data import mask_layer_kwargs
from slide_unet.napari.layers import camera_of
from slide_unet.napari.mask_layer import attach_store
from slide_unet.napari.objects_widget import VISIBLE, ObjectsWidget

pytestmark = pytest.mark.gui

MPP = 0.5
#: Squares of known size: (y0, x0, side) in pixels, far apart.
SQUARES = [(20, 20, 10), (100, 300, 30), (400, 60, 50), (300, 420, 20), (460, 460, 40)]


@pytest.fixture(autouse=True)
def _private_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))


@pytest.fixture
def mask() -> np.ndarray:
    mask = np.zeros((512, 512), dtype=np.uint8)
    for y0, x0, side in SQUARES:
        mask[y0 : y0 + side, x0 : x0 + side] = 1
    # An L-shaped object whose centroid is off the object (its label is still found).
    mask[200:260, 200:210] = 1
    mask[250:260, 200:260] = 1
    return mask


@pytest.fixture
def widget(dock) -> ObjectsWidget:
    """The widget as napari adds it: through the manifest (Layers > Measure > Objects)."""
    widget = dock("Objects")
    assert isinstance(widget, ObjectsWidget)
    return widget


def _add(viewer, mask: np.ndarray, name: str = "mask"):
    return viewer.add_labels(mask, name=name, scale=(MPP, MPP), metadata={"mpp": MPP})


def _measure(widget: ObjectsWidget, qtbot) -> None:
    with qtbot.waitSignal(widget.finished, timeout=30_000):
        assert widget.measure() is not None
    assert widget.table is not None


def _areas_shown(widget: ObjectsWidget) -> list[float]:
    model = widget.model
    role = Qt.ItemDataRole.UserRole
    return [model.data(model.index(r, 1), role) for r in range(model.rowCount())]


def test_measure_shows_the_cores_objects_count_and_areas(viewer, widget, mask, qtbot) -> None:
    _add(viewer, mask)
    widget.reset_choices()
    _measure(widget, qtbot)
    expected = measure(mask, mpp=MPP)
    assert widget.model.rowCount() == len(expected) == len(SQUARES) + 1
    assert sorted(_areas_shown(widget)) == sorted(expected["area_um2"].tolist())
    assert widget.summary.text().startswith(f"{len(expected)} objects in the whole mask")
    assert f"{expected.total_area:,.0f} µm²" in widget.summary.text()
    assert widget.histogram.counts.sum() == len(expected)


def test_sorting_by_area_is_numeric_both_ways(viewer, widget, mask, qtbot) -> None:
    _add(viewer, mask)
    widget.reset_choices()
    _measure(widget, qtbot)
    widget.view.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    ascending = _areas_shown(widget)
    assert ascending == sorted(ascending)
    assert ascending[0] == 10 * 10 * MPP * MPP  # 25 µm² sorts before 100 and 1,000 µm²
    widget.view.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    assert _areas_shown(widget) == sorted(ascending, reverse=True)


@pytest.mark.viewer(show=True, size=(1400, 900))
def test_clicking_a_row_centres_the_view_on_the_object_and_selects_its_label(
    viewer, widget, mask, qtbot
) -> None:
    layer = _add(viewer, mask * 3)  # label value 3: the selected label must be 3
    widget.reset_choices()
    _measure(widget, qtbot)
    widget.view.sortByColumn(1, Qt.SortOrder.DescendingOrder)  # largest first: 50 x 50 px
    rect = widget.view.visualRect(widget.model.index(0, 0))
    QTest.mouseClick(widget.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    camera = camera_of(viewer)
    y0, x0, side = 400, 60, 50
    centre = ((y0 + (side - 1) / 2) * MPP, (x0 + (side - 1) / 2) * MPP)
    np.testing.assert_allclose(camera.center[-2:], centre, atol=1.0)
    # The box fills about half the canvas.
    shown = side * MPP * camera.zoom
    assert 0.4 < shown / min(viewer.canvas.size) < 0.6
    assert layer.selected_label == 3


def test_the_label_of_an_object_whose_centroid_is_outside_it_is_found(
    viewer, widget, mask, qtbot
) -> None:
    layer = _add(viewer, mask * 2)
    widget.reset_choices()
    _measure(widget, qtbot)
    layer.selected_label = 1
    table = widget.table
    row = int(np.flatnonzero(table["pixels"] == 60 * 10 + 10 * 50)[0])  # the L
    widget.go_to(row)
    assert layer.selected_label == 2


def test_visible_region_counts_follow_the_camera(viewer, widget, mask, qtbot) -> None:
    _add(viewer, mask)
    widget.reset_choices()
    _measure(widget, qtbot)
    widget.scope.setCurrentText(VISIBLE)
    camera = camera_of(viewer)
    camera.center = (25 * MPP, 25 * MPP)  # on the smallest square
    camera.zoom = min(viewer.canvas.size) / (30 * MPP)  # 30 px across
    qtbot.waitUntil(lambda: widget.model.rowCount() == 1, timeout=5_000)
    assert widget.summary.text().startswith("1 object on screen")
    assert widget.histogram.counts.sum() == 1
    camera.center = (256 * MPP, 256 * MPP)
    camera.zoom = min(viewer.canvas.size) / (600 * MPP)  # all of it
    qtbot.waitUntil(lambda: widget.model.rowCount() == len(SQUARES) + 1, timeout=5_000)


def test_painting_an_object_measures_again_by_itself(viewer, widget, mask, qtbot) -> None:
    layer = _add(viewer, mask)
    widget.reset_choices()
    _measure(widget, qtbot)
    before = widget.model.rowCount()
    rows, cols = np.mgrid[150:170, 40:60]
    with layer.block_history():
        layer.data_setitem((rows.ravel(), cols.ravel()), 1)
    with qtbot.waitSignal(widget.finished, timeout=30_000):
        pass  # the debounced re-measure (no button pressed)
    assert widget.model.rowCount() == before + 1
    assert 20 * 20 * MPP * MPP in _areas_shown(widget)


def test_a_large_mask_is_marked_stale_after_an_edit(
    viewer, widget, mask, qtbot, monkeypatch
) -> None:
    from slide_unet.napari import objects_widget

    monkeypatch.setattr(objects_widget, "AUTO_PIXELS", 100)
    layer = _add(viewer, mask)
    widget.reset_choices()
    _measure(widget, qtbot)
    layer.data_setitem((np.array([5]), np.array([5])), 1)
    assert widget.stale
    assert "Stale" in widget.summary.text()
    _measure(widget, qtbot)
    assert not widget.stale


def test_save_table_writes_csv(viewer, widget, mask, qtbot, tmp_path) -> None:
    _add(viewer, mask)
    widget.reset_choices()
    _measure(widget, qtbot)
    assert widget.save(str(tmp_path / "objects.csv"))
    with open(tmp_path / "objects.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(SQUARES) + 1
    assert sorted(float(r["area_um2"]) for r in rows) == sorted(_areas_shown(widget))


def test_a_multiscale_store_mask_is_measured_at_full_resolution(
    viewer, widget, mask, qtbot, monkeypatch
) -> None:
    monkeypatch.setattr(layer_data, "EDITABLE_PIXELS", 512 * 512)
    mask = np.pad(mask, ((0, 512), (0, 512)))  # two levels (a store's smallest is 512 px)
    store = MaskStore.for_key("objects-test", mask.shape, MPP)
    store.write(0, 0, mask)
    data, kwargs = mask_layer_kwargs(store, "slide mask", scale=(MPP, MPP))
    layer = viewer.add_labels(data, **kwargs)
    attach_store(layer, store)
    assert layer.multiscale
    widget.reset_choices()
    widget.layer.value = layer
    _measure(widget, qtbot)
    assert widget.model.rowCount() == len(SQUARES) + 1
    assert sorted(_areas_shown(widget)) == sorted(measure(mask, mpp=MPP)["area_um2"].tolist())


def test_no_layer_is_one_notification(widget, errors) -> None:
    assert widget.measure() is None
    assert len(errors) == 1
    assert "no Labels layer" in errors[0]


def test_a_store_backed_layer_shows_the_mean_probability_kept_in_its_store(
    viewer, widget, mask, qtbot
) -> None:
    store = MaskStore.for_key("objects-probability", mask.shape, MPP)
    store.write(0, 0, mask)
    quantised = np.where(mask > 0, 230, 0).astype(np.uint8)  # 230 / 255 = 0.902
    y0, x0, side = SQUARES[0]
    quantised[y0 : y0 + side, x0 : x0 + side] = 140  # the least sure object: 0.549
    store.write_probability(0, 0, quantised)
    data, kwargs = mask_layer_kwargs(store, "slide mask", scale=(MPP, MPP))
    layer = viewer.add_labels(data, **kwargs)
    attach_store(layer, store)
    widget.reset_choices()
    widget.layer.value = layer
    _measure(widget, qtbot)
    model = widget.model
    headings = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert "mean prob." in headings
    column = headings.index("mean prob.")
    shown = sorted(model.data(model.index(r, column)) for r in range(model.rowCount()))
    assert shown == ["0.549"] + ["0.902"] * len(SQUARES)
    # A plain layer (no store) has no such column.
    _add(viewer, mask, name="plain")
    widget.reset_choices()
    widget.layer.value = viewer.layers["plain"]
    _measure(widget, qtbot)
    headings = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert "mean prob." not in headings

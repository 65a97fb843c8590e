"""Docked widgets fit a short screen: they scroll, and nothing in them is clipped."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLabel,
    QLineEdit,
    QScrollArea,
    QWidget,
)
from superqt import QCollapsible

pytestmark = pytest.mark.gui

WIDGETS = ["Segment", "Correct", "Score", "Export", "Fine-tune", "Objects", "Review"]
SCREEN_HEIGHT = 1000  # px, as a laptop's, less the title bar


def _scroll_area(widget: QWidget) -> QScrollArea:
    (area,) = [child for child in widget.children() if isinstance(child, QScrollArea)]
    return area


@pytest.mark.viewer(show=True)
def test_segment_and_finetune_docked_together_fit_a_1000_px_screen(viewer, dock) -> None:
    window = viewer.window._qt_window
    docked = [dock(name) for name in WIDGETS[::4]]
    QApplication.processEvents()
    assert window.minimumSizeHint().height() <= SCREEN_HEIGHT
    window.resize(1400, SCREEN_HEIGHT)
    QApplication.processEvents()
    assert window.height() <= SCREEN_HEIGHT
    finetune = docked[1]
    area = _scroll_area(finetune)
    # The last row (below the curve) can be scrolled to and is then in view.
    target = finetune.segment_button.native
    area.ensureWidgetVisible(target)
    QApplication.processEvents()
    top_left = target.mapTo(area.viewport(), target.rect().topLeft())
    assert 0 <= top_left.y() <= area.viewport().height() - target.height()


@pytest.mark.viewer(show=True, size=(1400, 700))  # a short screen
@pytest.mark.parametrize("name", WIDGETS)
def test_no_row_of_a_docked_widget_is_squeezed_below_its_own_height(dock, name: str) -> None:
    widget = dock(name)
    QApplication.processEvents()
    area = widget.findChild(QScrollArea)
    body = area.widget() if area is not None else widget
    assert widget.minimumSizeHint().height() <= 200  # the dock asks for little height
    # The body is laid out at its full height (the scroll area shows part of it), so
    # every row gets at least the height it needs: none is clipped (Score's Tile size
    # and Object IoU rows were, when the dock was squeezed).
    assert body.height() >= body.minimumSizeHint().height()
    fields = (QAbstractSpinBox, QComboBox, QLineEdit, QAbstractButton, QLabel)
    for child in body.findChildren(QWidget):
        folded = _inside(child, QCollapsible, body)  # rows of a folded section are hidden
        if isinstance(child, fields) and child.isVisibleTo(body) and not folded:
            assert child.height() >= child.minimumSizeHint().height(), child


def _inside(child: QWidget, kind: type, top: QWidget) -> bool:
    parent = child.parentWidget()
    while parent is not None and parent is not top:
        if isinstance(parent, kind):
            return True
        parent = parent.parentWidget()
    return False

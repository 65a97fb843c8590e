"""Docked widgets that scroll instead of growing the window past the screen.

napari docks a plugin widget as it is: a widget taller than the screen makes
the main window taller than the screen, and whatever lies below its bottom
edge (results, buttons) cannot be reached. Every widget here lays itself out
in :func:`scrolling_layout`: its content sits in a vertical scroll area, so
the dock asks for little height and scrolls when the screen is short.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

__all__ = ["MIN_VISIBLE_HEIGHT", "scrolling_layout"]

#: The least height a docked widget asks for (px): a few rows stay in view.
MIN_VISIBLE_HEIGHT = 160


class _ScrollArea(QScrollArea):
    """A vertical scroll area as wide as its content (no horizontal scrolling)."""

    def minimumSizeHint(self):
        hint = super().minimumSizeHint()
        inner = self.widget()
        if inner is not None:
            bar = self.verticalScrollBar().sizeHint().width()
            hint.setWidth(inner.minimumSizeHint().width() + bar + 2 * self.frameWidth())
        hint.setHeight(MIN_VISIBLE_HEIGHT)
        return hint

    def sizeHint(self):
        hint = super().sizeHint()
        inner = self.widget()
        if inner is not None:
            hint.setHeight(inner.sizeHint().height() + 2 * self.frameWidth())
            hint.setWidth(max(hint.width(), self.minimumSizeHint().width()))
        return hint


def scrolling_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a vertically scrolling body and return the body's layout.

    Parameters
    ----------
    widget : QWidget
        The docked widget (it must have no layout yet).

    Returns
    -------
    QVBoxLayout
        The layout to add the widget's rows to.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = _ScrollArea(widget)
    area.setObjectName("slide_unet_scroll")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    body = QWidget()
    area.setWidget(body)
    outer.addWidget(area)
    return QVBoxLayout(body)

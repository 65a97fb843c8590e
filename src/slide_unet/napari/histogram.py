"""A small histogram of object areas, drawn with QPainter (no plotting library).

Bins are linear or logarithmic (areas of glomeruli or nuclei span decades, and
small fragments, the ones worth checking, vanish in the first linear bin). The
horizontal axis is the area in the table's unit (µm², or px without a pixel
size); the vertical axis counts objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["AreaHistogram", "area_bins"]

BAR_COLOUR = QColor(70, 160, 240)
#: Room for the axis labels: left, top, right, bottom (px).
MARGINS = (40, 18, 12, 32)
BINS = 24


def area_bins(areas: np.ndarray, *, log: bool, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of a histogram of ``areas``.

    Parameters
    ----------
    areas : numpy.ndarray
        Object areas (positive).
    log : bool
        Logarithmic bins (equal ratios) instead of linear ones.
    bins : int
        Number of bins.

    Returns
    -------
    counts, edges : numpy.ndarray
        ``bins`` counts and ``bins + 1`` edges; empty arrays for no areas.
    """
    areas = np.asarray(areas, dtype=np.float64)
    areas = areas[np.isfinite(areas) & (areas > 0)]
    if areas.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    low, high = float(areas.min()), float(areas.max())
    if high <= low:
        high = low * 1.01 + 1e-9
    spaced = np.geomspace if log else np.linspace
    counts, edges = np.histogram(areas, bins=spaced(low, high, bins + 1))
    return counts, edges


def _short(value: float) -> str:
    """A number in at most about five characters: 1.2e+04 → 12k."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


class AreaHistogram(QWidget):
    """The number of objects per area bin, redrawn when :meth:`set_areas` is called.

    Attributes
    ----------
    counts, edges : numpy.ndarray
        What is drawn (see :func:`area_bins`).
    log : bool
        Whether the bins are logarithmic.
    unit : str
        The area unit shown on the axis (``µm²`` or ``px``).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.counts = np.zeros(0, dtype=np.int64)
        self.edges = np.zeros(0)
        self.log = True
        self.unit = "µm²"
        self._areas = np.zeros(0)
        self.setMinimumHeight(130)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Number of objects per area bin (of the scope chosen above)")

    def sizeHint(self) -> QSize:
        return QSize(300, 150)

    def set_areas(self, areas: np.ndarray, unit: str) -> None:
        """Show the histogram of ``areas`` (in ``unit``)."""
        self._areas = np.asarray(areas, dtype=np.float64)
        self.unit = unit
        self.counts, self.edges = area_bins(self._areas, log=self.log)
        self.update()

    def set_log(self, log: bool) -> None:
        """Logarithmic (True) or linear bins."""
        self.log = bool(log)
        self.set_areas(self._areas, self.unit)

    def paintEvent(self, _event: Any) -> None:
        painter = QPainter(self)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        left, top, right, bottom = MARGINS
        plot = QRectF(
            left, top, max(self.width() - left - right, 1), max(self.height() - top - bottom, 1)
        )
        grid = QColor(text)
        grid.setAlpha(60)
        painter.setPen(QPen(grid, 1))
        painter.drawRect(plot)
        flags = Qt.AlignmentFlag
        painter.setPen(text)
        scale = "log" if self.log else "linear"
        painter.drawText(
            QRectF(0, plot.bottom() + 14, self.width(), 16),
            flags.AlignHCenter,
            f"area ({self.unit}, {scale} bins)",
        )
        painter.drawText(QRectF(left, 0, 200, top), flags.AlignLeft, "objects")
        if self.counts.size == 0:
            painter.drawText(plot, flags.AlignCenter, "no objects")
            painter.end()
            return
        peak = max(int(self.counts.max()), 1)
        painter.drawText(QRectF(0, plot.top() - 6, left - 4, 14), flags.AlignRight, str(peak))
        painter.drawText(QRectF(0, plot.bottom() - 8, left - 4, 14), flags.AlignRight, "0")
        low, high = _short(self.edges[0]), _short(self.edges[-1])
        painter.drawText(QRectF(plot.left(), plot.bottom() + 1, 80, 14), flags.AlignLeft, low)
        painter.drawText(
            QRectF(plot.right() - 80, plot.bottom() + 1, 80, 14), flags.AlignRight, high
        )
        width = plot.width() / self.counts.size
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(BAR_COLOUR)
        for k, count in enumerate(self.counts.tolist()):
            if count == 0:
                continue
            height = plot.height() * count / peak
            painter.drawRect(
                QRectF(plot.left() + k * width + 0.5, plot.bottom() - height, width - 1, height)
            )
        painter.end()

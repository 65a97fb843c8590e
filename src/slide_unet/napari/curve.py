"""A small live plot of training: loss and validation Dice against training steps.

Drawn with :class:`~qtpy.QtGui.QPainter` so the plugin needs no plotting
library. Loss uses the left axis (0 to its largest value so far), validation
Dice the right axis (0 to 1). The horizontal axis counts steps, not epochs, so
the training loss reported every few steps moves the curve between
validations, and a last epoch cut short by the time budget sits where it
ended. Epoch 0, when present, is the model before training (step 0): it has a
Dice and no loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["TrainingCurve"]

LOSS_COLOUR = QColor(240, 140, 40)
DICE_COLOUR = QColor(70, 160, 240)
#: Room for the axis labels: left, top, right, bottom (px).
MARGINS = (40, 18, 40, 20)
#: Most training-loss points kept: beyond, neighbours are averaged in pairs, so
#: a long run on a GPU (thousands of reports) still draws at once.
MAX_LOSS_POINTS = 1000


class TrainingCurve(QWidget):
    """Loss and validation Dice against training steps, updated as they come.

    Attributes
    ----------
    points : list of dict
        One ``{"epoch", "step", "loss", "val_dice"}`` per validation shown
        (epoch 0: the model before training), in order of epoch; a value is
        None where the record had none.
    losses : list of dict
        ``{"step", "loss"}``: the training loss reported every few steps,
        in order. When there is none, the loss line joins the epochs' losses.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[dict[str, Any]] = []
        self.losses: list[dict[str, float]] = []
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "Training loss (left axis) and validation Dice (right axis) against training steps"
        )

    def sizeHint(self) -> QSize:
        return QSize(300, 160)

    def add(self, record: Mapping[str, Any]) -> None:
        """Add (or replace) the validation point of ``record["epoch"]`` and redraw."""
        point = {
            "epoch": int(record["epoch"]),
            "step": int(record.get("step", 0)),
            "loss": _number(record.get("loss")),
            "val_dice": _number(record.get("val_dice")),
        }
        self.points = [p for p in self.points if p["epoch"] != point["epoch"]]
        self.points.append(point)
        self.points.sort(key=lambda p: p["epoch"])
        self.update()

    def add_loss(self, record: Mapping[str, Any]) -> None:
        """Add the training loss reported at ``record["step"]`` and redraw."""
        self.losses.append({"step": int(record["step"]), "loss": float(record["loss"])})
        if len(self.losses) > MAX_LOSS_POINTS:
            pairs = zip(self.losses[0::2], self.losses[1::2], strict=False)
            merged = [{"step": b["step"], "loss": (a["loss"] + b["loss"]) / 2} for a, b in pairs]
            self.losses = merged + self.losses[len(merged) * 2 :]
        self.update()

    def set_history(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Show exactly ``history``'s validations (epoch records, as the core's
        ``history``); the training losses shown so far stay."""
        self.points = []
        for record in history:
            self.add(record)

    def clear(self) -> None:
        """Remove every point."""
        self.points = []
        self.losses = []
        self.update()

    # -- drawing -------------------------------------------------------------------

    def paintEvent(self, _event: Any) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        left, top, right, bottom = MARGINS
        plot = QRectF(
            left, top, max(self.width() - left - right, 1), max(self.height() - top - bottom, 1)
        )
        grid = QColor(text)
        grid.setAlpha(60)
        painter.setPen(QPen(grid, 1))
        painter.drawRect(plot)

        last = max([p["step"] for p in (*self.points, *self.losses)] + [1])
        loss_line = self.losses or [p for p in self.points if p["loss"] is not None]
        losses = [p["loss"] for p in loss_line]
        loss_top = max(losses) * 1.1 if losses and max(losses) > 0 else 1.0

        painter.setPen(text)
        flags = Qt.AlignmentFlag
        painter.drawText(
            QRectF(0, plot.bottom() + 2, self.width(), bottom), flags.AlignHCenter, "step"
        )
        painter.drawText(QRectF(plot.left(), plot.bottom() + 2, 30, bottom), flags.AlignLeft, "0")
        painter.drawText(
            QRectF(plot.right() - 40, plot.bottom() + 2, 40, bottom), flags.AlignRight, str(last)
        )
        painter.setPen(LOSS_COLOUR)
        painter.drawText(
            QRectF(0, plot.top() - 6, left - 4, 14), flags.AlignRight, f"{loss_top:.2g}"
        )
        painter.drawText(QRectF(0, plot.bottom() - 8, left - 4, 14), flags.AlignRight, "0")
        painter.drawText(QRectF(left, 0, 120, top), flags.AlignLeft, "loss")
        painter.setPen(DICE_COLOUR)
        painter.drawText(QRectF(plot.right() + 4, plot.top() - 6, right, 14), flags.AlignLeft, "1")
        painter.drawText(
            QRectF(plot.right() + 4, plot.bottom() - 8, right, 14), flags.AlignLeft, "0"
        )
        painter.drawText(
            QRectF(plot.right() - 160, 0, 160, top), flags.AlignRight, "validation Dice"
        )

        def at(step: int, value: float, scale: float) -> QPointF:
            x = plot.left() + plot.width() * step / last
            y = plot.bottom() - plot.height() * min(max(value / scale, 0.0), 1.0)
            return QPointF(x, y)

        for key, line, colour, scale in (
            ("loss", loss_line, LOSS_COLOUR, loss_top),
            ("val_dice", self.points, DICE_COLOUR, 1.0),
        ):
            xy = [at(p["step"], p[key], scale) for p in line if p[key] is not None]
            if not xy:
                continue
            painter.setPen(QPen(colour, 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            path = QPainterPath(xy[0])
            for point in xy[1:]:
                path.lineTo(point)
            painter.drawPath(path)
            if line is not self.points:
                continue  # the frequent training losses: a line, no dots
            painter.setBrush(colour)
            for point in xy:
                painter.drawEllipse(point, 2.5, 2.5)
        painter.end()


def _number(value: Any) -> float | None:
    return None if value is None else float(value)

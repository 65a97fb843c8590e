"""An object table as a Qt model: the rows in view, sorted numerically by any column.

A :class:`~qtpy.QtWidgets.QTableView` over :class:`ObjectModel` shows a slide's
tens of thousands of objects without one item per cell: the model reads the
table's numpy columns when a cell is drawn, and sorting is one ``argsort``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt

from slide_unet.core.objects.table import ObjectTable

__all__ = ["ObjectModel", "columns_for"]


def columns_for(unit: str, probability: bool = False) -> list[tuple[str, str, str]]:
    """The shown columns for a table in ``unit`` (``um`` or ``px``): heading, table
    column, number format; with ``probability`` (the mask's store keeps the
    model's probabilities) the mean probability too, after the area."""
    shown = "µm" if unit == "um" else "px"
    columns = [
        ("id", "id", "{:d}"),
        (f"area ({shown}²)", f"area_{unit}2", "{:,.1f}"),
        (f"eq. diam. ({shown})", f"equivalent_diameter_{unit}", "{:,.1f}"),
        (f"perimeter ({shown})", f"perimeter_{unit}", "{:,.1f}"),
        ("solidity", "solidity", "{:.3f}"),
        (f"centroid y ({shown})", f"centroid_y_{unit}", "{:,.1f}"),
        (f"centroid x ({shown})", f"centroid_x_{unit}", "{:,.1f}"),
    ]
    if probability:
        columns.insert(2, ("mean prob.", "mean_probability", "{:.3f}"))
    return columns


class ObjectModel(QAbstractTableModel):
    """The rows of an :class:`ObjectTable` (a subset of them), sortable.

    Attributes
    ----------
    table : ObjectTable or None
        The measured objects.
    order : numpy.ndarray
        The table rows shown, in display order (positions in ``table``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.table: ObjectTable | None = None
        self.order = np.zeros(0, dtype=np.int64)
        self._columns = columns_for("um")
        self._sort: tuple[int, Any] | None = None

    def set_table(self, table: ObjectTable | None, rows: np.ndarray | None = None) -> None:
        """Show ``rows`` of ``table`` (all of them by default), in the current sort."""
        self.beginResetModel()
        self.table = table
        if table is not None:
            known = np.isfinite(table["mean_probability"]).any()
            self._columns = columns_for(table.unit, probability=bool(known))
        every = np.arange(len(table) if table is not None else 0)
        self.order = every if rows is None else np.asarray(rows, dtype=np.int64)
        self._apply_sort()
        self.endResetModel()

    def row_of(self, view_row: int) -> int:
        """The table row shown at ``view_row``."""
        return int(self.order[view_row])

    def view_row_of(self, table_row: int) -> int | None:
        """Where table row ``table_row`` is shown, or None when it is not."""
        hits = np.flatnonzero(self.order == table_row)
        return int(hits[0]) if hits.size else None

    # -- Qt's model interface -----------------------------------------------------------

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else int(self.order.size)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._columns)

    def headerData(self, section: int, orientation: Any, role: int = 0) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._columns[section][0]
        return None

    def data(self, index: QModelIndex, role: int = 0) -> Any:
        if self.table is None or not index.isValid():
            return None
        _, name, fmt = self._columns[index.column()]
        value = self.table[name][self.order[index.row()]]
        if role == Qt.ItemDataRole.DisplayRole:
            if fmt != "{:d}" and not np.isfinite(value):
                return "–"  # not known (an object painted by hand)
            return fmt.format(int(value) if fmt == "{:d}" else float(value))
        if role == Qt.ItemDataRole.UserRole:
            return float(value)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order: Any = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the shown rows by ``column``'s numbers (ties by id)."""
        self.layoutAboutToBeChanged.emit()
        self._sort = (column, order)
        self._apply_sort()
        self.layoutChanged.emit()

    def _apply_sort(self) -> None:
        if self.table is None or self._sort is None or self.order.size == 0:
            return
        column, order = self._sort
        values = self.table[self._columns[column][1]][self.order]
        ranks = np.argsort(values, kind="stable")
        if order == Qt.SortOrder.DescendingOrder:
            ranks = ranks[::-1]
        self.order = self.order[ranks]

"""The object table: one row per object, its columns as numpy arrays, and its writers.

:func:`~slide_unet.core.objects.measure.measure` fills it; this module holds
what a table is and how it is written: CSV (the standard library's ``csv``,
a header row) or Parquet (through ``pyarrow``, an optional dependency: the
``parquet`` extra), chosen by the file's extension, atomically.

This module is part of the napari-free core.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slide_unet.core.atomic import atomic_path, write_text_atomic
from slide_unet.core.errors import InputError

__all__ = ["TABLE_SUFFIXES", "ObjectTable", "check_table_path", "column_names"]

#: File extensions :meth:`ObjectTable.write` understands.
TABLE_SUFFIXES = (".csv", ".parquet")


def check_table_path(path: str | os.PathLike[str]) -> str:
    """The table format of ``path`` (``".csv"`` or ``".parquet"``), checked before any work.

    Raises
    ------
    InputError
        Another extension, or ``.parquet`` without ``pyarrow`` installed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(
            f"{path}: unknown table format {path.suffix!r}; supported: {', '.join(TABLE_SUFFIXES)}"
        )
    if suffix == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise InputError(
                f"{path}: writing Parquet needs pyarrow: pip install "
                "'napari-slide-unet[parquet]' (or write .csv)"
            ) from None
    return suffix


def column_names(unit: str) -> tuple[str, ...]:
    """The columns of a table measured in ``unit`` (``"um"`` or ``"px"``), in order."""
    area = f"area_{unit}2"
    return (
        "id",
        f"centroid_y_{unit}",
        f"centroid_x_{unit}",
        f"bbox_y0_{unit}",
        f"bbox_x0_{unit}",
        f"bbox_y1_{unit}",
        f"bbox_x1_{unit}",
        area,
        f"equivalent_diameter_{unit}",
        f"perimeter_{unit}",
        "solidity",
        "pixels",
        "mean_probability",
    )


@dataclass(frozen=True, eq=False)
class ObjectTable:
    """Measurements of the objects of a mask, one row per object.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        Each column (see :func:`column_names`), all of one length, in order.
        Lengths and positions are in µm (``*_um``, areas ``*_um2``) when the
        pixel size is known, else in pixels (``*_px``, ``*_px2``).
    mpp : float or None
        Microns per pixel the table was measured at; None: in pixels.
    shape : tuple of int
        ``(height, width)`` of the mask, in pixels.
    """

    columns: dict[str, np.ndarray]
    mpp: float | None
    shape: tuple[int, int]
    _names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise InputError(f"the columns of an object table differ in length: {lengths}")
        object.__setattr__(self, "_names", tuple(self.columns))

    @property
    def unit(self) -> str:
        """``"um"`` when the table is in microns, else ``"px"``."""
        return "um" if self.mpp else "px"

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in order."""
        return self._names

    def __len__(self) -> int:
        return len(self.columns["id"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def total_area(self) -> float:
        """The objects' area together, in µm² (pixels without a pixel size)."""
        return float(self.columns[f"area_{self.unit}2"].sum())

    def rows(self) -> Iterator[dict[str, Any]]:
        """Yield each row as a dict of Python numbers (NaN for a missing value)."""
        lists = [self.columns[n].tolist() for n in self._names]
        for values in zip(*lists, strict=True):
            yield dict(zip(self._names, values, strict=True))

    def to_pandas(self) -> Any:
        """The table as a ``pandas.DataFrame`` (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the table to ``path``: ``.csv`` or ``.parquet``, atomically.

        CSV has a header row, one line per object, numbers as Python prints
        them (shortest round-trip form) and an empty field for a missing
        value (``mean_probability`` without probabilities). Parquet keeps the
        column types and records the pixel size in its metadata.

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        InputError
            Another extension, or Parquet without ``pyarrow`` installed.
        """
        path = Path(path)
        if check_table_path(path) == ".csv":
            write_text_atomic(path, self._csv_text())
        else:
            self._write_parquet(path)
        return path

    def _csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self._names)
        for row in self.rows():
            writer.writerow(
                "" if isinstance(v, float) and math.isnan(v) else v for v in row.values()
            )
        return out.getvalue()

    def _write_parquet(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        metadata = {
            "slide_unet.mpp": "" if self.mpp is None else repr(self.mpp),
            "slide_unet.shape": f"{self.shape[0]},{self.shape[1]}",
        }
        table = pa.table(dict(self.columns), metadata=metadata)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)

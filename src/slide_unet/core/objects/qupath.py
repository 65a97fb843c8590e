"""The object table as QuPath measurements: each GeoJSON feature's ``measurements`` map.

QuPath reads a feature's ``properties.measurements`` as a flat name -> number
map and shows it in its measurement tables. :func:`feature_measurements`
measures a mask once (:func:`~slide_unet.core.objects.measure.measure`,
streaming, bounded memory) and gives the GeoJSON writer
(:func:`~slide_unet.core.masks.geojson.iter_mask_features`) each feature's map,
named as QuPath names its own shape measurements:

=========================  ============================  =====================
name (µm; ``px`` without   table column                  note
a pixel size)
=========================  ============================  =====================
``Centroid X µm``          ``centroid_x`` + half a pixel  QuPath's coordinates:
``Centroid Y µm``          ``centroid_y`` + half a pixel  pixel corners at whole
                                                         numbers
``Area µm^2``              ``area``
``Perimeter µm``           ``perimeter``                 Crofton estimate
``Equivalent diameter µm`` ``equivalent_diameter``
``Solidity``               ``solidity``
``Mean probability``       ``mean_probability``          only when measured
=========================  ============================  =====================

Joining features to the table's rows
    The writer makes one feature per object: pixels of one value connected
    through edges or corners. The table's objects are the 8-connected
    components of all non-zero pixels. For a binary mask these are the same
    objects, and two 8-connected components never share a bounding box, so a
    feature is joined to its row by its bounding box (the extent of its
    outline, which runs along pixel edges), checked by its pixel count (the
    area inside its rings). In a label image where instances of different
    values touch, the table merges them; such a feature finds no row of its
    box and count, and is measured alone, from its own outline drawn in its
    box (the same measurements, the same code).

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from slide_unet.core.errors import Cancel
from slide_unet.core.masks.outlines import rasterise
from slide_unet.core.objects.measure import measure
from slide_unet.core.objects.table import ObjectTable

__all__ = ["FeatureMeasure", "feature_measurements", "measurement_names"]


def measurement_names(unit: str) -> dict[str, str]:
    """Table column -> QuPath measurement name, for a table in ``unit`` (``"um"``/``"px"``)."""
    shown = "µm" if unit == "um" else "px"
    return {
        f"centroid_x_{unit}": f"Centroid X {shown}",
        f"centroid_y_{unit}": f"Centroid Y {shown}",
        f"area_{unit}2": f"Area {shown}^2",
        f"perimeter_{unit}": f"Perimeter {shown}",
        f"equivalent_diameter_{unit}": f"Equivalent diameter {shown}",
        "solidity": "Solidity",
        "mean_probability": "Mean probability",
    }


def _extent(polygons: list[Any]) -> tuple[tuple[int, int, int, int], int]:
    """``(y0, x0, y1, x1)`` of the outline (pixel corners) and the pixels inside it."""
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    twice = 0.0
    for polygon in polygons:
        for ring in polygon:
            points = np.asarray(ring, dtype=np.float64)
            x, y = points[:, 0], points[:, 1]
            x0, x1 = min(x0, x.min()), max(x1, x.max())
            y0, y1 = min(y0, y.min()), max(y1, y.max())
            # Shoelace: exteriors positive, holes negative (the writer's winding).
            twice += float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    return (int(y0), int(x0), int(y1), int(x1)), round(abs(twice) / 2)


class FeatureMeasure:
    """``measure(polygons)``: the QuPath measurements of the object a feature outlines.

    Built by :func:`feature_measurements`; see the module's documentation for
    the names and how features are joined to the table's rows.

    Attributes
    ----------
    table : ObjectTable
        The mask's object table.
    measured_alone : int
        Features that found no row (touching instances of a label image) and
        were measured from their own outline.
    """

    def __init__(self, table: ObjectTable) -> None:
        self.table = table
        self.measured_alone = 0
        unit, mpp = table.unit, table.mpp or 1.0
        self._names = measurement_names(unit)
        boxes = (
            np.column_stack(
                [
                    np.rint(table[f"bbox_{k}_{unit}"] / mpp).astype(np.int64)
                    for k in ("y0", "x0", "y1", "x1")
                ]
            )
            if len(table)
            else np.zeros((0, 4), dtype=np.int64)
        )
        self._rows = {
            (tuple(int(v) for v in box), int(pixels)): i
            for i, (box, pixels) in enumerate(zip(boxes, table["pixels"], strict=True))
        }
        self._columns = {name: table[column].tolist() for column, name in self._names.items()}

    def _values(self, columns: dict[str, list[Any]], row: int) -> dict[str, float]:
        half = 0.5 * (self.table.mpp or 1.0)
        out = {}
        for name, values in columns.items():
            value = float(values[row])
            if math.isnan(value):  # no probabilities: not a number JSON can hold
                continue
            if name.startswith("Centroid"):
                value += half
            out[name] = value
        return out

    def __call__(self, polygons: list[Any]) -> dict[str, float]:
        box, pixels = _extent(polygons)
        row = self._rows.get((box, pixels))
        if row is not None:
            return self._values(self._columns, row)
        self.measured_alone += 1
        return self._alone(polygons, box)

    def _alone(self, polygons: list[Any], box: tuple[int, int, int, int]) -> dict[str, float]:
        y0, x0, y1, x1 = box
        shifted = [
            [np.asarray(ring, dtype=np.float64) - (x0, y0) for ring in polygon]
            for polygon in polygons
        ]
        crop = rasterise(shifted, (0, y1 - y0, 0, x1 - x0))
        mpp = self.table.mpp
        one = measure(crop, mpp=mpp)
        unit = one.unit
        columns = {name: one[column].tolist() for column, name in self._names.items()}
        values = self._values(columns, 0)
        scale = mpp or 1.0
        values[f"Centroid X {'µm' if unit == 'um' else 'px'}"] += x0 * scale
        values[f"Centroid Y {'µm' if unit == 'um' else 'px'}"] += y0 * scale
        return values


def feature_measurements(
    mask: Any,
    *,
    mpp: float | None = None,
    table: ObjectTable | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
) -> FeatureMeasure:
    """Measure a mask's objects for its GeoJSON features (QuPath's ``measurements``).

    Parameters
    ----------
    mask : array-like
        The 2-D mask the features are written from.
    mpp : float, optional
        Microns per pixel; without it the measurements are in pixels.
    table : ObjectTable, optional
        The mask's table when already measured (else measured here: one
        streaming pass over the mask).
    progress, cancel
        As for :func:`~slide_unet.core.objects.measure.measure`.

    Returns
    -------
    FeatureMeasure
        Pass it as ``measurements=`` to
        :func:`~slide_unet.core.masks.geojson.write_geojson` (or
        :func:`~slide_unet.core.masks.io.write_mask`).

    Examples
    --------
    >>> import numpy as np
    >>> from slide_unet.core.masks.geojson import mask_to_geojson
    >>> mask = np.zeros((4, 4), dtype=np.uint8)
    >>> mask[1:3, 1:3] = 1
    >>> fc = mask_to_geojson(mask, measurements=feature_measurements(mask, mpp=0.5))
    >>> fc["features"][0]["properties"]["measurements"]["Area µm^2"]
    1.0
    """
    if table is None:
        table = measure(mask, mpp=mpp, progress=progress, cancel=cancel)
    return FeatureMeasure(table)

"""Bring one object of a mask into view: centre the camera on it, zoom, select its label.

Shared by the Objects table (a clicked row) and the Review queue (*Next*,
*Previous*). Objects are given by their bounding box and centroid in
full-resolution pixels, as :mod:`slide_unet.core.objects.table` records them
(divided by the pixel size when the table is in µm).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slide_unet.core.objects.table import ObjectTable
from slide_unet.napari.layers import camera_of, full_resolution

if TYPE_CHECKING:
    import napari

__all__ = ["FILL", "MIN_VIEW_PIXELS", "centre_on", "label_of", "object_box", "object_centroid"]

#: The share of the canvas an object's bounding box fills once centred.
FILL = 0.5
#: The smallest box (pixels a side) the zoom fills ``FILL`` of the canvas with: a
#: speck of one pixel is shown with what is around it, not as a square of colour.
MIN_VIEW_PIXELS = 32


def _scale(table: ObjectTable) -> float:
    return float(table.mpp) if table.mpp else 1.0


def object_box(table: ObjectTable, row: int) -> tuple[int, int, int, int]:
    """Row ``row``'s bounding box in full-resolution pixels: ``(y0, x0, y1, x1)``, ends
    exclusive."""
    scale, unit = _scale(table), table.unit
    return tuple(  # type: ignore[return-value]
        round(float(table[f"bbox_{k}_{unit}"][row]) / scale) for k in ("y0", "x0", "y1", "x1")
    )


def object_centroid(table: ObjectTable, row: int) -> tuple[float, float]:
    """Row ``row``'s centroid in full-resolution pixels: ``(y, x)``."""
    scale, unit = _scale(table), table.unit
    return (
        float(table[f"centroid_y_{unit}"][row]) / scale,
        float(table[f"centroid_x_{unit}"][row]) / scale,
    )


def centre_on(
    viewer: napari.Viewer,
    layer: Any,
    centroid: tuple[float, float],
    box: tuple[int, int, int, int],
    *,
    fill: float = FILL,
) -> None:
    """Centre the camera on ``centroid`` (pixels of ``layer``) and zoom so ``box``
    (``y0, x0, y1, x1``), or :data:`MIN_VIEW_PIXELS` a side where it is smaller,
    fills ``fill`` of the canvas."""
    camera = camera_of(viewer)
    camera.center = tuple(float(v) for v in layer.data_to_world(centroid)[-2:])
    y0, x0, y1, x1 = box
    # Pixel i covers data coordinates i - 0.5 to i + 0.5.
    start = np.asarray(layer.data_to_world((y0 - 0.5, x0 - 0.5))[-2:], dtype=float)
    end = np.asarray(layer.data_to_world((y1 - 0.5, x1 - 0.5))[-2:], dtype=float)
    pixel = np.abs(
        np.asarray(layer.data_to_world((1.0, 1.0))[-2:], dtype=float)
        - np.asarray(layer.data_to_world((0.0, 0.0))[-2:], dtype=float)
    )
    extent = np.maximum(np.abs(end - start), np.maximum(MIN_VIEW_PIXELS * pixel, 1e-12))
    canvas = np.asarray(viewer.canvas.size, dtype=float)
    camera.zoom = float(fill * np.min(canvas / extent))


def label_of(layer: Any, centroid: tuple[float, float], box: tuple[int, int, int, int]) -> int:
    """The label value of the object at ``centroid`` in ``box``: the value at the centroid
    pixel, or (when the centroid falls outside a curved object) the commonest non-zero
    value in the box; 0 when the box is empty. A binary mask's objects all give 1."""
    y0, x0, y1, x1 = box
    window = np.asarray(full_resolution(layer)[y0:y1, x0:x1])
    row = min(max(round(centroid[0]) - y0, 0), window.shape[0] - 1)
    col = min(max(round(centroid[1]) - x0, 0), window.shape[1] - 1)
    if window.size == 0:
        return 0
    value = int(window[row, col])
    if value:
        return value
    values, counts = np.unique(window[window != 0], return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 0

"""Masks as GeoJSON polygons, the way QuPath imports and exports annotations.

Writing (:func:`mask_to_geojson`, :func:`write_geojson`) gives a
``FeatureCollection`` with one ``Feature`` per object. Coordinates are
full-resolution pixel units ``(x, y)``, x to the right and y down (QuPath's
image coordinates), at pixel **corners**: each outline runs exactly along the
edges between object and background pixels, with collinear points merged, so
reading it back (:func:`geojson_to_mask`) gives the same mask, pixel for
pixel.

Objects and connectivity
    An object is a set of pixels of the same non-zero value connected through
    their edges or corners (8-connectivity, as ``skimage.measure.label`` and
    ``scipy.ndimage.label`` with a full structure count them). Touching
    instances of a label image stay separate objects. Pixels that touch only
    at a corner belong to one object but to separate polygons of its
    ``MultiPolygon``: a valid polygon's ring may not pass through a point
    twice, and QuPath (through JTS) represents such pixels the same way.
Holes
    Kept as interior rings. A hole that touches its polygon's outline at one
    corner is an interior ring that touches the exterior at that point (valid
    in the OGC simple-features model that QuPath and shapely use).
Winding
    RFC 7946's right-hand rule, computed on the numbers: exterior rings have a
    positive shoelace area (counter-clockwise with y up), holes negative. With
    y pointing down, as on screen, exteriors look clockwise. QuPath accepts
    either winding.

Big masks are streamed in bands of rows: only a band (plus the height of any
object cut by the band's lower edge) is in memory at a time.

Reading (:mod:`slide_unet.core.masks.geojson_read`) refuses, with a MaskError that names
the feature (its index, and its id or name when it has one), what cannot be
drawn: a vertex that is not a finite number (JSON parsers take ``NaN`` and
``Infinity``) or lies beyond :data:`MAX_COORDINATE`, and structures that are
not GeoJSON. A file too big to parse within the memory budget is refused before
it is parsed (:mod:`slide_unet.core.limits`).
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from slide_unet.core.atomic import atomic_path
from slide_unet.core.errors import InputError
from slide_unet.core.limits import check_decode
from slide_unet.core.masks.bounds import check_mask_shape, check_shape
from slide_unet.core.masks.geojson_read import (
    MAX_COORDINATE,
    UNCLASSIFIED,
    class_name,
    geojson_classes,
    geojson_file_classes,
    geojson_polygons,
    read_geojson,
)
from slide_unet.core.masks.outlines import (
    Objects,
    Polygon,
    object_outlines,
    polygon_boxes,
    rasterise,
)

__all__ = [
    "MAX_COORDINATE",
    "OBJECT_TYPES",
    "UNCLASSIFIED",
    "FeatureMeasurements",
    "check_band",
    "class_name",
    "geojson_classes",
    "geojson_file_classes",
    "geojson_polygons",
    "geojson_to_dask",
    "geojson_to_mask",
    "iter_mask_features",
    "mask_to_geojson",
    "read_geojson",
    "write_geojson",
]

#: Rows of the mask read at a time when streaming a big mask.
BAND_ROWS = 1024

#: Foreground separated by at least this many empty columns is traced apart.
COLUMN_GAP = 64

#: QuPath object types a feature may be written as: annotations (editable, few
#: and large) or detections (lighter, for many objects).
OBJECT_TYPES = ("annotation", "detection")

#: ``measurements(polygons)``: a feature's QuPath measurements (a flat name ->
#: number map) from its polygons (each a list of rings, pixel corners), or None.
FeatureMeasurements = Callable[[list[Polygon]], Mapping[str, float] | None]

#: QuPath's default colour for the class (an RGB list in its GeoJSON).
DEFAULT_COLOR = (255, 0, 0)

# -- features --------------------------------------------------------------------


def _feature(
    polygons: list[Polygon],
    properties: dict[str, Any],
    measurements: FeatureMeasurements | None = None,
) -> dict[str, Any]:
    if len(polygons) == 1:
        geometry = {"type": "Polygon", "coordinates": polygons[0]}
    else:
        geometry = {"type": "MultiPolygon", "coordinates": polygons}
    properties = copy.deepcopy(properties)
    if measurements is not None:
        values = measurements(polygons)
        if values:
            properties["measurements"] = dict(values)
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _properties(
    classification: str | None, color: Sequence[int], object_type: str
) -> dict[str, Any]:
    if object_type not in OBJECT_TYPES:
        raise InputError(
            f"object_type must be one of {', '.join(OBJECT_TYPES)}, got {object_type!r}"
        )
    properties: dict[str, Any] = {"objectType": object_type}
    if classification:
        properties["classification"] = {
            "name": classification,
            "color": [int(c) for c in color],
        }
    return properties


def _as_2d(mask: Any) -> Any:
    if len(getattr(mask, "shape", ())) != 2:
        shape = getattr(mask, "shape", None)
        raise InputError(f"a mask must be 2-D (height, width), got shape {shape}")
    return mask


def check_band(shape: tuple[int, int], dtype: Any, what: str, rows: int = BAND_ROWS) -> None:
    """Refuse to trace a mask whose bands of rows would not fit the memory budget.

    Tracing holds a band, and arrays of its size (the any-foreground test, the
    column groups' copies): about twice the band.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` of the mask.
    dtype : numpy.dtype
        Its pixel type.
    what : str
        What is traced, for the message.
    rows : int
        Rows of the band (more when objects are carried over).

    Raises
    ------
    LimitError
        Over the budget.
    """
    rows = min(int(rows), int(shape[0]))
    band = rows * int(shape[1]) * np.dtype(dtype).itemsize
    check_decode(2 * band, f"{what}: bands of {rows:,} x {int(shape[1]):,} pixels")


def _read_band(mask: Any, y0: int, y1: int) -> np.ndarray:
    dtype = np.dtype(getattr(mask, "dtype", np.uint8))
    check_band((y1 - y0, int(mask.shape[1])), dtype, "tracing the mask's outlines", y1 - y0)
    band = np.asarray(mask[y0:y1])
    if band.dtype == np.bool_:
        return band.view(np.uint8)
    if band.dtype.kind not in "ui":
        raise InputError(f"a mask must hold integers or booleans, got {band.dtype}")
    return band


def iter_mask_features(
    mask: Any,
    *,
    classification: str | None = "Glomerulus",
    color: Sequence[int] = DEFAULT_COLOR,
    object_type: str = "annotation",
    measurements: FeatureMeasurements | None = None,
    band_rows: int = BAND_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one GeoJSON ``Feature`` per object of a mask, streaming it in bands.

    Parameters
    ----------
    mask : array-like
        2-D ``(height, width)`` mask: numpy, dask or zarr array. Pixels of the
        same non-zero value connected by edges or corners form one object
        (binary 0/1 or 0/255 masks and instance labels all work).
    classification : str or None
        QuPath class name of every object; None leaves the objects unclassified.
    color : sequence of int
        RGB colour of the class, 0-255.
    object_type : str
        QuPath object type: ``"annotation"`` (editable) or ``"detection"``
        (lighter, for many small objects such as nuclei).
    measurements : callable, optional
        ``measurements(polygons)`` gives each feature's
        ``properties.measurements``, the flat name -> number map QuPath reads
        (:func:`slide_unet.core.objects.qupath.feature_measurements` builds
        one from the object table); None: no measurements.
    band_rows : int
        Rows read at a time. An object cut by a band's lower edge is carried
        into the next band, so memory is about ``band_rows`` plus the height
        of the tallest object, times the width.
    progress : callable, optional
        ``progress(done, total)`` in bands of rows, once a band's objects
        have all been yielded. To stop, raise from it.

    Yields
    ------
    dict
        ``Feature`` with a ``Polygon`` or ``MultiPolygon`` geometry in pixel
        corner coordinates and QuPath's properties.

    Raises
    ------
    InputError
        If `mask` is not 2-D or not integer/boolean.
    LimitError
        A band of rows over the memory budget (:func:`check_band`): a very
        wide mask, or an object as tall as most of it.
    """
    mask = _as_2d(mask)
    height = int(mask.shape[0])
    properties = _properties(classification, color, object_type)
    band_rows = max(2, int(band_rows))
    # `end` moves by band_rows each band, whatever is carried over.
    total = -(-height // band_rows)
    done = 0
    top, end = 0, 0
    while end < height:
        previous_end, end = end, min(height, end + band_rows)
        band = _read_band(mask, top, end)
        carry = end - top  # where the next band starts, band-relative
        for c0, c1 in _column_groups(band):
            # Objects of column groups apart never touch: each is traced alone,
            # cropped to its rows, which skips the empty bulk of a slide.
            group = band[:, c0:c1]
            rows = np.flatnonzero(group.any(axis=1))
            r0 = int(rows[0])
            group = group[r0 : int(rows[-1]) + 1]
            objects = Objects(group)
            root = objects.object
            bottom = np.full(root.size, -1, dtype=np.int64)
            np.maximum.at(bottom, root, objects.row + r0)
            emit = np.ones(root.size, dtype=bool)
            if end < height:
                cut = bottom == end - top - 1  # touches the band's last row
                emit &= ~cut
                if cut.any():
                    first = np.full(root.size, np.iinfo(np.int64).max, dtype=np.int64)
                    np.minimum.at(first, root, objects.row + r0)
                    carry = min(carry, int(first[cut].min()))
            if previous_end:
                # Objects wholly above the previous band's last row were emitted then.
                emit &= bottom + top >= previous_end - 1
            for _, polygons in object_outlines(group, objects, emit, (c0, top + r0)):
                yield _feature(polygons, properties, measurements)
        top += carry
        done += 1
        if progress is not None:
            progress(done, total)


def _column_groups(band: np.ndarray) -> list[tuple[int, int]]:
    """Column spans of ``band`` holding foreground, split where at least
    :data:`COLUMN_GAP` empty columns lie between (objects cannot touch across
    even one)."""
    cols = np.flatnonzero(band.any(axis=0))
    if not cols.size:
        return []
    breaks = np.flatnonzero(np.diff(cols) > COLUMN_GAP)
    starts = [int(cols[0]), *(int(c) for c in cols[breaks + 1])]
    stops = [*(int(c) + 1 for c in cols[breaks]), int(cols[-1]) + 1]
    return list(zip(starts, stops, strict=True))


def mask_to_geojson(
    mask: Any,
    *,
    classification: str | None = "Glomerulus",
    color: Sequence[int] = DEFAULT_COLOR,
    object_type: str = "annotation",
    measurements: FeatureMeasurements | None = None,
) -> dict[str, Any]:
    """Outline every object of a mask as GeoJSON polygons QuPath can import.

    Parameters
    ----------
    mask : array-like
        2-D ``(height, width)`` mask (numpy, dask or zarr); see
        :func:`iter_mask_features` for what counts as an object.
    classification : str or None
        QuPath class name of every object (None: unclassified).
    color : sequence of int
        RGB colour of the class, 0-255.
    object_type : str
        ``"annotation"`` or ``"detection"``.
    measurements : callable, optional
        Each feature's QuPath measurements (see :func:`iter_mask_features`).

    Returns
    -------
    dict
        A ``FeatureCollection``, one ``Feature`` per object, outlines along
        pixel edges in full-resolution pixel coordinates ``(x, y)``.

    Raises
    ------
    InputError
        If `mask` is not a 2-D integer or boolean array.

    Examples
    --------
    >>> import numpy as np
    >>> fc = mask_to_geojson(np.array([[0, 1], [0, 1]]), classification=None)
    >>> fc["features"][0]["geometry"]["coordinates"]
    [[[1, 0], [2, 0], [2, 2], [1, 2], [1, 0]]]
    """
    features = list(
        iter_mask_features(
            mask,
            classification=classification,
            color=color,
            object_type=object_type,
            measurements=measurements,
        )
    )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    mask: Any,
    path: str | os.PathLike[str],
    *,
    classification: str | None = "Glomerulus",
    color: Sequence[int] = DEFAULT_COLOR,
    object_type: str = "annotation",
    measurements: FeatureMeasurements | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a mask's objects as a GeoJSON ``FeatureCollection``, atomically.

    Features are written as they are traced, so neither the mask nor the
    collection is ever whole in memory. Parameters are those of
    :func:`mask_to_geojson`, and `progress` that of :func:`iter_mask_features`
    (raising from it leaves no file and any existing one untouched).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    features = iter_mask_features(
        mask,
        classification=classification,
        color=color,
        object_type=object_type,
        measurements=measurements,
        progress=progress,
    )
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i, feature in enumerate(features):
            fh.write(",\n" if i else "\n")
            fh.write(json.dumps(feature, separators=(",", ":")))
        fh.write("\n]}\n")
    return path


# -- reading and rasterising ---------------------------------------------------------


def _class_layers(
    geojson: Any,
    classification: str | None,
    classes: Sequence[str] | None,
    object_type: str | None,
) -> list[tuple[int, list[list[np.ndarray]], np.ndarray]]:
    """``(value, polygons, their boxes)`` to draw, in drawing order."""
    if classes is None:
        picked = [(1, classification)]
    else:
        if classification is not None:
            raise InputError("give classification (one class) or classes (a label per class)")
        picked = [(i, name) for i, name in enumerate(classes, start=1)]
    layers = []
    for value, name in picked:
        polygons = geojson_polygons(geojson, classification=name, object_type=object_type)
        layers.append((value, polygons, polygon_boxes(polygons)))
    return layers


def _label_dtype(classes: Sequence[str] | None) -> np.dtype:
    return np.dtype(np.uint8 if classes is None or len(classes) < 256 else np.uint16)


def geojson_to_mask(
    geojson: Any,
    shape: tuple[int, int],
    *,
    classification: str | None = None,
    classes: Sequence[str] | None = None,
    object_type: str | None = None,
) -> np.ndarray:
    """Rasterise GeoJSON polygons (holes kept) into a 0/1 mask, or a label per class.

    Parameters
    ----------
    geojson : dict or list
        A ``FeatureCollection`` (as QuPath exports, or as
        :func:`mask_to_geojson` writes), a ``Feature``, a list of features or
        a bare ``Polygon``/``MultiPolygon``, in full-resolution pixel
        coordinates ``(x, y)``.
    shape : tuple of int
        ``(height, width)`` of the mask: the image's.
    classification : str or None
        Keep only features of this QuPath class (None: all of them;
        ``"Unclassified"``: those without a class).
    classes : sequence of str, optional
        Instead of a 0/1 mask, a label mask: value ``i + 1`` where a feature
        of ``classes[i]`` is (``"Unclassified"`` for those without a class;
        :func:`~slide_unet.core.masks.geojson_read.geojson_classes` lists a
        file's). Features of other classes are left out; where classes
        overlap, the later one wins. Not with `classification`.
    object_type : str or None
        Keep only features of this QuPath ``objectType`` (``"annotation"``,
        ``"detection"``); None: all.

    Returns
    -------
    numpy.ndarray
        ``uint8`` mask of `shape` (``uint16`` for 256 classes or more): 1 (or
        the class's value) where a pixel's centre is inside a polygon.
        Outlines along pixel edges (as written by :func:`mask_to_geojson`)
        give back exactly the pixels they outline.

    Raises
    ------
    MaskError
        If `geojson` is not a FeatureCollection, Feature or polygon geometry,
        holds points or lines, or a vertex that cannot be drawn (see
        :func:`geojson_polygons`).
    InputError
        If `shape` is not two positive integers, or more than any mask has;
        `classification` and `classes` both given.
    LimitError
        If the mask is over the memory budget (use :func:`geojson_to_dask`).
    """
    height, width = check_mask_shape(check_shape(shape), "a mask drawn from GeoJSON")
    dtype = _label_dtype(classes)
    check_decode(height * width * dtype.itemsize, f"a {height} x {width} mask drawn from GeoJSON")
    layers = _class_layers(geojson, classification, classes, object_type)
    out = np.zeros((height, width), dtype=dtype)
    for y0 in range(0, height, BAND_ROWS):
        y1 = min(height, y0 + BAND_ROWS)
        out[y0:y1] = _draw_window(layers, (y0, y1, 0, width), dtype)
    return out


def geojson_to_dask(
    geojson: Any,
    shape: tuple[int, int],
    *,
    classification: str | None = None,
    classes: Sequence[str] | None = None,
    object_type: str | None = None,
    chunk: int = 4096,
) -> da.Array:
    """Like :func:`geojson_to_mask`, but lazy: chunks are rasterised when computed.

    For masks too big for memory. Each chunk fills only the polygons whose
    bounding box meets it.

    Returns
    -------
    dask.array.Array
        ``uint8`` 0/1 mask (or labels, see :func:`geojson_to_mask`) of
        `shape`, in ``chunk`` x ``chunk`` chunks.

    Raises
    ------
    MaskError, InputError
        As :func:`geojson_to_mask`.
    """
    height, width = check_mask_shape(check_shape(shape), "a mask drawn from GeoJSON")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InputError(f"chunk must be a positive integer, got {chunk!r}")
    dtype = _label_dtype(classes)
    layers = _class_layers(geojson, classification, classes, object_type)
    rows = tuple(min(chunk, height - y) for y in range(0, height, chunk))
    cols = tuple(min(chunk, width - x) for x in range(0, width, chunk))
    name = f"geojson-mask-{uuid.uuid4().hex}"
    graph: dict[tuple[Any, ...], Any] = {}
    for i, y0 in enumerate(range(0, height, chunk)):
        for j, x0 in enumerate(range(0, width, chunk)):
            window = (y0, y0 + rows[i], x0, x0 + cols[j])
            chosen = []
            for value, polygons, boxes in layers:
                near = _overlapping(boxes, window)
                chosen.append((value, [polygons[k] for k in near], boxes[near]))
            graph[(name, i, j)] = (_draw_window, chosen, window, dtype)
    return da.Array(graph, name, chunks=(rows, cols), dtype=dtype)


def _draw_window(
    layers: Sequence[tuple[int, Sequence[list[np.ndarray]], np.ndarray]],
    window: tuple[int, int, int, int],
    dtype: np.dtype,
) -> np.ndarray:
    """The window ``(y0, y1, x0, x1)`` with each layer's polygons drawn in its value."""
    if len(layers) == 1 and layers[0][0] == 1:
        return _rasterise_window(layers[0][1], layers[0][2], window).astype(dtype, copy=False)
    y0, y1, x0, x1 = window
    out = np.zeros((y1 - y0, x1 - x0), dtype=dtype)
    for value, polygons, boxes in layers:
        out[_rasterise_window(polygons, boxes, window) > 0] = value
    return out


def _overlapping(boxes: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Indices of the boxes ``(xmin, ymin, xmax, ymax)`` that may cover a pixel
    centre of ``window`` ``(y0, y1, x0, x1)``."""
    y0, y1, x0, x1 = window
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    meets = (boxes[:, 3] > y0 + 0.5) & (boxes[:, 1] <= y1 - 0.5)
    meets &= (boxes[:, 2] > x0 + 0.5) & (boxes[:, 0] <= x1 - 0.5)
    return np.flatnonzero(meets)


def _rasterise_window(
    polygons: Sequence[list[np.ndarray]], boxes: np.ndarray, window: tuple[int, int, int, int]
) -> np.ndarray:
    chosen = _overlapping(boxes, window)
    return rasterise([polygons[k] for k in chosen], window)

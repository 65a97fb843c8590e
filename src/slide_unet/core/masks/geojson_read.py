"""Reading GeoJSON (QuPath's annotations) into polygons, refusing what cannot
be drawn.

:func:`geojson_polygons` takes a FeatureCollection, a bare list of features
(QuPath before 0.3), a Feature or a Polygon/MultiPolygon geometry, and gives
each polygon as a list of rings. It refuses, with a
:class:`~slide_unet.core.errors.MaskError` that names the feature (its
index, and its id or name when it has one), what cannot be drawn: a vertex
that is not a finite number (JSON parsers take ``NaN`` and ``Infinity``) or
lies beyond :data:`MAX_COORDINATE`, points and lines, and structures that are
not GeoJSON. :func:`read_geojson` refuses a file too big to parse within the
memory budget (:mod:`slide_unet.core.limits`) before it is parsed.

This module is part of the napari-free core.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from slide_unet.core.errors import MaskError
from slide_unet.core.limits import check_decode

__all__ = [
    "MAX_COORDINATE",
    "UNCLASSIFIED",
    "class_name",
    "geojson_classes",
    "geojson_file_classes",
    "geojson_polygons",
    "read_geojson",
]

#: The class name that picks features without a classification (QuPath's name
#: for them), and that stands for them among :func:`geojson_classes`.
UNCLASSIFIED = "Unclassified"

#: Vertices farther than this from the origin (pixels) are refused: no image is
#: that big, and beyond it the rasteriser's row numbers would overflow.
MAX_COORDINATE = 2.0**32

#: Memory of a parsed JSON file, per byte of it, at most: coordinates take 8-16
#: (a float object in a list per number), nested empty lists up to about 30.
_JSON_BYTES_PER_BYTE = 24

#: GeometryCollections nested deeper than this are refused (not recursed into).
_MAX_NESTING = 16


def read_geojson(path: str | os.PathLike[str]) -> Any:
    """Load a GeoJSON file (QuPath's export or any FeatureCollection).

    Raises
    ------
    MaskError
        If the file is not valid JSON in UTF-8 (nested too deep for the
        parser included).
    LimitError
        If parsing it would take more memory than the budget: Python's JSON
        objects take up to :data:`_JSON_BYTES_PER_BYTE` times the file.
    """
    path = Path(path)
    size = path.stat().st_size
    check_decode(
        size * _JSON_BYTES_PER_BYTE, f"{path}: a GeoJSON file of {size / 2**20:,.1f} MB parsed"
    )
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MaskError(f"{path}: not valid GeoJSON ({exc})") from None
    except RecursionError:
        raise MaskError(f"{path}: not valid GeoJSON (nested too deep to parse)") from None


def _overflows(point: Any) -> bool:
    try:
        np.asarray(point, dtype=np.float64)
    except OverflowError:
        return True
    except (TypeError, ValueError):
        pass
    return False


def _ring(ring: Any, where: str, kind: str) -> np.ndarray | None:
    """A ring as an ``(n, 2)`` float array (None when it has fewer than 3
    positions, and so no area)."""
    far = f"is beyond {MAX_COORDINATE:,.0f} pixels from the origin"
    try:
        points = np.asarray(ring, dtype=np.float64)
    except OverflowError:  # an integer too big for a float: which one?
        i = next(i for i, point in enumerate(ring) if _overflows(point))
        raise MaskError(f"GeoJSON {where}: vertex {i} {far}") from None
    except (TypeError, ValueError):
        points = np.zeros((0, 0))  # ragged, or not numbers: refused below
    if points.ndim != 2 or points.shape[1] < 2:
        raise MaskError(f"GeoJSON {where}: {kind} coordinates must be lists of [x, y] positions")
    points = points[:, :2]
    bad = ~(np.abs(points) <= MAX_COORDINATE)  # also nan
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        x, y = (float(v) for v in points[i])
        problem = "is not a finite number" if not np.isfinite(points[i]).all() else far
        raise MaskError(f"GeoJSON {where}: vertex {i} at ({x!r}, {y!r}) {problem}")
    return points if len(points) >= 3 else None


def _geometry_polygons(geometry: Any, where: str, depth: int = 0) -> list[list[np.ndarray]]:
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise MaskError(f"GeoJSON {where}: expected a geometry object, got {geometry!r:.80}")
    kind = geometry["type"]
    if kind == "GeometryCollection":
        parts = geometry.get("geometries", [])
        if not isinstance(parts, list):
            raise MaskError(f"GeoJSON {where}: a GeometryCollection's 'geometries' is not a list")
        if depth >= _MAX_NESTING:
            raise MaskError(
                f"GeoJSON {where}: GeometryCollections nested over {_MAX_NESTING} deep"
            )
        out = []
        for i, part in enumerate(parts):
            out += _geometry_polygons(part, f"{where}, geometry {i}", depth + 1)
        return out
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        polygons = [coords]
    elif kind == "MultiPolygon":
        polygons = coords
    else:
        raise MaskError(
            f"GeoJSON {where}: a {kind!s:.40} has no area; only Polygon and MultiPolygon "
            "geometries can be made into a mask"
        )
    if not isinstance(polygons, list) or not all(isinstance(p, list) for p in polygons):
        raise MaskError(f"GeoJSON {where}: {kind} coordinates must be lists of [x, y] positions")
    out = []
    for polygon in polygons:
        rings = [_ring(ring, where, kind) for ring in polygon]
        rings = [ring for ring in rings if ring is not None]
        if rings:
            out.append(rings)
    return out


def _feature_list(geojson: Any) -> list[Any]:
    if isinstance(geojson, list):  # QuPath before 0.3 exported a bare list of features
        return geojson
    if not isinstance(geojson, dict) or "type" not in geojson:
        raise MaskError(
            "GeoJSON must be a FeatureCollection, a Feature or a Polygon/MultiPolygon "
            f"geometry; got {type(geojson).__name__}"
        )
    if geojson["type"] == "FeatureCollection":
        features = geojson.get("features")
        if not isinstance(features, list):
            raise MaskError("GeoJSON FeatureCollection has no 'features' list")
        return features
    if geojson["type"] == "Feature":
        return [geojson]
    return [{"type": "Feature", "geometry": geojson, "properties": {}}]


def class_name(feature: Any) -> str | None:
    """The QuPath class of a feature, None when it has none.

    QuPath writes ``properties.classification`` as ``{"name": ..., "color":
    [r, g, b]}`` (0.3 and later; ``"colorRGB"`` before), a derived class as
    ``{"names": ["Tumor", "Positive"], ...}`` (shown as ``"Tumor: Positive"``,
    the name returned); a bare string is taken as the name too.
    """
    props = feature.get("properties") if isinstance(feature, dict) else None
    cls = props.get("classification") if isinstance(props, dict) else None
    if isinstance(cls, dict):
        name = cls.get("name")
        if isinstance(name, str):
            return name
        names = cls.get("names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return ": ".join(names)
        return None
    return cls if isinstance(cls, str) else None


def _object_type(feature: dict[str, Any]) -> str | None:
    props = feature.get("properties")
    kind = props.get("objectType") if isinstance(props, dict) else None
    return kind if isinstance(kind, str) else None


def _picked(feature: dict[str, Any], classification: str | None, object_type: str | None) -> bool:
    if object_type is not None and _object_type(feature) != object_type:
        return False
    if classification is None:
        return True
    name = class_name(feature)
    if classification == UNCLASSIFIED:
        return name is None or name == UNCLASSIFIED
    return name == classification


def _feature_label(i: int, feature: dict[str, Any]) -> str:
    """``feature 3 (id 'abc', name 'glom 2')``: how a user finds it in QuPath."""
    props = feature.get("properties")
    names = [
        ("id", feature.get("id")),
        ("name", props.get("name") if isinstance(props, dict) else None),
    ]
    shown = [f"{key} {value!r:.60}" for key, value in names if isinstance(value, (str, int))]
    return f"feature {i}" + (f" ({', '.join(shown)})" if shown else "")


def geojson_classes(geojson: Any, *, object_type: str | None = None) -> list[str]:
    """The QuPath classes of the features that have a geometry, sorted by name,
    :data:`UNCLASSIFIED` last when some features have no class.

    Parameters
    ----------
    geojson : dict or list
        As :func:`geojson_polygons` takes it.
    object_type : str, optional
        Only features of this ``objectType`` (``"annotation"``, ``"detection"``...).

    Raises
    ------
    MaskError
        Not a FeatureCollection, a Feature, a list of features or a geometry.
    """
    names: set[str] = set()
    unclassified = False
    for feature in _feature_list(geojson):
        if not isinstance(feature, dict) or feature.get("geometry") is None:
            continue
        if object_type is not None and _object_type(feature) != object_type:
            continue
        name = class_name(feature)
        if name is None or name == UNCLASSIFIED:
            unclassified = True
        else:
            names.add(name)
    return sorted(names) + ([UNCLASSIFIED] if unclassified else [])


def geojson_file_classes(
    path: str | os.PathLike[str], *, object_type: str | None = None
) -> list[str]:
    """The QuPath classes in a GeoJSON file, as :func:`geojson_classes` lists them.

    Parses the file (within the memory budget, as :func:`read_geojson`) but
    draws nothing, so it is quick enough to fill a class picker when a file
    is chosen.

    Parameters
    ----------
    path : str or os.PathLike
        A GeoJSON file (QuPath's export or any FeatureCollection).
    object_type : str, optional
        Only features of this ``objectType`` (``"annotation"``, ``"detection"``...).

    Returns
    -------
    list of str
        Class names sorted, :data:`UNCLASSIFIED` last when some features have none.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    MaskError
        If it is not valid GeoJSON.
    LimitError
        If parsing it would pass the memory budget.
    """
    return geojson_classes(read_geojson(path), object_type=object_type)


def geojson_polygons(
    geojson: Any, *, classification: str | None = None, object_type: str | None = None
) -> list[list[np.ndarray]]:
    """The polygons of a GeoJSON object, each a list of rings as ``(n, 2)`` arrays.

    Parameters
    ----------
    geojson : dict or list
        A ``FeatureCollection``, a ``Feature``, a list of features, or a bare
        ``Polygon``/``MultiPolygon``/``GeometryCollection``.
    classification : str or None
        Keep only features of this QuPath class (:func:`class_name`);
        :data:`UNCLASSIFIED` keeps those without one.
    object_type : str or None
        Keep only features of this ``objectType`` (QuPath's ``"annotation"``,
        ``"detection"``, ``"cell"``...); None keeps all.

    Raises
    ------
    MaskError
        If it is none of those, holds points or lines, or a vertex that is
        not a finite number or lies beyond :data:`MAX_COORDINATE`: the
        message names the feature (index, and id or name when it has one).
    """
    polygons: list[list[np.ndarray]] = []
    for i, feature in enumerate(_feature_list(geojson)):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise MaskError(f"GeoJSON feature {i}: expected a Feature, got {feature!r:.80}")
        if not _picked(feature, classification, object_type):
            continue
        geometry = feature.get("geometry")
        if geometry is None:
            continue
        polygons += _geometry_polygons(geometry, _feature_label(i, feature))
    return polygons

"""Object-level corrections of a mask window: delete, clean, fill, smooth, merge, split.

An *object* is an 8-connected component of non-zero pixels, as everywhere in
this package (:mod:`slide_unet.core.objects.components`). Masks are usually ``uint8``
0/1, but a Labels layer may hold instance ids: any non-zero value is
foreground, and pixels that stay foreground keep their value.

Every function reads a 2-D numpy window and returns a :class:`Change` (the
pixels that change and their new values) instead of modifying the window. The
napari widget applies it with ``layer.data_setitem(change.indices,
change.values)`` inside ``layer.block_history()``, so one use of a tool is one
undo step, and writes the same pixels on to the slide's mask store. That is
why a change lists only pixels whose value really changes.

The window is a view of a larger mask: objects may continue past its border.
Holes touching the border are therefore not holes, and smoothing treats the
mask past the border as a copy of its edge rather than as background (which
would erode every object cut by the window).

Sizes given in micrometres are converted with the pixel size ``mpp`` (µm per
pixel); with ``mpp=None`` they are taken as pixels. This module is part of the
napari-free core: it never imports napari, Qt or magicgui.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from slide_unet.core.errors import InputError
from slide_unet.core.objects.morphology import dilate, erode, flood, persistent_peaks

__all__ = [
    "MIN_NECK_DEPTH",
    "Change",
    "delete_object",
    "fill_holes",
    "merge_objects",
    "remove_small_objects",
    "smooth",
    "split_object",
]

#: A distance-transform peak is a separate part only if, between it and any
#: higher peak, the object narrows by at least this many pixels (in radius).
#: Smaller dips are the noise of jagged outlines, not necks between objects.
MIN_NECK_DEPTH = 1.0

_EIGHT = np.ones((3, 3), dtype=bool)
# Background regions are 4-connected: the dual of 8-connected objects, so a
# diagonal line of object pixels closes a hole.
_FOUR = ndimage.generate_binary_structure(2, 1)

SmoothOperation = Literal["open", "close", "open-close"]


@dataclass(frozen=True, eq=False)
class Change:
    """Pixels of a window that change, and their new values.

    Attributes
    ----------
    indices : tuple of numpy.ndarray
        Row and column indices (``intp``) of the changed pixels.
    values : numpy.ndarray
        New value of each pixel, in the window's dtype.

    ``len(change)`` is the number of changed pixels; an empty change is false.
    """

    indices: tuple[np.ndarray, np.ndarray]
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.values.size)

    def __bool__(self) -> bool:
        return self.values.size > 0

    def apply(self, array: np.ndarray) -> None:
        """Write the change into ``array`` (a numpy array the window's shape), in place."""
        array[self.indices] = self.values

    @classmethod
    def empty(cls, dtype: np.dtype) -> Change:
        """A change of no pixels."""
        none = np.zeros(0, dtype=np.intp)
        return cls((none, none.copy()), np.zeros(0, dtype=dtype))

    @classmethod
    def between(cls, before: np.ndarray, after: np.ndarray) -> Change:
        """The change that turns ``before`` into ``after`` (same shape)."""
        rows, cols = np.nonzero(before != after)
        return cls((rows, cols), after[rows, cols].astype(before.dtype, copy=False))


# -- helpers ---------------------------------------------------------------------------------


def _check_window(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"expected a 2-D mask window, got an array of shape {mask.shape}")
    return mask


def _pixel(mask: np.ndarray, row: float, col: float) -> tuple[int, int] | None:
    """The pixel under a point (napari's data coordinates: pixel centres are
    whole numbers), or None outside the window."""
    r, c = round(float(row)), round(float(col))
    if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]:
        return r, c
    return None


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask != 0, structure=_EIGHT)


def _pixels_of(labels: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pixels labelled ``index``, searched in its bounding box only."""
    box = ndimage.find_objects(labels, max_label=index)[index - 1]
    rows, cols = np.nonzero(labels[box] == index)
    return rows + box[0].start, cols + box[1].start


def _set(mask: np.ndarray, indices: tuple[np.ndarray, np.ndarray], value: int) -> Change:
    """Set pixels to one value, listing only those that differ from it."""
    keep = mask[indices] != value
    rows, cols = indices[0][keep], indices[1][keep]
    return Change((rows, cols), np.full(rows.size, value, dtype=mask.dtype))


def _pixel_area(area: float, mpp: float | None, what: str) -> float:
    """An area in µm² as pixels (or as pixels already when ``mpp`` is None)."""
    if area < 0:
        raise InputError(f"{what} must be >= 0, got {area}")
    if mpp is None:
        return float(area)
    if not mpp > 0:
        raise InputError(f"the pixel size (mpp) must be > 0 µm, got {mpp}")
    return float(area) / float(mpp) ** 2


# -- delete, remove small, fill holes ------------------------------------------------------


def delete_object(mask: np.ndarray, row: float, col: float) -> Change:
    """Erase the whole object under a point.

    Parameters
    ----------
    mask : numpy.ndarray
        2-D window.
    row, col : float
        The point, in the window's pixel coordinates (rounded to the nearest pixel).

    Returns
    -------
    Change
        The object's pixels set to 0; empty when the point is on background
        or outside the window.
    """
    mask = _check_window(mask)
    at = _pixel(mask, row, col)
    if at is None or mask[at] == 0:
        return Change.empty(mask.dtype)
    labels, _ = _label(mask)
    return _set(mask, _pixels_of(labels, int(labels[at])), 0)


def remove_small_objects(mask: np.ndarray, min_area_um2: float, mpp: float | None) -> Change:
    """Erase every object smaller than an area.

    Parameters
    ----------
    mask : numpy.ndarray
        2-D window.
    min_area_um2 : float
        Objects with a smaller area are erased; an object of exactly this area stays.
    mpp : float or None
        Microns per pixel. None: `min_area_um2` is taken as a number of pixels.

    Returns
    -------
    Change
        The small objects' pixels set to 0. An object cut by the window's
        border is judged by its part inside the window.
    """
    mask = _check_window(mask)
    threshold = _pixel_area(min_area_um2, mpp, "the minimum area")
    labels, count = _label(mask)
    if count == 0:
        return Change.empty(mask.dtype)
    small = np.bincount(labels.ravel(), minlength=count + 1) < threshold
    small[0] = False
    rows, cols = np.nonzero(small[labels])
    return Change((rows, cols), np.zeros(rows.size, dtype=mask.dtype))


def fill_holes(
    mask: np.ndarray, max_hole_um2: float | None = None, mpp: float | None = None
) -> Change:
    """Fill the holes of objects with the value of the object around them.

    A hole is a 4-connected region of background that does not touch the
    window's border (past the border it may be open). An object inside a hole
    (an island in a lake) does not stop the hole from being filled.

    Parameters
    ----------
    mask : numpy.ndarray
        2-D window.
    max_hole_um2 : float, optional
        Fill only holes of at most this area (default: every hole).
    mpp : float or None
        Microns per pixel. None: `max_hole_um2` is taken as a number of pixels.

    Returns
    -------
    Change
        Each hole's pixels set to the value of the object enclosing it.
    """
    mask = _check_window(mask)
    holes, count = ndimage.label(mask == 0, structure=_FOUR)
    if count == 0:
        return Change.empty(mask.dtype)
    keep = np.ones(count + 1, dtype=bool)
    keep[0] = False
    keep[np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))] = False
    if max_hole_um2 is not None:
        limit = _pixel_area(max_hole_um2, mpp, "the maximum hole area")
        keep &= np.bincount(holes.ravel(), minlength=count + 1) <= limit
    value = np.zeros(count + 1, dtype=mask.dtype)
    boxes = ndimage.find_objects(holes)
    for index in np.flatnonzero(keep):
        top, left = boxes[index - 1]
        # The pixel above a hole's first pixel (in row order) is on the hole's
        # outer boundary: it belongs to the enclosing object, never to an island.
        first = left.start + int(np.argmax(holes[top.start, left] == index))
        value[index] = mask[top.start - 1, first]
    rows, cols = np.nonzero(keep[holes])
    return Change((rows, cols), value[holes[rows, cols]])


# -- smoothing -------------------------------------------------------------------------------


def _disk_radius(radius_um: float, mpp: float | None) -> int:
    if not radius_um > 0:
        raise InputError(f"the smoothing radius must be > 0, got {radius_um}")
    if mpp is not None and not mpp > 0:
        raise InputError(f"the pixel size (mpp) must be > 0 µm, got {mpp}")
    return max(1, round(radius_um / mpp if mpp else radius_um))


def smooth(
    mask: np.ndarray,
    radius_um: float,
    mpp: float | None,
    operation: SmoothOperation = "open",
) -> Change:
    """Smooth outlines by a morphological opening and/or closing with a disk.

    Parameters
    ----------
    mask : numpy.ndarray
        2-D window.
    radius_um : float
        Radius of the disk in µm; in pixels ``radius_um / mpp``, rounded, at least 1.
    mpp : float or None
        Microns per pixel. None: `radius_um` is taken as pixels.
    operation : {"open", "close", "open-close"}
        ``"open"`` removes spurs, bridges and specks narrower than the disk;
        ``"close"`` fills gaps and notches narrower than it; ``"open-close"``
        does both, in that order.

    Returns
    -------
    Change
        Removed pixels set to 0; added pixels set to the value of the nearest
        object pixel of the original window (so instance ids are kept).
    """
    mask = _check_window(mask)
    if operation not in ("open", "close", "open-close"):
        raise InputError(f"operation must be 'open', 'close' or 'open-close', got {operation!r}")
    radius = _disk_radius(radius_um, mpp)
    foreground = mask != 0
    if not foreground.any():
        return Change.empty(mask.dtype)
    # Work on the objects' bounding box plus a margin wider than the four
    # operations reach, padded by copying the edge: past the window's border
    # the mask is assumed to go on as it was, past the box it is background.
    margin = 4 * radius + 2
    rows, cols = np.nonzero(foreground.any(axis=1))[0], np.nonzero(foreground.any(axis=0))[0]
    y0, y1 = max(0, rows[0] - margin), min(mask.shape[0], rows[-1] + 1 + margin)
    x0, x1 = max(0, cols[0] - margin), min(mask.shape[1], cols[-1] + 1 + margin)
    before = foreground[y0:y1, x0:x1]
    after = np.pad(before, margin, mode="edge")
    if operation in ("open", "open-close"):
        after = dilate(erode(after, radius), radius)
    if operation in ("close", "open-close"):
        after = erode(dilate(after, radius), radius)
    after = after[margin:-margin, margin:-margin]

    window = mask[y0:y1, x0:x1]
    new = np.where(after, window, 0).astype(mask.dtype, copy=False)
    added = after & ~before
    if added.any():
        values = np.unique(window[before])
        if values.size == 1:
            new[added] = values[0]
        else:
            # An added pixel is within the radius of an object pixel: look for
            # the nearest only around the added pixels.
            rows, cols = np.nonzero(added)
            box = tuple(
                slice(max(0, int(i.min()) - radius - 1), int(i.max()) + radius + 2)
                for i in (rows, cols)
            )
            near = ndimage.distance_transform_edt(
                ~before[box], return_distances=False, return_indices=True
            )
            r, c = rows - box[0].start, cols - box[1].start
            new[rows, cols] = window[box][near[0][r, c], near[1][r, c]]
    change = Change.between(window, new)
    return Change((change.indices[0] + y0, change.indices[1] + x0), change.values)


# -- merging ---------------------------------------------------------------------------------


def _objects_under(
    mask: np.ndarray, labels: np.ndarray, points: Sequence[tuple[float, float]]
) -> list[tuple[int, tuple[int, int]]]:
    """Distinct objects under the points, in the points' order, with the first
    pixel clicked on each."""
    found: dict[int, tuple[int, int]] = {}
    for row, col in points:
        at = _pixel(mask, row, col)
        if at is not None and labels[at] and int(labels[at]) not in found:
            found[int(labels[at])] = at
    return list(found.items())


def _hull_pixels(union: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies in the convex hull of the union's pixels (as
    unit squares). That is every pixel whose square touches the hull of the
    pixel centres, so the filled hull is 4-connected, however thin."""
    rows = np.flatnonzero(union.any(axis=1))
    first = np.argmax(union[rows], axis=1)
    last = union.shape[1] - 1 - np.argmax(union[rows, ::-1], axis=1)
    # The hull of a set is the hull of each row's two ends; each end pixel
    # contributes its four corners.
    corners = np.concatenate(
        [
            np.stack([rows + dy, cols + dx], axis=1)
            for cols, dx in ((first, -0.5), (last, 0.5))
            for dy in (-0.5, 0.5)
        ]
    )
    hull = ConvexHull(corners)
    normal_y, normal_x, offset = hull.equations.T
    y = np.arange(union.shape[0], dtype=float)[:, None]
    tolerance = 1e-9
    # Inside: normal . (y, x) + offset <= 0 for every facet; per row that
    # bounds x from below or above.
    bound = (tolerance - offset - normal_y * y) / np.where(normal_x == 0, 1, normal_x)
    flat = np.abs(normal_x) < 1e-12
    low = np.where((normal_x < 0) & ~flat, bound, -np.inf).max(axis=1)
    high = np.where((normal_x > 0) & ~flat, bound, np.inf).min(axis=1)
    blocked = (flat & (normal_y * y + offset > tolerance)).any(axis=1)
    x = np.arange(union.shape[1])
    inside = (x >= low[:, None]) & (x <= high[:, None])
    inside[blocked] = False
    return inside


def merge_objects(mask: np.ndarray, points: Sequence[tuple[float, float]]) -> Change:
    """Join the objects under two or more points into one object.

    The convex hull of the objects' pixels is filled: background inside it
    takes the value of the first point's object; object pixels keep their
    values (an unselected object inside the hull joins too).

    Parameters
    ----------
    mask : numpy.ndarray
        2-D window.
    points : sequence of (row, col)
        Points in the window's pixel coordinates; points on background are ignored.

    Returns
    -------
    Change
        The background pixels of the hull, set to the first object's value.

    Raises
    ------
    ValueError
        Fewer than two different objects are under the points.
    """
    mask = _check_window(mask)
    labels, _ = _label(mask)
    objects = _objects_under(mask, labels, points)
    if len(objects) < 2:
        raise InputError(
            f"merging needs points on at least two different objects; the {len(points)} "
            f"point(s) given are on {len(objects)}"
        )
    boxes = ndimage.find_objects(labels)
    box = tuple(
        slice(
            min(boxes[i - 1][axis].start for i, _ in objects),
            max(boxes[i - 1][axis].stop for i, _ in objects),
        )
        for axis in (0, 1)
    )
    union = np.isin(labels[box], [i for i, _ in objects])
    fill = _hull_pixels(union) & (mask[box] == 0)
    rows, cols = np.nonzero(fill)
    value = mask[objects[0][1]]
    return Change(
        (rows + box[0].start, cols + box[1].start), np.full(rows.size, value, dtype=mask.dtype)
    )


# -- splitting -------------------------------------------------------------------------------


def split_object(mask: np.ndarray, row: float, col: float, pieces: int = 2) -> Change:
    """Cut the object under a point into parts along its necks.

    Markers are the ``pieces`` most persistent peaks of the object's distance
    transform (the centres of its round parts); a watershed of the inverted
    distance from them finds where the parts meet, and the pixels there are
    set to 0. The cut is made on one side of each meeting line, so the parts
    are separate 8-connected objects, not only 4-connected ones. Values of the
    remaining pixels are kept (instance ids are not renumbered).

    Parameters
    ----------
    mask : numpy.ndarray
        2-D window.
    row, col : float
        The point, in the window's pixel coordinates.
    pieces : int
        Number of parts to cut the object into (at least 2).

    Returns
    -------
    Change
        The cut pixels, set to 0.

    Raises
    ------
    ValueError
        The point is on background or outside the window, or the object has
        fewer than `pieces` parts separated by a neck at least
        :data:`MIN_NECK_DEPTH` pixels deep (a round or straight object).
    """
    mask = _check_window(mask)
    if int(pieces) != pieces or pieces < 2:
        raise InputError(f"pieces must be a whole number >= 2, got {pieces}")
    at = _pixel(mask, row, col)
    if at is None or mask[at] == 0:
        raise InputError(f"there is no object at ({row}, {col}) to split")
    labels, _ = _label(mask)
    index = int(labels[at])
    box = ndimage.find_objects(labels, max_label=index)[index - 1]
    # One pixel of margin, so the distance is measured to the object's outline
    # on every side the window does not cut.
    box = tuple(
        slice(max(0, s.start - 1), min(n, s.stop + 1))
        for s, n in zip(box, mask.shape, strict=True)
    )
    obj = labels[box] == index
    distance = ndimage.distance_transform_edt(obj)
    peaks = persistent_peaks(distance)
    if len(peaks) < pieces or peaks[pieces - 1][0] < MIN_NECK_DEPTH:
        found = sum(1 for depth, _ in peaks if depth >= MIN_NECK_DEPTH)
        raise InputError(
            f"cannot split the object at ({row}, {col}) into {pieces} parts: it has "
            f"{found} part(s) between necks (narrowings of >= {MIN_NECK_DEPTH:g} px) to cut along"
        )
    regions = flood(distance, [position for _, position in peaks[:pieces]])
    # Cut each pixel with a higher-numbered part among its 8 neighbours: then
    # no two pixels of different parts are 8-neighbours any more.
    cut = obj & (ndimage.maximum_filter(regions, footprint=_EIGHT) > regions)
    _, parts = ndimage.label(obj & ~cut, structure=_EIGHT)
    if parts < 2:
        raise InputError(f"cannot split the object at ({row}, {col}): the cut leaves one part")
    rows, cols = np.nonzero(cut)
    return Change(
        (rows + box[0].start, cols + box[1].start), np.zeros(rows.size, dtype=mask.dtype)
    )

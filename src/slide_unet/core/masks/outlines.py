"""Pixel-edge outlines of the objects of a label image, and polygons back to pixels.

The geometry under :mod:`slide_unet.core.masks.geojson`, in numpy only.

:func:`object_outlines` traces, for each connected object of a 2-D array,
the polygons whose edges run exactly between its pixels and the others, with
corners at integer pixel-corner coordinates ``(x, y)`` (x right, y down) and
collinear points merged. :func:`rasterise` fills polygons back, a pixel per
centre inside, so the two are exact inverses.

Objects are 8-connected sets of pixels of one non-zero value; each object's
polygons are its 4-connected parts (pixels touching only at a corner are
separate polygons, as valid simple-feature geometry requires). Exterior rings
have a positive shoelace area, holes a negative one (RFC 7946's right-hand
rule, on the numbers). A ring that would pass one corner twice is split there
into an exterior and a hole (or an island) that touch at that corner.

Everything per pixel is whole-array numpy (boundary runs; objects labelled
from runs of equal values joined across rows by a vectorised union-find);
only the chaining of segments into rings is a Python loop, over corners.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Objects", "object_outlines", "polygon_boxes", "rasterise"]

#: A polygon: its exterior ring, then its holes; each ring a list of closed
#: ``[x, y]`` corner positions (the first repeated at the end).
Polygon = list[list[list[int]]]

# Directions of boundary segments, numbered so that (d + 1) % 4 is a right
# turn on screen (x right, y down): east, south, west, north.
_E, _S, _W, _N = 0, 1, 2, 3


# -- tracing -------------------------------------------------------------------


def _runs(code: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal non-zero values along each row of ``code``.

    Returns ``(row, start, stop, value)`` arrays, in row-major order.
    """
    rows, width = code.shape
    padded = np.zeros((rows, width + 2), dtype=code.dtype)
    padded[:, 1:-1] = code
    change = padded[:, 1:] != padded[:, :-1]
    r, x = np.nonzero(change)
    value_after = padded[r, x + 1]
    begins = np.flatnonzero(value_after != 0)
    # Every run ends at the next change in its row (the padding closes it).
    return r[begins], x[begins], x[begins + 1], value_after[begins]


def _segments(a: np.ndarray) -> dict[str, np.ndarray]:
    """Maximal straight boundary segments of every object of ``a``, directed
    so that the object lies on their right on screen (left with y up)."""
    h, w = a.shape
    q = np.zeros((h + 2, w + 2), dtype=a.dtype)
    q[1:-1, 1:-1] = a
    parts = []
    # Horizontal boundaries, at corner rows y = 0..h.
    upper, lower = q[:-1, 1:-1], q[1:, 1:-1]
    differs = upper != lower
    y, x0, x1, lab = _runs(np.where(differs, lower, 0))  # top edges: east
    parts.append((lab, x0, y, x1, y, _E))
    y, x0, x1, lab = _runs(np.where(differs, upper, 0))  # bottom edges: west
    parts.append((lab, x1, y, x0, y, _W))
    del upper, lower, differs
    # Vertical boundaries, at corner columns x = 0..w (runs along y).
    left, right = q[1:-1, :-1], q[1:-1, 1:]
    differs = left != right
    x, y0, y1, lab = _runs(np.where(differs, right, 0).T)  # left edges: north
    parts.append((lab, x, y1, x, y0, _N))
    x, y0, y1, lab = _runs(np.where(differs, left, 0).T)  # right edges: south
    parts.append((lab, x, y0, x, y1, _S))
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(("label", "sx", "sy", "ex", "ey")):
        out[name] = np.concatenate([np.asarray(p[i], dtype=np.int64) for p in parts])
    out["dir"] = np.concatenate([np.full(len(p[0]), p[5], dtype=np.int64) for p in parts])
    return out


def _successors(seg: dict[str, np.ndarray], width: int) -> np.ndarray:
    """Index of the segment that follows each one along its ring.

    At a corner where two pixels of one object touch only diagonally, two
    rings pass; turning right keeps each ring around its own pixel, so such
    pixels end up in separate polygons.
    """
    n_vertices = width + 1
    _, label = np.unique(seg["label"], return_inverse=True)
    label = label.astype(np.int64)
    nv = (seg["ey"].max(initial=0) + 2) * n_vertices

    def key(vx: np.ndarray, vy: np.ndarray, direction: np.ndarray) -> np.ndarray:
        return ((label * nv) + vy * n_vertices + vx) * 4 + direction

    start_keys = key(seg["sx"], seg["sy"], seg["dir"])
    order = np.argsort(start_keys, kind="stable")
    sorted_keys = start_keys[order]

    def find(direction: np.ndarray) -> np.ndarray:
        wanted = key(seg["ex"], seg["ey"], direction)
        pos = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
        hit = sorted_keys[pos] == wanted
        return np.where(hit, order[pos], -1)

    right = find((seg["dir"] + 1) % 4)
    left = find((seg["dir"] + 3) % 4)
    successor = np.where(right >= 0, right, left)
    if successor.size and successor.min() < 0:  # pragma: no cover - a bug, not bad input
        raise RuntimeError("internal error: an outline does not close")
    return successor


def _split_touching(corners: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a ring that passes a corner twice into simple rings."""
    if len(set(corners)) == len(corners):
        return [corners]
    loops: list[list[tuple[int, int]]] = []
    stack: list[tuple[int, int]] = []
    where: dict[tuple[int, int], int] = {}
    for corner in corners:
        at = where.get(corner)
        if at is None:
            where[corner] = len(stack)
            stack.append(corner)
            continue
        loops.append(stack[at:])
        for dropped in stack[at + 1 :]:
            del where[dropped]
        del stack[at + 1 :]
    loops.append(stack)
    return loops


class _Rings:
    """Simple rings as flat corner arrays.

    Ring ``i`` has corners ``x[starts[i]:starts[i + 1]]`` (and ``y``), not
    repeated at the end; ``(px[i], py[i])`` is an object pixel next to it,
    which tells the object and polygon it belongs to.
    """

    def __init__(self, corners: list[tuple[int, int]], starts: list[int], pixels: list) -> None:
        xy = np.array(corners, dtype=np.int64).reshape(-1, 2)
        self.x, self.y = xy[:, 0], xy[:, 1]
        self.starts = np.array(starts, dtype=np.int64)
        pixel = np.array(pixels, dtype=np.int64).reshape(-1, 2)
        self.px, self.py = pixel[:, 0], pixel[:, 1]

    def __len__(self) -> int:
        return len(self.starts) - 1

    def areas2(self) -> np.ndarray:
        """Twice each ring's signed shoelace area (positive: exterior)."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        nxt = np.arange(1, len(self.x) + 1)
        nxt[self.starts[1:] - 1] = self.starts[:-1]
        cross = self.x * self.y[nxt] - self.x[nxt] * self.y
        return np.add.reduceat(cross, self.starts[:-1])


def _trace(a: np.ndarray) -> _Rings:
    """Every simple boundary ring of ``a``."""
    seg = _segments(a)
    if seg["label"].size == 0:
        return _Rings([], [0], [])
    successor = _successors(seg, a.shape[1]).tolist()
    sx, sy = seg["sx"].tolist(), seg["sy"].tolist()
    # The object pixel on the right (screen) of a segment's first unit edge.
    pixel_dx = (0, -1, -1, 0)
    pixel_dy = (0, 0, -1, -1)
    visited = bytearray(len(successor))
    corners_all: list[tuple[int, int]] = []
    starts, pixels = [0], []
    for first in range(len(successor)):
        if visited[first]:
            continue
        corners = []
        i = first
        while not visited[i]:
            visited[i] = 1
            corners.append((sx[i], sy[i]))
            i = successor[i]
        for loop in _split_touching(corners):
            # Segments alternate horizontal and vertical: one of the first two
            # is horizontal, and the pixel on its right tells the object.
            (x0, y0), (x1, y1) = loop[0], loop[1]
            if y0 != y1:
                (x0, y0), (x1, y1) = loop[1], loop[2 % len(loop)]
            d = _E if x1 > x0 else _W
            pixels.append((x0 + pixel_dx[d], y0 + pixel_dy[d]))
            corners_all += loop
            starts.append(len(corners_all))
    return _Rings(corners_all, starts, pixels)


# -- connected objects ----------------------------------------------------------


def _union(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Root (smallest member) of each node's component, for edges ``u``-``v``."""
    parent = np.arange(n)
    while u.size:
        pu, pv = parent[u], parent[v]
        keep = pu != pv
        if not keep.any():
            break
        u, v, pu, pv = u[keep], v[keep], pu[keep], pv[keep]
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


class Objects:
    """The connected objects of a 2-D array, from its runs of equal values.

    Attributes
    ----------
    row, start, stop, value : numpy.ndarray
        Every run of equal non-zero values along a row, ``[start, stop)``, in
        row-major order.
    object : numpy.ndarray
        For each run, the index of the first run of its object (8-connected).
    polygon : numpy.ndarray
        For each run, the index of the first run of its 4-connected part.
    """

    def __init__(self, a: np.ndarray) -> None:
        self.width = a.shape[1]
        row, start, stop, value = _runs(a)
        self.row, self.start, self.stop, self.value = row, start, stop, value
        self.stride = self.width + 2
        self.start_key = row * self.stride + start
        self.stop_key = row * self.stride + stop
        self.object = self._label(reach=1)  # 8-connectivity: objects
        self.polygon = self._label(reach=0)  # 4-connectivity: polygons

    def _label(self, reach: int) -> np.ndarray:
        """Component of each run; ``reach`` 1 also joins runs touching at corners."""
        row, stride = self.row, self.stride
        above = (row - 1) * stride
        lo = np.searchsorted(self.stop_key, above + self.start - reach, side="right")
        hi = np.searchsorted(self.start_key, above + self.stop + reach, side="left")
        counts = np.maximum(hi - lo, 0)
        below = np.repeat(np.arange(row.size), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        upper = lo[below] + offsets
        same = self.value[upper] == self.value[below]
        return _union(row.size, upper[same], below[same])

    def run_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the run holding each pixel ``(x, y)`` (object pixels only)."""
        return np.searchsorted(self.start_key, y * self.stride + x, side="right") - 1


def object_outlines(
    a: np.ndarray,
    objects: Objects,
    keep: np.ndarray | None = None,
    offset: tuple[int, int] = (0, 0),
) -> list[tuple[int, list[Polygon]]]:
    """Trace the polygons of each object of ``a``.

    Parameters
    ----------
    a : numpy.ndarray
        2-D integer array; 0 is background.
    objects : Objects
        ``Objects(a)``.
    keep : numpy.ndarray of bool, optional
        Indexed by an object's first run: trace only the objects marked.
    offset : tuple of int
        ``(x, y)`` added to every corner (where ``a`` lies in a bigger mask).

    Returns
    -------
    list of (int, list of Polygon)
        For each object, in order of its first pixel (row-major): its first
        run's index and its polygons, each exterior ring first.
    """
    rings = _trace(a)
    if not len(rings):
        return []
    runs = objects.run_at(rings.px, rings.py)
    object_of = objects.object[runs].tolist()
    polygon_of = objects.polygon[runs].tolist()
    exterior = (rings.areas2() > 0).tolist()
    points = np.column_stack([rings.x + offset[0], rings.y + offset[1]]).tolist()
    starts = rings.starts.tolist()
    grouped: dict[int, dict[int, Polygon]] = {}
    for i, (obj, poly) in enumerate(zip(object_of, polygon_of, strict=True)):
        if keep is not None and not keep[obj]:
            continue
        ring = points[starts[i] : starts[i + 1]]
        ring.append(ring[0])
        polygon = grouped.setdefault(obj, {}).setdefault(poly, [])
        # The exterior first: the one ring of the polygon with positive area.
        if exterior[i]:
            polygon.insert(0, ring)
        else:
            polygon.append(ring)
    return [(obj, [grouped[obj][p] for p in sorted(grouped[obj])]) for obj in sorted(grouped)]


# -- polygons back to pixels -------------------------------------------------------


def _edges(polygons: Sequence[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """All ring edges as ``(m, 4)`` rows ``x0, y0, x1, y1``, and their polygon."""
    rings = [ring for rings in polygons for ring in rings]
    if not rings:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    owner_of_ring = np.repeat(np.arange(len(polygons)), [len(r) for r in polygons])
    lengths = np.array([len(r) for r in rings])
    points = np.concatenate(rings)
    # Edge k joins point k to the next point of its ring (the first after the last).
    nxt = np.arange(1, len(points) + 1)
    ends = np.cumsum(lengths)
    nxt[ends - 1] = ends - lengths
    edges = np.hstack([points, points[nxt]])
    owner = np.repeat(owner_of_ring, lengths)
    # Closed rings repeat their first point: drop the zero-length closing edge.
    keep = (edges[:, 0] != edges[:, 2]) | (edges[:, 1] != edges[:, 3])
    return edges[keep], owner[keep]


#: Crossings of an edge with a pixel row's centre line handled in one pass, at
#: most (about 100 bytes each). A polygon that zigzags across many rows crosses
#: them many times: a 2 MB file of 100,000 edges over 1,024 rows would need
#: 10 GB at once.
_CROSSINGS_PER_PASS = 2**20
#: Pixels of a pass's running sums (int32, 16 MB), at most: a row at least.
_PIXELS_PER_PASS = 2**22


def rasterise(
    polygons: Sequence[list[np.ndarray]],
    region: tuple[int, int, int, int],
) -> np.ndarray:
    """Fill polygons (with holes) into a window of a mask.

    A pixel is set when its centre is inside a polygon (even-odd rule over the
    polygon's rings, so holes stay empty); a centre exactly on a left or top
    edge counts as inside, one on a right or bottom edge as outside, so
    polygons along pixel edges fill exactly the pixels they outline.

    The rows are filled in passes of at most about a million edge crossings
    and four million pixels, so memory stays bounded whatever the polygons
    (a pass needs at least one row: a single row crossed by millions of edges
    takes them all, which the file had to hold anyway).

    Parameters
    ----------
    polygons : sequence of list of numpy.ndarray
        Each polygon a list of rings, each an ``(n, 2)`` array of ``(x, y)``,
        finite.
    region : tuple of int
        ``(y0, y1, x0, x1)``: the window of the mask to fill.

    Returns
    -------
    numpy.ndarray
        ``uint8`` 0/1 array of shape ``(y1 - y0, x1 - x0)``.
    """
    y0, y1, x0, x1 = region
    out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    edges, owner = _edges(polygons)
    if not len(edges) or out.size == 0:
        return out
    ya, yb = edges[:, 1], edges[:, 3]
    lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
    # Pixel rows whose centre r + 0.5 lies in [lo, hi): half-open, so a
    # vertex shared by two edges is crossed once.
    first = np.maximum(np.ceil(lo - 0.5), y0).astype(np.int64)
    stop = np.minimum(np.ceil(hi - 0.5), y1).astype(np.int64)
    keep = stop > first
    edges, owner, first, stop = edges[keep], owner[keep], first[keep], stop[keep]
    if not len(edges):
        return out
    # Crossings per row, then passes of whole rows with at most so many.
    change = np.zeros(y1 - y0 + 1, dtype=np.int64)
    np.add.at(change, first - y0, 1)
    np.add.at(change, stop - y0, -1)
    crossings = np.cumsum(np.cumsum(change[:-1]))
    most_rows = max(1, _PIXELS_PER_PASS // (x1 - x0 + 1))
    row = 0
    while row < y1 - y0:
        done = crossings[row - 1] if row else 0
        end = int(np.searchsorted(crossings, done + _CROSSINGS_PER_PASS, side="right"))
        end = min(max(end, row + 1), row + most_rows)
        _fill_rows(out, edges, owner, first, stop, (y0 + row, y0 + end, x0, x1), y0)
        row = end
    return out


def _fill_rows(
    out: np.ndarray,
    edges: np.ndarray,
    owner: np.ndarray,
    first: np.ndarray,
    stop: np.ndarray,
    window: tuple[int, int, int, int],
    top: int,
) -> None:
    """Fill the rows ``window[0]:window[1]`` of `out` (whose first row is `top`)
    from the edges crossing them (rows ``first:stop`` each)."""
    r0, r1, x0, x1 = window
    first, stop = np.maximum(first, r0), np.minimum(stop, r1)
    counts = np.maximum(stop - first, 0)
    keep = counts > 0
    edges, owner, first, counts = edges[keep], owner[keep], first[keep], counts[keep]
    if not len(edges):
        return
    which = np.repeat(np.arange(len(edges)), counts)
    rows = first[which] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    e = edges[which]
    t = (rows + 0.5 - e[:, 1]) / (e[:, 3] - e[:, 1])
    xs = e[:, 0] + t * (e[:, 2] - e[:, 0])
    order = np.lexsort((xs, rows, owner[which]))
    rows, xs = rows[order], xs[order]
    # Each polygon crosses each row an even number of times: pair them up.
    begin = np.clip(np.ceil(xs[0::2] - 0.5), x0, x1).astype(np.int64) - x0
    end = np.clip(np.ceil(xs[1::2] - 0.5), x0, x1).astype(np.int64) - x0
    row = rows[0::2] - r0
    span = end > begin
    delta = np.zeros((r1 - r0, out.shape[1] + 1), dtype=np.int32)
    np.add.at(delta, (row[span], begin[span]), 1)
    np.add.at(delta, (row[span], end[span]), -1)
    np.cumsum(delta[:, :-1], axis=1, out=delta[:, :-1])
    out[r0 - top : r1 - top][delta[:, :-1] > 0] = 1


def polygon_boxes(polygons: Sequence[list[np.ndarray]]) -> np.ndarray:
    """Bounding boxes ``(xmin, ymin, xmax, ymax)`` of each polygon's exterior."""
    if not polygons:
        return np.zeros((0, 4))
    exteriors = [rings[0] for rings in polygons]
    starts = np.cumsum([0] + [len(r) for r in exteriors[:-1]])
    points = np.concatenate(exteriors)
    return np.hstack(
        [np.minimum.reduceat(points, starts, axis=0), np.maximum.reduceat(points, starts, axis=0)]
    )

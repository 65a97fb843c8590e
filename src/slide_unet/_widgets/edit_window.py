"""*Edit here*: paint a slide's mask at full resolution, one window at a time.

napari cannot paint a multiscale Labels layer, and a slide's mask too large
for one editable layer is shown as one (:mod:`slide_unet._widgets._mask_layer`).
An edit window is the full-resolution part of the mask under the view (at most
:data:`WINDOW_SIDE` pixels a side) opened as an ordinary Labels layer on top
of it, with the same scale and a translate that puts it in place. Its data is
a :class:`StoreWindow`: an array-like over the store whose every write goes
straight to the store (full resolution, then the overviews of the written box),
so napari's brush, fill, eraser, polygon, undo and redo, and the Correct
tools, all land on disk as they happen. Nothing painted is ever only in memory;
*Done* just removes the window layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from qtpy.QtCore import QTimer

from slide_unet._widgets._layers import full_resolution, visible_region
from slide_unet.core.mask_store import MaskStore

if TYPE_CHECKING:
    import napari

__all__ = [
    "MIN_WINDOW_SIDE",
    "WINDOW_SIDE",
    "EditWindow",
    "StoreWindow",
    "unproxied",
    "window_region",
]

#: Largest side of an edit window (pixels): napari re-reads the whole window
#: on every refresh, and the object tools label all of it.
WINDOW_SIDE = 4096
#: Smallest side of an edit window where the image allows: zoomed far in, a
#: window the size of the view would end at the first pan.
MIN_WINDOW_SIDE = 1024
#: The view layer is refreshed this long after the last write of a burst (ms):
#: once per stroke or tool, not once per brush dab.
REFRESH_MS = 150

Box = tuple[int, int, int, int]


def unproxied(layer: Any) -> Any:
    """The layer itself, not napari's ``PublicOnlyProxy`` of it.

    napari hands plugin widgets a proxied viewer, and every layer taken from it
    is a new proxy object: ``is`` never matches, and attributes this package
    keeps on a layer (its mask store) warn as private access. The widgets
    keep plain layers.
    """
    return getattr(layer, "__wrapped__", layer)


def _axis(item: Any, size: int) -> tuple[int, int, Any]:
    """One axis of an index: its bounds ``(lo, hi)`` and the item relative to ``lo``."""
    if isinstance(item, slice):
        start, stop, step = item.indices(size)
        if step < 0:
            raise IndexError("an edit window does not take negative slice steps")
        if stop <= start:
            return 0, 0, slice(0, 0)
        return start, stop, slice(0, stop - start, step)
    if isinstance(item, int | np.integer):
        index = int(item) + (size if item < 0 else 0)
        if not 0 <= index < size:
            raise IndexError(f"index {int(item)} is out of bounds for an axis of size {size}")
        return index, index + 1, 0
    array = np.asarray(item)
    if array.dtype == bool:
        array = np.flatnonzero(array)
    if not np.issubdtype(array.dtype, np.integer):
        raise IndexError(f"an edit window takes integer or slice indices, got {array.dtype}")
    array = np.where(array < 0, array + size, array).astype(np.intp, copy=False)
    if array.size == 0:
        return 0, 0, array
    lo, hi = int(array.min()), int(array.max()) + 1
    if lo < 0 or hi > size:
        raise IndexError(f"an index is out of bounds for an axis of size {size}")
    return lo, hi, array - lo


class StoreWindow:
    """A rectangle of a mask store's full resolution, as a writable 2-D array.

    Reads come from the store; every assignment is written to the store at
    once with :meth:`MaskStore.write` (marked as a hand edit), which also
    rebuilds the overview levels of the written box. napari only ever indexes
    a Labels layer's data with slices, integers and integer arrays, which is
    all this takes.

    Parameters
    ----------
    store : MaskStore
        The slide's mask store.
    region : tuple of int
        ``(y0, y1, x0, x1)``: the rectangle, in full-resolution pixels.
    on_write : callable, optional
        Called with the written box ``(y0, y1, x0, x1)`` (store pixels) after each write.
    """

    def __init__(
        self, store: MaskStore, region: Box, on_write: Callable[[Box], None] | None = None
    ) -> None:
        y0, y1, x0, x1 = (int(v) for v in region)
        height, width = store.shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(
                f"the window {y0}:{y1}, {x0}:{x1} is not inside the mask of shape {store.shape}"
            )
        self.store = store
        self.region: Box = (y0, y1, x0, x1)
        self.shape = (y1 - y0, x1 - x0)
        self.dtype = store.dtype
        self.ndim = 2
        self.on_write = on_write

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def _parse(self, key: Any) -> tuple[Box, tuple[Any, Any]]:
        """The box an index touches (window pixels) and the index relative to it."""
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) == 1 and isinstance(key[0], np.ndarray) and key[0].ndim == 2:
            key = np.nonzero(key[0])  # a 2-D boolean mask
        at = next((i for i, item in enumerate(key) if item is Ellipsis), None)
        if at is not None:
            key = key[:at] + (slice(None),) * (3 - len(key)) + key[at + 1 :]
        key = key + (slice(None),) * (2 - len(key))
        if len(key) != 2:
            raise IndexError(f"too many indices for a 2-D edit window: {len(key)}")
        (y0, y1, rows), (x0, x1, cols) = (
            _axis(item, size) for item, size in zip(key, self.shape, strict=True)
        )
        return (y0, y1, x0, x1), (rows, cols)

    def _read(self, box: Box) -> np.ndarray:
        y0, y1, x0, x1 = box
        if y1 <= y0 or x1 <= x0:
            return np.zeros((y1 - y0, x1 - x0), dtype=self.dtype)
        top, _, left, _ = self.region
        return np.asarray(self.store.level0[top + y0 : top + y1, left + x0 : left + x1])

    def __getitem__(self, key: Any) -> Any:
        box, local = self._parse(key)
        return self._read(box)[local]

    def __setitem__(self, key: Any, value: Any) -> None:
        box, local = self._parse(key)
        y0, y1, x0, x1 = box
        if y1 <= y0 or x1 <= x0:
            return
        rows, cols = local
        if isinstance(rows, slice) and isinstance(cols, slice) and rows.step == cols.step == 1:
            block = np.broadcast_to(np.asarray(value), (y1 - y0, x1 - x0))
        else:
            block = self._read(box)
            block[local] = value
        top, _, left, _ = self.region
        self.store.write(top + y0, left + x0, block, edited=True)
        if self.on_write is not None:
            self.on_write((top + y0, top + y1, left + x0, left + x1))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self._read((0, self.shape[0], 0, self.shape[1]))
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        y0, y1, x0, x1 = self.region
        return f"StoreWindow({self.store.path.name!r}, {y0}:{y1}, {x0}:{x1})"


def window_region(
    visible: Box,
    shape: tuple[int, int],
    *,
    side: int = WINDOW_SIDE,
    min_side: int = MIN_WINDOW_SIDE,
) -> Box:
    """The edit window for a view: the visible region, at most ``side`` pixels
    a side (centred on the view), at least ``min_side`` where the image allows.

    Parameters
    ----------
    visible : tuple of int
        ``(y0, y1, x0, x1)`` on screen, in full-resolution pixels.
    shape : tuple of int
        The mask's full-resolution ``(height, width)``.
    """
    bounds = []
    for lo, hi, size in ((visible[0], visible[1], shape[0]), (visible[2], visible[3], shape[1])):
        length = min(max(hi - lo, min_side), side, size)
        start = (lo + hi) // 2 - length // 2
        start = min(max(start, 0), size - length)
        bounds += [start, start + length]
    return bounds[0], bounds[1], bounds[2], bounds[3]


class EditWindow:
    """An editable full-resolution window over a multiscale mask layer.

    Parameters
    ----------
    viewer : napari.Viewer
    view : napari.layers.Labels
        The multiscale Labels layer showing the store (view only).
    store : MaskStore
        The store behind `view`.
    region : tuple of int, optional
        ``(y0, y1, x0, x1)`` to open; default :func:`window_region` of the view.

    Attributes
    ----------
    layer : napari.layers.Labels
        The window: an ordinary Labels layer over a :class:`StoreWindow`.
    region : tuple of int
        Its ``(y0, y1, x0, x1)`` in full-resolution pixels.
    """

    def __init__(
        self, viewer: napari.Viewer, view: Any, store: MaskStore, region: Box | None = None
    ) -> None:
        self.viewer = viewer
        self.view = unproxied(view)
        self.store = store
        if region is None:
            shape = tuple(int(n) for n in full_resolution(view).shape[-2:])
            region = window_region(visible_region(viewer, view), shape)  # type: ignore[arg-type]
        self.array = StoreWindow(store, region, on_write=self._written)
        self.region = self.array.region
        y0, y1, x0, x1 = self.region
        scale = np.asarray(view.scale[-2:], dtype=float)
        translate = np.asarray(view.translate[-2:], dtype=float) + scale * (y0, x0)
        metadata = dict(view.metadata or {})
        metadata.pop("mask_store", None)  # find_mask_layer must keep finding the view
        metadata["edit_window"] = {"view": view.name, "region": list(self.region)}
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh_view)
        self.layer = unproxied(
            viewer.add_labels(
                self.array,
                name=f"{view.name} [edit {y0}:{y1}, {x0}:{x1}]",
                scale=tuple(scale),
                translate=tuple(translate),
                metadata=metadata,
                opacity=view.opacity,
            )
        )
        self.layer.mode = "paint"

    def _written(self, _box: Box) -> None:
        self._timer.start()  # restarted by each write: one refresh after a burst

    def refresh_view(self) -> None:
        """Show the store's current pixels in the multiscale view layer."""
        self._timer.stop()
        if any(isinstance(level, da.Array) for level in self.view.data):
            # napari caches dask chunks by task name: only new arrays are read afresh.
            self.view.data = self.store.dask_levels()
        else:
            self.view.refresh()

    @property
    def is_open(self) -> bool:
        """Whether the window layer is still in the viewer."""
        return self.layer in self.viewer.layers

    def close(self) -> None:
        """Remove the window layer (its edits are already in the store) and refresh the view."""
        if self.is_open:
            self.viewer.layers.remove(self.layer)
        if self.view in self.viewer.layers:
            self.refresh_view()
        self._timer.stop()

"""A rectangle of a mask store as a writable array that napari can show and paint.

The data of every editable mask layer made here is a :class:`StoreWindow`:
the whole mask of a small slide (:mod:`slide_unet._widgets._mask_layer`) or an
*Edit here* window of a large one (:mod:`slide_unet._widgets.edit_window`).
Reads come from the store and every write goes to it at once, with the
overviews of the written box rebuilt, so napari's brush, fill, eraser, undo
and redo, and the Correct tools, all land on disk as they happen.

No Qt here: the reader uses it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from slide_unet.core.mask_store import MaskStore

__all__ = ["Box", "StoreWindow", "unproxied"]

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
    once with :meth:`MaskStore.write` (marked as a hand edit unless
    ``edited=False``, as for the segmentation engine's output), which also
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
    edited : bool
        Whether writes are hand edits (the store's ``edited`` mark).
    """

    def __init__(
        self,
        store: MaskStore,
        region: Box,
        on_write: Callable[[Box], None] | None = None,
        *,
        edited: bool = True,
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
        self.edited = edited

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
        self.store.write(top + y0, left + x0, block, edited=self.edited)
        if self.on_write is not None:
            self.on_write((top + y0, top + y1, left + x0, left + x1))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self._read((0, self.shape[0], 0, self.shape[1]))
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        y0, y1, x0, x1 = self.region
        return f"StoreWindow({self.store.path.name!r}, {y0}:{y1}, {x0}:{x1})"

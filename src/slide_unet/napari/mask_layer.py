"""A slide's mask as a napari Labels layer backed by its autosave store.

The mask of a slide lives in a :class:`~slide_unet.core.masks.store.MaskStore`
(zarr, in the per-user data folder, keyed to the slide). Segmentation writes
into it and napari shows it, as :mod:`slide_unet.napari.layer_data` describes (an
editable, autosaved layer for an image up to ``EDITABLE_PIXELS``, a multiscale
view layer beyond). This module finds and tracks those layers in a viewer.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from slide_unet.core.masks.store import MaskStore
from slide_unet.napari.layers import unproxied

if TYPE_CHECKING:
    import napari

__all__ = [
    "attach_store",
    "edit_window_over",
    "find_mask_layer",
    "mask_store_of",
    "save_pending",
    "show_store_changes",
    "store_behind",
    "store_for_image",
]

#: The store behind each Labels layer made here (napari forbids new attributes on layers).
_STORES: weakref.WeakKeyDictionary[Any, MaskStore] = weakref.WeakKeyDictionary()


def store_for_image(layer: Any) -> MaskStore:
    """The mask store of an image layer's slide (created empty when new)."""
    from slide_unet.napari.layers import full_resolution, layer_mpp, slide_path

    shape = tuple(int(n) for n in full_resolution(layer).shape[:2])
    path = slide_path(layer)
    if path:
        return MaskStore.for_slide(path, shape, layer_mpp(layer))
    return MaskStore.for_key(f"layer-{layer.name}", shape, layer_mpp(layer))


def mask_store_of(layer: Any) -> MaskStore | None:
    """The store behind a Labels layer made here, or None."""
    return _STORES.get(unproxied(layer))


def store_behind(layer: Any) -> MaskStore | None:
    """The store behind a Labels layer: one made here, or the one a layer restored
    from its autosave by the reader names in its metadata (then remembered); None
    for a plain layer or a store that cannot be opened."""
    store = mask_store_of(layer)
    path = (layer.metadata or {}).get("mask_store")
    if store is None and path:
        try:
            store = MaskStore(path)
        except (OSError, ValueError):
            return None
        attach_store(layer, store)
    return store


def show_store_changes(view: Any, store: MaskStore) -> None:
    """Show the store's current pixels in a multiscale view layer of it."""
    import dask.array as da

    if any(isinstance(level, da.Array) for level in view.data):
        # napari caches dask chunks by task name: only new arrays are read afresh.
        view.data = store.dask_levels()
    else:
        view.refresh()


def edit_window_over(
    viewer: napari.Viewer, view: Any, box: tuple[int, int, int, int]
) -> tuple[Any, tuple[int, int]] | None:
    """The *Edit here* window layer of ``view`` that holds all of ``box``
    (``y0, x0, y1, x1`` in full-resolution pixels) and its top-left pixel, or None.

    A change to those pixels belongs in the window: written to the store
    beside it, it would be undone by the window's next autosave.
    """
    y0, x0, y1, x1 = box
    for layer in viewer.layers:
        window = (layer.metadata or {}).get("edit_window") or {}
        if window.get("view") != view.name or len(window.get("region") or ()) != 4:
            continue
        wy0, wy1, wx0, wx1 = (int(v) for v in window["region"])
        if wy0 <= y0 and y1 <= wy1 and wx0 <= x0 and x1 <= wx1:
            return layer, (wy0, wx0)
    return None


def find_mask_layer(viewer: napari.Viewer, store: MaskStore) -> Any | None:
    """The Labels layer already showing ``store``, or None."""
    from napari.layers import Labels

    for layer in viewer.layers:
        if isinstance(layer, Labels) and (layer.metadata or {}).get("mask_store") == str(
            store.path
        ):
            return layer
    return None


def attach_store(layer: Any, store: MaskStore) -> None:
    """Remember that ``layer`` shows ``store`` (see :func:`mask_store_of`).

    The layer's pixels need no watching: its data writes through to the store.
    """
    _STORES[unproxied(layer)] = store


def save_pending(*layers: Any) -> None:
    """Save now the edits of the last half second behind ``layers``, before
    something reads them: an autosaved window's own (an *Edit here* window, a
    small slide's mask), and every window of the store a multiscale view reads."""
    from slide_unet.core.masks.windows import AutosavedWindow, flush_windows

    for layer in layers:
        data = getattr(layer, "data", None)
        if isinstance(data, AutosavedWindow):
            data.flush()
        path = (getattr(layer, "metadata", None) or {}).get("mask_store")
        if path:
            flush_windows(path)

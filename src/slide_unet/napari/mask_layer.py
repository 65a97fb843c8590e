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

__all__ = ["attach_store", "find_mask_layer", "mask_store_of", "save_pending", "store_for_image"]

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

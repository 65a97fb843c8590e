"""A slide's mask as a napari Labels layer backed by its autosave store.

The mask of a slide lives in a :class:`~slide_unet.core.mask_store.MaskStore`
(zarr, in the per-user data folder, keyed to the slide). Segmentation writes
into it and napari shows it:

- an image up to :data:`EDITABLE_PIXELS` is shown as an ordinary Labels layer
  whose data is a :class:`~slide_unet._widgets._store_window.StoreWindow` over
  the whole store, so napari's brush, fill, eraser, undo and redo, and the
  Correct widget's tools, write straight into the store (overviews included):
  every edit is on disk as soon as it is made;
- a larger slide is shown as a multiscale Labels layer over the store's
  levels (napari cannot paint multiscale labels), refreshed as tiles land.

Either way the layer has the image's scale and translate (microns), so mask
and slide stay aligned at every zoom, and its metadata names the store
(``mask_store``) so other widgets and a reopened viewer find it again.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from slide_unet._widgets._store_window import StoreWindow, unproxied
from slide_unet.core.mask_store import MaskStore

if TYPE_CHECKING:
    import napari

__all__ = [
    "EDITABLE_PIXELS",
    "attach_store",
    "find_mask_layer",
    "mask_layer_kwargs",
    "mask_store_of",
    "store_for_image",
]

#: Largest image (pixels) whose mask is one editable Labels layer.
EDITABLE_PIXELS = 8192 * 8192

#: The store behind each Labels layer made here (napari forbids new attributes on layers).
_STORES: weakref.WeakKeyDictionary[Any, MaskStore] = weakref.WeakKeyDictionary()


def store_for_image(layer: Any) -> MaskStore:
    """The mask store of an image layer's slide (created empty when new)."""
    from slide_unet._widgets._layers import full_resolution, layer_mpp, slide_path

    shape = tuple(int(n) for n in full_resolution(layer).shape[:2])
    path = slide_path(layer)
    if path:
        return MaskStore.for_slide(path, shape, layer_mpp(layer))
    return MaskStore.for_key(f"layer-{layer.name}", shape, layer_mpp(layer))


def mask_store_of(layer: Any) -> MaskStore | None:
    """The store behind a Labels layer made here, or None."""
    return _STORES.get(unproxied(layer))


def mask_layer_kwargs(
    store: MaskStore,
    name: str,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    translate: tuple[float, float] = (0.0, 0.0),
    units: tuple[str, str] | None = None,
    slide_path: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Data and keyword arguments for ``viewer.add_labels`` showing ``store``.

    ``scale``, ``translate`` and ``units`` are the image layer's, so the two align.
    """
    height, width = store.shape
    multiscale = height * width > EDITABLE_PIXELS
    data = list(store.levels) if multiscale else StoreWindow(store, (0, height, 0, width))
    kwargs = {
        "name": name,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "multiscale": multiscale,
        "metadata": {"mask_store": str(store.path), "mpp": store.mpp, "slide_path": slide_path},
        "opacity": 0.5,
    }
    if units is not None:
        kwargs["units"] = tuple(units)
    return data, kwargs


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

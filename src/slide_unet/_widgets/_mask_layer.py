"""A slide's mask as a napari Labels layer backed by its autosave store.

The mask of a slide lives in a :class:`~slide_unet.core.mask_store.MaskStore`
(zarr, in the per-user data folder, keyed to the slide). Segmentation writes
into it and napari shows it:

- an image up to :data:`EDITABLE_PIXELS` is shown as an ordinary Labels layer
  whose data *is* the store's full-resolution zarr array, so napari's brush,
  fill, eraser and undo, and the Correct widget's tools, write straight into
  the store: every edit is on disk as soon as it is made;
- a larger slide is shown as a multiscale Labels layer over the store's
  levels (napari cannot paint multiscale labels), refreshed as tiles land.

Either way the layer has the image's scale and translate (microns), so mask
and slide stay aligned at every zoom, and its metadata names the store
(``mask_store``) so other widgets and a reopened viewer find it again.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from slide_unet.core.mask_store import MaskStore

if TYPE_CHECKING:
    import napari

__all__ = [
    "EDITABLE_PIXELS",
    "find_mask_layer",
    "mask_layer_kwargs",
    "mask_store_of",
    "store_for_image",
    "watch_edits",
]

#: Largest image (pixels) whose mask is one editable Labels layer.
EDITABLE_PIXELS = 8192 * 8192

#: The store behind each watched Labels layer (napari forbids new attributes on layers).
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
    return _STORES.get(layer)


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
    data = list(store.levels) if multiscale else store.level0
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


def _atom_box(atom: Any) -> tuple[int, int, int, int] | None:
    """The full-resolution box ``(y0, y1, x0, x1)`` a napari paint history atom touched."""
    key = getattr(atom, "slice_key", None)
    if key is not None:
        rows, cols = key[-2], key[-1]
        return int(rows.start or 0), int(rows.stop), int(cols.start or 0), int(cols.stop)
    indices = atom[0]
    if len(indices) < 2 or np.size(indices[-1]) == 0:
        return None
    rows, cols = np.asarray(indices[-2]), np.asarray(indices[-1])
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def watch_edits(layer: Any, store: MaskStore) -> None:
    """Keep ``store``'s overviews and its "edited" mark in step with hand edits.

    The pixels themselves are already in the store (the layer's data is its
    zarr array); each paint event (brush, fill, eraser, the Correct tools)
    marks the store as edited and rebuilds the overview levels of the boxes it
    touched.
    """
    if layer in _STORES:
        _STORES[layer] = store
        return
    _STORES[layer] = store

    def edited(event: Any) -> None:
        boxes = [box for atom in event.value if (box := _atom_box(atom)) is not None]
        if not boxes:
            return
        y0 = min(b[0] for b in boxes)
        y1 = max(b[1] for b in boxes)
        x0 = min(b[2] for b in boxes)
        x1 = max(b[3] for b in boxes)
        _STORES.get(layer, store).update_overviews(y0, y1, x0, x1, edited=True)

    layer.events.paint.connect(edited)

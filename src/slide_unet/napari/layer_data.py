"""napari layer data for a slide's mask store, without importing napari or Qt.

The reader (opening a slide brings its mask back) and the widgets (Segment
makes the layer) both show a :class:`~slide_unet.core.masks.store.MaskStore`
the same way:

- an image up to :data:`EDITABLE_PIXELS` as an ordinary Labels layer whose data
  is an :class:`~slide_unet.core.masks.windows.AutosavedWindow` over the whole
  store: napari's brush, fill, eraser, undo and redo, and the Correct tools,
  change memory at once and reach the store within a second;
- a larger slide as a multiscale Labels layer over the store's levels (napari
  cannot paint multiscale labels; *Edit here* opens a window to paint).

Either way the layer has the image's scale, translate and units (microns), so
mask and slide stay aligned at every zoom, and its metadata names the store
(``mask_store``) so the widgets find it again.
"""

from __future__ import annotations

import warnings
from typing import Any

from slide_unet.core.errors import MaskStoreWarning
from slide_unet.core.masks.salvage import TolerantLevel
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import AutosavedWindow

__all__ = [
    "EDITABLE_PIXELS",
    "editable_window",
    "layer_probabilities",
    "mask_layer_kwargs",
    "restored_mask_name",
    "worth_restoring",
]

#: Largest image (pixels) whose mask is one editable Labels layer.
EDITABLE_PIXELS = 8192 * 8192


def editable_window(
    store: MaskStore, region: tuple[int, int, int, int] | None = None
) -> AutosavedWindow:
    """An autosaved window over ``region`` of ``store`` (default: all of it) that
    warns when saving starts failing (napari shows a warning from any thread as
    a notification)."""

    def warn(error: BaseException) -> None:
        warnings.warn(
            f"could not autosave edits to the mask store {store.path} ({error}); they are "
            "kept in memory and saved as soon as writing works again",
            MaskStoreWarning,
            stacklevel=2,
        )

    height, width = store.shape
    return AutosavedWindow(store, region or (0, height, 0, width), on_error=warn)


def layer_probabilities(layer: Any, shape: tuple[int, ...]) -> Any:
    """The probabilities kept in the mask store behind ``layer`` (its metadata's
    ``mask_store``), read-only, when they match ``shape``; else None (a plain
    Labels layer, or a store no segmentation wrote probabilities to)."""
    from slide_unet.core.masks.store_layout import read_probability

    folder = (getattr(layer, "metadata", None) or {}).get("mask_store")
    if not folder:
        return None
    probabilities = read_probability(folder)
    if probabilities is None or tuple(probabilities.shape) != tuple(shape[-2:]):
        return None
    return probabilities


def restored_mask_name(store: MaskStore, slide_name: str) -> str:
    """The layer name of a mask brought back from its store when a slide opens.

    ``<slide> mask (autosaved)`` when a person edited it, else
    ``<slide> mask (<model>, <local date and time>)`` after the segmentation
    that made it.
    """
    if store.edited:
        return f"{slide_name} mask (autosaved)"
    source = store.source or "mask"
    model = source.removeprefix("segment ").strip() or "mask"
    when = store.modified.astimezone().strftime("%Y-%m-%d %H:%M")
    return f"{slide_name} mask ({model}, {when})"


def worth_restoring(store: MaskStore) -> bool:
    """Whether a store holds a mask to show: hand edits, or a segmentation's output
    (even a cancelled one's finished tiles)."""
    return store.edited or store.source is not None


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
    # Levels whose reads never fail: one damaged chunk must not hide the rest.
    levels = [TolerantLevel(store, k) for k in range(len(store.levels))]
    data = levels if multiscale else editable_window(store)
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

"""What the widgets need to know about napari layers: pixels, pixel size, the view.

Slides open (``slide_unet.napari.reader``) as image layers whose world units are
microns (``scale`` = pixel size) and whose ``metadata`` holds ``slide_path``
and ``mpp``; masks made here are Labels layers with the same scale and
translate, so the two stay aligned at every zoom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slide_unet.core.errors import InputError

if TYPE_CHECKING:
    import napari

__all__ = [
    "camera_of",
    "full_resolution",
    "image_layers",
    "labels_layers",
    "layer_by_name",
    "layer_mpp",
    "slide_path",
    "unproxied",
    "visible_region",
]


def unproxied(layer: Any) -> Any:
    """The layer itself, not napari's ``PublicOnlyProxy`` of it.

    napari hands plugin widgets a proxied viewer, and every layer taken from it
    is a new proxy object: ``is`` never matches, and attributes this package
    keeps on a layer (its mask store) warn as private access. The widgets
    keep plain layers.
    """
    return getattr(layer, "__wrapped__", layer)


def image_layers(viewer: napari.Viewer) -> list[Any]:
    """The viewer's image layers, top first."""
    from napari.layers import Image

    return [layer for layer in reversed(viewer.layers) if isinstance(layer, Image)]


def labels_layers(viewer: napari.Viewer) -> list[Any]:
    """The viewer's Labels layers, top first."""
    from napari.layers import Labels

    return [layer for layer in reversed(viewer.layers) if isinstance(layer, Labels)]


def layer_by_name(viewer: napari.Viewer, name: str | None) -> Any | None:
    """The layer called ``name``, or None."""
    if not name:
        return None
    return next((layer for layer in viewer.layers if layer.name == name), None)


def full_resolution(layer: Any) -> Any:
    """A layer's full-resolution array (level 0 of a multiscale layer)."""
    return layer.data[0] if layer.multiscale else layer.data


def layer_mpp(layer: Any) -> float | None:
    """A layer's pixel size in µm: its metadata's ``mpp``, else None."""
    mpp = (layer.metadata or {}).get("mpp")
    return float(mpp) if mpp else None


def slide_path(layer: Any) -> str | None:
    """The file a layer was read from (the plugin reader or napari's own), or None."""
    path = (layer.metadata or {}).get("slide_path")
    if path:
        return str(path)
    source = getattr(getattr(layer, "source", None), "path", None)
    return str(source) if source else None


def visible_region(viewer: napari.Viewer, layer: Any) -> tuple[int, int, int, int]:
    """The full-resolution pixels of ``layer`` on screen: ``(y0, y1, x0, x1)``.

    From the canvas's corners in world coordinates, mapped into the layer's
    data coordinates and clipped to its full-resolution shape. Raises
    ValueError when none of the layer is in view.
    """
    shape = full_resolution(layer).shape[:2]
    bounds = _canvas_corners(viewer)
    data = np.array([layer.world_to_data(point) for point in bounds])[:, -2:]
    y0, x0 = np.floor(data.min(axis=0)).astype(int)
    y1, x1 = np.ceil(data.max(axis=0)).astype(int)
    y0, x0 = max(int(y0), 0), max(int(x0), 0)
    y1, x1 = min(int(y1), shape[0]), min(int(x1), shape[1])
    if y1 <= y0 or x1 <= x0:
        raise InputError(
            f"the layer {layer.name!r} is not in view: pan or zoom to the part to work on"
        )
    return y0, y1, x0, x1


def camera_of(viewer: napari.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, else ``viewer.camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _canvas_corners(viewer: napari.Viewer) -> list[np.ndarray]:
    """The world coordinates of the canvas's top-left and bottom-right corners."""
    camera = camera_of(viewer)
    centre = np.asarray(camera.center)[-2:]
    half = np.asarray(viewer.canvas.size, dtype=float) / camera.zoom / 2
    point = list(viewer.dims.point)
    top_left, bottom_right = list(point), list(point)
    top_left[-2:] = centre - half
    bottom_right[-2:] = centre + half
    return [np.asarray(top_left), np.asarray(bottom_right)]

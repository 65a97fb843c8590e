"""The error map of a scored mask: Dice per tile as a coloured heatmap over the slide.

One pixel per tile of the per-tile Dice grid
(:meth:`slide_unet.core.scoring.metrics.TileDice.dice_map`), scaled so each
pixel covers its tile of the scored layer and placed in the same world units
(microns when the slide has a pixel size). Red is Dice 0, yellow 0.5, green
1; tiles empty in both masks are NaN and drawn transparent. Hovering a tile
shows its Dice in napari's status bar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari

__all__ = [
    "ERROR_MAP_KEY",
    "ERROR_MAP_NAME",
    "error_map_colormap",
    "error_map_geometry",
    "show_error_map",
]

#: The layer's name, also how the Score widget finds the layer to update.
ERROR_MAP_NAME = "error map (Dice per tile)"
#: Layer metadata key: the tile side (full-resolution pixels) of an error map.
ERROR_MAP_KEY = "slide_unet_error_map_tile"
#: Dice 0, 0.5 and 1: red, yellow, green.
_COLOURS = ((0.85, 0.10, 0.10, 1.0), (0.95, 0.85, 0.10, 1.0), (0.10, 0.75, 0.20, 1.0))


def error_map_colormap() -> Any:
    """napari's colormap of the error map: red (Dice 0) to green (Dice 1), NaN transparent."""
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=np.array(_COLOURS),
        controls=np.array([0.0, 0.5, 1.0]),
        name="slide-unet dice",
        display_name="Dice red-green",
        nan_color=(0.0, 0.0, 0.0, 0.0),
    )


def error_map_geometry(like: Any, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, translate)`` of a map whose pixel ``(i, j)`` covers tile ``(i, j)`` of ``like``.

    A pixel of ``like`` at data coordinate ``p`` covers ``p - 0.5`` to
    ``p + 0.5``; tile ``i`` covers pixels ``i * tile`` to ``(i + 1) * tile - 1``,
    so its centre is at ``i * tile + (tile - 1) / 2``.
    """
    scale = np.asarray(like.scale[-2:], dtype=float)
    translate = np.asarray(like.translate[-2:], dtype=float)
    return scale * tile, translate + scale * (tile - 1) / 2


def show_error_map(viewer: napari.Viewer, tiles: Any, *, like: Any) -> Any:
    """Add the error map as an Image layer, or update the one already there.

    Parameters
    ----------
    viewer : napari.Viewer
    tiles : slide_unet.core.scoring.metrics.TileDice
        The per-tile Dice of the last scoring.
    like : napari layer
        The scored prediction layer, whose scale, translate and units the map follows.

    Returns
    -------
    napari.layers.Image
        The error map layer (its data ``(tile rows, tile columns)`` float32).
    """
    grid = tiles.dice_map()
    scale, translate = error_map_geometry(like, tiles.tile)
    units = tuple(like.units[-2:])
    existing = [layer for layer in viewer.layers if ERROR_MAP_KEY in (layer.metadata or {})]
    if existing:
        # Updated in place: the user's opacity, colormap or visibility stay.
        layer = existing[0]
        layer.data = grid
        layer.scale = scale
        layer.translate = translate
        layer.units = units
        layer.metadata[ERROR_MAP_KEY] = tiles.tile
        layer.refresh()
        return layer
    return viewer.add_image(
        grid,
        name=ERROR_MAP_NAME,
        scale=scale,
        translate=translate,
        units=units,
        colormap=error_map_colormap(),
        contrast_limits=(0.0, 1.0),
        opacity=0.5,
        blending="translucent",
        interpolation2d="nearest",
        metadata={ERROR_MAP_KEY: tiles.tile},
    )

"""The true positive / false positive / false negative overlay of a scored mask.

The overlay has one level per level of the prediction layer, so napari shows
it at the same zoom levels as the prediction:

- level 0 is :func:`slide_unet.core.scoring.metrics.confusion_overlay` of the two
  full-resolution masks: numpy for small masks, else a lazy dask array over
  the prediction's chunks (computed only where napari looks);
- coarser levels pair the prediction layer's own level with the truth at that
  size (the truth layer's level of the same shape when it has one, else the
  truth sampled at pixel centres). Levels of up to :data:`IN_MEMORY_PIXELS`
  pixels are computed once, in the background job: napari reads a whole
  coarse level when zoomed out, and a lazy coarse level would decode the
  whole full-resolution truth on every such refresh. Bigger levels are only
  seen a window at a time, so they stay lazy. Coarse levels are for looking:
  their pixels compare the prediction's own downsampling with a sampled truth
  pixel, so counting them does not give the scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from slide_unet.core.errors import Cancelled
from slide_unet.core.scoring.metrics import CONFUSION_NAMES, confusion_overlay

if TYPE_CHECKING:
    import napari

__all__ = [
    "COLOURS",
    "IN_MEMORY_PIXELS",
    "OVERLAY_KEY",
    "legend_html",
    "overlay_colormap",
    "overlay_levels",
    "show_overlay",
]

#: Coarse overlay levels up to this many pixels (32 MB of uint8) are computed in memory.
IN_MEMORY_PIXELS = 2**25
#: Layer metadata key naming the (prediction, truth) pair an overlay shows.
OVERLAY_KEY = "slide_unet_score_overlay"


def mask_layers(viewer: Any) -> list[Any]:
    """The viewer's Labels layers that are masks, top first: the Score dock's overlays
    (also Labels layers) left out; napari's proxies unwrapped."""
    from slide_unet.napari.layers import labels_layers, unproxied

    return [
        unproxied(layer)
        for layer in labels_layers(viewer)
        if OVERLAY_KEY not in (layer.metadata or {})
    ]


#: RGBA of the overlay's values; green/magenta/blue stay apart for red-green colour blindness.
COLOURS: dict[int, tuple[float, float, float, float]] = {
    1: (0.10, 0.85, 0.10, 1.0),  # true positive: green
    2: (1.00, 0.10, 0.85, 1.0),  # false positive: magenta
    3: (0.10, 0.55, 1.00, 1.0),  # false negative: blue
}


def _sample(array: Any, shape: tuple[int, int]) -> Any:
    """``array`` resampled to ``shape`` at its nearest pixel centres (lazily if chunked)."""
    ys = ((np.arange(shape[0]) + 0.5) * array.shape[0] / shape[0]).astype(np.intp)
    xs = ((np.arange(shape[1]) + 0.5) * array.shape[1] / shape[1]).astype(np.intp)
    if isinstance(array, np.ndarray):
        return array[np.ix_(ys, xs)]
    import dask.array as da

    if not isinstance(array, da.Array):
        array = da.from_array(array, chunks=getattr(array, "chunks", "auto"))
    return array[ys][:, xs]


def overlay_levels(
    pred_levels: Sequence[Any],
    truth: Any,
    truth_levels: Sequence[Any] = (),
    *,
    in_memory: int | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[Any]:
    """The confusion overlay at every level of the prediction's pyramid.

    Parameters
    ----------
    pred_levels : sequence of array-like
        The prediction, full resolution first (one level if not multiscale).
    truth : array-like
        The truth at full resolution, of ``pred_levels[0]``'s shape.
    truth_levels : sequence of array-like, optional
        The truth's own pyramid (full resolution first), used where a level
        has the prediction level's shape.
    in_memory : int, optional
        Coarse levels of at most this many pixels are computed now (default
        :data:`IN_MEMORY_PIXELS`).
    cancelled : callable, optional
        Checked before each coarse level; raises ``Cancelled`` when it returns True.

    Returns
    -------
    list of numpy.ndarray or dask.array.Array
        ``uint8`` levels with values 0 (background in both), 1 (true
        positive), 2 (false positive), 3 (false negative).

    Raises
    ------
    ValueError
        If ``truth`` does not have the full-resolution prediction's shape.
    """
    in_memory = IN_MEMORY_PIXELS if in_memory is None else in_memory
    levels = [confusion_overlay(pred_levels[0], truth)]
    source = truth  # what coarser truth levels are sampled from: the finest one computed
    for index, pred in enumerate(pred_levels[1:], start=1):
        if cancelled is not None and cancelled():
            raise Cancelled("scoring was cancelled")
        shape = (int(pred.shape[0]), int(pred.shape[1]))
        own = truth_levels[index] if index < len(truth_levels) else None
        matches = own is not None and tuple(own.shape[:2]) == shape
        truth_here = own if matches else _sample(source, shape)
        if shape[0] * shape[1] <= in_memory:
            truth_here = np.asarray(truth_here)
            source = truth_here
            levels.append(confusion_overlay(np.asarray(pred), truth_here))
        else:
            levels.append(confusion_overlay(pred, truth_here))
    return levels


def overlay_colormap() -> Any:
    """napari's colormap for the overlay: :data:`COLOURS`, background transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    clear = (0.0, 0.0, 0.0, 0.0)
    return DirectLabelColormap(color_dict={None: clear, 0: clear, **COLOURS})


def legend_html() -> str:
    """A one-line legend of the overlay's colours, as Qt rich text."""
    parts = []
    for value, rgba in COLOURS.items():
        hex_colour = "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])
        parts.append(f'<span style="color:{hex_colour}">&#9632;</span> {CONFUSION_NAMES[value]}')
    return "Overlay: " + " &nbsp; ".join(parts)


def show_overlay(
    viewer: napari.Viewer,
    levels: list[Any],
    *,
    name: str,
    pair: tuple[str, str],
    like: Any,
) -> Any:
    """Add the overlay as a Labels layer, in place of an earlier one of the same pair.

    Parameters
    ----------
    viewer : napari.Viewer
    levels : list of array-like
        From :func:`overlay_levels`; several make a multiscale layer.
    name : str
        The layer's name.
    pair : tuple of str
        (prediction, truth) names: an overlay with the same pair is replaced
        (at its place in the layer list).
    like : napari layer
        The prediction layer, whose scale, translate and units it takes.

    Returns
    -------
    napari.layers.Labels
        The new layer.
    """
    from napari.layers import Labels

    layer = Labels(
        levels if len(levels) > 1 else levels[0],
        multiscale=len(levels) > 1,
        name=name,
        scale=like.scale,
        translate=like.translate,
        units=like.units,
        colormap=overlay_colormap(),
        opacity=0.6,
        metadata={OVERLAY_KEY: list(pair)},
    )
    old = [
        i
        for i, existing in enumerate(viewer.layers)
        if (existing.metadata or {}).get(OVERLAY_KEY) == list(pair)
    ]
    for i in reversed(old):
        viewer.layers.pop(i)
    viewer.layers.insert(old[0] if old else len(viewer.layers), layer)
    return layer

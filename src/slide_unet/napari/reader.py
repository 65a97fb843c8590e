"""npe2 reader: a slide of any size as a lazy multiscale image layer.

Thin over :func:`slide_unet.core.slide.slide.open_slide`. A flat, large slide opens
at once at full resolution; its overview levels are built in the background
(once: they are cached) and the layer fills in band by band as they are
computed. A file that holds a mask (an integer image of one foreground value,
a two-colour RGB mask, or a file named like a mask) opens as a Labels layer,
so the Score and Correct widgets can take it. The slide's mask comes back
from its store with it: hand-edited or only segmented, as it was left.

Reading imports neither torch, nor the widgets (nor Qt unless a napari window
is open), so opening stays fast.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from slide_unet.core.slide.slide import Slide, open_slide

SUFFIXES = (".tif", ".tiff", ".svs", ".png", ".jpg", ".jpeg")

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return a reader for ``path`` if it is a slide we can open, else None.

    Never raises: napari then tries other readers.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)) or not str(path).lower().endswith(SUFFIXES):
        return None
    try:
        slide = open_slide(path)
    except Exception:
        return None

    def read(_path: str | list[str]) -> list[LayerData]:
        return slide_layers(slide)

    return read


def read_slide_layers(path: str | os.PathLike[str]) -> list[LayerData]:
    """Open ``path`` and return its napari layer data (raises on bad input)."""
    return slide_layers(open_slide(path))


def slide_layers(slide: Slide) -> list[LayerData]:
    """Layer data for ``slide``: a multiscale image in microns (RGB when colour),
    or a Labels layer when the file holds a mask; then its stored mask, if any."""
    levels: list[Any] = list(slide.levels)
    cache = slide.overview_cache
    if slide.needs_overviews and cache is not None:
        live = cache.live_levels()
        levels += live
        _build_overviews_in_background(slide, live[0])
    multiscale = len(levels) > 1
    kwargs: dict[str, Any] = {
        "name": slide.name,
        "multiscale": multiscale,
        "metadata": {"slide_path": str(slide.path), "mpp": slide.mpp},
    }
    if slide.mpp is not None:
        kwargs["scale"] = (slide.mpp, slide.mpp)
        kwargs["units"] = ("µm", "µm")
    labels = mask_levels(slide, levels)
    if labels is not None:
        kwargs["opacity"] = 0.5
        return [(labels if multiscale else labels[0], kwargs, "labels")]
    kwargs["contrast_limits"] = _contrast_limits(slide)
    if slide.axes == "YXC":
        if slide.rgb:
            kwargs["rgb"] = True
        else:
            kwargs["channel_axis"] = 2
    data = levels if multiscale else levels[0]
    return [(data, kwargs, "image"), *autosaved_mask_layers(slide)]


#: Words in a file name that say it holds a mask.
MASK_WORDS = ("mask", "label", "annotation", "truth")
#: Names of folders of masks (the data sets' ``masks/`` beside ``images/``).
MASK_FOLDERS = frozenset({"mask", "masks", "label", "labels", "annotations", "truth", "gt"})


def mask_levels(slide: Slide, levels: list[Any]) -> list[Any] | None:
    """The levels as a Labels layer's data when ``slide`` holds a mask, else None.

    A mask is a one-channel integer image whose smallest level holds 0 and one
    other value (0/1, 0/255), or whose file name (``*mask*``, ``*label*``) or
    folder (``masks/``) says so (instance labels have many values); or a
    single-level RGB(A) image of black and one colour (the ``bueno_pas``
    masks), shown as 0/1.
    """
    if slide.dtype.kind not in "biu":
        return None
    folder = slide.path.parent.name.lower()
    named = any(word in slide.name.lower() for word in MASK_WORDS) or folder in MASK_FOLDERS
    if slide.axes == "YX" and named:
        return levels
    if slide.axes == "YXC" and len(levels) > 1:
        return None  # a colour pyramid is a slide: not worth reading pixels to ask
    values = _colours(levels[-1])
    if values is None:
        return None
    # Black and one other value; a single value (a blank image) only when named.
    if slide.axes == "YX":
        return levels if len(values) == 2 and not values[0].any() else None
    if slide.axes == "YXC" and slide.channels in (3, 4):
        colours = np.unique(values[:, :3], axis=0)
        two = len(colours) == 2 and not colours[0].any()
        if two or (named and len(colours) == 1):
            return [_any_channel(level) for level in levels]
    return None


def _colours(level: Any) -> np.ndarray | None:
    """The distinct pixel values (rows of channels) of a small level, or None
    when it is too large to look at cheaply or clearly holds more than two."""
    if level.size > 2048 * 2048 * 4:
        return None
    array = np.asarray(level[...])
    flat = array.reshape(-1, array.shape[-1]) if array.ndim == 3 else array.reshape(-1, 1)
    # A few thousand pixels tell most images from masks at once (sorting all of
    # them took a second on the UI thread for a 500 x 700 overview).
    sample = flat[:: max(1, len(flat) // 4096)]
    if len(np.unique(sample, axis=0)) > 2:
        return None
    if flat.shape[1] > 1 and flat.dtype.itemsize == 1:  # pack RGB(A) bytes: a 1-D unique
        packed = np.zeros(len(flat), np.uint32)
        for channel in range(min(flat.shape[1], 4)):
            packed |= flat[:, channel].astype(np.uint32) << (8 * channel)
        keys, first = np.unique(packed, return_index=True)
        return flat[first] if len(keys) <= 2 else None  # in key order: black first
    values = np.unique(flat, axis=0)
    return values if len(values) <= 2 else None


def _any_channel(level: Any) -> Any:
    """A lazy 0/1 ``uint8`` view of an RGB(A) level: 1 where any colour channel is set."""
    import dask.array as da

    array = level if isinstance(level, da.Array) else da.from_array(level, chunks=(1024, 1024, -1))
    return array[..., :3].any(axis=-1).astype(np.uint8)


def autosaved_mask_layers(slide: Slide) -> list[LayerData]:
    """The slide's mask from its store, if it holds one (see
    :func:`slide_unet.napari.layer_data.worth_restoring`).

    Segmentation writes into the store as tiles finish and hand edits are saved
    within a second; opening the same slide again brings the mask back as a
    Labels layer over the same store, so neither a long run nor a crash nor a
    closed window loses anything. It is named after its model and date, or
    ``(autosaved)`` once a person edited it.
    """
    from slide_unet.core.errors import MaskStoreWarning
    from slide_unet.core.masks.salvage import salvage
    from slide_unet.core.masks.store import MaskStore
    from slide_unet.core.masks.windows import flush_windows
    from slide_unet.napari.layer_data import mask_layer_kwargs, restored_mask_name, worth_restoring

    shape = (int(slide.levels[0].shape[0]), int(slide.levels[0].shape[1]))
    try:
        store = MaskStore.existing(slide.path, shape, slide.mpp)
    except (OSError, ValueError) as error:  # an unreadable store must not stop the slide
        warnings.warn(str(error), MaskStoreWarning, stacklevel=2)  # opening, nor be silent
        return []
    if store is None:
        return []
    flush_windows(store)  # edits of this session not yet autosaved count too
    if not worth_restoring(store):
        return []
    # Every chunk checked off the UI thread; a damaged one is set aside and named.
    threading.Thread(target=salvage, args=(store,), daemon=True).start()
    known = slide.mpp is not None
    data, kwargs = mask_layer_kwargs(
        store,
        restored_mask_name(store, slide.name),
        scale=(slide.mpp, slide.mpp) if known else (1.0, 1.0),
        units=("µm", "µm") if known else None,
        slide_path=str(slide.path),
    )
    return [(data, kwargs, "labels")]


def _contrast_limits(slide: Slide) -> list[float]:
    """Limits from the dtype for 8-bit data, else from the smallest level or one chunk,
    so napari never scans the whole slide for them."""
    if slide.dtype == np.uint8:
        return [0.0, 255.0]
    if slide.dtype == np.bool_:
        return [0.0, 1.0]
    smallest = slide.levels[-1]
    if smallest.size > 4096 * 4096 * slide.channels:
        ny, nx = (c[len(c) // 2] for c in smallest.chunks[:2])
        y0, x0 = smallest.shape[0] // 2, smallest.shape[1] // 2
        smallest = smallest[y0 : y0 + ny, x0 : x0 + nx]
    sample = np.asarray(smallest)
    low, high = float(np.nanmin(sample)), float(np.nanmax(sample))
    return [low, high if high > low else low + 1.0]


def _build_overviews_in_background(slide: Slide, first_live_level: Any) -> None:
    """Build the slide's overview cache off the UI thread, refreshing its layer.

    Without a napari window (scripts, a headless ``ViewerModel``) the build
    runs here and now instead: a Qt application left over from earlier work in
    the same process is not enough, nothing would show the progress.
    """
    cache = slide.overview_cache
    assert cache is not None
    try:
        import napari

        has_window = napari.current_viewer() is not None
    except Exception:
        has_window = False
    if not has_window:
        slide.build_overviews()
        return

    from napari.qt.threading import create_worker

    worker = create_worker(
        cache.iter_build,
        slide.levels[0],
        _progress={"total": cache.band_count(), "desc": f"Overview of {slide.name}"},
    )

    def slide_layers_in_viewer() -> list[Any]:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            return []
        return [
            layer
            for layer in viewer.layers
            if getattr(layer, "multiscale", False)
            and any(level is first_live_level for level in layer.data)
        ]

    def show_progress(_step: tuple[int, int]) -> None:
        # napari caches the materialised lowest level, which a refresh alone
        # does not renew: assigning the data again does.
        for layer in slide_layers_in_viewer():
            layer.data = layer.data
            layer.refresh()

    def show_cache() -> None:
        if not cache.complete:
            return
        for layer in slide_layers_in_viewer():
            layer.data = [slide.levels[0], *cache.levels()]
            layer.refresh()

    def report(error: Exception) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Could not build the overview of {slide.name}: {error}")

    worker.yielded.connect(show_progress)
    worker.finished.connect(show_cache)
    worker.errored.connect(report)
    worker.start()

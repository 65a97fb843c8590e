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
from pathlib import Path
from typing import Any

import numpy as np

from slide_unet.core.slide.slide import Slide, open_slide

SUFFIXES = (".tif", ".tiff", ".svs", ".png", ".jpg", ".jpeg")
#: QuPath's GeoJSON export: opened at the size of the slide beside it.
GEOJSON_SUFFIX = ".geojson"
#: The slide beside ``NAME.geojson`` is the first ``NAME`` + one of these that exists.
SLIDE_BESIDE = (".ome.tif", ".ome.tiff", ".tif", ".tiff", ".svs", ".png", ".jpg", ".jpeg")
#: A GeoJSON layer's smallest level's longest side at most (px): levels below halve.
GEOJSON_OVERVIEW = 2048

LayerData = tuple[Any, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return a reader for ``path`` if it is a slide we can open, else None.

    Never raises: napari then tries other readers.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(GEOJSON_SUFFIX):
        return read_geojson_or_say_why
    if not isinstance(path, (str, os.PathLike)) or not str(path).lower().endswith(SUFFIXES):
        return None
    try:
        slide = open_slide(path)
    except Exception:
        return None

    def read(_path: str | list[str]) -> list[LayerData]:
        return slide_layers(slide)

    return read


def slide_beside(path: str | os.PathLike[str]) -> Path | None:
    """The slide beside a GeoJSON file with the same name (``slide.geojson``:
    ``slide.ome.tif``, ``slide.svs``... in :data:`SLIDE_BESIDE`'s order), or None."""
    path = Path(path)
    stem = (
        path.name[: -len(GEOJSON_SUFFIX)]
        if path.name.lower().endswith(GEOJSON_SUFFIX)
        else path.stem
    )
    for suffix in SLIDE_BESIDE:
        for candidate in (path.with_name(stem + suffix), path.with_name(stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return None


def read_geojson_or_say_why(path: str | list[str]) -> list[LayerData]:
    """:func:`geojson_layers`, or, when it cannot be opened, one notification saying why
    and how else to open it (and no layer: napari's empty-file sentinel)."""
    from slide_unet.core.errors import UserError

    if isinstance(path, list):
        path = path[0]
    try:
        return geojson_layers(path)
    except (UserError, OSError) as error:
        from slide_unet.napari.jobs import notify_error

        notify_error(error)
        return [(None,)]  # type: ignore[list-item]


def geojson_layers(path: str | os.PathLike[str]) -> list[LayerData]:
    """A QuPath GeoJSON as a Labels layer at the size and pixel size of the slide beside it.

    The polygons are drawn lazily, chunk by chunk as napari shows them; a big
    slide's layer is multiscale, each level drawn from the polygons scaled to it
    (not from the full resolution). With several classes each has its value
    (sorted names, ``Unclassified`` last), and the layer's name lists them.

    Raises
    ------
    InputError
        No slide beside the file (the message says how else to open it).
    MaskError, SlideError, OSError
        A file that cannot be read.
    """
    from slide_unet.core.errors import InputError
    from slide_unet.core.masks.geojson import geojson_classes, read_geojson

    path = Path(path)
    slide_path = slide_beside(path)
    if slide_path is None:
        stem = path.name[: -len(GEOJSON_SUFFIX)]
        raise InputError(
            f"{path.name}: a GeoJSON records no image size, and no slide named {stem} "
            f"({', '.join(stem + s for s in SLIDE_BESIDE[:4])}, .svs...) lies beside it: "
            "put it beside its slide, or pick it as the truth file in the Score or Review "
            f"dock, or convert it with slide-unet export {path.name} --image SLIDE -o MASK"
        )
    with open_slide(slide_path) as slide:
        shape = (int(slide.levels[0].shape[0]), int(slide.levels[0].shape[1]))
        mpp = slide.mpp
    data = read_geojson(path)
    classes = geojson_classes(data)
    by_class = classes if len(classes) > 1 else None
    levels = _geojson_levels(data, shape, by_class)
    if len(classes) > 1:
        name = f"{path.name} [{', '.join(f'{i} {c}' for i, c in enumerate(classes, 1))}]"
    else:
        name = f"{path.name} [{classes[0]}]" if classes else path.name
    kwargs: dict[str, Any] = {
        "name": name,
        "multiscale": len(levels) > 1,
        "opacity": 0.5,
        "metadata": {
            "mpp": mpp,
            "geojson_path": str(path),
            "geojson_slide": str(slide_path),
            "classes": dict(enumerate(classes, 1)),
        },
    }
    if mpp is not None:
        kwargs["scale"] = (mpp, mpp)
        kwargs["units"] = ("µm", "µm")
    return [(levels if len(levels) > 1 else levels[0], kwargs, "labels")]


def _geojson_levels(data: Any, shape: tuple[int, int], classes: list[str] | None) -> list[Any]:
    """The polygons drawn lazily at full resolution, then at halves of it until the
    longest side is at most :data:`GEOJSON_OVERVIEW`, each from scaled polygons."""
    from slide_unet.core.masks.geojson import geojson_to_dask

    levels = [geojson_to_dask(data, shape, classes=classes)]
    factor = 1
    while max(shape) // factor > GEOJSON_OVERVIEW:
        factor *= 2
        small = (max(1, -(-shape[0] // factor)), max(1, -(-shape[1] // factor)))
        levels.append(geojson_to_dask(_scaled(data, 1 / factor), small, classes=classes))
    return levels


def _scaled(node: Any, by: float) -> Any:
    """A copy of GeoJSON ``node`` with every geometry's coordinates multiplied by ``by``."""
    if isinstance(node, dict):
        return {
            k: (_scale_coordinates(v, by) if k == "coordinates" else _scaled(v, by))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_scaled(v, by) for v in node]
    return node


def _scale_coordinates(node: Any, by: float) -> Any:
    if isinstance(node, list):
        return [_scale_coordinates(v, by) for v in node]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return node * by
    return node


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

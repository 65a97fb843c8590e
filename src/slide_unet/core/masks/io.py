"""Read and write masks in the formats of the field, by file extension.

======================  ===============================================  =====
format                  extension                                        read
======================  ===============================================  =====
pyramidal OME-TIFF      ``.ome.tif``, ``.ome.tiff``, ``.tif``, ``.tiff``  lazy
OME-Zarr (labels)       ``.zarr``, ``.ome.zarr`` (or any zarr folder)    lazy
PNG (small masks)       ``.png`` (JPEG also read)                        whole
Kaggle RLE CSV          ``.csv`` (``id,predicted`` / ``id,encoding``)    once
GeoJSON (QuPath)        ``.geojson``, ``.json``                          lazy
======================  ===============================================  =====

What :func:`read_mask` returns
    A 2-D array: numpy when the mask has at most :data:`IN_MEMORY_PIXELS`
    pixels, else a dask array computed chunk by chunk ("lazy" above; a big
    RLE mask is decoded once, into compressed chunks in memory: a few MB for
    a slide). Binary masks come back
    ``uint8`` 0/1, whatever they were stored as: 0/1, 0/255 (or 0/65535), or
    RGB(A) colours on black (any colour channel non-zero is foreground; alpha
    is ignored). Instance label images (``uint16``/``uint32``, several ids)
    keep their ids, and so do palette PNGs, read by index, not colour (index
    0 is background, whatever colour the palette gives it). An RGB image
    with more than :data:`MAX_MASK_COLOURS` colours is a picture, not a mask:
    :class:`~slide_unet.core.errors.MaskError`.
Hostile files
    A file can declare much more than it holds. What is decoded whole (a
    small mask read into numpy, a PNG, a GeoJSON file) is checked first
    against the memory budget of :mod:`slide_unet.core.limits`
    (:class:`~slide_unet.core.errors.LimitError`); a shape no mask can have
    (:func:`~slide_unet.core.masks.bounds.check_mask_shape`) is refused
    before any work, even where the work would stream.
What :func:`write_mask` writes
    OME-TIFF and OME-Zarr: the values as given (0/1 or label ids), with
    overview levels and the pixel size (:mod:`slide_unet.core.masks.pyramids`).
    PNG: a binary mask as 0/255 8-bit grey, what Kaggle's and QuPath's mask
    exports hold and what every viewer shows (0/1 looks all black); label
    images as 8- or 16-bit ids. CSV: Kaggle RLE (binary: any non-zero). GeoJSON:
    QuPath polygons (:mod:`slide_unet.core.masks.geojson`). Every writer is atomic.
Progress and cancel
    :func:`write_mask` and :func:`export_mask` report ``progress(done, total)``
    as each format's writer gets through the mask (bands of rows or columns,
    then PNG's encoding or OME-TIFF's overview levels), and stop with
    :class:`~slide_unet.core.errors.Cancelled` at the next step once
    ``cancel`` is set: the writers being atomic, nothing is left behind.

This module is part of the napari-free core.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from PIL import Image

from slide_unet.core.atomic import atomic_path, check_not_overwriting
from slide_unet.core.errors import Cancel, Cancelled, InputError, cancel_check
from slide_unet.core.limits import check_decode, check_mpp
from slide_unet.core.masks import bounds as mask_bounds
from slide_unet.core.masks import geojson as _geojson
from slide_unet.core.masks import pyramids as mask_pyramids
from slide_unet.core.masks.geojson import FeatureMeasurements
from slide_unet.core.masks.ome_zarr import read_ome_zarr
from slide_unet.core.masks.rle_csv import rle_csv_ids, write_rle_csv
from slide_unet.core.masks.sizeless import declared_shape, read_geojson_mask, read_rle_mask
from slide_unet.core.masks.values import (
    MAX_MASK_COLOURS,
    check_channels,
    pixels_to_mask,
    png_palette_indices,
)
from slide_unet.core.slide.slide import open_slide

__all__ = [
    "IN_MEMORY_PIXELS",
    "MASK_SUFFIXES",
    "MAX_MASK_COLOURS",
    "MAX_PNG_PIXELS",
    "Progress",
    "check_same_shape",
    "export_mask",
    "mask_stem",
    "mask_suffix",
    "read_mask",
    "read_mask_with_mpp",
    "write_mask",
]

#: Masks up to this many pixels are read into numpy; bigger ones stay lazy.
IN_MEMORY_PIXELS = 2**26
#: PNG holds the whole mask in memory: refuse to write bigger ones.
MAX_PNG_PIXELS = 2**28
#: Rows of a PNG mask gathered at a time (a progress step each).
_PNG_BAND_ROWS = 1024

#: ``progress(done, total)``: how far a writer has got.
Progress = Callable[[int, int], None]

_FORMATS: dict[str, str] = {
    ".ome.tiff": "tiff",
    ".ome.tif": "tiff",
    ".tiff": "tiff",
    ".tif": "tiff",
    ".ome.zarr": "zarr",
    ".zarr": "zarr",
    ".png": "png",
    ".csv": "csv",
    ".geojson": "geojson",
    ".json": "geojson",
}
#: File extensions :func:`write_mask` and :func:`read_mask` understand.
MASK_SUFFIXES: tuple[str, ...] = tuple(_FORMATS)
#: Formats that do not record the mask's size (the caller gives it).
_SIZELESS = (".csv", ".geojson", ".json")


def mask_suffix(path: str | os.PathLike[str]) -> str | None:
    """The mask format extension of ``path`` (``".ome.tif"``, ``".csv"``...), or None."""
    name = Path(path).name.lower()
    return next((s for s in _FORMATS if name.endswith(s)), None)


def mask_stem(path: str | os.PathLike[str]) -> str:
    """The name of a mask file without its format ending (``a.ome.tif`` -> ``a``)."""
    path = Path(path)
    suffix = mask_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def _unknown(path: Path) -> InputError:
    return InputError(
        f"{path}: unknown mask format {path.suffix!r}; supported: {', '.join(MASK_SUFFIXES)}"
    )


def _steps(progress: Progress | None, cancel: Cancel | None) -> Progress | None:
    """One callback for the per-format writers, which stop when it raises: it
    raises :class:`Cancelled` once `cancel` is set, else reports to `progress`.

    Raises
    ------
    Cancelled
        At once, when `cancel` is already set.
    """
    if cancel is None:
        return progress
    cancelled = cancel_check(cancel)
    if cancelled():  # before anything is read or opened
        raise Cancelled("export cancelled")

    def step(done: int, total: int) -> None:
        if cancelled():
            raise Cancelled("export cancelled")
        if progress is not None:
            progress(done, total)

    return step


# -- checks ------------------------------------------------------------------------


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in (x.shape if hasattr(x, "shape") else x))


def check_same_shape(a: Any, b: Any, names: Sequence[str] = ("mask", "image")) -> None:
    """Raise if two masks (or a mask and its image) differ in height and width.

    Parameters
    ----------
    a, b : array-like or tuple of int
        Arrays, or their shapes; only the first two axes (height, width) count,
        so an RGB image can be compared with its mask.
    names : sequence of str
        What to call `a` and `b` in the message.

    Raises
    ------
    InputError
        ``"mask shape (h, w) does not match image (H, W)"``, with a hint when
        one is the other transposed (a width and height swapped).
    """
    sa, sb = _shape_of(a)[:2], _shape_of(b)[:2]
    if sa == sb:
        return
    hint = " (height and width swapped?)" if sa == sb[::-1] else ""
    raise InputError(f"{names[0]} shape {sa} does not match {names[1]} {sb}{hint}")


def _small(array: Any) -> bool:
    return int(np.prod(array.shape[:2])) <= IN_MEMORY_PIXELS


def _finish(array: Any, where: str) -> Any:
    """numpy for small masks (within the memory budget), else the (lazy) array as it is."""
    if _small(array):
        check_channels(array, where)
        shape = " x ".join(str(int(n)) for n in array.shape)
        nbytes = int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize
        check_decode(nbytes, f"{where}: a {shape} {np.dtype(array.dtype)} mask")
        return np.ascontiguousarray(np.asarray(array))
    return array


# -- reading -------------------------------------------------------------------------


def _read(
    path: str | os.PathLike[str],
    image_id: str | None = None,
    shape: Sequence[int] | None = None,
    progress: Progress | None = None,
    classification: str | None = None,
) -> tuple[Any, float | None]:
    """The mask at ``path`` and its pixel size in microns (None if unknown);
    ``progress`` follows the decoding of a big RLE mask, the only format read
    whole before it is used."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such mask file")
    kind = _FORMATS.get(mask_suffix(path) or "", "zarr" if path.is_dir() else "image")
    if kind == "csv":
        return pixels_to_mask(
            read_rle_mask(path, image_id, shape, progress, IN_MEMORY_PIXELS), str(path)
        ), None
    if kind == "geojson":
        return read_geojson_mask(path, shape, IN_MEMORY_PIXELS, classification), None
    if kind == "zarr":
        array, mpp = read_ome_zarr(path)
        return pixels_to_mask(_finish(array, str(path)), str(path)), mpp
    if kind != "tiff" and not path.is_dir():
        palette = png_palette_indices(path)
        if palette is not None:
            return pixels_to_mask(palette[0], str(path)), palette[1]
    # TIFF, PNG, JPEG: by content. A big TIFF stays open while its array lives.
    slide = open_slide(path)
    if _small(slide.levels[0]):
        with slide:
            return pixels_to_mask(_finish(slide.levels[0], str(path)), str(path)), slide.mpp
    try:
        return pixels_to_mask(slide.levels[0], str(path)), slide.mpp
    except BaseException:
        slide.close()
        raise


def read_mask(
    path: str | os.PathLike[str],
    *,
    image_id: str | None = None,
    shape: Sequence[int] | None = None,
    classification: str | None = None,
) -> np.ndarray | da.Array:
    """Read a mask from any supported file, lazily when it is big.

    Parameters
    ----------
    path : str or os.PathLike
        TIFF/OME-TIFF (pyramidal or not: full resolution is read), PNG or
        JPEG, OME-Zarr (a label image, an image with ``labels/`` (its first
        label), a multiscale image or a plain zarr array), a Kaggle RLE
        ``.csv``, or a ``.geojson``/``.json`` of polygons.
    image_id : str, optional
        Row of an RLE CSV; not needed when the CSV holds a single row.
    shape : tuple of int, optional
        ``(height, width)`` of the image: needed for RLE and GeoJSON, which do
        not record it.
    classification : str, optional
        GeoJSON (QuPath's export): draw only the features of this class
        (``"Unclassified"``: those without one). Without it, a file of
        several classes gives a label mask, one value per class (sorted
        names; see :func:`~slide_unet.core.masks.sizeless.read_geojson_mask`).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        2-D ``(height, width)``: numpy up to :data:`IN_MEMORY_PIXELS` pixels,
        else dask. Binary masks are ``uint8`` 0/1; instance label images keep
        their ids and type (``uint16``/``uint32``); GeoJSON of several
        classes, one value per class.

    Raises
    ------
    FileNotFoundError
        No such file.
    MaskError
        A file that is not a mask or not a readable one (the message names
        it and says what is wrong): a picture rather than a mask, malformed
        OME-Zarr metadata, an RLE that does not decode, GeoJSON that is not
        a FeatureCollection of polygons or has a vertex that is not a finite
        pixel position.
    SlideError
        A TIFF, PNG or JPEG that cannot be read.
    InputError
        An RLE CSV or GeoJSON without `shape`, or with one no mask can have;
        an RLE CSV without the id asked for; GeoJSON without the class.
    LimitError
        More to decode at once than the memory budget
        (:mod:`slide_unet.core.limits`).
    """
    return _read(path, image_id, shape, classification=classification)[0]


def read_mask_with_mpp(
    path: str | os.PathLike[str],
    *,
    image_id: str | None = None,
    shape: Sequence[int] | None = None,
    classification: str | None = None,
) -> tuple[np.ndarray | da.Array, float | None]:
    """:func:`read_mask`, and the pixel size the file records.

    Returns
    -------
    mask : numpy.ndarray or dask.array.Array
        As :func:`read_mask` returns it.
    mpp : float or None
        Microns per pixel from the file (OME-TIFF, TIFF resolution, OME-Zarr,
        PNG), None when it records none (RLE CSV and GeoJSON never do).

    Raises
    ------
    As :func:`read_mask`.
    """
    return _read(path, image_id, shape, classification=classification)


# -- writing -------------------------------------------------------------------------


def _writable(mask: Any) -> tuple[Any, np.dtype]:
    """The mask as an array that slices, and the type to store it as."""
    if not (hasattr(mask, "shape") and hasattr(mask, "dtype") and hasattr(mask, "__getitem__")):
        mask = np.asarray(mask)
    if len(mask.shape) != 2:
        raise InputError(f"a mask must be 2-D (height, width), got shape {tuple(mask.shape)}")
    if min(mask.shape) < 1:
        raise InputError(f"the mask is empty (shape {tuple(mask.shape)})")
    dtype = np.dtype(mask.dtype)
    if dtype == np.bool_:
        return mask, np.dtype(np.uint8)
    if dtype.kind not in "ui":
        raise InputError(f"a mask must hold integers or booleans, got {dtype}")
    return mask, dtype


def _check_write(
    kind: str, shape: tuple[int, int], dtype: np.dtype, path: Path, levels: int | None
) -> None:
    """Refuse a write that cannot be done, before anything is read for it.

    Raises
    ------
    InputError
        A shape no mask can have, a level count out of range, a mask too big
        for PNG.
    LimitError
        What the writer holds at once (PNG: the whole mask; OME-TIFF and
        OME-Zarr: bands of rows) over the memory budget.
    """
    height, width = mask_bounds.check_mask_shape(shape, f"writing {path}")
    if kind in ("tiff", "zarr"):
        mask_pyramids.check_pyramid(
            shape, dtype, levels, zarr_store=kind == "zarr", what=f"writing {path}"
        )
    elif kind == "png":
        if height * width > MAX_PNG_PIXELS:
            raise InputError(
                f"a {height} x {width} mask is too big for PNG (at most "
                f"{MAX_PNG_PIXELS} pixels); write .ome.tif or .zarr instead"
            )
        # The whole mask gathered, and a copy converted for Pillow (8 or 16 bits).
        check_decode(
            height * width * (dtype.itemsize + 2), f"writing {path}: a {height} x {width} PNG"
        )
    elif kind == "geojson":
        _geojson.check_band(shape, dtype, f"writing {path}")


def _write_png(
    mask: Any, path: Path, dtype: np.dtype, mpp: float | None, progress: Progress | None
) -> Path:
    height, width = int(mask.shape[0]), int(mask.shape[1])
    # PNG needs the whole image: gather it band by band (a step each, for a
    # lazy mask the reading), then encode it (the last step).
    array = np.empty((height, width), dtype=dtype)
    starts = range(0, height, _PNG_BAND_ROWS)
    total = len(starts) + 1
    largest = 0
    for done, y0 in enumerate(starts, start=1):
        band = array[y0 : y0 + _PNG_BAND_ROWS]
        band[...] = np.asarray(mask[y0 : y0 + _PNG_BAND_ROWS])
        largest = max(largest, int(band.max()))
        if progress is not None:
            progress(done, total)
    if largest <= 1:
        grey = array if dtype == np.uint8 else array.astype(np.uint8)
        # In place: the gathered copy is ours, and a slide-sized PNG is 256 MB.
        image = Image.fromarray(np.multiply(grey, 255, out=grey), mode="L")
    elif dtype == np.uint8:
        image = Image.fromarray(array, mode="L")
    elif largest < 2**16:
        image = Image.fromarray(array.astype(np.uint16))
    else:
        raise InputError(f"PNG holds label ids up to 65535; this mask has {largest}")
    del array
    options: dict[str, Any] = {"format": "PNG", "optimize": False}
    if mpp:
        options["dpi"] = (25400 / mpp, 25400 / mpp)
    with atomic_path(path) as tmp:
        image.save(tmp, **options)
        if progress is not None:  # before the rename: a cancel here still leaves nothing
            progress(total, total)
    return path


def write_mask(
    mask: Any,
    path: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    image_id: str | None = None,
    levels: int | None = None,
    classification: str | None = "Glomerulus",
    object_type: str = "annotation",
    measurements: FeatureMeasurements | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Path:
    """Write a mask in the format its file extension names, atomically.

    Parameters
    ----------
    mask : array-like
        2-D ``(height, width)`` numpy, dask or zarr array: binary (0/1, bool)
        or instance labels. Big masks are read band by band, never whole
        (except for PNG, which is for small masks only).
    path : str or os.PathLike
        ``.ome.tif``/``.tif`` (pyramidal OME-TIFF), ``.zarr``/``.ome.zarr``
        (OME-Zarr label image), ``.png``, ``.csv`` (Kaggle RLE) or
        ``.geojson``/``.json`` (QuPath polygons).
    mpp : float, optional
        Microns per pixel, stored by OME-TIFF, OME-Zarr and PNG.
    image_id : str, optional
        The CSV row's id; default: the file name without its extension.
    levels : int, optional
        Pyramid levels of OME-TIFF and OME-Zarr, full resolution included;
        default: halve down to at most 1024 pixels a side.
    classification : str or None
        QuPath class of GeoJSON objects.
    object_type : str
        QuPath object type of GeoJSON objects: ``"annotation"`` or ``"detection"``.
    measurements : callable, optional
        GeoJSON: each feature's QuPath measurements
        (:func:`slide_unet.core.objects.qupath.feature_measurements`).
    progress : callable, optional
        ``progress(done, total)`` after each step of the writer: each band of
        the mask it reads (rows; columns for RLE), then PNG's encoding or each
        OME-TIFF overview level. ``total`` stays the same for one write.
    cancel : threading.Event or callable, optional
        Checked at the start and at each step; once set (or returning True)
        the write stops with :class:`~slide_unet.core.errors.Cancelled`,
        leaving no file and any existing one untouched.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InputError
        An unknown extension (the message lists the supported ones), a mask
        that is not 2-D integer/boolean, one too big for PNG or with more
        pixels than any mask (:func:`~slide_unet.core.masks.bounds.check_mask_shape`),
        or a pixel size that is not a positive number.
    LimitError
        What the writer holds at once over the memory budget (see
        :mod:`slide_unet.core.limits`).
    slide_unet.core.errors.Cancelled
        `cancel` asked to stop.
    """
    path = Path(path)
    kind = _FORMATS.get(mask_suffix(path) or "")
    if kind is None:
        raise _unknown(path)
    mask, dtype = _writable(mask)
    mpp = check_mpp(mpp)  # a user's: within the range a microscope has
    _check_write(kind, (int(mask.shape[0]), int(mask.shape[1])), dtype, path, levels)
    name = mask_stem(path)
    step = _steps(progress, cancel)
    if kind == "tiff":
        return mask_pyramids.write_ome_tiff(
            mask, path, dtype=dtype, mpp=mpp, levels=levels, name=name, progress=step
        )
    if kind == "zarr":
        return mask_pyramids.write_ome_zarr(
            mask, path, dtype=dtype, mpp=mpp, levels=levels, name=name, progress=step
        )
    if kind == "png":
        return _write_png(mask, path, dtype, mpp, step)
    if kind == "csv":
        return write_rle_csv(path, {image_id or name: mask}, progress=step)
    return _geojson.write_geojson(
        mask,
        path,
        classification=classification,
        object_type=object_type,
        measurements=measurements,
        progress=step,
    )


def export_mask(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    image_id: str | None = None,
    shape: Sequence[int] | None = None,
    mpp: float | None = None,
    levels: int | None = None,
    classification: str | None = "Glomerulus",
    object_type: str = "annotation",
    measure_objects: Callable[[Any, float | None], FeatureMeasurements] | None = None,
    read_classification: str | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Path:
    """Convert a mask file to another format (by the extensions), streaming.

    Big masks are read lazily and written band by band, so no format pair
    needs the whole mask in memory (PNG aside).

    Parameters
    ----------
    src, dst : str or os.PathLike
        Input and output files; see :func:`read_mask` and :func:`write_mask`.
    image_id : str, optional
        Row to read from an RLE CSV `src`. The row written to a CSV `dst` is
        named `image_id`, else the CSV's single id, else `src`'s name (a mask
        is usually named after its slide, which is the id Kaggle expects).
    shape : tuple of int, optional
        ``(height, width)``, needed when `src` is RLE or GeoJSON.
    mpp : float, optional
        Pixel size to record; default: the one `src` records.
    levels, classification, object_type
        As for :func:`write_mask`.
    measure_objects : callable, optional
        ``measure_objects(mask, mpp)`` gives the ``measurements`` of a GeoJSON
        `dst` (:func:`slide_unet.core.objects.qupath.feature_measurements`
        takes those arguments), called with the mask read and the pixel size
        recorded.
    read_classification : str, optional
        The class to read from a GeoJSON `src` (see :func:`read_mask`).
    progress : callable, optional
        ``progress(done, total)``: first for the decoding of a big RLE `src`
        (its bands of columns; the only format read whole first), then for
        the write, with its own total (see :func:`write_mask`).
    cancel : threading.Event or callable, optional
        As for :func:`write_mask`; checked in both phases.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    MaskError, SlideError, InputError, LimitError
        As :func:`read_mask` and :func:`write_mask`. What can be known before
        reading (an RLE or GeoJSON `src` with its `shape`) is checked before
        reading: a write that would be refused is refused at once.
    slide_unet.core.errors.Cancelled
        `cancel` asked to stop; nothing was written.
    """
    src, dst = Path(src), Path(dst)
    kind = _FORMATS.get(mask_suffix(dst) or "")
    if kind is None:
        raise _unknown(dst)  # before reading a big mask for nothing
    check_not_overwriting([dst], [src])
    mpp = check_mpp(mpp)  # a user's: within the range a microscope has
    if mask_suffix(src) in _SIZELESS and src.is_file():
        what = "an RLE mask" if mask_suffix(src) == ".csv" else "GeoJSON"
        # RLE and GeoJSON decode to uint8 0/1.
        _check_write(kind, declared_shape(src, shape, what), np.dtype(np.uint8), dst, levels)
    mask, src_mpp = _read(src, image_id, shape, _steps(progress, cancel), read_classification)
    if image_id is None:
        ids = rle_csv_ids(src) if mask_suffix(src) == ".csv" else []
        image_id = ids[0] if len(ids) == 1 else mask_stem(src)
    return write_mask(
        mask,
        dst,
        mpp=src_mpp if mpp is None else mpp,
        image_id=image_id,
        levels=levels,
        classification=classification,
        object_type=object_type,
        measurements=(
            measure_objects(mask, src_mpp if mpp is None else mpp)
            if measure_objects is not None and kind == "geojson"
            else None
        ),
        progress=progress,
        cancel=cancel,
    )

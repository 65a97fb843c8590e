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
    keep their ids. An RGB image with more than :data:`MAX_MASK_COLOURS`
    colours is a picture, not a mask: :class:`ValueError`.
What :func:`write_mask` writes
    OME-TIFF and OME-Zarr: the values as given (0/1 or label ids), with
    overview levels and the pixel size (:mod:`slide_unet.core.mask_pyramids`).
    PNG: a binary mask as 0/255 8-bit grey, what Kaggle's and QuPath's mask
    exports hold and what every viewer shows (0/1 looks all black); label
    images as 8- or 16-bit ids. CSV: Kaggle RLE (binary: any non-zero). GeoJSON:
    QuPath polygons (:mod:`slide_unet.core.geojson`). Every writer is atomic.
Progress and cancel
    :func:`write_mask` and :func:`export_mask` report ``progress(done, total)``
    as each format's writer gets through the mask (bands of rows or columns,
    then PNG's encoding or OME-TIFF's overview levels), and stop with
    :class:`~slide_unet.core.blocks.Cancelled` at the next step once
    ``cancel`` is set: the writers being atomic, nothing is left behind.

This module is part of the napari-free core.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from PIL import Image

from slide_unet.core import geojson as _geojson
from slide_unet.core import mask_pyramids
from slide_unet.core.atomic import atomic_path
from slide_unet.core.blocks import Cancelled
from slide_unet.core.rle import rle_decode
from slide_unet.core.rle_csv import read_rle_csv, rle_csv_ids, write_rle_csv
from slide_unet.core.slide import open_slide

__all__ = [
    "IN_MEMORY_PIXELS",
    "MASK_SUFFIXES",
    "MAX_PNG_PIXELS",
    "Cancel",
    "Progress",
    "check_same_shape",
    "export_mask",
    "mask_stem",
    "mask_suffix",
    "read_mask",
    "write_mask",
]

#: Masks up to this many pixels are read into numpy; bigger ones stay lazy.
IN_MEMORY_PIXELS = 2**26
#: PNG holds the whole mask in memory: refuse to write bigger ones.
MAX_PNG_PIXELS = 2**28
#: An RGB "mask" with more colours than this (in a sample) is a picture.
MAX_MASK_COLOURS = 16
#: Pixels looked at to tell a mask from a picture and 0/255 from labels.
_SAMPLE_PIXELS = 2**22
#: Rows of a PNG mask gathered at a time (a progress step each).
_PNG_BAND_ROWS = 1024

#: ``progress(done, total)``: how far a writer has got.
Progress = Callable[[int, int], None]
#: A cancel request: a ``threading.Event``, or a callable that returns True to stop.
Cancel = Callable[[], bool] | threading.Event

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


def mask_suffix(path: str | os.PathLike[str]) -> str | None:
    """The mask format extension of ``path`` (``".ome.tif"``, ``".csv"``...), or None."""
    name = Path(path).name.lower()
    return next((s for s in _FORMATS if name.endswith(s)), None)


def mask_stem(path: str | os.PathLike[str]) -> str:
    """The name of a mask file without its format ending (``a.ome.tif`` -> ``a``)."""
    path = Path(path)
    suffix = mask_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.stem


def _unknown(path: Path) -> ValueError:
    return ValueError(
        f"{path}: unknown mask format {path.suffix!r}; supported: {', '.join(MASK_SUFFIXES)}"
    )


def _cancel_check(cancel: Cancel | None) -> Callable[[], bool]:
    """`cancel` (None, an Event or a callable) as a callable returning a bool."""
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event or a callable, got {cancel!r}")


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
    cancelled = _cancel_check(cancel)
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
    ValueError
        ``"mask shape (h, w) does not match image (H, W)"``, with a hint when
        one is the other transposed (a width and height swapped).
    """
    sa, sb = _shape_of(a)[:2], _shape_of(b)[:2]
    if sa == sb:
        return
    hint = " (height and width swapped?)" if sa == sb[::-1] else ""
    raise ValueError(f"{names[0]} shape {sa} does not match {names[1]} {sb}{hint}")


def _sample(array: Any) -> np.ndarray:
    """Up to about :data:`_SAMPLE_PIXELS` pixels: chunks spread over a dask
    array (whole chunks: masks are smooth), or a strided view of numpy."""
    if isinstance(array, da.Array):
        rows, cols = array.numblocks[:2]
        per_block = max(1, int(np.prod(array.chunksize[:2])))
        n = max(1, min(rows * cols, _SAMPLE_PIXELS // per_block))
        picks = np.unique(np.linspace(0, rows * cols - 1, n).round().astype(int))
        blocks = [array.blocks[int(k // cols), int(k % cols)] for k in picks]
        computed = da.compute(*blocks)
        channels = array.shape[2:]
        return np.concatenate([b.reshape(-1, *channels) for b in computed])
    step = max(1, int(np.sqrt(array.shape[0] * array.shape[1] / _SAMPLE_PIXELS)))
    return np.asarray(array[::step, ::step]).reshape(-1, *array.shape[2:])


def _colours(pixels: np.ndarray) -> int:
    """Distinct colours among ``(n, channels)`` pixels."""
    if pixels.dtype == np.uint8 and pixels.shape[1] <= 4:
        packed = np.zeros(len(pixels), dtype=np.uint32)
        for c in range(pixels.shape[1]):
            packed |= pixels[:, c].astype(np.uint32) << (8 * c)
        return len(np.unique(packed))
    return len(np.unique(pixels, axis=0))


def _to_mask(array: Any, where: str) -> Any:
    """A 2-D mask from what a mask file holds (see the module docstring)."""
    if array.ndim == 3:
        channels = array.shape[2]
        if channels > 4:
            raise ValueError(f"{where}: not a mask: it has {channels} channels")
        colour = array[..., : 3 if channels >= 3 else 1]  # alpha (2nd or 4th) ignored
        found = _colours(_sample(colour).reshape(-1, colour.shape[2]))
        if found > MAX_MASK_COLOURS:
            raise ValueError(
                f"{where}: not a mask: found {found} distinct colours in a sample; a mask "
                f"has a few (e.g. red on black), at most {MAX_MASK_COLOURS}"
            )
        return (colour != 0).any(axis=2).astype(np.uint8)
    if array.ndim != 2:
        raise ValueError(f"{where}: a mask must be 2-D, got shape {tuple(array.shape)}")
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        return array.astype(np.uint8)
    if dtype.kind == "f":
        values = np.unique(_sample(array))
        if not np.all(np.mod(values[np.isfinite(values)], 1) == 0) or np.isnan(values).any():
            fraction = values[np.mod(values, 1) != 0][:1]
            raise ValueError(
                f"{where}: not a mask: it holds fractional values such as {fraction} "
                "(a probability map? threshold it first)"
            )
        return (array != 0).astype(np.uint8) if values.max() <= 1 else array.astype(np.uint32)
    if dtype.kind not in "ui":
        raise ValueError(f"{where}: a mask must hold integers, got {dtype}")
    if dtype.kind == "i" or dtype.itemsize == 8:
        array = array.astype(np.dtype(f"u{min(dtype.itemsize, 4)}"))
        dtype = np.dtype(array.dtype)
    exact = isinstance(array, np.ndarray)  # else only a sample can be looked at
    if exact and array.size and array.max() <= 1:
        return array.astype(np.uint8, copy=False)
    if dtype.itemsize <= 2:
        # A single "on" value of 255 (or 65535) is a binary mask, not label 255.
        counts = np.bincount(np.asarray(array if exact else _sample(array)).ravel())
        present = np.flatnonzero(counts[1:]) + 1
        if len(present) == 1 and present[0] in (255, 65535):
            return (array != 0).astype(np.uint8)
    return array


def _small(array: Any) -> bool:
    return int(np.prod(array.shape[:2])) <= IN_MEMORY_PIXELS


def _finish(array: Any) -> Any:
    """numpy for small masks, else the (lazy) array as it is."""
    if _small(array):
        return np.ascontiguousarray(np.asarray(array))
    return array


# -- reading -------------------------------------------------------------------------


def _read_csv(
    path: Path,
    image_id: str | None,
    shape: Sequence[int] | None,
    progress: Progress | None = None,
) -> Any:
    if image_id is None:
        ids = rle_csv_ids(path)
        if len(ids) != 1:
            shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
            raise ValueError(
                f"{path} holds {len(ids)} masks: choose one with image_id= (on the "
                "command line: --id) "
                f"(ids: {shown or 'none'})"
            )
        image_id = ids[0]
    if shape is None:
        raise ValueError(
            f"{path}: an RLE mask does not record its size: pass shape=(height, width), "
            "e.g. from the image"
        )
    rle = read_rle_csv(path, image_id)
    height, width = (int(v) for v in shape)
    if height * width <= IN_MEMORY_PIXELS:
        return np.ascontiguousarray(rle_decode(rle, (height, width)))
    import zarr

    # Compressed chunks in memory: a slide's mask is a few MB this way.
    chunk = mask_pyramids.ZARR_CHUNK
    out = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(height, width),
        chunks=(chunk, chunk),
        dtype=np.uint8,
        fill_value=0,
    )
    rle_decode(rle, (height, width), out=out, progress=progress)
    return da.from_zarr(out)


def _read(
    path: str | os.PathLike[str],
    image_id: str | None = None,
    shape: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> tuple[Any, float | None]:
    """The mask at ``path`` and its pixel size in microns (None if unknown);
    ``progress`` follows the decoding of a big RLE mask, the only format read
    whole before it is used."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such mask file")
    kind = _FORMATS.get(mask_suffix(path) or "", "zarr" if path.is_dir() else "image")
    if kind == "csv":
        return _to_mask(_read_csv(path, image_id, shape, progress), str(path)), None
    if kind == "geojson":
        if shape is None:
            raise ValueError(
                f"{path}: GeoJSON does not record the image size: pass shape=(height, width)"
            )
        data = _geojson.read_geojson(path)
        if int(np.prod(shape)) <= IN_MEMORY_PIXELS:
            return _geojson.geojson_to_mask(data, tuple(shape)), None
        return _geojson.geojson_to_dask(data, tuple(shape)), None
    if kind == "zarr":
        array, mpp = mask_pyramids.read_ome_zarr(path)
        return _to_mask(_finish(array), str(path)), mpp
    # TIFF, PNG, JPEG: by content. A big TIFF stays open while its array lives.
    slide = open_slide(path)
    if _small(slide.levels[0]):
        with slide:
            return _to_mask(_finish(slide.levels[0]), str(path)), slide.mpp
    try:
        return _to_mask(slide.levels[0], str(path)), slide.mpp
    except BaseException:
        slide.close()
        raise


def read_mask(
    path: str | os.PathLike[str],
    *,
    image_id: str | None = None,
    shape: Sequence[int] | None = None,
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

    Returns
    -------
    numpy.ndarray or dask.array.Array
        2-D ``(height, width)``: numpy up to :data:`IN_MEMORY_PIXELS` pixels,
        else dask. Binary masks are ``uint8`` 0/1; instance label images keep
        their ids and type (``uint16``/``uint32``).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        An unreadable file (:class:`~slide_unet.core.errors.SlideError`), a
        picture rather than a mask, an RLE CSV without `shape` or the id asked
        for, or GeoJSON that is not a FeatureCollection of polygons.
    """
    return _read(path, image_id, shape)[0]


# -- writing -------------------------------------------------------------------------


def _writable(mask: Any) -> tuple[Any, np.dtype]:
    """The mask as an array that slices, and the type to store it as."""
    if not (hasattr(mask, "shape") and hasattr(mask, "dtype") and hasattr(mask, "__getitem__")):
        mask = np.asarray(mask)
    if len(mask.shape) != 2:
        raise ValueError(f"a mask must be 2-D (height, width), got shape {tuple(mask.shape)}")
    if min(mask.shape) < 1:
        raise ValueError(f"the mask is empty (shape {tuple(mask.shape)})")
    dtype = np.dtype(mask.dtype)
    if dtype == np.bool_:
        return mask, np.dtype(np.uint8)
    if dtype.kind not in "ui":
        raise ValueError(f"a mask must hold integers or booleans, got {dtype}")
    return mask, dtype


def _write_png(
    mask: Any, path: Path, dtype: np.dtype, mpp: float | None, progress: Progress | None
) -> Path:
    height, width = int(mask.shape[0]), int(mask.shape[1])
    if height * width > MAX_PNG_PIXELS:
        raise ValueError(
            f"a {height} x {width} mask is too big for PNG (at most "
            f"{MAX_PNG_PIXELS} pixels); write .ome.tif or .zarr instead"
        )
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
        raise ValueError(f"PNG holds label ids up to 65535; this mask has {largest}")
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
    progress : callable, optional
        ``progress(done, total)`` after each step of the writer: each band of
        the mask it reads (rows; columns for RLE), then PNG's encoding or each
        OME-TIFF overview level. ``total`` stays the same for one write.
    cancel : threading.Event or callable, optional
        Checked at the start and at each step; once set (or returning True)
        the write stops with :class:`~slide_unet.core.blocks.Cancelled`,
        leaving no file and any existing one untouched.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        An unknown extension (the message lists the supported ones), a mask
        that is not 2-D integer/boolean, or one too big for PNG.
    slide_unet.core.blocks.Cancelled
        `cancel` asked to stop.
    """
    path = Path(path)
    kind = _FORMATS.get(mask_suffix(path) or "")
    if kind is None:
        raise _unknown(path)
    mask, dtype = _writable(mask)
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
    return _geojson.write_geojson(mask, path, classification=classification, progress=step)


def export_mask(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    image_id: str | None = None,
    shape: Sequence[int] | None = None,
    mpp: float | None = None,
    levels: int | None = None,
    classification: str | None = "Glomerulus",
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
    levels, classification
        As for :func:`write_mask`.
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
    slide_unet.core.blocks.Cancelled
        `cancel` asked to stop; nothing was written.
    """
    src, dst = Path(src), Path(dst)
    if mask_suffix(dst) is None:
        raise _unknown(dst)  # before reading a big mask for nothing
    mask, src_mpp = _read(src, image_id, shape, _steps(progress, cancel))
    if image_id is None:
        ids = rle_csv_ids(src) if mask_suffix(src) == ".csv" else []
        image_id = ids[0] if len(ids) == 1 else mask_stem(src)
    return write_mask(
        mask,
        dst,
        mpp=mpp or src_mpp,
        image_id=image_id,
        levels=levels,
        classification=classification,
        progress=progress,
        cancel=cancel,
    )

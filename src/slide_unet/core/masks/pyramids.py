"""Pyramidal masks: OME-TIFF and OME-Zarr writers streamed band by band (the
reader of OME-Zarr masks is :mod:`slide_unet.core.masks.ome_zarr`).

The mask is read in bands of whole rows (the next band is read while this one
is written); each band is written at full resolution and halved, level after
level, into the overview levels. Memory is a couple of bands whatever the
mask's size; the source may be a numpy, dask or zarr array.

Overview levels take the **maximum** of each 2x2 block ("any foreground"):
an object of a single pixel still shows at every zoom level, where averaging
or the majority would erase small objects (a glomerulus 16 pixels across is
one pixel at 1/16), and with instance labels the maximum is always one of the
four ids, never a blend of them. Levels halve until the largest side is at
most :data:`SMALLEST_SIDE` pixels.

OME-TIFF
    Tiled 512 x 512, Adobe deflate (zlib) compression. On the HuBMAP masks
    zstd wrote about 4x faster and 2x smaller, but Bio-Formats (QuPath,
    Fiji) cannot read zstd TIFF tiles, and a mask 500x smaller than raw
    already: deflate is what every TIFF reader understands. Overview levels
    are SubIFDs (as Bio-Formats and ``open_slide`` read them), the pixel size
    is in the OME-XML (``PhysicalSizeX/Y`` in µm) and in the resolution tags
    of every level.
OME-Zarr
    NGFF 0.4 on zarr format 2 (``/`` chunk keys, Blosc zstd with
    bit-shuffle): the version that every OME-Zarr reader opens, napari-ome-zarr
    and ome-zarr-py old and new, Fiji's MoBIE/n5-zarr, QuPath's Bio-Formats and
    vizarr; NGFF 0.5 needs zarr format 3, which older readers lack. The store is
    a multiscale *label image* (``multiscales`` plus ``image-label``), the
    layout OME-Zarr puts under an image's ``labels/``, here at the root;
    ``scale`` is in micrometres when the pixel size is known. Chunks are
    1024 x 1024; chunks without foreground are not stored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr
from numcodecs import Blosc

from slide_unet.core import ngff
from slide_unet.core.atomic import atomic_path
from slide_unet.core.errors import InputError
from slide_unet.core.limits import check_decode
from slide_unet.core.masks.bounds import check_mask_shape, check_written_mpp
from slide_unet.core.masks.ome_zarr import read_ome_zarr

__all__ = [
    "SMALLEST_SIDE",
    "TIFF_TILE",
    "ZARR_CHUNK",
    "check_pyramid",
    "halve_max",
    "level_count",
    "read_ome_zarr",
    "write_ome_tiff",
    "write_ome_zarr",
]

#: Overview levels stop once the largest side is at most this many pixels.
SMALLEST_SIDE = 1024
#: Tile side of OME-TIFF masks.
TIFF_TILE = 512
#: Chunk side of OME-Zarr masks.
ZARR_CHUNK = 1024
#: TIFF compression: Adobe deflate, the one every TIFF reader decodes.
TIFF_COMPRESSION = "zlib"


def level_count(shape: tuple[int, int]) -> int:
    """Levels of a mask file, full resolution included, halving until the largest side
    is at most :data:`SMALLEST_SIDE` (:func:`slide_unet.core.ngff.level_count`)."""
    return ngff.level_count(shape, SMALLEST_SIDE)


def halve_max(block: np.ndarray) -> np.ndarray:
    """Halve a 2-D block by the maximum of each 2x2 block (odd sides padded with 0)."""
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)))
    return np.maximum(
        np.maximum(block[0::2, 0::2], block[1::2, 0::2]),
        np.maximum(block[0::2, 1::2], block[1::2, 1::2]),
    )


def _check_levels(shape: tuple[int, int], levels: int | None) -> int:
    if levels is None:
        return level_count(shape)
    try:
        whole = int(levels) == levels
    except (TypeError, ValueError, OverflowError):
        whole = False
    # More levels than halvings to one pixel are empty: refuse them.
    if not whole or not 1 <= levels <= 1 + max(1, max(shape)).bit_length():
        raise InputError(
            f"levels must be a whole number from 1 to {1 + max(1, max(shape)).bit_length()} "
            f"(or None: automatic), got {levels!r}"
        )
    return int(levels)


def _check_bands(
    shape: tuple[int, int],
    shapes: list[tuple[int, int]],
    chunk_rows: int,
    dtype: np.dtype,
    what: str,
) -> None:
    """Refuse a write whose bands of rows would not fit the memory budget.

    A band is whole rows: for a very wide mask, or one whose smallest level
    needs many rows per pixel, it is big. At once: the band written, the next
    one read, and the halved copies (half, a quarter...): about 3 bands.
    """
    rows = min(_band_rows(shapes, chunk_rows)[0], shape[0])
    band = rows * shape[1] * dtype.itemsize
    check_decode(3 * band, f"{what}: bands of {rows:,} x {shape[1]:,} pixels")


def check_pyramid(
    shape: tuple[int, int],
    dtype: np.dtype,
    levels: int | None,
    *,
    zarr_store: bool,
    what: str,
) -> list[tuple[int, int]]:
    """The shapes of the levels of a pyramid to write, refusing one that cannot be.

    Lets a caller refuse a write before it decodes the mask for it.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` of the mask.
    dtype : numpy.dtype
        Pixel type to store.
    levels : int or None
        Levels asked for (None: automatic).
    zarr_store : bool
        OME-Zarr (bands of whole 1024-row chunks) rather than OME-TIFF (512).
    what : str
        What is written, for messages.

    Raises
    ------
    InputError
        A shape no mask can have (:func:`check_mask_shape`), or a level count
        out of range.
    LimitError
        Bands of rows over the memory budget: a very wide mask.
    """
    shape = check_mask_shape(shape, what)
    shapes = ngff.level_shapes(shape, _check_levels(shape, levels))
    _check_bands(shape, shapes, ZARR_CHUNK if zarr_store else TIFF_TILE, np.dtype(dtype), what)
    return shapes


def _bands(mask: Any, rows: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """The mask in bands of ``rows`` rows, the next read while this one is used."""
    height = int(mask.shape[0])

    def read(y0: int) -> np.ndarray:
        return np.asarray(mask[y0 : y0 + rows]).astype(dtype, copy=False)

    starts = list(range(0, height, rows))
    if isinstance(mask, np.ndarray):
        for y0 in starts:
            yield read(y0)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="slide-unet-mask-read") as pool:
        future = pool.submit(read, starts[0])
        try:
            for i in range(len(starts)):
                band = future.result()
                if i + 1 < len(starts):
                    future = pool.submit(read, starts[i + 1])
                yield band
        finally:
            future.cancel()


class _RowWriter:
    """Collects consecutive bands of one level and writes whole chunk rows."""

    def __init__(self, array: Any, chunk_rows: int) -> None:
        self.array = array
        self.chunk_rows = chunk_rows
        self.pending: list[np.ndarray] = []
        self.written = 0

    def add(self, band: np.ndarray) -> None:
        self.pending.append(band)
        if sum(len(b) for b in self.pending) >= self.chunk_rows:
            self.flush(whole_chunks=True)

    def flush(self, whole_chunks: bool = False) -> None:
        if not self.pending:
            return
        block = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        n = len(block) - len(block) % self.chunk_rows if whole_chunks else len(block)
        rows = min(n, self.array.shape[0] - self.written)
        if rows > 0:
            self.array[self.written : self.written + rows] = block[:rows]
            self.written += rows
        self.pending = [block[n:]] if n < len(block) else []


def _band_rows(shapes: list[tuple[int, int]], chunk_rows: int) -> tuple[int, int]:
    """Rows of a band (whole chunks, and whole pixels of the smallest level),
    and the number of bands."""
    rows = math.lcm(chunk_rows, 2 ** (len(shapes) - 1))
    return rows, -(-shapes[0][0] // rows)


def _stream(
    mask: Any,
    shapes: list[tuple[int, int]],
    dtype: np.dtype,
    chunk_rows: int,
    level0: Callable[[np.ndarray], None],
    overviews: list[_RowWriter],
    progress: Callable[[int, int], None] | None,
    seen: dict[str, int],
    later_steps: int = 0,
) -> Iterator[None]:
    """Read the mask once, yielding after each band: hand full-resolution bands
    to ``level0``, add each overview band to its writer (the caller flushes
    them at the end), and keep the largest value in ``seen["max"]``. Progress
    counts bands out of their number plus ``later_steps`` the caller reports."""
    rows, bands = _band_rows(shapes, chunk_rows)
    total = bands + later_steps
    seen["max"] = 0
    for i, band in enumerate(_bands(mask, rows, dtype)):
        if band.size:
            seen["max"] = max(seen["max"], int(band.max()))
        level0(band)
        for writer in overviews:
            band = halve_max(band)
            writer.add(band)
        if progress is not None:
            progress(i + 1, total)
        yield


def _tiles(band: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    for y0 in range(0, band.shape[0], tile):
        for x0 in range(0, band.shape[1], tile):
            yield band[y0 : y0 + tile, x0 : x0 + tile]


def write_ome_tiff(
    mask: Any,
    path: str | os.PathLike[str],
    *,
    dtype: np.dtype,
    mpp: float | None = None,
    levels: int | None = None,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a 2-D mask as a tiled, pyramidal OME-TIFF, atomically.

    Parameters
    ----------
    mask : array-like
        ``(height, width)`` numpy, dask or zarr array.
    path : str or os.PathLike
        Output file.
    dtype : numpy.dtype
        Pixel type to store.
    mpp : float, optional
        Microns per pixel at full resolution.
    levels : int, optional
        Pyramid levels, full resolution included (default: down to 1024 px).
    name : str, optional
        Image name in the OME-XML.
    progress : callable, optional
        ``progress(done, total)`` after each band of full-resolution rows and
        after each overview level. To stop, raise from it (e.g.
        :class:`~slide_unet.core.errors.Cancelled`): no file is left, and any
        existing one is untouched.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    InputError
        A pixel size or level count out of range, or a shape no mask can have
        (:func:`check_mask_shape`).
    LimitError
        Bands of rows over the memory budget (a very wide mask).
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    mpp = check_written_mpp(mpp)
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    shapes = check_pyramid(shape, dtype, levels, zarr_store=False, what=f"writing {path}")
    # Overviews wait in memory, compressed, until full resolution is written:
    # TIFF stores levels one after the other.
    store = zarr.storage.MemoryStore()
    cached = [
        zarr.create_array(
            store, name=str(k), shape=s, chunks=(TIFF_TILE, s[1]), dtype=dtype, fill_value=0
        )
        for k, s in enumerate(shapes[1:], start=1)
    ]
    writers = [_RowWriter(a, TIFF_TILE) for a in cached]
    bands: list[np.ndarray] = []

    def level0_tiles() -> Iterator[np.ndarray]:
        # tifffile pulls tiles from here, which drives the one pass over the mask.
        stream = _stream(
            mask, shapes, dtype, TIFF_TILE, bands.append, writers, progress, {}, len(cached)
        )
        for _ in stream:
            while bands:
                yield from _tiles(bands.pop(0), TIFF_TILE)

    options: dict[str, Any] = {
        "tile": (TIFF_TILE, TIFF_TILE),
        "compression": TIFF_COMPRESSION,
        "photometric": "minisblack",
        "dtype": dtype,
        "maxworkers": min(4, os.cpu_count() or 1),
        # tifffile gathers this many bytes of tiles to compress in parallel
        # (256 MB by default): keep it near one band.
        "buffersize": 2**25,
    }
    metadata: dict[str, Any] = {"axes": "YX", "Name": name or path.name}
    if mpp:
        metadata.update(
            PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"
        )
    raw_bytes = sum(h * w for h, w in shapes) * dtype.itemsize
    with (
        atomic_path(path) as tmp,
        tifffile.TiffWriter(tmp, bigtiff=raw_bytes > 2**31, ome=True) as tif,
    ):
        tif.write(
            level0_tiles(),
            shape=shapes[0],
            subifds=len(shapes) - 1,
            metadata=metadata,
            **_resolution(mpp, 1),
            **options,
        )
        # tifffile closes the tile iterator after the last tile; every band is
        # halved by then, so only the overviews' last rows are left to write.
        for writer in writers:
            writer.flush()
        n_bands = _band_rows(shapes, TIFF_TILE)[1]
        for k, array in enumerate(cached, start=1):
            tif.write(
                _array_tiles(array, TIFF_TILE),
                shape=shapes[k],
                subfiletype=1,
                metadata=None,
                **_resolution(mpp, 2**k),
                **options,
            )
            if progress is not None:
                progress(n_bands + k, n_bands + len(cached))
    return path


def _array_tiles(array: Any, tile: int) -> Iterator[np.ndarray]:
    for y0 in range(0, array.shape[0], tile):
        yield from _tiles(np.asarray(array[y0 : y0 + tile]), tile)


def _resolution(mpp: float | None, factor: int) -> dict[str, Any]:
    if not mpp:
        return {}
    per_cm = 1e4 / (mpp * factor)
    return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}


def write_ome_zarr(
    mask: Any,
    path: str | os.PathLike[str],
    *,
    dtype: np.dtype,
    mpp: float | None = None,
    levels: int | None = None,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a 2-D mask as an OME-Zarr (NGFF 0.4) multiscale label image, atomically.

    Parameters are those of :func:`write_ome_tiff`; `path` is a folder, and
    `progress` is called after each band of full-resolution rows (all levels
    are written band by band).

    Returns
    -------
    pathlib.Path
        The store written.

    Raises
    ------
    InputError, LimitError
        As :func:`write_ome_tiff`.
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    mpp = check_written_mpp(mpp)
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    shapes = check_pyramid(shape, dtype, levels, zarr_store=True, what=f"writing {path}")
    compressor = Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE)
    with atomic_path(path) as tmp:
        root = zarr.open_group(tmp, mode="w", zarr_format=2)
        arrays = [
            root.create_array(
                str(k),
                shape=s,
                chunks=(min(ZARR_CHUNK, s[0]), min(ZARR_CHUNK, s[1])),
                dtype=dtype,
                fill_value=0,
                compressors=compressor,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
            for k, s in enumerate(shapes)
        ]
        writers = [_RowWriter(a, ZARR_CHUNK) for a in arrays]
        seen: dict[str, int] = {}
        for _ in _stream(
            mask, shapes, dtype, ZARR_CHUNK, writers[0].add, writers[1:], progress, seen
        ):
            pass
        for writer in writers:
            writer.flush()
        root.attrs.update(_ngff_metadata(name or path.name, len(shapes), mpp, seen["max"] <= 1))
    return path


def _ngff_metadata(name: str, levels: int, mpp: float | None, binary: bool) -> dict[str, Any]:
    return ngff.label_metadata(
        name,
        levels,
        mpp,
        version="0.4",
        colours=binary,
        description="each level the 2x2 maximum of the one above",
    )

"""Reading the mask formats that do not record their size: Kaggle RLE CSV and
GeoJSON, drawn at a ``(height, width)`` the caller gives.

The shape given is checked before anything is read or decoded
(:func:`declared_shape`): a shape no mask can have
(:mod:`slide_unet.core.masks.bounds`) is refused at once, even where the
decoding would stream. Errors of the decoders, which do not know the file,
are given its name.

This module is part of the napari-free core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from slide_unet.core.errors import InputError, LimitError, MaskError
from slide_unet.core.masks import geojson
from slide_unet.core.masks.bounds import check_mask_shape
from slide_unet.core.masks.pyramids import ZARR_CHUNK
from slide_unet.core.masks.rle import rle_decode
from slide_unet.core.masks.rle_csv import read_rle_csv, rle_csv_ids

__all__ = ["declared_shape", "read_geojson_mask", "read_rle_mask"]

#: ``progress(done, total)``: how far the decoding has got.
Progress = Callable[[int, int], None]


def declared_shape(path: Path, shape: Sequence[int] | None, what: str) -> tuple[int, int]:
    """The ``(height, width)`` given for a format that does not record it,
    checked before anything is decoded.

    Raises
    ------
    InputError
        No shape (the message says to pass one), not two positive integers,
        or a shape no mask can have
        (:func:`~slide_unet.core.masks.bounds.check_mask_shape`).
    """
    if shape is None:
        raise InputError(
            f"{path}: {what} does not record the image size: pass shape=(height, width) "
            "(on the command line: --shape HEIGHT,WIDTH), e.g. the image's"
        )
    try:
        height, width = (int(v) for v in shape)
        whole = all(int(v) == v for v in shape)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or height < 1 or width < 1:
        raise InputError(
            f"{path}: shape must be two positive integers (height, width), got {shape!r}"
        )
    return check_mask_shape((height, width), f"{path}: shape {shape!r}")


def read_rle_mask(
    path: Path,
    image_id: str | None,
    shape: Sequence[int] | None,
    progress: Progress | None = None,
    in_memory: int = 2**26,
) -> Any:
    """The mask of row `image_id` (None: the only row) of an RLE CSV, drawn at `shape`.

    Numpy up to `in_memory` pixels, else a dask array of compressed chunks
    in memory; `progress` follows the decoding.

    Raises
    ------
    InputError
        No `image_id` where the file has several rows, or `shape` as
        :func:`declared_shape` refuses it.
    MaskError, LimitError
        An RLE that does not decode, or does not fit; the message names the
        file and the id.
    """
    if image_id is None:
        ids = rle_csv_ids(path)
        if len(ids) != 1:
            shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
            raise InputError(
                f"{path} holds {len(ids)} masks: choose one with image_id= (on the "
                "command line: --id) "
                f"(ids: {shown or 'none'})"
            )
        image_id = ids[0]
    height, width = declared_shape(path, shape, "an RLE mask")
    rle = read_rle_csv(path, image_id)
    try:
        if height * width <= in_memory:
            return np.ascontiguousarray(rle_decode(rle, (height, width)))
        import zarr

        # Compressed chunks in memory: a slide's mask is a few MB this way.
        chunk = ZARR_CHUNK
        out = zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=(height, width),
            chunks=(chunk, chunk),
            dtype=np.uint8,
            fill_value=0,
        )
        rle_decode(rle, (height, width), out=out, progress=progress)
        return da.from_zarr(out)
    except (MaskError, LimitError) as exc:  # the codec does not know the file: name it
        raise type(exc)(f"{path}, id {image_id!r}: {exc}") from None


def read_geojson_mask(
    path: Path,
    shape: Sequence[int] | None,
    in_memory: int = 2**26,
    classification: str | None = None,
) -> Any:
    """The polygons of a GeoJSON file (QuPath's export) drawn as a mask of `shape`:
    numpy up to `in_memory` pixels, else a dask array drawn chunk by chunk.

    With `classification`, a 0/1 mask of that class's features
    (``"Unclassified"``: those without a class). Without it, a 0/1 mask of all
    features when they have one class (or none); when they have several, a
    label mask, one value per class in the order of
    :func:`~slide_unet.core.masks.geojson_read.geojson_classes` (sorted
    names, ``1`` the first; the features without a class, if any, last as
    ``"Unclassified"``).

    Raises
    ------
    InputError
        `shape` as :func:`declared_shape` refuses it; a `classification`
        that no feature has (the message lists those there are).
    MaskError, LimitError
        GeoJSON that cannot be drawn (see
        :func:`~slide_unet.core.masks.geojson.geojson_polygons`), or that does not
        fit; the message names the file.
    """
    height, width = declared_shape(path, shape, "GeoJSON")
    data = geojson.read_geojson(path)
    try:
        classes = geojson.geojson_classes(data)
        if classification is not None and classification not in classes:
            raise InputError(
                f"{path}: no feature of class {classification!r} "
                f"(classes: {', '.join(classes) or 'none'})"
            )
        by_class = classes if classification is None and len(classes) > 1 else None
        if height * width <= in_memory:
            return geojson.geojson_to_mask(
                data, (height, width), classification=classification, classes=by_class
            )
        return geojson.geojson_to_dask(
            data, (height, width), classification=classification, classes=by_class
        )
    except (MaskError, LimitError) as exc:  # the rasteriser does not know the file
        raise type(exc)(f"{path}: {exc}") from None

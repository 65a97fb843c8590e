"""The on-disk layout of a mask store: building an empty one, and checking one.

Shared by the store (:mod:`slide_unet.core.masks.store`) and the recovery of a
damaged one (:mod:`slide_unet.core.masks.salvage`), which both import it: neither
imports the other's insides. The sizes are read from this module when used, so
a test may shrink them here.

This module is part of the napari-free core.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from slide_unet.core import ngff
from slide_unet.core.errors import MaskStoreError
from slide_unet.core.masks.bounds import check_shape

__all__ = [
    "ATTRS",
    "CHUNK_SIDE",
    "FORMAT_VERSION",
    "KIND",
    "PROBABILITY",
    "SMALLEST_SIDE",
    "build_probability",
    "build_store",
    "level_count",
    "now",
    "read_probability",
    "store_problem",
]

#: Version of the store layout; a store of another version is not opened.
FORMAT_VERSION = 1
#: Chunk side of every level (level 0's may be chosen per store).
CHUNK_SIDE = 512
#: Overview levels stop once the largest side is at most this many pixels.
SMALLEST_SIDE = 512
#: The group attribute that holds the store's own record.
ATTRS = "slide_unet"
#: Its ``kind``.
KIND = "slide-unet-mask"
#: The array of the model's probabilities beside level 0 (made on first use).
PROBABILITY = "probability"


def now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def level_count(shape: tuple[int, int]) -> int:
    """Levels of a store for a mask of ``shape``, full resolution included."""
    return ngff.level_count(check_shape(shape, error=MaskStoreError), SMALLEST_SIDE)


def build_store(
    folder: Path,
    shape: tuple[int, int],
    mpp: float | None,
    dtype: np.dtype,
    chunk: int,
    slide: str | None,
    key: str | None,
    source: str | None,
) -> None:
    """Create an empty store at ``folder`` (which must not exist)."""
    shapes = ngff.level_shapes(shape, level_count(shape))
    group = zarr.open_group(folder, mode="w", zarr_format=3)
    for k, level_shape in enumerate(shapes):
        side = chunk if k == 0 else CHUNK_SIDE
        group.create_array(
            str(k),
            shape=level_shape,
            chunks=(min(side, level_shape[0]), min(side, level_shape[1])),
            dtype=dtype,
            fill_value=0,
            # Level 1: compresses about as well on masks as level 5 and writes
            # twice as fast (the engine writes a block in a few milliseconds).
            compressors=BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
            # Fixed so that clear() can drop a level's chunks as one folder.
            chunk_key_encoding={"name": "default", "separator": "/"},
        )
    created = now()
    # The attributes go last: a store with them is a complete store.
    group.attrs.update(
        {
            ATTRS: {
                "kind": KIND,
                "version": FORMAT_VERSION,
                "slide": slide,
                "key": key,
                "shape": list(shape),
                "dtype": dtype.name,
                "levels": len(shapes),
                "mpp": mpp,
                "created": created,
                "modified": created,
                "edited": False,
                "source": source,
                "regions": [],
            },
            "ome": ngff.label_metadata(folder.name, len(shapes), mpp, version="0.5"),
        }
    )


def build_probability(folder: Path, shape: tuple[int, int], chunks: tuple[int, int]) -> None:
    """Create the store's empty ``probability`` array: uint8 ``round(p * 255)`` of
    the model's foreground probability at full resolution, level 0's shape and
    chunks, 0 where unknown (never segmented, or cleared as background; a
    probability below 1/510 rounds to 0 too, which never happens inside an
    object: thresholds are far above it).

    Not listed in the NGFF multiscales, so OME-Zarr readers see only the mask.
    """
    group = zarr.open_group(folder, mode="r+", zarr_format=3)
    group.create_array(
        PROBABILITY,
        shape=shape,
        chunks=chunks,
        dtype=np.uint8,
        fill_value=0,
        # zstd level 1, as for the mask (written from the engine's writer threads);
        # see the README for what it takes on the sample.
        compressors=BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle"),
        chunk_key_encoding={"name": "default", "separator": "/"},
        attributes={
            "slide_unet": {
                "encoding": "round(probability * 255); 0 where unknown",
            }
        },
    )


def read_probability(folder: str | os.PathLike[str]) -> Any:
    """The ``probability`` array of the mask store at ``folder``, read-only, or None
    when ``folder`` is not a usable store or holds none (nothing is created)."""
    folder = Path(folder)
    if not (folder / PROBABILITY / "zarr.json").is_file() or store_problem(folder) is not None:
        return None
    return zarr.open_array(folder / PROBABILITY, mode="r", zarr_format=3)


def store_problem(folder: Path) -> str | None:
    """Why the store at ``folder`` cannot be used, or None when it can."""
    try:
        group = zarr.open_group(folder, mode="r", zarr_format=3)
        info = group.attrs[ATTRS]
        if info.get("kind") != KIND or "version" not in info:
            return "its attributes are not those of a slide-unet mask store"
        if info["version"] != FORMAT_VERSION:
            return f"it is format version {info['version']}, this version reads {FORMAT_VERSION}"
        shapes = ngff.level_shapes(tuple(info["shape"]), int(info["levels"]))
        for k, level_shape in enumerate(shapes):
            array = group[str(k)]
            if tuple(array.shape) != level_shape or array.dtype != np.dtype(info["dtype"]):
                return f"level {k} is {array.shape} {array.dtype}, expected {level_shape}"
    except Exception as exc:  # zarr raises several kinds for a broken store
        return f"it cannot be read ({type(exc).__name__}: {exc})"
    return None

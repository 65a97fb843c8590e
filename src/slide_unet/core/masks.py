"""Mask formats in and out.

The HuBMAP Kaggle run-length encoding and its CSV files live in
:mod:`slide_unet.core.rle`; they are re-exported here so that
``from slide_unet.core.masks import rle_encode`` keeps working.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

from slide_unet.core.rle import (
    RLE_COLUMNS,
    read_rle_csv,
    rle_decode,
    rle_decode_to_zarr,
    rle_encode,
    write_rle_csv,
)

__all__ = [
    "RLE_COLUMNS",
    "read_rle_csv",
    "rle_decode",
    "rle_decode_to_zarr",
    "rle_encode",
    "write_rle_csv",
]

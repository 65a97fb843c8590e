"""Mask formats in and out, in one place.

The formats live in their own modules: the Kaggle RLE codec in
:mod:`~slide_unet.core.rle` and its CSV files in :mod:`~slide_unet.core.rle_csv`;
OME-TIFF, OME-Zarr, PNG and GeoJSON files through
:mod:`~slide_unet.core.mask_io`. This module gathers their public names.
"""

from __future__ import annotations

from slide_unet.core.mask_io import (
    MASK_SUFFIXES,
    check_same_shape,
    export_mask,
    read_mask,
    write_mask,
)
from slide_unet.core.rle import rle_decode, rle_decode_to_zarr, rle_encode
from slide_unet.core.rle_csv import RLE_COLUMNS, read_rle_csv, rle_csv_ids, write_rle_csv

__all__ = [
    "MASK_SUFFIXES",
    "RLE_COLUMNS",
    "check_same_shape",
    "export_mask",
    "read_mask",
    "read_rle_csv",
    "rle_csv_ids",
    "rle_decode",
    "rle_decode_to_zarr",
    "rle_encode",
    "write_mask",
    "write_rle_csv",
]

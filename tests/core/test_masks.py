"""``slide_unet.core.masks`` keeps the RLE names it had before they moved to ``core.rle``.

The codec's own tests are in ``test_rle.py``.
"""

from __future__ import annotations

import pytest

from slide_unet.core import masks, rle

RLE_NAMES = [
    "RLE_COLUMNS",
    "read_rle_csv",
    "rle_decode",
    "rle_decode_to_zarr",
    "rle_encode",
    "write_rle_csv",
]


@pytest.mark.parametrize("name", RLE_NAMES)
def test_masks_reexports_the_rle_codec(name: str) -> None:
    assert name in masks.__all__
    assert getattr(masks, name) is getattr(rle, name)

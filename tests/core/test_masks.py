"""``slide_unet.core.masks`` gathers the public names of every mask format module."""

from __future__ import annotations

import pytest

from slide_unet.core import mask_io, masks, rle, rle_csv


@pytest.mark.parametrize("name", masks.__all__)
def test_masks_reexports_each_format_module_public_name(name: str) -> None:
    source = next(m for m in (rle, rle_csv, mask_io) if hasattr(m, name))
    assert getattr(masks, name) is getattr(source, name)


def test_masks_gathers_every_public_name_of_the_rle_modules() -> None:
    assert set(rle.__all__) | set(rle_csv.__all__) <= set(masks.__all__) | {"MAX_IN_MEMORY_PIXELS"}

"""Images and their expert masks, paired by file stem, for training and evaluation.

A folder of images and a folder of masks pair up by stem: ``images/10014.png``
with ``masks/10014.png``, ``images/a.ome.tif`` with ``masks/a.csv``. Masks may be
any format :func:`~slide_unet.core.mask_io.read_mask` reads: RGB red on black,
0/1, 0/255 or instance labels (non-zero is foreground).

This module is part of the napari-free core.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slide_unet.core.mask_io import mask_stem, mask_suffix, read_mask
from slide_unet.core.slide import open_slide

__all__ = ["ImagePair", "find_pairs", "image_stem", "read_pair"]

#: Image file endings, longest first so ``.ome.tif`` wins over ``.tif``.
IMAGE_SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".tiff",
    ".tif",
    ".svs",
    ".png",
    ".jpeg",
    ".jpg",
)


def image_stem(path: str | os.PathLike[str]) -> str | None:
    """The name of an image file without its image ending; None for other files."""
    name = Path(path).name
    lower = name.lower()
    suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)
    return name[: -len(suffix)] if suffix else None


def _mask_stem(path: Path) -> str | None:
    return mask_stem(path) if mask_suffix(path) else None


@dataclass(frozen=True)
class ImagePair:
    """One image and its expert mask."""

    stem: str
    image: Path
    mask: Path


def _by_stem(folder: Path, stem_of: Callable[[Path], str | None], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        raise ValueError(f"{folder}: expected a folder of {what}, found {found}")
    found_by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = stem_of(path) if path.is_file() and not path.name.startswith(".") else None
        if stem is None:
            continue
        if stem in found_by_stem:
            raise ValueError(
                f"{folder}: two {what} are named {stem!r} ({found_by_stem[stem].name} and "
                f"{path.name}): keep one"
            )
        found_by_stem[stem] = path
    return found_by_stem


def find_pairs(
    images: str | os.PathLike[str], masks: str | os.PathLike[str]
) -> tuple[list[ImagePair], list[Path]]:
    """Pair the images of one folder with the masks of another by file stem.

    Returns
    -------
    pairs : list of ImagePair
        Sorted by stem.
    unpaired : list of Path
        Images with no mask of the same stem.

    Raises
    ------
    ValueError
        A folder is missing, two files share a stem, or nothing pairs up.
    """
    images, masks = Path(images), Path(masks)
    image_files = _by_stem(images, image_stem, "images")
    mask_files = _by_stem(masks, _mask_stem, "masks")
    pairs = [
        ImagePair(stem, image_files[stem], mask_files[stem])
        for stem in sorted(image_files)
        if stem in mask_files
    ]
    if not pairs:
        raise ValueError(
            f"no image in {images} ({len(image_files)} images) has a mask of the same name in "
            f"{masks} ({len(mask_files)} masks): images and masks pair up by file stem"
        )
    unpaired = [image_files[s] for s in sorted(image_files) if s not in mask_files]
    return pairs, unpaired


def read_pair(pair: ImagePair) -> tuple[np.ndarray, np.ndarray, float | None]:
    """An image (``YXC``, alpha dropped, gray kept as one channel), its foreground
    (bool, non-zero in the mask) and the image's pixel size in µm if the file says.

    Raises
    ------
    ValueError
        Unreadable files, or a mask whose shape is not the image's.
    """
    with open_slide(pair.image) as slide:
        image = np.asarray(slide.levels[0])
        mpp = slide.mpp
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 4:
        image = image[..., :3]
    elif image.shape[2] == 2:  # gray + alpha
        image = image[..., :1]
    mask = np.asarray(read_mask(pair.mask, shape=image.shape[:2])) != 0
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"{pair.mask}: mask is {mask.shape[0]} x {mask.shape[1]} pixels, but its image "
            f"{pair.image.name} is {image.shape[0]} x {image.shape[1]}"
        )
    return image, mask, mpp

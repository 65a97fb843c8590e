"""Images and their expert masks, paired by file stem, for training and evaluation.

A folder of images and a folder of masks pair up by stem: ``images/10014.png``
with ``masks/10014.png``, ``images/a.ome.tif`` with ``masks/a.csv``. Masks may be
any format :func:`~slide_unet.core.masks.io.read_mask` reads: RGB red on black,
0/1, 0/255 or instance labels (non-zero is foreground).

Fine-tuning also takes images already in memory (napari layers) as
:class:`ArrayPair`, optionally with the boxes the user corrected;
:func:`read_pair` reads either kind.

This module is part of the napari-free core.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slide_unet.core.errors import InputError
from slide_unet.core.masks.io import mask_stem, mask_suffix, read_mask
from slide_unet.core.slide.slide import open_slide

__all__ = ["ArrayPair", "ImagePair", "find_pairs", "image_stem", "read_pair"]

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


#: A full-resolution box ``(y0, y1, x0, x1)``: rows ``y0:y1``, columns ``x0:x1``.
Region = tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)  # arrays: compared and hashed by identity
class ArrayPair:
    """An image in memory and its corrected mask (e.g. napari layers).

    Attributes
    ----------
    stem : str
        A name for the pair, unique among the pairs of one run.
    image : numpy.ndarray
        ``YXC`` RGB (or RGBA, alpha ignored) or ``YX`` gray, at full resolution.
    mask : numpy.ndarray
        ``YX``, the image's height and width; non-zero is foreground.
    mpp : float or None
        The image's pixel size in µm, if known.
    regions : tuple of (y0, y1, x0, x1)
        Full-resolution boxes the user corrected (clipped to the image);
        empty: the whole mask is to be trusted.

    Raises
    ------
    ValueError
        Shapes that do not fit, a bad pixel size, or an empty or malformed box.
    """

    stem: str
    image: np.ndarray
    mask: np.ndarray
    mpp: float | None = None
    regions: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        image, mask = np.asarray(self.image), np.asarray(self.mask)
        if not self.stem:
            raise InputError("an ArrayPair needs a non-empty stem (a name for the image)")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 2, 3, 4))):
            raise InputError(
                f"{self.stem}: image must be YX gray or YXC with 1 to 4 channels, got shape "
                f"{image.shape}"
            )
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"{self.stem}: mask is {' x '.join(map(str, mask.shape))} but the image is "
                f"{image.shape[0]} x {image.shape[1]}: they must have the same height and width"
            )
        if self.mpp is not None and not self.mpp > 0:
            raise InputError(f"{self.stem}: mpp must be a positive number of µm, got {self.mpp}")
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "regions", _clip_regions(self.stem, self.regions, mask.shape))


def _clip_regions(
    stem: str, regions: Iterable[Sequence[int]], shape: tuple[int, ...]
) -> tuple[Region, ...]:
    """Boxes as int tuples, clipped to ``shape``; an empty or malformed one is an error."""
    h, w = shape[:2]
    out = []
    for box in regions or ():
        values = tuple(int(v) for v in box)
        if len(values) != 4:
            raise InputError(f"{stem}: a region is (y0, y1, x0, x1), got {box!r}")
        y0, y1, x0, x1 = values
        clipped = (max(0, y0), min(h, y1), max(0, x0), min(w, x1))
        if clipped[0] >= clipped[1] or clipped[2] >= clipped[3]:
            raise InputError(
                f"{stem}: region {values} is empty inside the {h} x {w} image "
                "(boxes are y0, y1, x0, x1 with y0 < y1 and x0 < x1)"
            )
        out.append(clipped)
    return tuple(out)


def _by_stem(folder: Path, stem_of: Callable[[Path], str | None], what: str) -> dict[str, Path]:
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        raise InputError(f"{folder}: expected a folder of {what}, found {found}")
    found_by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = stem_of(path) if path.is_file() and not path.name.startswith(".") else None
        if stem is None:
            continue
        if stem in found_by_stem:
            raise InputError(
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
        raise InputError(
            f"no image in {images} ({len(image_files)} images) has a mask of the same name in "
            f"{masks} ({len(mask_files)} masks): images and masks pair up by file stem"
        )
    unpaired = [image_files[s] for s in sorted(image_files) if s not in mask_files]
    return pairs, unpaired


def read_pair(pair: ImagePair | ArrayPair) -> tuple[np.ndarray, np.ndarray, float | None]:
    """An image (``YXC``, alpha dropped, gray kept as one channel), its foreground
    (bool, non-zero in the mask) and the image's pixel size in µm if the file
    (or the :class:`ArrayPair`) says.

    Raises
    ------
    ValueError
        Unreadable files, or a mask whose shape is not the image's.
    """
    if isinstance(pair, ArrayPair):
        return _channels(pair.image), pair.mask != 0, pair.mpp
    with open_slide(pair.image) as slide:
        image = _channels(np.asarray(slide.levels[0]))
        mpp = slide.mpp
    mask = np.asarray(read_mask(pair.mask, shape=image.shape[:2])) != 0
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"{pair.mask}: mask is {mask.shape[0]} x {mask.shape[1]} pixels, but its image "
            f"{pair.image.name} is {image.shape[0]} x {image.shape[1]}"
        )
    return image, mask, mpp


def _channels(image: np.ndarray) -> np.ndarray:
    """``YXC`` with the alpha channel dropped and gray kept as one channel."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 4:
        image = image[..., :3]
    elif image.shape[2] == 2:  # gray + alpha
        image = image[..., :1]
    return image

"""The file formats under :class:`slide_unet.core.slide.slide.Slide`: TIFF, PNG, JPEG.

Each opener reads headers only and returns its pyramid levels as dask arrays
in ``YX`` or ``YXC`` order, the pixel size in microns if the file records
one, and whether the samples are RGB colour.

Headers are not trusted: a pixel size outside :data:`MPP_RANGE` and pyramid
levels that are not halvings of level 0 are ignored with a warning, and a
PNG or JPEG (which can only be decoded whole) is decoded only within the
budget of :mod:`slide_unet.core.limits`. The rules for pixel sizes and
pyramid levels live here, for the other modules that take them from a caller.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from xml.etree import ElementTree

import dask
import dask.array as da
import numpy as np
import tifffile
from PIL import Image

from slide_unet.core.errors import LimitError, SlideError
from slide_unet.core.limits import MPP_RANGE, check_decode, plausible_mpp
from slide_unet.core.slide.tiff_level import TiffLevelReader, level_as_dask

#: Where a file records a print or screen resolution (in dots per inch, most
#: often): one coarser than :data:`MPP_RANGE` is a default, ignored without a word.
_PRINT_RESOLUTIONS = ("resolution tags", "dpi")

#: Largest side a slide may have: anything larger is a corrupt or hostile header.
MAX_SIDE = 2**21

#: A pyramid level's sides may be this far (relative) from level 0's halved k
#: times, plus a pixel of rounding: scanners round level sizes their own way.
LEVEL_SIZE_TOLERANCE = 0.02

_Level = TypeVar("_Level", bound=Any)

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

_MICRONS_PER_UNIT = {
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "\\u00B5m": 1.0,  # ImageJ/Fiji escape "µm" so: TIFF descriptions are ASCII
    "\\u00b5m": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


@dataclass
class TiffSlideFile:
    """A TIFF opened with tifffile; its levels decode tiles in parallel."""

    path: Path
    tif: tifffile.TiffFile
    levels: list[da.Array]
    mpp: float | None
    photometric_rgb: bool
    _readers: list[TiffLevelReader] = field(default_factory=list)

    def close(self) -> None:
        """Close the file."""
        for reader in self._readers:
            reader.close()
        self.tif.close()


@dataclass
class PlainImage:
    """A PNG or JPEG, decoded whole on first use (they are small)."""

    path: Path
    levels: list[da.Array]
    mpp: float | None
    photometric_rgb: bool

    def close(self) -> None:
        """Nothing stays open between reads."""


def open_slide_file(path: Path) -> TiffSlideFile | PlainImage:
    """Open ``path`` by its content (not its extension).

    Raises
    ------
    SlideError
        Not a TIFF, PNG or JPEG; unreadable; truncated; or not a single 2-D plane.
    """
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic.startswith(_TIFF_MAGIC):
        return _open_tiff(path)
    if magic.startswith((_PNG_MAGIC, _JPEG_MAGIC)):
        return _open_plain(path)
    raise SlideError(
        path, f"not a TIFF, PNG or JPEG image (the file starts with bytes {magic[:8]!r})"
    )


# -- pixel size and pyramid rules -------------------------------------------------


def _file_mpp(path: Path, mpp: float | None, where: str) -> float | None:
    """``mpp`` read from ``where`` in the file, or None (with a warning) when implausible."""
    if mpp is None or plausible_mpp(mpp):
        return None if mpp is None else float(mpp)
    low, high = MPP_RANGE
    if mpp > high and where in _PRINT_RESOLUTIONS:
        return None  # 72 or 96 dpi, as image editors write: a screen's, said by no microscope
    warnings.warn(
        f"{path}: the pixel size in its {where} ({mpp:g} µm) is outside {low:g}-{high:g} µm "
        "and is ignored (give the pixel size with mpp= if you know it)",
        stacklevel=4,
    )
    return None


def pyramid_problems(shapes: Sequence[Sequence[int]]) -> dict[int, str]:
    """Which pyramid levels are not consistent with level 0, and why.

    A level is kept when its height and width are both level 0's halved the
    same number of times (within :data:`LEVEL_SIZE_TOLERANCE` and a pixel of
    rounding), it is smaller than the level kept before it, and any channel
    axis matches. Other levels would make a reader that picks a level by its
    size read the wrong pixels.

    Parameters
    ----------
    shapes : sequence of tuple of int
        The levels' shapes (``YX`` or ``YXC``), level 0 first.

    Returns
    -------
    dict
        Level index to a phrase saying what is wrong with it; empty when every
        level is consistent. Level 0 is never listed.
    """
    height, width = int(shapes[0][0]), int(shapes[0][1])
    problems: dict[int, str] = {}
    last = (height, width)
    for i, shape in enumerate(shapes[1:], start=1):
        h, w = int(shape[0]), int(shape[1])
        described = f"{h} x {w}"
        if tuple(shape[2:]) != tuple(shapes[0][2:]):
            problems[i] = f"has shape {tuple(shape)} against level 0's {tuple(shapes[0])}"
        elif h <= 0 or w <= 0 or h >= last[0] or w >= last[1]:
            problems[i] = (
                f"({described}) is not smaller than the level before it ({last[0]} x {last[1]})"
            )
        else:
            k = max(1, round(math.log2(width / w)))
            expected = (height / 2**k, width / 2**k)
            off = [
                abs(n - e) > 1 + LEVEL_SIZE_TOLERANCE * e
                for n, e in zip((h, w), expected, strict=True)
            ]
            if any(off):
                problems[i] = (
                    f"({described}) is not level 0 ({height} x {width}) halved one or more "
                    f"times (halved {k} times it would be about "
                    f"{expected[0]:.0f} x {expected[1]:.0f})"
                )
        if i not in problems:
            last = (h, w)
    return problems


def consistent_levels(levels: Sequence[_Level], where: str | Path = "the image") -> list[_Level]:
    """``levels`` (largest first) without those :func:`pyramid_problems` lists.

    Each level dropped is named in a warning that starts with ``where``.
    """
    problems = pyramid_problems([tuple(level.shape) for level in levels])
    for i, problem in problems.items():
        _warn_ignored_level(where, i, problem)
    return [level for i, level in enumerate(levels) if i not in problems]


def _warn_ignored_level(where: str | Path, index: int, problem: str) -> None:
    warnings.warn(f"{where}: pyramid level {index} {problem}; the level is ignored", stacklevel=4)


# -- TIFF ----------------------------------------------------------------------


def _open_tiff(path: Path) -> TiffSlideFile:
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many kinds on corrupt headers
        raise SlideError(path, f"not a readable TIFF file ({exc})") from exc
    try:
        return _tiff_slide(path, tif)
    except SlideError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise SlideError(path, f"cannot read the TIFF structure ({exc})") from exc


def _tiff_slide(path: Path, tif: tifffile.TiffFile) -> TiffSlideFile:
    series = _main_series(path, tif)
    if 0 in series.shape:
        raise SlideError(path, f"the image is empty (shape {series.shape})")
    _check_not_truncated(path, series)
    levels_series = _pyramid(tif, series)
    readers = [TiffLevelReader(s, level) for s, level in levels_series]
    stat = path.stat()
    token = f"tiff-{abs(hash((str(path.resolve()), stat.st_size, stat.st_mtime_ns)))}"
    levels = [
        _to_yxc(path, level_as_dask(r, f"{token}-level{i}"), r.axes) for i, r in enumerate(readers)
    ]
    problems = pyramid_problems([tuple(level.shape) for level in levels])
    for i, problem in problems.items():
        readers[i].close()
        # Levels the file declares (SubIFDs, SVS) are worth a word; other series
        # were only candidates (a label or macro photo of the same aspect).
        if len(series.levels) > 1:
            _warn_ignored_level(path, i, problem)
    readers = [r for i, r in enumerate(readers) if i not in problems]
    levels = [level for i, level in enumerate(levels) if i not in problems]
    keyframe = series.keyframe
    rgb_photometric = keyframe.photometric in (
        tifffile.PHOTOMETRIC.RGB,
        tifffile.PHOTOMETRIC.YCBCR,
    )
    channels = levels[0].shape[2] if levels[0].ndim == 3 else 1
    rgb = rgb_photometric or (channels == 3 and levels[0].dtype == np.uint8)
    return TiffSlideFile(path, tif, levels, _tiff_mpp(path, tif, keyframe), rgb, readers)


def _main_series(path: Path, tif: tifffile.TiffFile) -> tifffile.TiffPageSeries:
    """The series with the most pixels: the slide, not its label or macro photo."""
    candidates = [s for s in tif.series if "Y" in s.axes and "X" in s.axes]
    if not candidates:
        raise SlideError(path, "the TIFF holds no 2-D image")

    def area(s: tifffile.TiffPageSeries) -> int:
        return s.shape[s.axes.index("Y")] * s.shape[s.axes.index("X")]

    return max(candidates, key=area)


def _check_not_truncated(path: Path, series: tifffile.TiffPageSeries) -> None:
    size = path.stat().st_size
    for page in series.pages:
        if page is None:
            continue
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
        if ends and max(ends) > size:
            raise SlideError(
                path,
                f"the file is truncated: image data runs to byte {max(ends)} "
                f"but the file has {size} bytes",
            )


def _pyramid(
    tif: tifffile.TiffFile, series: tifffile.TiffPageSeries
) -> list[tuple[tifffile.TiffPageSeries, int]]:
    """(series, level) pairs: the series' own levels (SubIFDs, SVS), else other
    series that are smaller copies of it."""
    if len(series.levels) > 1:
        return [(series, i) for i in range(len(series.levels))]
    base_axes, base_shape = series.axes, series.shape
    y, x = base_axes.index("Y"), base_axes.index("X")
    aspect = base_shape[x] / base_shape[y]
    others = []
    for other in tif.series:
        if other is series or other.axes != base_axes:
            continue
        shape = other.shape
        same_channels = all(
            a == b
            for i, (a, b) in enumerate(zip(shape, base_shape, strict=True))
            if i not in (y, x)
        )
        smaller = shape[x] < base_shape[x] and shape[y] < base_shape[y]
        if same_channels and smaller and abs(shape[x] / shape[y] - aspect) < 0.02 * aspect:
            others.append(other)
    others.sort(key=lambda s: -s.shape[x])
    return [(s, 0) for s in (series, *others)]


def _to_yxc(path: Path, array: da.Array, axes: str) -> da.Array:
    """Drop singleton axes and move the channel axis last: ``YX`` or ``YXC``."""
    index: list[slice | int] = []
    kept = ""
    for axis, size in zip(axes, array.shape, strict=True):
        if axis in "YX" or size > 1:
            index.append(slice(None))
            kept += axis
        else:
            index.append(0)
    array = array[tuple(index)]
    extra = [a for a in kept if a not in "YX"]
    if len(extra) > 1 or (extra and extra[0] in "ZTR"):
        raise SlideError(
            path,
            f"expected one 2-D plane with optional colour channels (YX or YXC); "
            f"found axes {axes!r} with shape {tuple(array.shape)}",
        )
    order = [kept.index("Y"), kept.index("X")] + ([kept.index(extra[0])] if extra else [])
    return array.transpose(order)


def _tiff_mpp(path: Path, tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    """The first plausible pixel size among the places a TIFF may record one."""
    for reader, where in (
        (_ome_mpp, "OME metadata"),
        (_svs_mpp, "Aperio description"),
        (_imagej_mpp, "ImageJ metadata"),
        (_resolution_tag_mpp, "resolution tags"),
    ):
        try:
            mpp = reader(tif, page)
        except Exception:  # malformed metadata: the next place may still say
            continue
        mpp = _file_mpp(path, mpp, where)
        if mpp is not None:
            return mpp
    return None


def _ome_mpp(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    root = ElementTree.fromstring(tif.ome_metadata)
    for element in root.iter():
        if element.tag.endswith("}Pixels") or element.tag == "Pixels":
            size = element.get("PhysicalSizeX")
            if size is None:
                return None
            unit = element.get("PhysicalSizeXUnit", "µm")
            return float(size) * _MICRONS_PER_UNIT[unit]
    return None


def _svs_mpp(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    description = tif.pages.first.description
    if "Aperio" not in description:
        return None
    match = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
    return float(match.group(1)) if match else None


def _imagej_mpp(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    meta = tif.imagej_metadata
    if not meta or meta.get("unit") not in _MICRONS_PER_UNIT:
        return None
    num, den = page.tags["XResolution"].value
    return den / num * _MICRONS_PER_UNIT[meta["unit"]]


def _resolution_tag_mpp(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    microns = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}.get(int(tags["ResolutionUnit"].value))
    if microns is None or num == 0:
        return None
    return microns * den / num


# -- PNG and JPEG ----------------------------------------------------------------

#: Pillow mode -> (mode to convert to, dtype, channels)
_PIL_MODES: dict[str, tuple[str, str, int]] = {
    "1": ("L", "uint8", 1),
    "L": ("L", "uint8", 1),
    "LA": ("L", "uint8", 1),
    "P": ("RGB", "uint8", 3),
    "PA": ("RGBA", "uint8", 4),
    "RGB": ("RGB", "uint8", 3),
    "RGBA": ("RGBA", "uint8", 4),
    "RGBX": ("RGB", "uint8", 3),
    "CMYK": ("RGB", "uint8", 3),
    "YCbCr": ("RGB", "uint8", 3),
    "I;16": ("I;16", "uint16", 1),
    "I;16B": ("I;16", "uint16", 1),
    "I;16L": ("I;16", "uint16", 1),
    "I": ("I", "int32", 1),
    "F": ("F", "float32", 1),
}

#: Bytes per pixel of a Pillow image in memory, by mode: Pillow keeps every
#: multi-band mode (RGB too) in four bytes a pixel.
_PIL_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}

#: Pillow's own guard against decompression bombs, set to the largest image a
#: slide may be (:data:`MAX_SIDE` a side) while we read headers: Pillow's
#: default (about 179 megapixels) refuses real slides. What is decoded is
#: bounded by :func:`~slide_unet.core.limits.check_decode` instead.
_PIL_PIXEL_LIMIT = MAX_SIDE**2

_PIL_LOCK = threading.Lock()


@contextlib.contextmanager
def _pil_pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb guard at :data:`_PIL_PIXEL_LIMIT` (it is global state)."""
    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = _PIL_PIXEL_LIMIT
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _decoded_bytes(
    width: int, height: int, pil_mode: str, mode: str, dtype: str, channels: int
) -> int:
    """Memory that decoding a whole PNG or JPEG takes at its peak: Pillow's image,
    its conversion to ``mode``, and the array copied out of it."""
    native = _PIL_PIXEL_BYTES.get(pil_mode, 4)
    converted = _PIL_PIXEL_BYTES.get(mode, 4) if pil_mode != mode else 0
    out = np.dtype(dtype).itemsize * channels
    return width * height * (native + converted + out)


def _decode_plain(path: Path, mode: str, dtype: str, channels: int) -> np.ndarray:
    try:
        with _pil_pixel_limit(), Image.open(path) as image:
            width, height = image.size
            # PNG and JPEG cannot be decoded in part: the whole image counts. The
            # size is read again here, so a file replaced since it was opened is
            # checked too.
            check_decode(
                _decoded_bytes(width, height, image.mode, mode, dtype, channels),
                f"{path}: a {width} x {height} {image.mode} {image.format} image (decoded whole)",
            )
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            array = np.asarray(image if image.mode == mode else image.convert(mode))
    except LimitError:
        raise  # already one clear line (and a ValueError, which the next clause takes)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SlideError(path, f"cannot decode the image ({exc})") from exc
    array = array.astype(dtype, copy=False)
    return array if channels > 1 or array.ndim == 2 else array[..., 0]


def _open_plain(path: Path) -> PlainImage:
    try:
        with _pil_pixel_limit(), Image.open(path) as image:
            width, height = image.size
            pil_mode = image.mode
            if pil_mode == "P" and "transparency" in image.info:
                pil_mode = "PA"
            dpi = image.info.get("dpi")
    except Image.DecompressionBombError as exc:
        raise SlideError(
            path, f"the header declares an image too large to be a slide ({exc})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise SlideError(path, f"not a readable PNG or JPEG image ({exc})") from exc
    if pil_mode not in _PIL_MODES:
        raise SlideError(path, f"image mode {pil_mode!r} is not supported")
    mode, dtype, channels = _PIL_MODES[pil_mode]
    shape = (height, width, channels) if channels > 1 else (height, width)
    delayed = dask.delayed(_decode_plain, pure=True)(path, mode, dtype, channels)
    level = da.from_delayed(delayed, shape=shape, dtype=dtype)
    mpp = None
    with contextlib.suppress(TypeError, ValueError, ZeroDivisionError, IndexError):
        mpp = 25400.0 / float(dpi[0])  # no dpi, or a malformed one: unknown
    mpp = _file_mpp(path, mpp, "dpi")
    return PlainImage(path, [level], mpp, photometric_rgb=channels in (3, 4))

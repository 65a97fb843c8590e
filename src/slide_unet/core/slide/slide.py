"""Open a microscopy slide of any size as a lazy multiscale pyramid.

``open_slide`` reads only headers: pixels are decoded when a level's dask
array is computed, tile by tile, in parallel. TIFF layouts handled: pyramidal
OME-TIFF (SubIFDs), multi-series pyramids (Aperio SVS and the like), single
level tiled or striped (Big)TIFF in contiguous (YXS) or planar (SYX, and
HuBMAP's (1, 1, 3, Y, X)) layouts; plus plain PNG and JPEG.

A large single-level slide gets overview levels computed once and cached
(see :mod:`slide_unet.core.slide.overviews`).

Headers are not trusted (see :mod:`slide_unet.core.slide.files`): a pixel
size outside :data:`MPP_RANGE` and pyramid levels that are not halvings of
level 0 are ignored with a warning, and a tile, strip or PNG/JPEG larger
than the decode budget (:mod:`slide_unet.core.limits`) is refused when read,
with a :class:`~slide_unet.core.errors.LimitError`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import dask.array as da
import numpy as np

from slide_unet.core.errors import SlideError
from slide_unet.core.limits import MPP_RANGE, check_mpp
from slide_unet.core.slide import overviews
from slide_unet.core.slide.files import MAX_SIDE, PlainImage, TiffSlideFile, open_slide_file

#: Single-level slides wider or taller than this get cached overview levels.
OVERVIEW_THRESHOLD = 4096

#: Data types a slide may hold (what microscopes and scanners write).
SUPPORTED_DTYPES = frozenset(
    np.dtype(t)
    for t in ("bool", "uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
)

#: Anything larger is not a real slide but a corrupt or hostile header
#: (:data:`MAX_SIDE` pixels a side comes from :mod:`slide_unet.core.slide.files`).
MAX_CHANNELS = 64

__all__ = [
    "MAX_CHANNELS",
    "MAX_SIDE",
    "MPP_RANGE",
    "Slide",
    "check_mpp",
    "open_slide",
]


class Slide:
    """A slide opened lazily as a multiscale pyramid.

    Attributes
    ----------
    path
        The file.
    name
        The file name without its image extensions (``.ome.tif`` and such).
    levels
        One dask array per pyramid level, largest first, each ``YX`` or
        ``YXC``. Computing a region decodes only the tiles it touches.
    axes
        ``"YX"`` or ``"YXC"``.
    mpp
        Microns per pixel at full resolution, or None when the file does not
        say (or says something outside :data:`MPP_RANGE`).
    """

    def __init__(self, path: Path, source: TiffSlideFile | PlainImage) -> None:
        self.path = path
        self.name = _slide_name(path)
        self._source = source
        self.levels: list[da.Array] = list(source.levels)
        self.axes: str = "YXC" if self.levels[0].ndim == 3 else "YX"
        self.mpp: float | None = source.mpp
        self.photometric_rgb = source.photometric_rgb
        self._validate()
        self._overview_store: overviews.OverviewCache | None = None
        if self.is_flat_and_large:
            self._overview_store = overviews.OverviewCache.for_slide(self)
            if self._overview_store.complete:
                self.levels += self._overview_store.levels()

    # -- description ---------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the full-resolution level."""
        return tuple(self.levels[0].shape)

    @property
    def dtype(self) -> np.dtype:
        """Pixel data type (the same at every level)."""
        return self.levels[0].dtype

    @property
    def channels(self) -> int:
        """Samples per pixel: 1 for ``YX``."""
        return self.shape[2] if self.axes == "YXC" else 1

    @property
    def rgb(self) -> bool:
        """True for RGB(A) colour that should be shown as colour, not channels."""
        return self.axes == "YXC" and self.channels in (3, 4) and self.photometric_rgb

    @property
    def downsamples(self) -> list[float]:
        """Width of level 0 divided by the width of each level."""
        width = self.shape[1]
        return [width / level.shape[1] for level in self.levels]

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel at ``level``, or None when unknown."""
        return None if self.mpp is None else self.mpp * self.downsamples[level]

    @property
    def is_flat_and_large(self) -> bool:
        """A single-level file too large to show zoomed out without overviews."""
        return len(self._source.levels) == 1 and max(self.shape[:2]) > OVERVIEW_THRESHOLD

    @property
    def needs_overviews(self) -> bool:
        """True until a flat, large slide's overview levels are cached."""
        return self._overview_store is not None and not self._overview_store.complete

    @property
    def overview_cache(self) -> overviews.OverviewCache | None:
        """The cache of computed overview levels (flat, large slides only)."""
        return self._overview_store

    def build_overviews(
        self,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> bool:
        """Compute and cache the overview levels of a flat slide (once per file).

        Streams level 0 in bands, so memory stays bounded whatever the slide
        size. Does nothing when the slide is pyramidal or already cached.

        Parameters
        ----------
        progress
            Called as ``progress(done, total)`` after each band.
        cancelled
            Polled between bands; returning True stops the build, leaving no
            cache behind.

        Returns
        -------
        bool
            True when the overview levels are available afterwards.
        """
        store = self._overview_store
        if store is None:
            return False
        if not store.complete:
            store.build(self.levels[0], progress=progress, cancelled=cancelled)
        if store.complete and len(self.levels) == 1:
            self.levels += store.levels()
        return store.complete

    def __repr__(self) -> str:
        shapes = ", ".join("x".join(map(str, level.shape)) for level in self.levels)
        return (
            f"Slide({self.name!r}, axes={self.axes!r}, dtype={self.dtype}, mpp={self.mpp}, "
            f"levels=[{shapes}])"
        )

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Close the file. Arrays already computed stay valid; levels do not."""
        self._source.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- checks --------------------------------------------------------------

    def _validate(self) -> None:
        shape, dtype = self.shape, self.dtype
        if dtype not in SUPPORTED_DTYPES:
            self.close()
            supported = ", ".join(sorted(t.name for t in SUPPORTED_DTYPES))
            raise SlideError(
                self.path, f"pixel type {dtype} is not supported (expected one of {supported})"
            )
        if min(shape[:2]) == 0:
            self.close()
            raise SlideError(self.path, f"the image is empty (shape {shape})")
        if max(shape[:2]) > MAX_SIDE or self.channels > MAX_CHANNELS:
            self.close()
            raise SlideError(
                self.path,
                f"shape {shape} is implausible for a slide (at most {MAX_SIDE} pixels a side "
                f"and {MAX_CHANNELS} channels)",
            )
        widths = [level.shape[1] for level in self.levels]
        if any(b > a for a, b in itertools.pairwise(widths)):
            self.close()
            raise SlideError(self.path, f"pyramid levels do not shrink: widths {widths}")


def _slide_name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".png", ".jpeg", ".jpg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def open_slide(path: str | os.PathLike[str]) -> Slide:
    """Open a slide lazily: no pixel data is read.

    Parameters
    ----------
    path
        A TIFF (including OME-TIFF, BigTIFF and Aperio SVS), PNG or JPEG file.

    Returns
    -------
    Slide
        Its pyramid levels as dask arrays, axes, dtype and pixel size. Use it
        as a context manager, or call ``close()``.

    Raises
    ------
    SlideError
        The file is missing, empty, truncated, not an image, or holds a shape
        or pixel type that is not a 2-D slide.

    Warns
    -----
    UserWarning
        The file records a pixel size outside :data:`MPP_RANGE` (the slide's
        ``mpp`` is then None), or pyramid levels that are not level 0 halved
        (they are left out of ``levels``).

    Notes
    -----
    Reading pixels decodes only the tiles or strips a region touches; one
    larger than the decode budget (a PNG or JPEG counts whole) raises a
    :class:`~slide_unet.core.errors.LimitError` instead of being decoded.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(path, "no such file")
    if path.is_dir():
        raise SlideError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise SlideError(path, "the file is empty")
    return Slide(path, open_slide_file(path))

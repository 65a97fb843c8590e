"""Shared pytest fixtures: the real-data folder, private user folders, and the
factories of synthetic slides (``slides``) that the core and CLI tests write."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image

#: ``../shared/data`` next to the repository root (read-only real data).
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return the shared real-data folder, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA.resolve()} (needs ../shared/data)")
    return SHARED_DATA.resolve()


@pytest.fixture(autouse=True, scope="session")
def _private_overview_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test (and the subprocesses they start) out of the user's cache."""
    import os

    from slide_unet.core.paths import CACHE_DIR_ENV

    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("overview-cache"))


@pytest.fixture(autouse=True, scope="session")
def _private_masks_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test's mask stores (and its subprocesses') out of the user's data folder."""
    import os

    from slide_unet.core.paths import MASKS_DIR_ENV

    os.environ[MASKS_DIR_ENV] = str(tmp_path_factory.mktemp("mask-stores"))


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user models folder, and no unpickling anywhere in the test.

    Model tests use it for every test (``pytestmark = usefixtures("user_dir")``):
    weights are safetensors, and nothing may fall back to ``torch.load``.
    """
    import pickle

    import torch

    from slide_unet.core.paths import MODELS_DIR_ENV

    folder = tmp_path / "user-models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something tried to unpickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    return folder


# -- synthetic slides ------------------------------------------------------------------
# Writers of small synthetic slides, one per layout that ``open_slide`` must handle.
# Each writer takes the pixels to store and returns the path it wrote. The pixel
# content is smooth gradients plus noise: JPEG still has real work to do, and a
# misplaced tile or a swapped channel changes the picture.

#: The first line of an Aperio description is what makes tifffile call a file SVS
#: (``TiffPage.is_svs``: the description starts with ``"Aperio "``).
APERIO_HEADER = "Aperio Image Library v12.0.0 \n"


def rgb_image(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A ``(height, width, channels)`` uint8 picture: gradients and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    planes = [
        (x * 255 // max(width - 1, 1)),
        (y * 255 // max(height - 1, 1)),
        ((x + y) * 3 % 256),
        (255 - (x * y) % 256),
    ][:channels]
    image = np.stack(planes, axis=-1).astype(np.int32)
    image += rng.integers(-20, 21, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def gray_image(height: int, width: int, dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    """A ``(height, width)`` image of ``dtype`` with values across its range."""
    rng = np.random.default_rng(seed)
    dtype_ = np.dtype(dtype)
    if dtype_.kind == "f":
        return rng.random((height, width)).astype(dtype_) * 1000 - 100
    info = np.iinfo(dtype_)
    return rng.integers(info.min, info.max, (height, width), dtype=dtype_, endpoint=True)


def halved(image: np.ndarray, times: int) -> np.ndarray:
    """``image`` subsampled by ``2**times`` (content for smaller pyramid levels)."""
    step = 2**times
    return np.ascontiguousarray(image[::step, ::step])


# -- pyramids ------------------------------------------------------------------


def write_ome_pyramid(
    path: Path,
    image: np.ndarray,
    *,
    levels: int = 3,
    tile: int = 256,
    compression: str = "jpeg",
    mpp: float | None = 0.25,
    unit: str = "µm",
) -> Path:
    """A pyramidal OME-TIFF: the full level in the main IFD, the others as SubIFDs."""
    metadata: dict[str, object] = {"axes": "YXS" if image.ndim == 3 else "YX"}
    if mpp is not None:
        metadata.update(
            PhysicalSizeX=mpp,
            PhysicalSizeY=mpp,
            PhysicalSizeXUnit=unit,
            PhysicalSizeYUnit=unit,
        )
    photometric = "rgb" if image.ndim == 3 else "minisblack"
    options = {"tile": (tile, tile), "compression": compression, "photometric": photometric}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image, subifds=levels - 1, metadata=metadata, **options)
        for k in range(1, levels):
            tif.write(halved(image, k), subfiletype=1, metadata=None, **options)
    return path


def write_svs(
    path: Path, image: np.ndarray, *, levels: int = 3, tile: int = 256, mpp: float = 0.499
) -> Path:
    """An Aperio SVS-like file: baseline, a stripped thumbnail, then tiled reductions.

    tifffile parses it with its SVS series reader: the first page's description
    starts with ``"Aperio "``, the first page is tiled, page 1 is the thumbnail,
    and the pages after it are tiled resolution levels.
    """
    height, width = image.shape[:2]
    description = (
        f"{APERIO_HEADER}{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
        f"JPEG/RGB Q=70|AppMag = 20|MPP = {mpp}"
    )
    options = {"photometric": "rgb", "metadata": None}
    tiled = {"tile": (tile, tile), "compression": "jpeg", **options}
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, description=description, **tiled)
        tif.write(halved(image, 3), description=f"{APERIO_HEADER}thumbnail", **options)
        for k in range(1, levels):
            small = halved(image, k)
            size = f"{small.shape[1]}x{small.shape[0]}"
            tif.write(small, description=f"{APERIO_HEADER}{size}", **tiled)
    return path


def write_multiseries(path: Path, image: np.ndarray, *, levels: int = 3, tile: int = 128) -> Path:
    """A pyramid stored as one series per level (consecutive writes, no SubIFDs)."""
    photometric = "rgb" if image.ndim == 3 else "minisblack"
    with tifffile.TiffWriter(path) as tif:
        for k in range(levels):
            tif.write(
                halved(image, k), tile=(tile, tile), compression="zlib", photometric=photometric
            )
    return path


# -- single-level TIFFs ------------------------------------------------------------


def write_tiled(
    path: Path,
    image: np.ndarray,
    *,
    tile: int = 256,
    compression: str | None = "jpeg",
    bigtiff: bool = True,
    photometric: str | None = None,
    **options: object,
) -> Path:
    """A flat tiled (Big)TIFF."""
    if photometric is None:
        photometric = "rgb" if image.ndim == 3 and image.shape[2] in (3, 4) else "minisblack"
    tifffile.imwrite(
        path,
        image,
        bigtiff=bigtiff,
        tile=(tile, tile),
        compression=compression,
        photometric=photometric,
        **options,
    )
    return path


def write_striped(
    path: Path, image: np.ndarray, *, rowsperstrip: int = 16, compression: str = "zlib"
) -> Path:
    """A flat striped TIFF."""
    photometric = "rgb" if image.ndim == 3 else "minisblack"
    tifffile.imwrite(
        path,
        image,
        rowsperstrip=rowsperstrip,
        compression=compression,
        photometric=photometric,
    )
    return path


def write_planar(path: Path, image: np.ndarray, *, tile: int | None = None) -> Path:
    """An RGB TIFF stored planar (CYX, PlanarConfiguration separate) from a YXC image."""
    tifffile.imwrite(
        path,
        np.ascontiguousarray(image.transpose(2, 0, 1)),
        photometric="rgb",
        planarconfig="separate",
        tile=None if tile is None else (tile, tile),
        compression="zlib",
    )
    return path


def write_hubmap(path: Path, image: np.ndarray, *, photometric: str | None = "rgb") -> Path:
    """HuBMAP's layout: a ``(1, 1, 3, Y, X)`` array as tifffile writes it.

    tifffile stores the shape in its JSON description, so the file reads back as
    a 5-D series (axes ``QQSYX``, one planar RGB page, with ``photometric="rgb"``;
    axes ``QQQYX``, three grayscale pages, with ``photometric="minisblack"``).
    """
    data = np.ascontiguousarray(image.transpose(2, 0, 1))[np.newaxis, np.newaxis]
    tifffile.imwrite(path, data, photometric=photometric, compression="zlib")
    return path


# -- PNG and JPEG ------------------------------------------------------------------


def write_pil(path: Path, image: Image.Image, **options: object) -> Path:
    """Save a Pillow image (format from the extension)."""
    image.save(path, **options)
    return path


@pytest.fixture(scope="session")
def slides() -> SimpleNamespace:
    """The synthetic-slide factories: ``slides.rgb_image(h, w)``,
    ``slides.gray_image(h, w, dtype)`` and ``slides.halved(image, k)`` make pixels;
    ``slides.write_ome_pyramid(path, image)``, ``write_svs``, ``write_multiseries``,
    ``write_tiled``, ``write_striped``, ``write_planar``, ``write_hubmap`` and
    ``write_pil`` write one layout each and return the path."""
    return SimpleNamespace(
        rgb_image=rgb_image,
        gray_image=gray_image,
        halved=halved,
        write_ome_pyramid=write_ome_pyramid,
        write_svs=write_svs,
        write_multiseries=write_multiseries,
        write_tiled=write_tiled,
        write_striped=write_striped,
        write_planar=write_planar,
        write_hubmap=write_hubmap,
        write_pil=write_pil,
    )

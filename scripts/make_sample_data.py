"""Build the bundled sample slide and its expert mask in ``sample_data/``.

Four fixed 1024x1024 PAS tiles of ``glomeruli/bueno_pas`` (see
``SAMPLE_TILES``; the bundled models never train on them) are arranged as a
2x2 mosaic, 2048x2048 RGB at 0.5 µm/px, and written as:

- ``kidney_pas.ome.tif``: pyramidal OME-TIFF (JPEG tiles, 4 levels);
- ``kidney_pas_mask.ome.tif``: the expert mask, uint8 0/1, same pyramid;
- ``kidney_pas_mask.csv``: the mask as a Kaggle RLE CSV (``id,predicted``).

The output is deterministic: same inputs, same bytes (with the same tifffile
and imagecodecs versions), and always the same pixels.

Usage::

    python scripts/make_sample_data.py [SHARED_DATA] [-o OUT_DIR]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
try:
    from slide_unet.core.masks.rle_csv import write_rle_csv
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from slide_unet.core.masks.rle_csv import write_rle_csv

#: Stems of the bueno_pas tiles in the mosaic, row-major (top-left, top-right,
#: bottom-left, bottom-right). Held out of every bundled model's training data.
SAMPLE_TILES: tuple[str, ...] = ("10063", "10149", "10172", "10210")
#: Sample name: file stem and RLE CSV id.
NAME = "kidney_pas"
#: Pixel size of the bueno_pas tiles (20x Aperio ScanScope CS), µm/px.
MPP = 0.5
TILE = 1024
N_LEVELS = 4  # full resolution plus 1/2, 1/4, 1/8
JPEG_QUALITY = 90


def load_mosaic(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the sample tiles and arrange them as a 2x2 mosaic.

    Parameters
    ----------
    shared_data : pathlib.Path
        The shared data folder (holding ``glomeruli/bueno_pas``).

    Returns
    -------
    image : numpy.ndarray
        ``(2048, 2048, 3)`` uint8 RGB.
    mask : numpy.ndarray
        ``(2048, 2048)`` uint8 0/1: the red channel of the expert mask > 0.
    """
    folder = shared_data / "glomeruli" / "bueno_pas"
    image = np.zeros((2 * TILE, 2 * TILE, 3), dtype=np.uint8)
    mask = np.zeros((2 * TILE, 2 * TILE), dtype=np.uint8)
    for i, stem in enumerate(SAMPLE_TILES):
        row, col = divmod(i, 2)
        window = np.s_[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
        with Image.open(folder / "images" / f"{stem}.png") as im:
            image[window] = np.asarray(im.convert("RGB"))
        with Image.open(folder / "masks" / f"{stem}.png") as im:
            mask[window] = np.asarray(im.convert("RGB"))[..., 0] > 0
    return image, mask


def image_pyramid(image: np.ndarray, n_levels: int = N_LEVELS) -> list[np.ndarray]:
    """Halve an image ``n_levels - 1`` times by 2x2 area averaging (rounded).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, C)`` uint8, H and W divisible by ``2 ** (n_levels - 1)``.
    n_levels : int, optional
        Number of levels, the full resolution included.

    Returns
    -------
    list of numpy.ndarray
        The levels, full resolution first.
    """
    levels = [image]
    for _ in range(n_levels - 1):
        prev = levels[-1].astype(np.uint16)
        h, w, c = prev.shape
        summed = prev.reshape(h // 2, 2, w // 2, 2, c).sum(axis=(1, 3))
        levels.append(((summed + 2) // 4).astype(np.uint8))
    return levels


def mask_pyramid(mask: np.ndarray, n_levels: int = N_LEVELS) -> list[np.ndarray]:
    """Downsample a 0/1 mask: a pixel is 1 where at least half its block is.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` uint8 0/1, H and W divisible by ``2 ** (n_levels - 1)``.
    n_levels : int, optional
        Number of levels, the full resolution included.

    Returns
    -------
    list of numpy.ndarray
        uint8 0/1 levels, full resolution first, each level computed from the
        full-resolution mask (area fraction >= 0.5).
    """
    h, w = mask.shape
    levels = [mask]
    for k in range(1, n_levels):
        f = 2**k
        area = mask.reshape(h // f, f, w // f, f).sum(axis=(1, 3), dtype=np.int64)
        levels.append((2 * area >= f * f).astype(np.uint8))
    return levels


def write_pyramid(
    path: Path,
    levels: list[np.ndarray],
    *,
    name: str,
    axes: str,
    compression: str,
    compressionargs: dict[str, int] | None = None,
) -> None:
    """Write a pyramidal OME-TIFF (SubIFDs) with 0.5 µm/px, 256x256 tiles.

    Parameters
    ----------
    path : pathlib.Path
        Output file.
    levels : list of numpy.ndarray
        Full resolution first, each level half the size of the one before.
    name : str
        OME image name (also seeds the fixed OME UUID, for reproducible bytes).
    axes : str
        ``"YXS"`` for RGB, ``"YX"`` for a mask.
    compression : str
        tifffile compression, e.g. ``"jpeg"`` or ``"zlib"``.
    compressionargs : dict, optional
        Passed to tifffile (e.g. ``{"level": 90}``).
    """
    metadata = {
        "axes": axes,
        "PhysicalSizeX": MPP,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": MPP,
        "PhysicalSizeYUnit": "µm",
        "Name": name,
        # A fixed UUID (tifffile draws a random one otherwise) keeps the bytes stable.
        "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"napari-slide-unet/sample_data/{name}")),
    }
    options = {
        "tile": (256, 256),
        "compression": compression,
        "compressionargs": compressionargs,
        "photometric": "rgb" if axes == "YXS" else "minisblack",
        "resolutionunit": "CENTIMETER",
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with tifffile.TiffWriter(tmp, bigtiff=False, ome=True) as tif:
        for i, level in enumerate(levels):
            px_per_cm = 1e4 / (MPP * 2**i)
            tif.write(
                level,
                subifds=len(levels) - 1 if i == 0 else None,
                subfiletype=0 if i == 0 else 1,
                metadata=metadata if i == 0 else None,
                resolution=(px_per_cm, px_per_cm),
                **options,
            )
    tmp.replace(path)


def build(shared_data: Path, out_dir: Path) -> list[Path]:
    """Build all sample files.

    Parameters
    ----------
    shared_data : pathlib.Path
        The shared data folder.
    out_dir : pathlib.Path
        Output folder (created if needed).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    image, mask = load_mosaic(shared_data)
    image_path = out_dir / f"{NAME}.ome.tif"
    mask_path = out_dir / f"{NAME}_mask.ome.tif"
    csv_path = out_dir / f"{NAME}_mask.csv"
    write_pyramid(
        image_path,
        image_pyramid(image),
        name=NAME,
        axes="YXS",
        compression="jpeg",
        compressionargs={"level": JPEG_QUALITY},
    )
    write_pyramid(
        mask_path,
        mask_pyramid(mask),
        name=f"{NAME}_mask",
        axes="YX",
        compression="zlib",
        compressionargs={"level": 9},
    )
    write_rle_csv(csv_path, {NAME: mask})
    return [image_path, mask_path, csv_path]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "shared_data",
        nargs="?",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data",
        help="shared data folder (default: ../shared/data next to the repository)",
    )
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=REPO_ROOT / "sample_data",
        help="output folder (default: sample_data/ in the repository)",
    )
    args = parser.parse_args(argv)
    if not (args.shared_data / "glomeruli" / "bueno_pas").is_dir():
        parser.error(f"no glomeruli/bueno_pas in {args.shared_data}")
    for path in build(args.shared_data, args.out):
        print(f"{path}  {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

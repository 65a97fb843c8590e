"""npe2 sample data: a small real PAS kidney slide and its expert glomerulus mask.

napari-free at import: napari is only named for type checking, and the reader
is imported when the sample is opened.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tifffile

if TYPE_CHECKING:
    from napari.types import LayerDataTuple

__all__ = ["kidney_pas_sample", "sample_data_dir"]

IMAGE_FILE = "kidney_pas.ome.tif"
MASK_FILE = "kidney_pas_mask.ome.tif"
#: Pixel size of the sample, µm/px (also in the files' OME metadata).
SAMPLE_MPP = 0.5


def sample_data_dir() -> Path:
    """Return the folder holding the bundled sample files.

    Looks inside the installed package first (``slide_unet/sample_data``, a
    symlink to the repository's ``sample_data/`` in a checkout), then at the
    repository root next to ``src/``.

    Returns
    -------
    pathlib.Path
        A folder containing ``kidney_pas.ome.tif`` and its mask.

    Raises
    ------
    FileNotFoundError
        If the sample files are in neither place.
    """
    candidates: list[Path] = []
    packaged = files("slide_unet") / "sample_data"
    if isinstance(packaged, Path):
        candidates.append(packaged)
    candidates.append(Path(__file__).resolve().parents[2] / "sample_data")
    for folder in candidates:
        if (folder / IMAGE_FILE).is_file() and (folder / MASK_FILE).is_file():
            return folder
    msg = f"sample data ({IMAGE_FILE}, {MASK_FILE}) not found in: " + ", ".join(
        str(c) for c in candidates
    )
    raise FileNotFoundError(msg)


def kidney_pas_sample() -> list[LayerDataTuple]:
    """Open the bundled PAS kidney sample with its expert glomerulus mask.

    Returns
    -------
    list of LayerDataTuple
        The slide's image layer(s) from :func:`slide_unet.napari.reader.read_slide_layers`,
        then the expert mask as a ``labels`` layer (uint8 0/1, 2048 x 2048)
        with the image layer's ``scale`` (0.5 µm/px) and ``units``.
    """
    from slide_unet.napari.reader import read_slide_layers

    folder = sample_data_dir()
    layers = list(read_slide_layers(str(folder / IMAGE_FILE)))
    mask = tifffile.imread(folder / MASK_FILE)  # full resolution: small enough
    kwargs: dict[str, Any] = {
        "name": "kidney_pas expert mask",
        "scale": (SAMPLE_MPP, SAMPLE_MPP),
        "opacity": 0.5,
    }
    image_kwargs = layers[0][1] if layers and len(layers[0]) > 1 else {}
    # Put the mask on the image's grid whatever unit the reader chose.
    if image_kwargs.get("scale") is not None and len(image_kwargs["scale"]) >= 2:
        kwargs["scale"] = tuple(float(v) for v in image_kwargs["scale"][-2:])
    if image_kwargs.get("units") is not None and len(image_kwargs["units"]) >= 2:
        kwargs["units"] = tuple(image_kwargs["units"][-2:])
    return [*layers, (mask, kwargs, "labels")]

"""OME-NGFF (OME-Zarr) metadata and the rule for how many pyramid levels to make.

One builder for the ``multiscales`` metadata of every pyramid this package
writes, and one level rule. Three layouts use them, each with its own version
and smallest level, because files already on disk were written that way:

- mask files (:mod:`slide_unet.core.masks.pyramids`): NGFF 0.4 on zarr format
  2, the version every OME-Zarr reader opens; levels down to 1024 pixels;
- mask stores (:mod:`slide_unet.core.masks.store`): NGFF 0.5 on zarr format 3;
  levels down to 512 pixels (a store's level count is part of its layout);
- the overview cache of flat slides (:mod:`slide_unet.core.slide.overviews`):
  NGFF 0.5, levels below full resolution only, down to 1024 pixels.

Every level is half the one above (``ceil(side / 2)``), and its ``scale`` is
the pixel size (µm, when known) times ``2**level``.

This module is part of the napari-free core.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LABEL_COLOUR",
    "label_metadata",
    "level_count",
    "level_shapes",
    "multiscale",
]

#: Colour of value 1 in a label image (RGBA, 0-255).
LABEL_COLOUR = (255, 0, 0, 255)
_MICROMETRE = "micrometer"


def level_count(shape: tuple[int, ...], smallest_side: int) -> int:
    """Levels, full resolution included, halving until the largest side is at most
    ``smallest_side`` pixels (one level for an empty shape)."""
    count, side = 1, max((int(s) for s in shape), default=0)
    while side > smallest_side:
        side, count = -(-side // 2), count + 1
    return count


def level_shapes(shape: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """Shape of each level: ``ceil(side / 2**k)``."""
    h, w = shape
    return [(-(-h // 2**k), -(-w // 2**k)) for k in range(levels)]


def multiscale(
    name: str,
    levels: int,
    mpp: float | None,
    *,
    channels: bool = False,
    first_level: int = 0,
) -> dict[str, Any]:
    """One ``multiscales`` entry: name, axes (``c`` first when ``channels``) and one
    dataset per level, ``first_level`` to ``first_level + levels - 1``.

    Parameters
    ----------
    name : str
    levels : int
        How many datasets.
    mpp : float or None
        Pixel size at full resolution in µm; None: no unit, a scale of 1.
    channels : bool
        The arrays are CYX rather than YX.
    first_level : int
        The level (and the path) of the first dataset.
    """
    unit = {"unit": _MICROMETRE} if mpp else {}
    step = mpp or 1.0
    axes: list[dict[str, Any]] = [
        {"name": "y", "type": "space", **unit},
        {"name": "x", "type": "space", **unit},
    ]
    channel_scale: list[float] = []
    if channels:
        axes.insert(0, {"name": "c", "type": "channel"})
        channel_scale = [1.0]
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": [*channel_scale, step * 2**k, step * 2**k]}
            ],
        }
        for k in range(first_level, first_level + levels)
    ]
    return {"name": name, "axes": axes, "datasets": datasets}


def label_metadata(
    name: str,
    levels: int,
    mpp: float | None,
    *,
    version: str,
    colours: bool = True,
    description: str | None = None,
) -> dict[str, Any]:
    """The metadata of a multiscale label image whose levels are 2x2 maxima.

    Parameters
    ----------
    name, levels, mpp
        As :func:`multiscale`.
    version : {"0.4", "0.5"}
        NGFF 0.4: the group's attributes themselves (``multiscales``,
        ``image-label``). NGFF 0.5: what goes under the attributes' ``ome`` key.
    colours : bool
        Give value 1 the colour :data:`LABEL_COLOUR`.
    description : str, optional
        The ``metadata.description`` of the downsampling.
    """
    entry: dict[str, Any] = {**multiscale(name, levels, mpp), "type": "max"}
    if description is not None:
        entry["metadata"] = {"description": description}
    image_label: dict[str, Any] = {"version": version}
    if colours:
        image_label["colors"] = [{"label-value": 1, "rgba": list(LABEL_COLOUR)}]
    if version == "0.4":
        return {"multiscales": [{"version": version, **entry}], "image-label": image_label}
    if version == "0.5":
        return {"version": version, "multiscales": [entry], "image-label": image_label}
    raise ValueError(f"NGFF version must be '0.4' or '0.5', got {version!r}")

"""npe2 writers: save a Labels layer as a mask file, thin over :mod:`slide_unet.core.masks.io`.

One writer per format the manifest declares (pyramidal OME-TIFF, Kaggle RLE
CSV, GeoJSON polygons, OME-Zarr labels); the Export widget writes through
:func:`save_mask` too, so napari's *File > Save* and the widget store the same
file. What napari hands a single-layer writer is ``(path, data, meta)``:
``data`` is the layer's array (numpy, dask or zarr), or its levels when the
layer is multiscale, and ``meta`` the layer's state (``scale``, ``units``,
``metadata``...). Writes are atomic: an error leaves no file behind and any
existing one untouched.

napari-free at import, like the core: napari only calls these functions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slide_unet.core.errors import Cancel, InputError
from slide_unet.core.masks.io import Progress, mask_suffix, write_mask

__all__ = [
    "MASK_FORMATS",
    "check_target",
    "full_resolution_mask",
    "pixel_size",
    "save_mask",
    "write_geojson",
    "write_ome_tiff",
    "write_ome_zarr",
    "write_rle_csv",
]

#: The formats a mask can be exported to: name shown to the user -> file
#: extensions, the first being the one a new file gets.
MASK_FORMATS: dict[str, tuple[str, ...]] = {
    "RLE CSV": (".csv",),
    "pyramidal OME-TIFF": (".ome.tif", ".ome.tiff", ".tif", ".tiff"),
    "OME-Zarr": (".ome.zarr", ".zarr"),
    "GeoJSON": (".geojson",),
    "PNG": (".png",),
}

_ZARR_SUFFIXES = MASK_FORMATS["OME-Zarr"]
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")
#: QuPath class of GeoJSON objects when the layer's metadata names none.
DEFAULT_CLASSIFICATION = "Glomerulus"


def full_resolution_mask(data: Any) -> Any:
    """The 2-D full-resolution mask of a Labels layer's data.

    Parameters
    ----------
    data : array-like or sequence of array-like
        A numpy, dask or zarr array, or the levels of a multiscale layer
        (a list or napari's ``MultiScaleData``), full resolution first.

    Returns
    -------
    array-like
        Level 0, with leading axes of length 1 dropped (a ``(1, Y, X)`` layer
        is a 2-D mask); not read into memory.

    Raises
    ------
    ValueError
        No levels, or a mask with several planes.
    """
    # napari's MultiScaleData is a Sequence whose __array__ is the *smallest*
    # level: take level 0 explicitly, never np.asarray(data).
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if len(data) == 0:
            raise InputError("the layer holds no data (a multiscale layer without levels)")
        data = data[0] if hasattr(data[0], "shape") else np.asarray(data)
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    while len(data.shape) > 2 and data.shape[0] == 1:
        data = data[0]
    if len(data.shape) != 2:
        raise InputError(
            f"a mask must be one 2-D plane (height, width); this layer has shape "
            f"{tuple(data.shape)}"
        )
    return data


def pixel_size(
    metadata: Mapping[str, Any] | None,
    scale: Sequence[float] | None = None,
    units: Sequence[Any] | None = None,
) -> float | None:
    """A Labels layer's pixel size in µm, or None when it is unknown.

    The layer's ``metadata["mpp"]`` when set (what the plugin's reader and
    widgets record), else its last ``scale``: converted to µm when ``units``
    name a length, taken as µm when they are napari's default ``pixel`` (the
    plugin's layers are in microns) unless it is 1, napari's default scale,
    which says nothing.

    Parameters
    ----------
    metadata : mapping or None
        The layer's ``metadata``.
    scale : sequence of float, optional
        The layer's ``scale``.
    units : sequence of pint.Unit or str, optional
        The layer's ``units``.

    Returns
    -------
    float or None
        Microns per pixel.
    """
    mpp = (metadata or {}).get("mpp")
    if mpp:
        return float(mpp)
    if scale is None or len(scale) == 0:
        return None
    step = float(scale[-1])
    unit = units[-1] if units is not None and len(units) else None
    if unit is not None and str(unit) not in ("", "pixel", "px"):
        return _in_microns(step, unit)
    return None if step == 1 or step <= 0 else step


def _in_microns(step: float, unit: Any) -> float | None:
    """``step`` in µm if ``unit`` is a length (pint or text), else None."""
    try:
        import pint

        quantity = step * pint.get_application_registry().Unit(str(unit))
        microns = float(quantity.to("micrometer").magnitude)
    except Exception:  # not a length (or no pint): the scale says nothing of microns
        return None
    return microns if microns > 0 else None


def check_target(path: str | os.PathLike[str]) -> Path:
    """Refuse an output path that cannot or must not be written, before any work.

    Parameters
    ----------
    path : str or os.PathLike
        The output file (or OME-Zarr folder).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        An empty path, or an existing folder that is not a zarr store (the
        atomic writer would replace a whole folder, so only a zarr store, and
        only with OME-Zarr, may be overwritten).
    PermissionError
        A folder the user may not write in.
    """
    if not str(path).strip():
        raise InputError("choose a file to export to")
    path = Path(path).expanduser()
    if path.is_dir():
        is_store = any((path / m).exists() for m in _ZARR_MARKERS)
        if not (is_store and mask_suffix(path) in _ZARR_SUFFIXES):
            raise InputError(f"{path} is a folder: choose a file name to export to")
    elif path.exists() and mask_suffix(path) in _ZARR_SUFFIXES:
        raise InputError(f"{path} is a file, not an OME-Zarr folder: choose another name")
    parent = path.parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{parent}: no permission to write in this folder")
    return path


def save_mask(
    path: str | os.PathLike[str],
    data: Any,
    *,
    mpp: float | None = None,
    rle_id: str | None = None,
    classification: str | None = DEFAULT_CLASSIFICATION,
    suffixes: Sequence[str] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> Path:
    """Write a Labels layer's mask to ``path``, in the format its extension names.

    Parameters
    ----------
    path : str or os.PathLike
        ``.csv``, ``.ome.tif``/``.tif``, ``.ome.zarr``/``.zarr``,
        ``.geojson`` or ``.png``.
    data : array-like or sequence of array-like
        The layer's data; a multiscale layer writes its level 0.
    mpp : float, optional
        Pixel size in µm, stored by OME-TIFF, OME-Zarr and PNG.
    rle_id : str, optional
        The id of an RLE CSV's row; default: the file name without extension.
    classification : str or None
        QuPath class of GeoJSON objects.
    suffixes : sequence of str, optional
        The extensions the caller writes; another one is an error (so a
        writer never writes a format it was not chosen for).
    progress : callable, optional
        ``progress(done, total)`` as the file is written (see
        :func:`~slide_unet.core.masks.io.write_mask`).
    cancel : threading.Event or callable, optional
        Stops the write, leaving nothing, with
        :class:`~slide_unet.core.errors.Cancelled`.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        A path of another format, a folder, a mask that is not one 2-D plane
        of integers, or one too big for PNG.
    OSError
        The folder is missing or not writable.
    """
    path = check_target(path)
    suffix = mask_suffix(path)
    if suffixes is not None and suffix not in suffixes:
        raise InputError(
            f"{path.name}: this writer writes {', '.join(suffixes)} files, "
            f"not {suffix or path.suffix or 'files without an extension'}"
        )
    mask = full_resolution_mask(data)
    return write_mask(
        mask,
        path,
        mpp=mpp,
        image_id=rle_id or None,
        classification=classification,
        progress=progress,
        cancel=cancel,
    )


def _write(path: str, data: Any, meta: Mapping[str, Any], suffixes: Sequence[str]) -> list[str]:
    metadata = meta.get("metadata") or {}
    written = save_mask(
        path,
        data,
        mpp=pixel_size(metadata, meta.get("scale"), meta.get("units")),
        rle_id=metadata.get("rle_id"),
        classification=metadata.get("classification", DEFAULT_CLASSIFICATION),
        suffixes=suffixes,
    )
    return [str(written)]


def write_ome_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer as a tiled, pyramidal OME-TIFF with its pixel size.

    Parameters
    ----------
    path : str
        ``.ome.tif``, ``.ome.tiff``, ``.tif`` or ``.tiff``.
    data : array-like or sequence of array-like
        The layer's data (level 0 of a multiscale layer is written).
    meta : dict
        The layer's state; its pixel size comes from ``metadata["mpp"]`` or
        ``scale`` (:func:`pixel_size`).

    Returns
    -------
    list of str
        The file written.

    Raises
    ------
    ValueError
        Bad input (see :func:`save_mask`).
    """
    return _write(path, data, meta, MASK_FORMATS["pyramidal OME-TIFF"])


def write_rle_csv(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer as a Kaggle ``id,predicted`` RLE CSV (any non-zero is 1).

    The row's id is ``meta["metadata"]["rle_id"]`` when set, else the file
    name without its extension. Parameters, returns and raises as
    :func:`write_ome_tiff`.
    """
    return _write(path, data, meta, MASK_FORMATS["RLE CSV"])


def write_geojson(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer's objects as GeoJSON polygons QuPath imports.

    Coordinates are full-resolution pixels; the QuPath class is
    ``meta["metadata"]["classification"]`` when set, else ``"Glomerulus"``.
    Parameters, returns and raises as :func:`write_ome_tiff`.
    """
    return _write(path, data, meta, MASK_FORMATS["GeoJSON"])


def write_ome_zarr(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer as an OME-Zarr (NGFF 0.4) multiscale label image.

    An existing OME-Zarr store at ``path`` is replaced whole; any other folder
    is refused. Parameters, returns and raises as :func:`write_ome_tiff`.
    """
    return _write(path, data, meta, MASK_FORMATS["OME-Zarr"])

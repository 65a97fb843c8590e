"""Reading a mask from an OME-Zarr store, refusing one that is malformed.

The store may be a multiscale label image (what :mod:`mask_pyramids` writes),
an image with ``labels/`` (the first label is the mask), bioformats2raw's
layout (the image in group ``0``) or a bare array. NGFF 0.4 (zarr format 2)
and 0.5 (format 3, metadata under ``ome``) are read.

What a file declares is checked before it is used: metadata that is missing,
empty or of the wrong type where NGFF says what belongs, a dataset that is not
in the store, a scale that is not a positive number, a shape no mask can have
(:mod:`slide_unet.core.masks.bounds`) or chunks too many or too big to read.
Each is refused with one :class:`~slide_unet.core.errors.MaskError` line that
names the store and what is wrong.

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from slide_unet.core.errors import MaskError
from slide_unet.core.limits import check_decode
from slide_unet.core.masks.bounds import MAX_PLAUSIBLE_MPP, mask_shape_problem

__all__ = ["MAX_ZARR_CHUNKS", "read_ome_zarr"]

#: Most chunks of a zarr mask read: the work of reading one grows with them
#: (a store of 1 x 1 chunks declares billions).
MAX_ZARR_CHUNKS = 2**22
_MICRONS = {
    "angstrom": 1e-4,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "micron": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}
#: How deep :func:`read_ome_zarr` follows ``labels`` and bioformats2raw's "0".
_MAX_DEPTH = 4
#: Side of the dask chunks of a mask read from zarr, at least (whole zarr chunks):
#: a store of small chunks would otherwise make a task graph of millions.
_READ_CHUNK = 1024


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (the command line prints one)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _bad(path: Path, problem: str) -> MaskError:
    return MaskError(f"{path}: not a readable OME-Zarr mask: {problem}")


def _ome(node: Any, path: Path) -> dict[str, Any]:
    """The NGFF attributes of a group or array (NGFF 0.5 nests them under "ome")."""
    attrs = node.attrs.asdict()
    meta = attrs.get("ome", attrs)
    if not isinstance(meta, dict):
        raise _bad(path, f"its 'ome' attributes are a {type(meta).__name__}, not an object")
    return meta


def _child(group: Any, name: Any, path: Path, what: str) -> Any:
    """``group[name]``, where a missing or broken member is the file's fault."""
    if not isinstance(name, str) or not name.strip("/") or ".." in name.split("/"):
        raise _bad(path, f"{what} {name!r} is not the name of a member of the store")
    try:
        return group[name]
    except KeyError:
        raise _bad(path, f"{what} {name!r} is not in the store") from None
    except Exception as exc:  # zarr raises many kinds for broken metadata
        raise _bad(path, f"{what} {name!r} cannot be opened ({_one_line(exc)})") from exc


def _has(group: Any, name: str, path: Path) -> bool:
    """Whether ``group`` has a member ``name`` (zarr opens it to tell)."""
    try:
        return name in group
    except Exception as exc:  # broken metadata of the member
        raise _bad(path, f"member {name!r} cannot be opened ({_one_line(exc)})") from exc


def _first_name(names: Any, path: Path, key: str) -> str:
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise _bad(path, f"'{key}' must be a list of names, got {names!r:.80}")
    return names[0]


def _first_multiscale(multiscales: Any, path: Path) -> dict[str, Any]:
    """The first ``multiscales`` entry, checked to name at least one dataset."""
    if not isinstance(multiscales, list) or not multiscales:
        raise _bad(path, f"'multiscales' must be a non-empty list, got {multiscales!r:.80}")
    multiscale = multiscales[0]
    if not isinstance(multiscale, dict):
        raise _bad(path, f"'multiscales' holds a {type(multiscale).__name__}, not an object")
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise _bad(path, f"'datasets' must be a non-empty list of objects, got {datasets!r:.80}")
    return multiscale


def _find_multiscale(node: Any, path: Path, depth: int = 0) -> tuple[Any, dict[str, Any] | None]:
    """The group (or array) holding the mask, and its ``multiscales`` entry."""
    if isinstance(node, zarr.Array):
        return node, None
    if depth > _MAX_DEPTH:
        raise _bad(path, f"'labels' or groups '0' nest more than {_MAX_DEPTH} deep")
    meta = _ome(node, path)
    if "labels" in meta and "multiscales" not in meta:  # a labels/ group: its first label
        name = _first_name(meta["labels"], path, "labels")
        return _find_multiscale(_child(node, name, path, "label"), path, depth + 1)
    if "multiscales" in meta:
        multiscale = _first_multiscale(meta["multiscales"], path)
        if "image-label" not in meta and _has(node, "labels", path):
            labels = _child(node, "labels", path, "group")
            inner = _ome(labels, path).get("labels")
            if inner:  # an image with labels: the mask is the first label
                name = _first_name(inner, path, "labels")
                return _find_multiscale(_child(labels, name, path, "label"), path, depth + 1)
        return node, multiscale
    if _has(node, "0", path):  # a plain array "0", or bioformats2raw's image group "0"
        return _find_multiscale(_child(node, "0", path, "member"), path, depth + 1)
    raise _bad(path, "no multiscales, labels or array '0'")


def _axis_names(multiscale: dict[str, Any] | None, ndim: int, path: Path) -> list[str]:
    axes = (multiscale or {}).get("axes")
    if not axes:  # NGFF before 0.3 has none
        if ndim == 2:
            return ["y", "x"]
        return [*"tczyx"[5 - ndim :]] if ndim <= 5 else []
    if not isinstance(axes, list):
        raise _bad(path, f"'axes' must be a list, got {axes!r:.80}")
    names = []
    for axis in axes:
        name = axis.get("name") if isinstance(axis, dict) else axis
        if not isinstance(name, str):
            raise _bad(path, f"an axis must be a name or an object with a name, got {axis!r:.80}")
        names.append(name.lower())
    if len(set(names)) != len(names):
        raise _bad(path, f"axes {names} name an axis twice")
    return names


def _scales(multiscale: dict[str, Any], path: Path) -> list[list[Any]]:
    """The ``scale`` lists of the first dataset and of the whole multiscale."""
    scales = []
    for owner, where in ((multiscale["datasets"][0], "dataset 0"), (multiscale, "multiscales")):
        transforms = owner.get("coordinateTransformations", [])
        if not isinstance(transforms, list):
            raise _bad(path, f"coordinateTransformations of {where} must be a list")
        for transform in transforms:
            if not isinstance(transform, dict):
                raise _bad(path, f"a transformation of {where} is a {type(transform).__name__}")
            if transform.get("type") != "scale" or "path" in transform:
                continue  # translations move, and scales kept in a file are rare: no pixel size
            scales.append(transform.get("scale"))
    return scales


def _positive(value: Any) -> bool:
    """Whether a JSON value is a positive, finite number (as a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 < float(value) < math.inf
    except OverflowError:  # an integer beyond floats
        return False


def _mpp(multiscale: dict[str, Any] | None, names: list[str], path: Path) -> float | None:
    """Microns per pixel along x, from the first dataset's scales and the axis unit.

    A scale that is not a positive number is an error whether or not the unit
    is known: a reader that drew the mask with it would flip or collapse it.
    """
    if not multiscale:
        return None
    scale = 1.0
    for values in _scales(multiscale, path):
        if not isinstance(values, list) or len(values) != len(names):
            raise _bad(path, f"a scale must list one number per axis {names}, got {values!r:.80}")
        for name, value in zip(names, values, strict=True):
            if name in ("y", "x") and not _positive(value):
                raise _bad(path, f"the scale of axis {name!r} is {value!r}, not a positive number")
        scale *= float(values[names.index("x")])
    axis = multiscale["axes"][names.index("x")] if multiscale.get("axes") else None
    unit = axis.get("unit") if isinstance(axis, dict) else None
    if unit is not None and not isinstance(unit, str):
        raise _bad(path, f"the unit of axis 'x' is {unit!r}, not a name")
    factor = _MICRONS.get((unit or "").lower())
    if factor is None:
        return None
    mpp = scale * factor
    if not 0 < mpp < math.inf:
        raise _bad(path, f"a pixel size of {scale!r} {unit} is not a positive number of µm")
    # As for slides: a pixel size no microscope has is no pixel size (unknown).
    return mpp if mpp <= MAX_PLAUSIBLE_MPP else None


def _check_array(array: Any, names: list[str], path: Path) -> tuple[int, ...]:
    """Refuse an array that is not numbers, too big for a mask, or chunked too
    finely or coarsely to read; return the chunks to read it in."""
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        # Checked before any chunk is read: strings and objects are no mask, and
        # their codecs (pickle, where a zarr version takes it) are not for
        # files from anyone.
        raise _bad(path, f"its values are {dtype}, not numbers")
    shape, chunks = tuple(int(n) for n in array.shape), tuple(int(c) for c in array.chunks)
    if len(names) != len(shape) or "y" not in names or "x" not in names:
        raise _bad(path, f"cannot tell the y and x axes of shape {shape} (axes {names})")
    problem = mask_shape_problem((shape[names.index("y")], shape[names.index("x")]))
    if problem:
        raise _bad(path, problem)
    if len(chunks) != len(shape) or min(chunks, default=1) < 1:
        raise _bad(path, f"chunks {chunks} for shape {shape}")
    count = math.prod(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    if count > MAX_ZARR_CHUNKS:
        raise _bad(
            path,
            f"chunks of {' x '.join(map(str, chunks))} make {count:,} of them "
            f"(at most {MAX_ZARR_CHUNKS:,}): rechunk it",
        )
    check_decode(
        math.prod(chunks) * array.dtype.itemsize,
        f"{path}: a chunk of {' x '.join(map(str, chunks))}",
    )
    # Whole zarr chunks, at least _READ_CHUNK along y and x.
    return tuple(
        min(n, c * -(-_READ_CHUNK // c)) if name in ("y", "x") else c
        for name, n, c in zip(names, shape, chunks, strict=True)
    )


class _NamedChunks:
    """A zarr array whose read errors name the store (dask reads it lazily,
    long after it was opened: a corrupt chunk should still say which file)."""

    def __init__(self, array: Any, path: Path) -> None:
        self.array, self.path = array, path
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.array[key]
        except MemoryError:
            raise
        except Exception as exc:  # a codec's error for a damaged chunk
            raise MaskError(f"{self.path}: a chunk cannot be read ({_one_line(exc)})") from exc


def read_ome_zarr(path: str | os.PathLike[str]) -> tuple[Any, float | None]:
    """Open the full-resolution mask of an OME-Zarr store, lazily.

    Handles a label image, a ``labels/`` group (its first label), an image
    with labels (its first label), a plain multiscale image (NGFF 0.1-0.5,
    its first dataset), a bioformats2raw layout, or a plain zarr array.

    Returns
    -------
    dask.array.Array
        ``YX``, or ``YXC`` when the store has a channel axis of several.
    float or None
        Microns per pixel, when the axes have a unit (and the scale is a
        pixel size some microscope has: at most 100 µm).

    Raises
    ------
    MaskError
        Not a zarr store; metadata that is malformed (missing, empty or of
        the wrong type where NGFF says what belongs), names an array that is
        not there, or gives a zero, negative or non-finite scale; a shape no
        mask can have (:func:`mask_shape_problem`) or more than
        :data:`MAX_ZARR_CHUNKS` chunks; an image with several z planes or
        time points. Later, as the array is computed: a chunk that cannot be
        decoded.
    LimitError
        A chunk over the memory budget (chunks are decoded whole).
    """
    import dask.array as da

    path = Path(path)
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:  # zarr raises several kinds for a folder that is not zarr
        raise MaskError(f"{path}: not a zarr store ({_one_line(exc)})") from exc
    group, multiscale = _find_multiscale(node, path)
    if multiscale is None:
        array = group
    else:
        name = multiscale["datasets"][0].get("path")
        array = _child(group, name, path, "dataset")
        if not isinstance(array, zarr.Array):
            raise _bad(path, f"dataset {name!r} is a group, not an array")
    names = _axis_names(multiscale, array.ndim, path)
    chunks = _check_array(array, names, path)
    mpp = _mpp(multiscale, names, path)
    # One name per store opened: dask caches by name, and the store may change.
    name = f"mask-zarr-{uuid.uuid4().hex}"
    data = da.from_array(_NamedChunks(array, path), chunks=chunks, name=name, lock=False)
    index: list[Any] = []
    kept: list[str] = []
    for name, size in zip(names, array.shape, strict=True):
        if name in ("y", "x") or (name == "c" and size > 1):
            index.append(slice(None))
            kept.append(name)
        elif size == 1:
            index.append(0)
        else:
            raise MaskError(
                f"{path}: a mask is one 2-D plane, but axis {name!r} has {size} "
                f"(axes {names}, shape {array.shape})"
            )
    data = data[tuple(index)]
    order = [kept.index("y"), kept.index("x")] + ([kept.index("c")] if "c" in kept else [])
    return data.transpose(order), mpp

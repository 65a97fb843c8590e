"""Where and how a model runs: device, precision, batch size, out-of-memory.

This module is part of the napari-free core.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from slide_unet.core.errors import InputError

__all__ = [
    "PRECISIONS",
    "autocast",
    "default_batch_size",
    "is_out_of_memory",
    "resolve_device",
    "resolve_precision",
]

#: What ``precision=`` accepts.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Input bytes of one batch in host memory, at most (GPU batches).
MAX_BATCH_BYTES = 256 * 2**20


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device to run on: ``"auto"`` picks CUDA, then Apple MPS, then the CPU.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...

    Returns
    -------
    torch.device

    Raises
    ------
    InputError
        (a ``ValueError``) for a device that this machine or this build of
        torch does not have, saying which ones it does.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"unknown device {device!r}: expected 'auto', 'cpu', 'cuda' or 'mps'"
        ) from exc
    available = ["cpu"]
    if torch.cuda.is_available():
        available.append(f"cuda (x{torch.cuda.device_count()})")
    if _mps_available():
        available.append("mps")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            why = "no CUDA GPU was found" if torch.version.cuda else "torch was built without CUDA"
            raise InputError(
                f"device {device!r} is not available ({why}); available: "
                f"{', '.join(available)}. Use device='auto' or 'cpu'."
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r} is not available: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif chosen.type == "mps" and not _mps_available():
        raise InputError(
            f"device {device!r} is not available (no Apple GPU); available: "
            f"{', '.join(available)}. Use device='auto' or 'cpu'."
        )
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}: expected 'auto', 'cpu', 'cuda' or 'mps'")
    return chosen


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type for ``precision`` on ``device``; None means plain float32.

    ``"auto"`` is bfloat16 on CUDA GPUs that support it (else float16); on
    CPUs with native bfloat16 instructions (AVX512-BF16 or AMX, see
    :func:`cpu_has_bf16`) it is bfloat16 too, and float32 on other CPUs and
    on MPS. On the CPU, bfloat16 autocast ran the bundled glomeruli model
    1.7x faster on a 2-core AMD EPYC with a mean Dice within 0.0005 of
    float32 on real held-out images (``benchmarks/bench_precision.py``; the
    rule is that it stays only while that difference is below 0.005).
    MPS autocast needs a recent torch, so it is opt-in there (``"fp16"``).

    Raises
    ------
    InputError
        (a ``ValueError``) for an unknown precision, or float16 on the CPU.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise InputError("precision 'fp16' is not supported on the CPU: use 'bf16' or 'fp32'")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None  # other CPUs; MPS: autocast there needs a recent torch


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's AVX512-BF16/AMX check).

    Without it, bfloat16 autocast is emulated and slower than float32.
    """
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def default_batch_size(device: torch.device, tile: int, width: int = 16) -> int:
    """Tiles per batch for tiles of ``tile`` pixels a side.

    On the CPU one: per tile, a batch of one ran faster than a batch of two at
    every tile side measured on a 2-core AVX512 EPYC (752²: 0.150 against
    0.215 s per tile in bf16, 0.43 against 0.47 s in fp32; see
    ``benchmarks/README.md``), and it holds the least memory. On a GPU, what
    fits in a third of its memory (a U-Net holds about a dozen feature maps of
    its first width per pixel at its peak), at most 64,
    and at most :data:`MAX_BATCH_BYTES` of float32 input in host memory, since
    a few batches are read ahead. Out-of-memory halves it anyway.

    Parameters
    ----------
    device : torch.device
    tile : int
        Tile side in pixels.
    width : int
        Channels of the model's first level (``base_width``).

    Returns
    -------
    int
    """
    if device.type == "cpu":
        return 1
    host = max(1, MAX_BATCH_BYTES // (tile * tile * 3 * 4))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        per_tile = tile * tile * max(width, 1) * 2 * 12
        return max(1, min(64, host, int(total / 3 / per_tile)))
    return max(1, min(host, round(8 * 512**2 / tile**2)))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a GPU out-of-memory error (CUDA or MPS)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()

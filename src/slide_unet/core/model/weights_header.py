"""What a safetensors weights file holds, read from its header alone, and whether
that fits a model card.

A safetensors file is an 8-byte little-endian length, a JSON header naming each
tensor's dtype, shape and byte range, then the tensors back to back. Only the
length and the header (at most :data:`MAX_HEADER_BYTES`) are read here, and
every claim in the header is checked against the file's size, so a hostile file
is refused in milliseconds whatever it declares; the tensors are compared with
the ones the card's architecture has (computed, not built) before anything is
allocated.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from slide_unet.core.errors import ModelError
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.unet import brief, unet_tensor_shapes

__all__ = ["MAX_HEADER_BYTES", "check_tensors_fit_card", "read_safetensors_header"]

#: The largest safetensors header read. A U-Net's is a few KB (22 KB at depth 8
#: with batch normalisation); safetensors itself allows 100 MB.
MAX_HEADER_BYTES = 4 * 2**20
#: Bytes per element of each safetensors dtype.
_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip
_FLOATS = ("F16", "BF16", "F32", "F64")
_INTEGERS = ("U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _header_problem(parsed: dict, body: int) -> str:
    """What is wrong with a parsed header whose file holds ``body`` bytes of tensors, or ``""``."""
    extents = []
    for name, entry in parsed.items():
        if name == "__metadata__":
            if entry is not None and not (
                isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())
            ):
                return "its __metadata__ is not a mapping of strings"
            continue
        what = f"tensor {brief(name)}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            return f"{what} is not {{dtype, shape, data_offsets}}: {brief(entry)}"
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
            return f"{what} has an unknown dtype {brief(dtype)}"
        # A U-Net's tensors have at most 4 dimensions; the limit keeps math.prod cheap.
        if not isinstance(shape, list) or len(shape) > 8 or not all(map(_is_count, shape)):
            return f"{what} has an invalid shape {brief(shape)}"
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1] <= body
        ):
            return f"{what} has data_offsets {brief(offsets)} outside the {body:,} bytes of data"
        if offsets[1] - offsets[0] != math.prod(shape) * _ITEMSIZE[dtype]:
            return (
                f"{what}: {dtype} {brief(shape)} does not fill its data_offsets {brief(offsets)}"
            )
        extents.append((offsets[0], offsets[1]))
    # safetensors stores the tensors back to back: anything else hides bytes in the file.
    position = 0
    for start, end in sorted(extents):
        if start != position:
            return f"its tensors do not lie back to back (a gap or overlap at byte {position:,})"
        position = end
    if position != body:
        return f"its tensors fill {position:,} of the {body:,} bytes after the header"
    return ""


def read_safetensors_header(
    path: str | os.PathLike[str],
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes of a safetensors file's tensors, read from its header alone.

    Nothing but the 8-byte header length and the JSON header (at most
    :data:`MAX_HEADER_BYTES`) is read, so this is safe and fast on any file.

    Parameters
    ----------
    path
        A ``.safetensors`` file.

    Returns
    -------
    dict
        Tensor name to ``(dtype, shape)``, e.g. ``("F32", (16, 3, 3, 3))``.

    Raises
    ------
    ModelError
        Naming the file, when it is not a safetensors file (a pickle or zip
        from ``torch.save`` is recognised as such), its header is too large,
        claims more bytes than the file has, is not a JSON object, or describes
        tensors that do not fit the file.
    """
    path = Path(path)
    problem = ""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if len(head) < 8 or n < 2:
                problem = "it does not start with a safetensors header"
            elif n > size - 8:
                problem = f"its header claims {n:,} bytes, but the file has {size:,}"
            elif n > MAX_HEADER_BYTES:
                problem = f"its header is {n:,} bytes, over the {MAX_HEADER_BYTES:,} accepted"
            else:
                header = f.read(n)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the weights file ({exc})") from None
    if not problem:
        try:
            parsed = json.loads(header.decode("utf-8"))
        except RecursionError:
            problem = "its header is nested too deeply to be a safetensors header"
        except ValueError:  # bad UTF-8, bad JSON, integers of thousands of digits
            problem = "it does not start with a safetensors header"
        else:
            if not isinstance(parsed, dict):
                problem = "its header is not a JSON object"
            else:
                problem = _header_problem(parsed, size - 8 - n)
    if problem:
        if head[:1] == b"\x80":
            problem += "; it looks like a Python pickle (torch.save)"
        elif head[:2] == b"PK":
            problem += "; it looks like a zip archive (torch.save)"
        raise ModelError(
            f"{path}: not a safetensors file ({problem}). Weights are only loaded from "
            "safetensors, never unpickled; convert them with safetensors.torch.save_file"
        )
    return {
        name: (entry["dtype"], tuple(entry["shape"]))
        for name, entry in parsed.items()
        if name != "__metadata__"
    }


def check_tensors_fit_card(
    weights: Path,
    tensors: dict[str, tuple[str, tuple[int, ...]]],
    card: ModelCard,
    card_path: Path,
) -> None:
    """Refuse weights whose header does not list exactly the card architecture's tensors.

    Parameters
    ----------
    weights
        The weights file (named in the message).
    tensors
        Its tensors, as :func:`read_safetensors_header` gives them.
    card, card_path
        The model card (already checked, so its architecture is bounded) and its file.

    Raises
    ------
    ModelError
        One line naming both files and saying which tensors are missing, unexpected,
        of the wrong shape or of a dtype that is not a float (a count for
        ``num_batches_tracked``), a few of each.
    """
    expected = unet_tensor_shapes(**card.parameters)
    found = {k: shape for k, (_, shape) in tensors.items()}
    missing = sorted(expected.keys() - found.keys())
    # A hostile name may be long or hold line breaks: such names are quoted and cut.
    unexpected = [
        k if len(k) <= 80 and k.isprintable() else brief(k)
        for k in sorted(found.keys() - expected.keys())
    ]
    common = sorted(expected.keys() & found.keys())
    wrong = [
        f"{k} {found[k]} (card wants {expected[k]})" for k in common if found[k] != expected[k]
    ]
    # num_batches_tracked counts; everything else is weights or statistics.
    dtypes = [
        f"{k} {tensors[k][0]}"
        for k in common
        if tensors[k][0] not in (_INTEGERS if k.endswith(".num_batches_tracked") else _FLOATS)
    ]
    if missing or unexpected or wrong or dtypes:
        parts = [
            f"{label} {len(items)}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
                ("wrong dtype", dtypes),
            )
            if items
        ]
        raise ModelError(
            f"{weights}: tensors do not match the card's {card.architecture} "
            f"{card.parameters} ({card_path.name}); {'; '.join(parts)}"
        )

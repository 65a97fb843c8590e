"""What every ``slide-unet`` command shares: options, argument types, progress, output.

No command module imports another's names; what two of them need lives here.
Core modules are imported inside the functions that use them, so building the
parser (``slide-unet --help``) imports none of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from slide_unet.core.errors import UsageError
from slide_unet.core.inference.options import DEVICES

__all__ = [
    "DEVICES",
    "MASK_FORMATS",
    "add_device_option",
    "add_geojson_options",
    "add_json_option",
    "add_segment_options",
    "geojson_classes_note",
    "print_epoch",
    "progress_bar",
    "region_arg",
    "shape_arg",
    "training_pairs",
]

#: The mask formats, by extension, for the help texts.
MASK_FORMATS = ".ome.tif/.tif, .zarr, .png, .csv (Kaggle RLE), .geojson"


def add_json_option(parser: argparse.ArgumentParser, help: str = "print JSON") -> None:
    """``--json``: print machine-readable results instead of text."""
    parser.add_argument("--json", action="store_true", help=help)


def add_geojson_options(parser: Any) -> None:
    """``--object-type`` and ``--no-measurements``: how a ``.geojson`` output is written."""
    parser.add_argument(
        "--object-type",
        choices=("annotation", "detection"),
        default="annotation",
        help="QuPath object type of a .geojson output's features: annotation (editable) "
        "or detection (lighter, for many objects) (default: %(default)s)",
    )
    parser.add_argument(
        "--no-measurements",
        dest="measurements",
        action="store_false",
        help="leave out each .geojson feature's measurements (area, perimeter, centroid, "
        "equivalent diameter, solidity: QuPath's measurement map), which cost one more "
        "pass over the mask",
    )


def geojson_classes_note(path: Any, classification: str | None) -> str | None:
    """``classes: 1 = A, 2 = B`` when a GeoJSON file of several classes is read
    without ``--classification`` (a label per class), else None."""
    from slide_unet.core.masks.geojson import geojson_classes, read_geojson
    from slide_unet.core.masks.io import mask_suffix

    if classification is not None or mask_suffix(path) not in (".geojson", ".json"):
        return None
    classes = geojson_classes(read_geojson(path))
    if len(classes) < 2:
        return None
    return "classes: " + ", ".join(f"{i} = {name}" for i, name in enumerate(classes, start=1))


def add_device_option(parser: Any) -> None:
    """``--device``: where the model runs."""
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where the model runs: auto (a GPU when there is one, else the CPU), cpu, "
        "cuda or mps (default: %(default)s)",
    )


def add_segment_options(parser: Any, *, names: Any = None) -> None:
    """One flag per field of :class:`~slide_unet.core.inference.options.SegmentOptions`
    (or of those in ``names``) that declares one: flag, type, default and help all
    from the field, its default shown in the help."""
    import dataclasses

    from slide_unet.core.inference.options import SegmentOptions

    for field in dataclasses.fields(SegmentOptions):
        meta = field.metadata
        if "cli" not in meta or (names is not None and field.name not in names):
            continue
        shown = meta.get("default_text", "%(default)s")
        keywords = dict(meta["cli"])
        if keywords.get("action") == "BooleanOptionalAction":  # named: options imports nothing
            keywords["action"] = argparse.BooleanOptionalAction  # --x / --no-x, shows default
        if keywords.get("action") in ("store_true", argparse.BooleanOptionalAction):
            help = meta["help"]
        else:
            help = f"{meta['help']} (default: {shown})"
        parser.add_argument(
            "--" + field.name.replace("_", "-"), default=field.default, help=help, **keywords
        )


def progress_bar(label: str) -> Any:
    """A ``progress(done, total)`` callback drawing a bar on stderr, or None when stderr
    is not a terminal (a log file gets no bar)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def shape_arg(text: str) -> tuple[int, int]:
    """``HEIGHT,WIDTH`` (or ``HEIGHTxWIDTH``) as a pair of ints."""
    try:
        height, width = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH, got {text!r}") from None
    return height, width


def region_arg(text: str) -> tuple[int, int, int, int]:
    """``Y0:Y1,X0:X1`` as ``(y0, y1, x0, x1)``."""
    try:
        rows, cols = text.split(",")
        y0, y1 = (int(v) for v in rows.split(":"))
        x0, x1 = (int(v) for v in cols.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y0:Y1,X0:X1, got {text!r}") from None
    return y0, y1, x0, x1


def training_pairs(
    images: list[Path], masks: list[Path], exclude: list[str] | None = None
) -> list[Any]:
    """The image/mask pairs of each ``--images`` folder and its ``--masks`` folder, less
    the stems in ``exclude``; says on stderr how many images of a folder have no mask.

    Raises
    ------
    UsageError
        The folders do not come in pairs, or ``exclude`` names images that are not there.
    """
    from slide_unet.core.training.image_pairs import find_pairs

    if len(images) != len(masks):
        raise UsageError(
            f"give one --masks folder per --images folder, got {len(images)} --images and "
            f"{len(masks)} --masks"
        )
    pairs = []
    for image_folder, mask_folder in zip(images, masks, strict=True):
        found, unpaired = find_pairs(image_folder, mask_folder)
        if unpaired:
            print(
                f"{len(unpaired)} images in {image_folder} have no mask and are left out",
                file=sys.stderr,
            )
        pairs.extend(found)
    excluded = set(exclude or [])
    unknown = excluded - {p.stem for p in pairs}
    if unknown:
        raise UsageError(f"--exclude names images that are not there: {sorted(unknown)}")
    return [p for p in pairs if p.stem not in excluded]


def print_epoch(record: dict[str, Any], total: int | None, prefix: str = "") -> None:
    """One line per training epoch: loss, validation Dice, learning rate, time so far."""
    minutes, seconds = divmod(int(record["seconds"]), 60)
    of = f"/{total}" if total else ""
    validation = (
        f"validation Dice {record['val_dice']:.4f} (best {record['best_dice']:.4f})  "
        if record.get("val_dice") is not None
        else ""
    )
    print(
        f"{prefix}epoch {record['epoch']}{of}  loss {record['loss']:.4f}  {validation}"
        f"lr {record['lr']:.2e}  {minutes}m{seconds:02d}s",
        flush=True,
    )

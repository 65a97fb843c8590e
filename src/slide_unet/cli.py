"""The ``slide-unet`` command: thin over :mod:`slide_unet.core`.

Every command exits 1 with a one-line message on bad input (a bug exits 70 with
its traceback and a request to report it), and
``--json`` prints machine-readable results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slide_unet import __version__
from slide_unet.core.errors import UsageError, UserError
from slide_unet.core.slide.slide import Slide, open_slide

#: Exit status of a run that met a bug (sysexits' EX_SOFTWARE); bad input exits 1.
BUG_EXIT_STATUS = 70

# Commands import their core modules lazily: `slide-unet info` should not pay
# for scipy, and `--help` for nothing.


def _slide_info(slide: Slide) -> dict[str, Any]:
    return {
        "path": str(slide.path),
        "name": slide.name,
        "axes": slide.axes,
        "dtype": str(slide.dtype),
        "rgb": slide.rgb,
        "mpp": slide.mpp,
        "levels": [
            {"shape": list(level.shape), "downsample": round(d, 4), "mpp": slide.level_mpp(i)}
            for i, (level, d) in enumerate(zip(slide.levels, slide.downsamples, strict=True))
        ],
        "overviews": (
            None
            if slide.overview_cache is None
            else {"cached": not slide.needs_overviews, "path": str(slide.overview_cache.path)}
        ),
    }


def _print_info(info: dict[str, Any]) -> None:
    mpp = "unknown" if info["mpp"] is None else f"{info['mpp']:g} µm"
    colour = "RGB" if info["rgb"] else info["axes"]
    print(f"{info['name']}  ({info['path']})")
    print(f"  {colour}, {info['dtype']}, pixel size {mpp}")
    for i, level in enumerate(info["levels"]):
        shape = " x ".join(map(str, level["shape"][:2]))
        at = "" if level["mpp"] is None else f", {level['mpp']:.4g} µm/px"
        print(f"  level {i}: {shape} (1/{level['downsample']:g}{at})")
    if info["overviews"] is not None:
        state = "cached" if info["overviews"]["cached"] else "not built yet"
        print(f"  overviews: {state} ({info['overviews']['path']})")


def _progress_bar(label: str) -> Any:
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def cmd_info(args: argparse.Namespace) -> int:
    """Print a slide's levels, shapes, dtype and pixel size."""
    with open_slide(args.slide) as slide:
        if args.overviews and slide.needs_overviews:
            slide.build_overviews(progress=_progress_bar("building overviews"))
        info = _slide_info(slide)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def _shape_arg(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH, got {text!r}") from None
    return height, width


#: Files at the top of a zarr store (format 2 group or array, format 3).
_ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


def _is_zarr_store(path: Path) -> bool:
    """Whether ``path`` is a zarr store folder (one mask), not a folder of masks:
    named ``.zarr``/``.ome.zarr``, or holding zarr's metadata (a mask store, a
    plain zarr array)."""
    from slide_unet.core.masks.io import mask_suffix

    if not path.is_dir():
        return False
    return mask_suffix(path) in (".zarr", ".ome.zarr") or any(
        (path / marker).is_file() for marker in _ZARR_MARKERS
    )


def _is_mask(path: Path) -> bool:
    """A mask file or a zarr store: one mask to score, not a folder of them."""
    return path.is_file() or _is_zarr_store(path)


def _mask_files(folder: Path) -> dict[str, Path]:
    from slide_unet.core.masks.io import mask_stem, mask_suffix

    files = sorted(
        p
        for p in folder.iterdir()
        if (p.is_file() and (mask_suffix(p) or p.suffix.lower() == ".jpg")) or _is_zarr_store(p)
    )
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.name.startswith("."):
            continue
        stem = mask_stem(path)
        if stem in by_stem:
            raise UsageError(
                f"{folder}: two masks are named {stem!r} ({by_stem[stem].name} and {path.name}): "
                "keep one"
            )
        by_stem[stem] = path
    return by_stem


def _is_csv(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def _score_pairs(args: argparse.Namespace) -> list[tuple[str, Path, str | None, Path, str | None]]:
    """(name, pred file, pred RLE id, truth file, truth RLE id) for each pair to score.

    Folders pair files by stem; an RLE CSV pairs its row ids with the other
    side's stems (or ids). A zarr store (OME-Zarr, a plain zarr array, a mask
    store) is one mask, like a file, though it is a folder.
    """
    from slide_unet.core.masks.io import mask_stem

    pred, truth = Path(args.pred), Path(args.truth)
    for path in (pred, truth):
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
    if _is_mask(pred) and _is_mask(truth) and not (_is_csv(pred) and _is_csv(truth)):
        return [(mask_stem(pred), pred, args.pred_id or args.id, truth, args.truth_id or args.id)]

    def entries(path: Path) -> dict[str, tuple[Path, str | None]]:
        if path.is_dir() and not _is_zarr_store(path):
            return {stem: (file, None) for stem, file in _mask_files(path).items()}
        if _is_csv(path):
            from slide_unet.core.masks.rle_csv import rle_csv_ids

            return {i: (path, i) for i in rle_csv_ids(path)}
        return {mask_stem(path): (path, None)}

    preds, truths = entries(pred), entries(truth)
    names = [name for name in preds if name in truths]
    if args.id:
        names = [name for name in names if name == args.id]
    if not names:
        raise UsageError(
            f"no pairs: nothing in {pred} has the same name as something in {truth} "
            f"(predictions: {', '.join(list(preds)[:5]) or 'none'}; "
            f"truths: {', '.join(list(truths)[:5]) or 'none'})"
        )
    return [(n, *preds[n], *truths[n]) for n in names]


def _read_pair(
    pred: Path, pred_id: str | None, truth: Path, truth_id: str | None, shape: Any
) -> tuple[Any, Any]:
    """Read both masks; a side that does not record its size (RLE, GeoJSON) takes
    the other side's, else ``--shape``."""
    from slide_unet.core.masks.io import mask_suffix, read_mask

    def sizeless(path: Path) -> bool:
        return mask_suffix(path) in (".csv", ".geojson", ".json")

    if sizeless(pred) and sizeless(truth) and shape is None:
        raise UsageError(
            f"neither {pred.name} nor {truth.name} records the mask size: "
            "pass --shape HEIGHT,WIDTH"
        )
    if sizeless(truth):
        pred_mask = read_mask(pred, image_id=pred_id, shape=shape)
        return pred_mask, read_mask(truth, image_id=truth_id, shape=shape or pred_mask.shape)
    truth_mask = read_mask(truth, image_id=truth_id, shape=shape)
    return read_mask(pred, image_id=pred_id, shape=shape or truth_mask.shape), truth_mask


def _print_scores(name: str, scores: Any) -> None:
    print(
        f"{name}: Dice {scores.dice:.4f}  IoU {scores.iou:.4f}  "
        f"tile Dice {scores.tile_dice_mean:.4f}  objects P {scores.object_precision:.3f} "
        f"R {scores.object_recall:.3f} F1 {scores.object_f1:.3f} "
        f"(TP {scores.true_positives}, FP {scores.false_positives}, "
        f"FN {scores.false_negatives})"
    )


def _print_tiles(scores: Any) -> None:
    print("  tile (y, x)        size        Dice   truth px   pred px")
    for row in scores.tiles.records():
        print(
            f"  ({row['y']:>6}, {row['x']:>6})  {row['height']:>4} x {row['width']:<4}"
            f"  {row['dice']:>6.3f}"
            f"  {row['true_pixels']:>9}  {row['pred_pixels']:>8}"
        )


def cmd_score(args: argparse.Namespace) -> int:
    """Score predicted masks against expert masks: Dice, IoU, object F1."""
    from slide_unet.core.masks.io import check_same_shape
    from slide_unet.core.scoring.metrics import score

    results = []
    for name, pred, pred_id, truth, truth_id in _score_pairs(args):
        pred_mask, truth_mask = _read_pair(pred, pred_id, truth, truth_id, args.shape)
        check_same_shape(pred_mask, truth_mask, (f"prediction {pred.name}", f"truth {truth.name}"))
        scores = score(pred_mask, truth_mask, tile=args.tile, iou_threshold=args.iou_threshold)
        results.append((name, pred, truth, scores))
        if not args.json:
            _print_scores(name, scores)
            if args.tiles:
                _print_tiles(scores)
    if len(results) > 1 and not args.json:
        mean = sum(r[3].dice for r in results) / len(results)
        print(f"mean Dice over {len(results)} masks: {mean:.4f}")
    if args.json:
        per = [
            {"name": n, "pred": str(p), "truth": str(t), **s.as_dict(tiles=args.tiles)}
            for n, p, t, s in results
        ]
        out: dict[str, Any] = (
            per[0]
            if len(per) == 1
            else {
                "mean_dice": sum(r["dice"] for r in per) / len(per),
                "pairs": per,
            }
        )
        print(json.dumps(out, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Convert a mask between formats (by the output's extension)."""
    from slide_unet.core.masks.io import check_same_shape, export_mask, mask_suffix, read_mask

    shape, mpp = args.shape, args.mpp
    sizeless = mask_suffix(args.mask) in (".csv", ".geojson", ".json")
    if args.image is not None:
        with open_slide(args.image) as slide:
            if not sizeless:  # the mask records its size: it must be the slide's
                check_same_shape(
                    read_mask(args.mask), slide.shape, ("mask", f"image {args.image}")
                )
            shape = shape or slide.shape[:2]
            # RLE and GeoJSON record no pixel size: the slide's is the mask's.
            if mpp is None and sizeless:
                mpp = slide.mpp
    written = export_mask(
        args.mask,
        args.output,
        image_id=args.id,
        shape=shape,
        mpp=mpp,
        progress=_progress_bar("exporting"),
    )
    if args.json:
        print(json.dumps({"input": str(args.mask), "output": str(written)}))
    else:
        print(f"wrote {written}")
    return 0


def _region_arg(text: str) -> tuple[int, int, int, int]:
    try:
        rows, cols = text.split(",")
        y0, y1 = (int(v) for v in rows.split(":"))
        x0, x1 = (int(v) for v in cols.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y0:Y1,X0:X1, got {text!r}") from None
    return y0, y1, x0, x1


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment a slide (or a region of it) and write the mask."""
    import time
    import warnings

    from slide_unet.core.errors import PlaceholderModelWarning

    output = Path(args.output)
    options: dict[str, Any] = {
        "region": args.region,
        "mpp": args.mpp,
        "device": args.device,
        "tile": args.tile,
        "threshold": args.threshold,
        "batch_size": args.batch_size,
        "tta": args.tta,
        "min_object_um2": args.min_object_um2,
        "progress": _progress_bar("segmenting"),
    }
    started = time.perf_counter()
    with warnings.catch_warnings():
        if args.json:  # the placeholder warning still goes to stderr otherwise
            warnings.simplefilter("ignore", PlaceholderModelWarning)
        if args.workers or args.scheduler:
            from slide_unet.core.inference.distributed import segment_distributed

            segment_distributed(
                args.slide,
                args.model,
                out=output,
                workers=args.workers,
                scheduler=args.scheduler,
                **options,
            )
        else:
            from slide_unet.core.inference.segment import segment

            segment(args.slide, args.model, out=output, **options)
    seconds = time.perf_counter() - started
    if args.rle:
        from slide_unet.core.masks.io import export_mask

        export_mask(output, args.rle, image_id=Path(args.slide).name.split(".")[0])
    result = {"slide": args.slide, "output": str(output), "rle": args.rle, "seconds": seconds}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        extra = f" and {args.rle}" if args.rle else ""
        print(f"wrote {output}{extra} in {seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``slide-unet``."""
    parser = argparse.ArgumentParser(
        prog="slide-unet",
        description="Segment glomeruli and nuclei in gigapixel microscopy slides.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="levels, shapes, dtype and pixel size of a slide")
    info.add_argument("slide", help="TIFF, OME-TIFF, SVS, PNG or JPEG file")
    info.add_argument(
        "--overviews",
        action="store_true",
        help="build and cache the overview levels of a large single-level slide",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)

    segment = commands.add_parser(
        "segment",
        help="segment a slide (or a region) with a U-Net and write the mask",
        description="Segment a slide tile by tile; OUT by extension: .ome.tif/.tif (tiled, "
        "pyramidal, pixel size kept), .zarr, .png (small only), .csv (Kaggle RLE), .geojson.",
    )
    segment.add_argument("slide", help="TIFF, OME-TIFF, SVS, PNG or JPEG file")
    segment.add_argument("-o", "--output", required=True, help="output mask file")
    segment.add_argument(
        "--model", default="glomeruli", help="bundled or user model name, or a model file"
    )
    segment.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    segment.add_argument(
        "--region", type=_region_arg, help="Y0:Y1,X0:X1 in full-resolution pixels"
    )
    segment.add_argument(
        "--mpp", type=float, help="input pixel size (µm) when the file does not record one"
    )
    segment.add_argument("--rle", help="also write the mask as a Kaggle RLE CSV")
    segment.add_argument("--tile", type=int, help="tile side at the model's working scale")
    segment.add_argument("--batch-size", type=int, help="tiles per batch")
    segment.add_argument("--threshold", type=float, help="probability threshold")
    segment.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the 8 rotations and flips of each tile (8x slower)",
    )
    segment.add_argument(
        "--min-object-um2",
        type=float,
        default=0.0,
        metavar="AREA",
        help="remove objects smaller than AREA µm² (pixels if the pixel size is unknown)",
    )
    scale = segment.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=int, help="run on a local cluster of N processes")
    scale.add_argument("--scheduler", help="run on an existing dask.distributed cluster")
    segment.add_argument("--json", action="store_true", help="print JSON")
    segment.set_defaults(run=cmd_segment)

    formats = ".ome.tif/.tif, .zarr, .png, .csv (Kaggle RLE), .geojson"
    score = commands.add_parser(
        "score",
        help="Dice, IoU and object precision/recall/F1 of predicted masks against the truth",
        description="Score masks: files or zarr stores, or folders of them paired by name "
        f"(any mask format: {formats}; an RLE CSV pairs its row ids with the other side's "
        "names).",
    )
    score.add_argument(
        "pred", help="predicted mask: a file or zarr store, a folder of them, or an RLE CSV"
    )
    score.add_argument(
        "truth", help="expert mask: a file or zarr store, a folder of them, or an RLE CSV"
    )
    score.add_argument("--id", help="RLE CSV row to score (both sides)")
    score.add_argument("--pred-id", help="RLE CSV row of the prediction")
    score.add_argument("--truth-id", help="RLE CSV row of the truth")
    score.add_argument(
        "--shape", type=_shape_arg, help="HEIGHT,WIDTH when both sides are RLE or GeoJSON"
    )
    score.add_argument("--tile", type=int, default=1024, help="per-tile Dice grid (pixels)")
    score.add_argument(
        "--iou-threshold", type=float, default=0.5, help="least IoU of an object match"
    )
    score.add_argument("--tiles", action="store_true", help="also print the per-tile Dice table")
    score.add_argument("--json", action="store_true", help="print JSON")
    score.set_defaults(run=cmd_score)

    export = commands.add_parser(
        "export",
        help="convert a mask between formats",
        description=f"Convert a mask; formats by extension: {formats}. Written atomically.",
    )
    export.add_argument("mask", help="mask file (or OME-Zarr folder)")
    export.add_argument("-o", "--output", required=True, help="output file")
    export.add_argument("--id", help="row of an RLE CSV input (default: its only row)")
    export.add_argument("--shape", type=_shape_arg, help="HEIGHT,WIDTH of an RLE or GeoJSON input")
    export.add_argument(
        "--image", help="slide whose size (and pixel size) an RLE or GeoJSON input has"
    )
    export.add_argument("--mpp", type=float, help="pixel size to record (µm)")
    export.add_argument("--json", action="store_true", help="print JSON")
    export.set_defaults(run=cmd_export)
    from slide_unet import cli_evaluate, cli_finetune, cli_train

    cli_evaluate.add_parser(commands)
    cli_train.add_parser(commands)
    cli_finetune.add_parser(commands)
    return parser


#: Arguments that name what a command reads, and what it writes: no command may
#: write over one of its inputs (a slide replaced by its mask, exit 0, was possible).
INPUT_ARGUMENTS = ("slide", "mask", "image", "pred", "truth", "images", "masks", "model")
OUTPUT_ARGUMENTS = ("output", "rle")


def _check_outputs(args: argparse.Namespace) -> None:
    from slide_unet.core.atomic import check_not_overwriting

    inputs: list[Any] = []
    for name in INPUT_ARGUMENTS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if item is not None and Path(item).exists():  # a model may be a name
                inputs.append(item)
    check_not_overwriting([getattr(args, name, None) for name in OUTPUT_ARGUMENTS], inputs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slide-unet``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_outputs(args)
        return int(args.run(args))
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, OSError) as exc:  # bad input, or the file system's say: one line
        print(f"slide-unet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"slide-unet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: the traceback is what a maintainer needs
        traceback.print_exc()
        print(
            f"slide-unet {args.command}: internal error (napari-slide-unet {__version__}). "
            "This is a bug, not something wrong with your input: please report it to the "
            "napari-slide-unet maintainers with the command line and the traceback above",
            file=sys.stderr,
        )
        return BUG_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())

"""``slide-unet score``: Dice, IoU and object F1 of predicted masks against the truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slide_unet.cli.common import MASK_FORMATS, add_json_option, region_arg, shape_arg
from slide_unet.core.errors import UsageError

__all__ = ["add_parser", "run"]


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
    pred: Path,
    pred_id: str | None,
    truth: Path,
    truth_id: str | None,
    shape: Any,
    classification: str | None = None,
) -> tuple[Any, Any]:
    """Read both masks; a side that does not record its size (RLE, GeoJSON) takes
    the other side's, else ``--shape``. A GeoJSON side draws the objects of
    ``classification``; one of several classes must be picked."""
    from slide_unet.cli.common import geojson_classes_note
    from slide_unet.core.masks.io import mask_suffix
    from slide_unet.core.masks.io import read_mask as read_any

    def read_mask(path: Path, *, image_id: str | None, shape: Any) -> Any:
        if mask_suffix(path) in (".geojson", ".json"):
            note = geojson_classes_note(path, classification)
            if note is not None:
                raise UsageError(
                    f"{path.name} holds objects of several QuPath classes ({note}): "
                    "pick the one to score with --classification NAME"
                )
            return read_any(path, shape=shape, classification=classification)
        return read_any(path, image_id=image_id, shape=shape)

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


def _crop_to_region(pred: Any, truth: Any, region: Any, truth_path: Path) -> tuple[Any, Any]:
    """The truth's crop ``Y0:Y1,X0:X1``; the prediction as it is when region-sized (as
    ``segment --region`` writes it), else its crop too (a whole-slide prediction)."""
    y0, y1, x0, x1 = region
    height, width = truth.shape[:2]
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise UsageError(
            f"--region {y0}:{y1},{x0}:{x1} is not inside the truth {truth_path.name} "
            f"({height} x {width})"
        )
    if tuple(pred.shape[:2]) == (height, width) and (height, width) != (y1 - y0, x1 - x0):
        pred = pred[y0:y1, x0:x1]
    return pred, truth[y0:y1, x0:x1]


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


def _write_tiles_image(path: Path, scores: Any, inputs: tuple[Path, Path]) -> None:
    """The per-tile Dice grid as a float32 TIFF, one pixel per tile, NaN where both
    masks are empty (the napari Score dock's error map, for any viewer)."""
    import tifffile

    if any(path.resolve() == p.resolve() for p in inputs):
        raise UsageError(f"--tiles-image {path} is one of the masks scored: give another file")
    grid = scores.tiles.dice_map()
    tifffile.imwrite(path, grid, metadata={"tile_px": scores.tile, "value": "Dice per tile"})


def run(args: argparse.Namespace) -> int:
    """Score predicted masks against expert masks: Dice, IoU, object F1."""
    from slide_unet.core.masks.io import check_same_shape
    from slide_unet.core.scoring.metrics import score

    results = []
    pairs = list(_score_pairs(args))
    if args.tiles_image is not None and len(pairs) != 1:
        raise UsageError(
            f"--tiles-image writes one pair's map; {len(pairs)} pairs were given: "
            "score them one at a time"
        )
    for name, pred, pred_id, truth, truth_id in pairs:
        pred_mask, truth_mask = _read_pair(
            pred, pred_id, truth, truth_id, args.shape, args.classification
        )
        if args.region is not None:
            pred_mask, truth_mask = _crop_to_region(pred_mask, truth_mask, args.region, truth)
        check_same_shape(pred_mask, truth_mask, (f"prediction {pred.name}", f"truth {truth.name}"))
        scores = score(pred_mask, truth_mask, tile=args.tile, iou_threshold=args.iou_threshold)
        results.append((name, pred, truth, scores))
        if args.tiles_image is not None:
            _write_tiles_image(args.tiles_image, scores, (pred, truth))
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


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``score`` on the subcommands of ``slide-unet``."""
    score = commands.add_parser(
        "score",
        help="Dice, IoU and object precision/recall/F1 of predicted masks against the truth",
        description="Score masks: files or zarr stores, or folders of them paired by name "
        f"(any mask format: {MASK_FORMATS}; an RLE CSV pairs its row ids with the other side's "
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
        "--shape", type=shape_arg, help="HEIGHT,WIDTH when both sides are RLE or GeoJSON"
    )
    score.add_argument(
        "--region",
        type=region_arg,
        help="Y0:Y1,X0:X1: score this crop of the truth, against a prediction of that size "
        "(as `segment --region` writes it) or the same crop of a whole-slide prediction",
    )
    score.add_argument(
        "--classification",
        metavar="NAME",
        help="of a GeoJSON mask (QuPath's export), score only the objects of this class "
        "('Unclassified': those without one); needed when it holds several",
    )
    score.add_argument("--tile", type=int, default=1024, help="per-tile Dice grid (pixels)")
    score.add_argument(
        "--iou-threshold", type=float, default=0.5, help="least IoU of an object match"
    )
    score.add_argument("--tiles", action="store_true", help="also print the per-tile Dice table")
    score.add_argument(
        "--tiles-image",
        type=Path,
        metavar="TIF",
        help="write the per-tile Dice as a float32 TIFF, one pixel per --tile tile, NaN where "
        "both masks are empty (an error heatmap; one pair only)",
    )
    add_json_option(score)
    score.set_defaults(run=run)
    return score

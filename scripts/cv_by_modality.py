"""A model card's per-image validation Dice, averaged by imaging modality.

DSB 2018 mixes fluorescence (dark background, bright nuclei), grey brightfield and
coloured (stained) brightfield images. MoNuSeg's H&E slides are evaluation-only, so a
nuclei recipe meant to carry over to H&E is judged, honestly, by its cross-validated
Dice on DSB's own stained images: this prints that beside the other kinds::

    python scripts/cv_by_modality.py my-nuclei.json --images ../shared/data/nuclei/dsb2018/images

An image is *fluorescence* when its mean intensity is below 100 (of 255), else
*brightfield grey* when its channels differ by less than 10 on average, else
*brightfield colour*.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def modality(pixels: np.ndarray) -> str:
    """``fluorescence``, ``brightfield grey`` or ``brightfield colour`` (8-bit RGB(A) pixels)."""
    rgb = pixels[..., :3].astype(np.int16) if pixels.ndim == 3 else pixels[..., None]
    if rgb.mean() < 100:
        return "fluorescence"
    spread = (rgb.max(axis=-1) - rgb.min(axis=-1)).mean()
    return "brightfield grey" if spread < 10 else "brightfield colour"


def main() -> None:
    from slide_unet.core.model.card import ModelCard
    from slide_unet.core.slide.slide import open_slide
    from slide_unet.core.training.image_pairs import image_stem

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path, help="a model card (.json)")
    parser.add_argument("--images", type=Path, required=True, help="the images it was scored on")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    per_image = ModelCard.from_json(args.card).validation.get("per_image") or {}
    if not per_image:
        parser.error(f"{args.card} records no per-image validation Dice")
    files = {image_stem(p): p for p in sorted(args.images.iterdir()) if image_stem(p)}
    missing = sorted(set(per_image) - set(files))
    if missing:
        parser.error(f"{len(missing)} scored images are not in {args.images}: {missing[:5]}")
    groups: dict[str, list[float]] = {}
    for stem, score in per_image.items():
        with open_slide(files[stem]) as slide:
            kind = modality(np.asarray(slide.levels[0][...]))
        groups.setdefault(kind, []).append(float(score))
    table = {
        kind: {"images": len(scores), "mean_dice": round(float(np.mean(scores)), 4)}
        for kind, scores in sorted(groups.items())
    }
    table["all"] = {
        "images": len(per_image),
        "mean_dice": round(float(np.mean(list(per_image.values()))), 4),
    }
    if args.json:
        print(json.dumps(table, indent=2))
        return
    print("| modality | images | mean Dice |\n| --- | ---: | ---: |")
    for kind, row in table.items():
        print(f"| {kind} | {row['images']} | {row['mean_dice']:.4f} |")


if __name__ == "__main__":
    main()

"""Capacity against speed: U-Net sizes, their inference speed on this machine, and their Dice.

Issue 16 asks for the best model whose whole-slide time stays within 1.5x of
today's. Two parts, printed as one table per model kind:

- **speed** of every architecture in ``ARCHITECTURES`` (and of every model file
  given with ``--models``): ``slide_unet.segment`` on an in-memory mosaic of
  real tissue at the model's working scale (Bueno PAS tiles for glomeruli, DSB
  images for nuclei, 2048 x 2048), so the engine's whole path runs (tissue mask,
  normalisation, tiling, model, threshold) and only the network differs.
  Weights do not change timings, so untrained networks stand in for the sizes
  nobody trained. The figure is megapixels at working scale per second, the
  least time of ``--rounds`` calls after a warm-up; the relative whole-slide
  time is the shipped architecture's speed over each one's, measured side by
  side in one run (this machine is shared: absolute figures move, ratios less).
- **Dice** of every model file given with ``--models``: the cross-validated mean
  its card records, and ``slide_unet.evaluate`` on the evaluation sets of its
  kind (``SETS``): per-image mean and pooled Dice. The glomeruli sets include
  ``hubmap_red16`` and ``hubmap_fullres`` and the nuclei sets ``monuseg_train``,
  which are for evaluation only: each run of this script is a look at them, to be
  counted in the issue's closing note.

Usage, from the repository root next to ``../shared/data``::

    python benchmarks/bench_models.py --kind glomeruli                  # speed only, ~2 min
    python benchmarks/bench_models.py --kind glomeruli --models \\
        src/slide_unet/models/glomeruli.safetensors my-candidate.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MOSAIC = 2048
#: The sample slide's tiles (kept out of the shipped glomeruli model's training).
SAMPLE_TILES = ["10063", "10149", "10172", "10210"]

#: (base width, depth, norm) tried for speed; the first is what ships today.
ARCHITECTURES = [
    (16, 4, "batch"),
    (16, 5, "batch"),
    (24, 4, "batch"),
    (24, 5, "batch"),
    (32, 4, "batch"),
    (16, 4, "group"),
]

#: kind -> (label, folder under ../shared/data, --mpp, only the sample slide's tiles)
SETS: dict[str, list[tuple[str, str, float | None, list[str] | None]]] = {
    "glomeruli": [
        ("sample slide's 4 tiles", "glomeruli/bueno_pas", 0.5, SAMPLE_TILES),
        ("hubmap_red16 --mpp 8", "glomeruli/hubmap_red16", 8.0, None),
        ("hubmap_fullres", "glomeruli/hubmap_fullres", 0.5, None),
    ],
    "nuclei": [
        ("monuseg_train (H&E)", "nuclei/monuseg_train", None, None),
    ],
}


def _mosaic(kind: str, working_mpp: float | None) -> np.ndarray:
    """2048 x 2048 RGB of real images at the model's working scale."""
    from PIL import Image

    if kind == "glomeruli":
        files = sorted((DATA / "glomeruli" / "bueno_pas" / "images").glob("*.png"))
        side = round(1024 * 0.5 / (working_mpp or 0.5))  # Bueno tiles are 0.5 µm/px
    else:
        files = sorted((DATA / "nuclei" / "dsb2018" / "images").glob("*.png"))
        side = 256
    out = np.zeros((MOSAIC, MOSAIC, 3), np.uint8)
    cells = [(y, x) for y in range(0, MOSAIC, side) for x in range(0, MOSAIC, side)]
    for i, (y, x) in enumerate(cells):
        image = Image.open(files[i % len(files)]).convert("RGB").resize((side, side), Image.BOX)
        h, w = min(side, MOSAIC - y), min(side, MOSAIC - x)
        out[y : y + h, x : x + w] = np.asarray(image)[:h, :w]
    return out


def _network(card: Any, base_width: int, depth: int, norm: str) -> Any:
    """An untrained U-Net of this size carrying ``card`` (with its size) as ``.card``."""
    from slide_unet.core.model.unet import UNet

    parameters = {**card.parameters, "base_width": base_width, "depth": depth, "norm": norm}
    model = UNet(**parameters).eval()
    model.card = dataclasses.replace(card, parameters=parameters)
    return model


def _speed(model: Any, image: np.ndarray, rounds: int) -> float:
    """Megapixels at working scale per second through ``slide_unet.segment``."""
    import slide_unet

    mpp = model.card.working_mpp
    slide_unet.segment(image[:512, :512], model, mpp=mpp, device="cpu")  # warm-up
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        slide_unet.segment(image, model, mpp=mpp, device="cpu")
        best = min(best, time.perf_counter() - t0)
    return image.shape[0] * image.shape[1] / 1e6 / best


def _params(model: Any) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def _dice(model: Any, kind: str, details: list[str]) -> list[str]:
    """The table's cells (per-image mean / pooled Dice of each set); each image's Dice
    and false objects, and each set's object F1, go to ``details``."""
    from slide_unet.core.training.evaluation import evaluate

    cells = []
    for label, folder, mpp, stems in SETS[kind]:
        result = evaluate(
            model,
            DATA / folder / "images",
            DATA / folder / "masks",
            mpp=mpp,
            stems=stems,
            device="cpu",
        )
        cells.append(f"{result.mean_dice:.3f} / {result.pooled_dice:.3f}")
        if len(result.per_image) <= 8:  # the small sets: every image's figure
            images = ", ".join(
                f"{stem[:10]} {dice:.3f} ({result.per_image_counts[stem].false_positives} FP)"
                for stem, dice in result.per_image.items()
            )
            details.append(f"- {label}: {images}; object F1 {result.pooled.f1:.3f}")
        else:
            details.append(f"- {label}: object F1 {result.pooled.f1:.3f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=sorted(SETS), default="glomeruli")
    parser.add_argument("--models", nargs="*", default=[], help="trained model files to score")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch

    from slide_unet import load_model

    torch.manual_seed(0)
    shipped = load_model(args.kind, device="cpu")
    image = _mosaic(args.kind, shipped.card.working_mpp)
    rows: list[tuple[str, float, float, list[str]]] = []
    details: list[str] = []
    for width, depth, norm in ARCHITECTURES:
        model = _network(shipped.card, width, depth, norm)
        label = f"U-Net w{width} d{depth} {norm} (untrained)"
        rows.append((label, _params(model), _speed(model, image, args.rounds), []))
    for path in args.models:
        model = load_model(path, device="cpu")
        p = model.card.parameters
        cv = (model.card.validation or {}).get("mean_dice")
        sd = (model.card.validation or {}).get("sd_over_folds")
        cv_text = "-" if cv is None else f"{cv:.3f}" + ("" if sd is None else f" ± {sd:.3f}")
        where = Path(path)
        size = f"w{p['base_width']} d{p['depth']} {p['norm']}"
        label = f"{where.parent.name}/{where.stem} ({size})"
        details.append(f"{path}:")
        cells = [cv_text, *_dice(model, args.kind, details)]
        rows.append((label, _params(model), _speed(model, image, args.rounds), cells))

    reference = rows[0][2]
    headers = ["model", "params (M)", "MP/s at working scale", "whole-slide time vs shipped"]
    if args.models:
        headers += ["card's validation Dice"]
        headers += [f"{label}: mean / pooled" for label, *_ in SETS[args.kind]]
    print(f"# {args.kind}: {MOSAIC} x {MOSAIC} at working scale, CPU, best of {args.rounds}")
    print("| " + " | ".join(headers) + " |")
    print("|" + " --- |" * len(headers))
    for label, params, speed, cells in rows:
        base = [label, f"{params:.2f}", f"{speed:.2f}", f"{reference / speed:.2f}x"]
        extra = (cells or ["-"] * (len(headers) - 4)) if args.models else []
        print("| " + " | ".join(base + extra) + " |")
    if details:
        print()
        print("\n".join(details))


if __name__ == "__main__":
    main()

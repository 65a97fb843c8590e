"""Does bf16 autocast on the CPU cost Dice? The bundled models in fp32 and bf16, side by side.

For each bundled model, on real images with expert masks (the images each card
lists as held out from training, and data the model never trained on), segment
every image twice through ``slide_unet.segment`` on the CPU, with
``precision="fp32"`` and ``precision="bf16"``, and report the mean Dice of each
against the expert masks, the largest per-image difference, the fraction of
pixels on which the two masks disagree, and the time of each.

The engine uses bf16 on CPUs with native bf16 instructions only while the Dice
difference stays under 0.005 (issue 4's rule). Usage, from the repository root
next to ``../shared/data``::

    python benchmarks/bench_precision.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MAX_DIFFERENCE = 0.005

#: (model, label, images, masks, pixel size, only the card's held-out images)
SETS = [
    ("glomeruli", "bueno_pas held out", "glomeruli/bueno_pas", 0.5, True),
    ("glomeruli", "hubmap_red16 (--mpp 8)", "glomeruli/hubmap_red16", 8.0, False),
    ("glomeruli", "hubmap_fullres", "glomeruli/hubmap_fullres", 0.5, False),
    ("nuclei", "dsb2018 held out", "nuclei/dsb2018", None, True),
    ("nuclei", "monuseg_train", "nuclei/monuseg_train", None, False),
]


def run(model_name: str, folder: str, mpp: float | None, held_out: bool, limit: int) -> dict:
    import slide_unet
    from slide_unet.core.training.image_pairs import find_pairs, read_pair

    model = slide_unet.load_model(model_name, device="cpu")
    pairs, _ = find_pairs(DATA / folder / "images", DATA / folder / "masks")
    if held_out:
        keep = set(model.card.training["validation_images"])
        pairs = [p for p in pairs if p.stem in keep]
    pairs = pairs[:limit]
    scores: dict[str, list[float]] = {"fp32": [], "bf16": []}
    seconds = {"fp32": 0.0, "bf16": 0.0}
    disagree = []
    for pair in pairs:
        image, truth, file_mpp = read_pair(pair)
        masks = {}
        for precision in ("fp32", "bf16"):
            t0 = time.perf_counter()
            masks[precision] = slide_unet.segment(
                image, model, mpp=file_mpp or mpp, device="cpu", precision=precision
            )
            seconds[precision] += time.perf_counter() - t0
            scores[precision].append(slide_unet.dice(masks[precision], truth))
        disagree.append(float(np.mean(masks["fp32"] != masks["bf16"])))
    diffs = np.abs(np.array(scores["fp32"]) - np.array(scores["bf16"]))
    return {
        "n": len(pairs),
        "fp32": float(np.mean(scores["fp32"])),
        "bf16": float(np.mean(scores["bf16"])),
        "max_image_diff": float(diffs.max()),
        "pixels_differ": float(np.mean(disagree)),
        "s_fp32": seconds["fp32"],
        "s_bf16": seconds["bf16"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="images per set, at most")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: this benchmark needs the shared data")
    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: "
        f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
    )
    print()
    print(
        "| model | images | n | Dice fp32 | Dice bf16 | difference | largest per image "
        "| pixels that differ | s fp32 | s bf16 | speed-up |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    worst = 0.0
    for model_name, label, folder, mpp, held_out in SETS:
        r = run(model_name, folder, mpp, held_out, args.limit)
        diff = abs(r["fp32"] - r["bf16"])
        worst = max(worst, diff)
        print(
            f"| {model_name} | {label} | {r['n']} | {r['fp32']:.4f} | {r['bf16']:.4f} "
            f"| {diff:.4f} | {r['max_image_diff']:.4f} | {r['pixels_differ']:.5f} "
            f"| {r['s_fp32']:.1f} | {r['s_bf16']:.1f} | {r['s_fp32'] / r['s_bf16']:.2f}x |",
            flush=True,
        )
    print()
    verdict = "keep bf16" if worst < MAX_DIFFERENCE else "do not use bf16"
    print(f"largest mean-Dice difference {worst:.4f} (rule: < {MAX_DIFFERENCE}): {verdict}")


if __name__ == "__main__":
    main()

"""What fine-tuning buys: the bundled models before and after a short fine-tune on new data.

Two experiments, each on data the bundled model never trained on, split by image
into a fine-tuning half and an evaluation half that fine-tuning never sees:

- **nuclei**: the bundled ``nuclei`` model (trained on DSB2018, mostly
  fluorescence) fine-tuned on H&E images from ``../shared/data/nuclei/monuseg_train``
  (30 images of 1000 x 1000: a seeded shuffle, 15 to fine-tune on, 15 to evaluate).
- **glomeruli**: the bundled ``glomeruli`` model (trained on bueno_pas PAS tiles at
  0.5 µm/px) fine-tuned on ``../shared/data/glomeruli/hubmap_red16`` tiles, HuBMAP
  tiles shrunk 16 times, so at 8 µm/px (``mpp=8``). Six tiles are too few for a random
  split to be sure that both halves hold glomeruli, so they are sorted by glomerulus
  area, largest first, and dealt alternately: 3 to fine-tune on (the largest first),
  3 to evaluate. (Dealt smallest first, the one tile without glomeruli became the
  fine-tuning's validation image, whose Dice is 0 unless a prediction is exactly
  empty, so no epoch could beat the base model and it was kept unchanged.)

Fine-tuning is :func:`slide_unet.finetune` with its defaults (learning rate 3e-4,
batch 8, the patch the base model trained at, 20 steps an epoch, the best of the
epochs kept by the Dice on 20 % of the fine-tuning images, held out by image) and a
time budget (``--minutes``, default 10), on the CPU. Before and after are scored by
:func:`slide_unet.core.training.evaluation.evaluate` (the engine of ``slide-unet segment``,
default precision) on the evaluation half. The fine-tuned models go to a temporary
models folder, never the user's.

Usage, from the repository root next to ``../shared/data``::

    python benchmarks/bench_finetune.py                 # both, 10 minutes each
    python benchmarks/bench_finetune.py --minutes 1     # a quick look
    python benchmarks/bench_finetune.py --only nuclei
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SEED = 0
TARGET_GAIN = 0.05


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _nuclei_split(stems: list[str]) -> tuple[list[str], list[str]]:
    """A seeded shuffle: the first half fine-tunes, the second evaluates."""
    order = sorted(stems)
    np.random.default_rng(SEED).shuffle(order)
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])


def _glomeruli_split(pairs: list[Any]) -> tuple[list[str], list[str]]:
    """Sorted by glomerulus area, largest first, dealt alternately: both halves hold
    glomeruli."""
    from slide_unet.core.training.image_pairs import read_pair

    area = {p.stem: int(read_pair(p)[1].sum()) for p in pairs}
    order = sorted(area, key=lambda s: (-area[s], s))
    return sorted(order[0::2]), sorted(order[1::2])


def experiment(
    name: str,
    model: str,
    folder: Path,
    mpp: float | None,
    minutes: float,
    say: bool,
) -> dict[str, Any]:
    """Fine-tune ``model`` on one half of ``folder`` and evaluate both models on the other."""
    import slide_unet
    from slide_unet.core.training.evaluation import evaluate
    from slide_unet.core.training.image_pairs import find_pairs

    pairs, _ = find_pairs(folder / "images", folder / "masks")
    stems = [p.stem for p in pairs]
    tune, test = _nuclei_split(stems) if name == "nuclei" else _glomeruli_split(pairs)
    tune_pairs = [p for p in pairs if p.stem in set(tune)]
    print(f"\n## {name}: {len(tune)} images to fine-tune on, {len(test)} to evaluate", flush=True)

    def show(record: dict[str, Any]) -> None:
        print(
            f"  epoch {record['epoch']}: loss {record['loss']:.4f}, validation Dice "
            f"{record['val_dice']:.4f} (best {record['best_dice']:.4f}), "
            f"{record['seconds']:.0f} s",
            flush=True,
        )

    started = time.perf_counter()
    result = slide_unet.finetune(
        model,
        tune_pairs,
        f"{model}-{name}-bench",
        minutes=minutes,
        mpp=mpp,
        device="cpu",
        seed=SEED,
        progress=show if say else None,
        say=(lambda text: print(f"  {text}", flush=True)) if say else None,
    )
    tuned_seconds = time.perf_counter() - started
    options = {"mpp": mpp, "device": "cpu", "stems": test}
    before = evaluate(model, folder / "images", folder / "masks", **options)
    after = evaluate(result.path, folder / "images", folder / "masks", **options)
    from slide_unet.core.training.image_pairs import read_pair

    foreground = {p.stem: float(read_pair(p)[1].mean()) for p in pairs if p.stem in set(test)}
    return {
        "foreground": foreground,
        "name": name,
        "model": model,
        "data": f"{folder.parent.name}/{folder.name}" + (f" (mpp {mpp:g})" if mpp else ""),
        "tune": tune,
        "test": test,
        "before": before,
        "after": after,
        "result": result,
        "minutes": tuned_seconds / 60,
        "eval_seconds": before.seconds + after.seconds,
    }


def _tables(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| data | base model | fine-tuned on | evaluated on | mean Dice before | after | gain |"
        " fine-tune minutes | epochs (best) | validation Dice before -> after |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in runs:
        result, card = run["result"], run["result"].card
        gain = run["after"].mean_dice - run["before"].mean_dice
        lines.append(
            f"| {run['data']} | `{run['model']}` | {len(run['tune'])} images | "
            f"{len(run['test'])} images | {run['before'].mean_dice:.3f} | "
            f"{run['after'].mean_dice:.3f} | **{gain:+.3f}** | {run['minutes']:.1f} | "
            f"{card.training['epochs_run']} ({card.training['best_epoch']}) | "
            f"{result.before_dice:.3f} -> {result.after_dice:.3f} |"
        )
    for run in runs:
        lines += [
            "",
            f"Per image, {run['name']} (evaluation half):",
            "",
            "| image | foreground | Dice before | after |",
            "| --- | ---: | ---: | ---: |",
        ]
        for stem in run["test"]:
            lines.append(
                f"| {stem} | {run['foreground'][stem]:.1%} | "
                f"{run['before'].per_image[stem]:.3f} | {run['after'].per_image[stem]:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="fine-tuning budget each")
    parser.add_argument("--only", choices=("nuclei", "glomeruli"), help="run one experiment")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"shared data not found at {DATA}")
    import torch

    from slide_unet.core.paths import MODELS_DIR_ENV

    print(f"# bench_finetune: {_cpu()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"load average before: {_load()}")
    experiments = [
        ("nuclei", "nuclei", DATA / "nuclei" / "monuseg_train", None),
        ("glomeruli", "glomeruli", DATA / "glomeruli" / "hubmap_red16", 8.0),
    ]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-finetune-models-") as models:
        os.environ[MODELS_DIR_ENV] = models  # never the user's real models folder
        for name, model, folder, mpp in experiments:
            if args.only in (None, name):
                runs.append(experiment(name, model, folder, mpp, args.minutes, not args.quiet))
                print(f"load average: {_load()}", flush=True)
    print()
    print(_tables(runs))
    for run in runs:
        if run["name"] == "nuclei":
            gain = run["after"].mean_dice - run["before"].mean_dice
            verdict = "met" if gain >= TARGET_GAIN else "NOT met"
            print(f"\nnuclei gain {gain:+.3f}: target >= {TARGET_GAIN} {verdict}")
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()

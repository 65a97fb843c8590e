"""Benchmark the object table and the review queue on a mask of tens of thousands of nuclei.

The review queue against a truth asks, for every predicted object, whether any truth pixel is
under it, and for every truth object whether any predicted pixel is (``overlaps``). Read
object by object, a chunked mask costs a chunk decode per object; ``overlaps`` reads squares
of ``READ_BLOCK`` pixels and judges every object inside one from that read. This script times
both ways side by side (``block=1`` makes every object cross the grid, so each is read by its
own box: the way before), and the object table alone, each in a fresh Python process with its
peak resident set size (``VmHWM``).

The masks, built once and cached in ``benchmarks/.cache/`` (git-ignored): a square slide at
0.25 µm/px strewn with nuclei (discs of radius 4-7 px, fixed seed), written as tiled OME-TIFF
with ``slide_unet.core.masks.io.write_mask`` and read lazily as ``slide-unet measure`` reads
them; the truth is the same nuclei moved by up to 3 px, a tenth removed (misses) and a
twentieth more added elsewhere (false positives).

Usage::

    python benchmarks/bench_measure.py            # 16,384² with 60,000 nuclei
    python benchmarks/bench_measure.py --quick    # 8,192² with 15,000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
MPP = 0.25

CHILD = r"""
import json, sys, time
from slide_unet.core.masks.io import read_mask
from slide_unet.core.objects.measure import measure
from slide_unet.core.objects.review import measure_for_review, overlaps, review_queue

pred_path, truth_path, what, mpp = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
pred, truth = read_mask(pred_path), read_mask(truth_path)  # lazy (dask) when big
start = time.perf_counter()
if what == "table":
    table = measure(pred, mpp=mpp)
    result = {"objects": len(table)}
else:
    block = {"squares": None, "per object": 1}[what]
    table = measure(pred, mpp=mpp)
    truths = measure(truth, mpp=mpp)
    options = {} if block is None else {"block": block}
    hit = overlaps(table, pred, truth, **options)
    found = overlaps(truths, truth, pred, **options)
    queue = review_queue(table, truth=truths, hit=hit, found=found)
    result = {
        "objects": len(table),
        "false positives": int((~hit).sum()),
        "misses": int((~found).sum()),
        "queue": len(queue),
    }
result["seconds"] = time.perf_counter() - start
result["array"] = type(pred).__module__.split(".")[0]
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        result["peak_mb"] = int(line.split()[1]) / 1024
print(json.dumps(result))
"""


def _draw(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for (cy, cx), r in zip(centres.tolist(), radii.tolist(), strict=True):
        y0, y1, x0, x1 = (
            max(cy - r, 0),
            min(cy + r + 1, shape[0]),
            max(cx - r, 0),
            min(cx + r + 1, shape[1]),
        )
        yy, xx = np.ogrid[y0 - cy : y1 - cy, x0 - cx : x1 - cx]
        mask[y0:y1, x0:x1] |= (yy * yy + xx * xx <= r * r).astype(np.uint8)
    return mask


def build(side: int, count: int) -> tuple[Path, Path]:
    """The predicted and truth masks (cached)."""
    from slide_unet.core.masks.io import write_mask

    pred_path = CACHE_DIR / f"nuclei-{side}-{count}.ome.tif"
    truth_path = CACHE_DIR / f"nuclei-{side}-{count}-truth.ome.tif"
    if pred_path.exists() and truth_path.exists():
        return pred_path, truth_path
    CACHE_DIR.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    centres = rng.integers(8, side - 8, size=(count, 2))
    radii = rng.integers(4, 8, size=count)
    write_mask(_draw((side, side), centres, radii), pred_path, mpp=MPP)
    keep = rng.random(count) > 0.1
    moved = np.clip(centres[keep] + rng.integers(-3, 4, size=(keep.sum(), 2)), 8, side - 8)
    extra = rng.integers(8, side - 8, size=(count // 20, 2))
    truth = _draw(
        (side, side),
        np.concatenate([moved, extra]),
        np.concatenate([radii[keep], rng.integers(4, 8, size=count // 20)]),
    )
    write_mask(truth, truth_path, mpp=MPP)
    return pred_path, truth_path


def run(pred: Path, truth: Path, what: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(pred), str(truth), what, str(MPP)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8,192² with 15,000 nuclei")
    args = parser.parse_args()
    side, count = (8192, 15_000) if args.quick else (16_384, 60_000)
    pred, truth = build(side, count)
    load = os.getloadavg()[0]
    print(f"# {side:,} x {side:,} px at {MPP} µm/px, {count:,} nuclei drawn; load {load:.1f}")
    print()
    print("| what | mask read as | objects | false positives | misses | s | peak MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    rows = {}
    for what in ("table", "squares", "per object"):
        result = run(pred, truth, what)
        rows[what] = result
        label = {
            "table": "object table alone (`measure`)",
            "squares": "review queue with truth, read by squares",
            "per object": "review queue with truth, read object by object (before)",
        }[what]
        print(
            f"| {label} | {result['array']} | {result['objects']:,} | "
            f"{result.get('false positives', '—')} | {result.get('misses', '—')} | "
            f"{result['seconds']:.1f} | {result['peak_mb']:.0f} |"
        )
    same = all(rows["squares"][k] == rows["per object"][k] for k in ("false positives", "misses"))
    speedup = rows["per object"]["seconds"] / rows["squares"]["seconds"]
    print()
    print(
        f"both ways agree: {same}; by squares {speedup:.1f}x faster; load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()

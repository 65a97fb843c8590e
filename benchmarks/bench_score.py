"""Benchmark scoring two whole-slide masks: ``slide_unet.score`` against the naive numpy way.

The masks are 31,299 x 44,066 (1.38 gigapixels, HuBMAP slide ``8242609fa``), stored as zarr
(``uint8`` 0/1, 1024 x 1024 chunks, zstd) and built once, cached in ``benchmarks/.cache/``:

- ``truth``: the slide's expert glomerulus mask, decoded from the competition's RLE in
  ``../shared/data/glomeruli/hubmap_rle/train.csv`` (with
  ``slide_unet.core.masks.rle.rle_decode(..., out=zarr_array)`` when it streams,
  else band by band here);
- ``pred``: a perturbed copy (fixed seed): every glomerulus moved by up to 12 px, a quarter
  dilated and a fifth eroded by a few pixels, 8 % removed, 3 % moved by half their size
  (so they miss), 3 % cut in two, and 5 % extra false blobs.

Measured, each in a fresh Python process (nothing else in it, so its peak resident set size is
its own: ``VmHWM`` of ``/proc/self/status``, which is what ``ru_maxrss`` reports in a process
that was not forked from a big parent; both are recorded, with the RSS after imports):

- **ours, dice**: ``slide_unet.core.scoring.metrics.dice`` on the two zarr arrays (streams blocks);
- **ours, score**: ``slide_unet.core.scoring.metrics.score``: Dice, IoU, per-tile Dice and object
  precision/recall/F1 in one streaming pass;
- **naive, dice**: both masks loaded whole (``z[:]``), ``2 * np.sum(p & t) / (np.sum(p) +
  np.sum(t))``;
- **naive, dice + objects**: the same plus ``scipy.ndimage.label`` of both whole masks,
  overlaps of the label pairs, IoU >= 0.5 matching, object F1.

Results (Dice and F1) are compared to check that both ways agree. Timings are wall-clock from
after the imports, with the zarr stores in the OS page cache. The load average before and after
is printed: the machine may be shared.

Usage::

    python benchmarks/bench_score.py            # the full 31,299 x 44,066 masks
    python benchmarks/bench_score.py --quick    # the top-left 8,192 x 11,000 of them
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
TRAIN_CSV = REPO_ROOT.parent / "shared" / "data" / "glomeruli" / "hubmap_rle" / "train.csv"
SLIDE_ID = "8242609fa"
FULL_SHAPE = (31_299, 44_066)  # (height, width)
QUICK_SHAPE = (8_192, 11_000)
CHUNKS = (1024, 1024)
SEED = 20_250_301
TIMEOUT_S = 900.0


# -- building the masks (in a child process, so the driver stays small) -----------------------


def _status_mb(field: str, pid: int | str = "self") -> float:
    """A memory field of ``/proc/PID/status`` in MB (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _new_zarr(path: Path, shape: tuple[int, int]) -> Any:
    import zarr

    return zarr.create_array(
        str(path), shape=shape, chunks=CHUNKS, dtype="uint8", fill_value=0, overwrite=True
    )


def _decode_truth(path: Path, shape: tuple[int, int]) -> None:
    """Decode the slide's RLE into a zarr store, streaming (column bands of one chunk)."""
    from slide_unet.core.masks import rle as rle_module

    rle = rle_module.read_rle_csv(TRAIN_CSV, SLIDE_ID)
    out = _new_zarr(path, FULL_SHAPE)
    if "out" in inspect.signature(rle_module.rle_decode).parameters:
        rle_module.rle_decode(rle, FULL_SHAPE, out=out)
    else:  # decode here: runs are over the column-major flattening, so bands of columns
        values = np.array(rle.split(), dtype=np.int64)
        starts, ends = values[0::2] - 1, values[0::2] - 1 + values[1::2]
        height, width = FULL_SHAPE
        for x0 in range(0, width, CHUNKS[1]):
            x1 = min(x0 + CHUNKS[1], width)
            lo, hi = x0 * height, x1 * height
            band = np.zeros((x1 - x0) * height, dtype=np.uint8)
            keep = (ends > lo) & (starts < hi)
            for s, e in zip(starts[keep] - lo, ends[keep] - lo, strict=True):
                band[max(s, 0) : min(e, hi - lo)] = 1
            out[:, x0:x1] = band.reshape(x1 - x0, height).T
    expected = int(np.array(rle.split()[1::2], dtype=np.int64).sum())
    if shape != FULL_SHAPE:  # the quick version: a crop of the full mask
        full = out
        out = _new_zarr(path.with_name(path.name + ".crop"), shape)
        out[:] = full[: shape[0], : shape[1]]
        shutil.rmtree(path)
        Path(str(path) + ".crop").rename(path)
    else:
        found = sum(int(np.count_nonzero(out[y : y + 4096])) for y in range(0, shape[0], 4096))
        if found != expected:
            msg = f"decoded {found} foreground pixels, the RLE has {expected}"
            raise RuntimeError(msg)


def _perturb(truth_path: Path, pred_path: Path, shape: tuple[int, int]) -> dict[str, int]:
    """Build the perturbed prediction, object by object, in memory (1.4 GB), then store it."""
    import zarr
    from scipy import ndimage

    from slide_unet.core.objects.components import label_chunked

    truth = zarr.open_array(str(truth_path), mode="r")
    objects = label_chunked(truth)
    rng = np.random.default_rng(SEED)
    pred = np.zeros(shape, dtype=np.uint8)
    height, width = shape
    counts = {"objects": objects.n_objects, "removed": 0, "missed": 0, "split": 0, "extra": 0}
    disk = np.ones((3, 3), bool)
    for y0, x0, y1, x1 in objects.bboxes[1:].tolist():
        roll = rng.random()
        if roll < 0.08:
            counts["removed"] += 1
            continue
        pad = 8
        ys = slice(max(y0 - pad, 0), min(y1 + pad, height))
        xs = slice(max(x0 - pad, 0), min(x1 + pad, width))
        crop = np.asarray(truth[ys, xs]) != 0
        local, _ = ndimage.label(crop, disk)
        # this object is the component of the crop whose bounding box is the object's
        box = (slice(y0 - ys.start, y1 - ys.start), slice(x0 - xs.start, x1 - xs.start))
        own = [i for i, s in enumerate(ndimage.find_objects(local), start=1) if s == box]
        if not own:
            continue
        obj = local == own[0]
        size = np.asarray([y1 - y0, x1 - x0])
        dy, dx = rng.integers(-12, 13, size=2)
        if roll < 0.11:
            dy, dx = (size // 2) * rng.choice([-1, 1], size=2)
            counts["missed"] += 1
        elif roll < 0.14:
            cut = (x0 + x1) // 2 - xs.start
            obj[:, cut - 1 : cut + 2] = False
            counts["split"] += 1
        elif roll < 0.39:
            obj = ndimage.binary_dilation(obj, disk, iterations=int(rng.integers(2, 7)))
        elif roll < 0.59:
            obj = ndimage.binary_erosion(obj, disk, iterations=int(rng.integers(2, 6)))
        ty0, tx0 = ys.start + dy, xs.start + dx
        oy0, ox0 = max(ty0, 0), max(tx0, 0)
        oy1, ox1 = min(ty0 + obj.shape[0], height), min(tx0 + obj.shape[1], width)
        if oy1 > oy0 and ox1 > ox0:
            pred[oy0:oy1, ox0:ox1] |= obj[oy0 - ty0 : oy1 - ty0, ox0 - tx0 : ox1 - tx0]
    for _ in range(max(1, objects.n_objects // 20)):
        ry, rx = rng.integers(60, 160, size=2)
        cy, cx = rng.integers(ry, height - ry), rng.integers(rx, width - rx)
        yy, xx = np.ogrid[-ry : ry + 1, -rx : rx + 1]
        blob = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1
        pred[cy - ry : cy + ry + 1, cx - rx : cx + rx + 1] |= blob
        counts["extra"] += 1
    out = _new_zarr(pred_path, shape)
    out[:] = pred
    return counts


def build(paths: dict[str, Path], shape: tuple[int, int]) -> dict[str, Any]:
    """Child: decode the truth and build the prediction (atomically: temporary names first)."""
    start = time.perf_counter()
    tmp = {name: path.with_name(path.name + ".tmp") for name, path in paths.items()}
    for path in tmp.values():
        shutil.rmtree(path, ignore_errors=True)
    _decode_truth(tmp["truth"], shape)
    counts = _perturb(tmp["truth"], tmp["pred"], shape)
    for name, path in paths.items():
        shutil.rmtree(path, ignore_errors=True)
        tmp[name].rename(path)
    return {"build_s": time.perf_counter() - start, **counts}


# -- the measurements --------------------------------------------------------------------------


def _peaks() -> dict[str, float]:
    return {
        "peak_rss_mb": max(_status_mb("VmHWM"), _status_mb("VmRSS")),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _naive_objects(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Object F1 the naive way: label both whole masks, pair labels where both are set."""
    from scipy import ndimage

    eight = np.ones((3, 3), bool)
    lp, n_pred = ndimage.label(a, eight)
    lt, n_true = ndimage.label(b, eight)
    both = (lp > 0) & (lt > 0)
    key = lp[both].astype(np.int64) * (n_true + 1) + lt[both]
    del both
    pairs, inter = np.unique(key, return_counts=True)
    area_p = np.bincount(lp[lp > 0], minlength=n_pred + 1)
    area_t = np.bincount(lt[lt > 0], minlength=n_true + 1)
    gp, gt = pairs // (n_true + 1), pairs % (n_true + 1)
    iou = inter / (area_p[gp] + area_t[gt] - inter)
    # Above IoU 0.5 a pair is unique; pairs at exactly 0.5 (rare) are counted as matches here.
    tp = int(np.count_nonzero(iou >= 0.5))
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else 1.0
    return {"f1": f1, "tp": tp, "n_pred": int(n_pred), "n_true": int(n_true)}


def child(mode: str, pred_path: str, truth_path: str) -> dict[str, Any]:
    """One measurement in this fresh process; returns a JSON-able result."""
    import zarr

    from slide_unet.core.scoring import metrics

    pred = zarr.open_array(pred_path, mode="r")
    truth = zarr.open_array(truth_path, mode="r")
    result: dict[str, Any] = {"imports_rss_mb": _status_mb("VmRSS")}
    start = time.perf_counter()
    if mode == "ours-dice":
        result["dice"] = metrics.dice(pred, truth)
    elif mode == "ours-score":
        scores = metrics.score(pred, truth)
        result.update(
            dice=scores.dice,
            f1=scores.object_f1,
            tp=scores.true_positives,
            n_pred=scores.n_pred_objects,
            n_true=scores.n_true_objects,
        )
    elif mode.startswith("naive"):
        a, b = pred[:], truth[:]
        p, t = a > 0, b > 0
        result["dice"] = float(2 * np.sum(p & t) / (np.sum(p) + np.sum(t)))
        del p, t
        if mode == "naive-score":
            result.update(_naive_objects(a, b))
    else:
        msg = f"unknown mode {mode!r}"
        raise ValueError(msg)
    result["time_s"] = time.perf_counter() - start
    result.update(_peaks())
    return result


def run_child(args: list[str], timeout: float, rss_limit_mb: float) -> dict[str, Any]:
    """Run this script as a child; kill it past `timeout` or `rss_limit_mb`."""
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO_ROOT)
        start, killed = time.monotonic(), None
        while process.poll() is None:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                killed = f"killed after {timeout:.0f} s"
            elif _status_mb("VmRSS", process.pid) > rss_limit_mb:
                killed = f"killed at {rss_limit_mb:.0f} MB RSS after {elapsed:.0f} s"
            if killed:
                process.kill()
                process.wait()
                return {"error": killed}
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if process.returncode != 0 or not lines:
            tail = err.read().strip().splitlines()[-3:]
            return {"error": f"exit {process.returncode}: " + " | ".join(tail)}
        return json.loads(lines[-1])


# -- report ------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return (
        f"{len(os.sched_getaffinity(0))} cores, {model}, {total_kb / 2**20:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{n} {version(n)}" for n in ("numpy", "scipy", "zarr", "dask"))


ROWS = [
    ("ours-dice", "slide_unet `dice` (streaming)", "Dice"),
    ("naive-dice", "naive: load both, `np.sum`", "Dice"),
    ("ours-score", "slide_unet `score` (streaming, one pass)", "Dice, IoU, tile Dice, object F1"),
    ("naive-score", "naive: load both, `np.sum` + `ndimage.label`", "Dice, object F1"),
]


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| method | computes | time (s) | all runs (s) | peak RSS (MB) | RSS after imports (MB) "
        "| Dice | object F1 (TP / pred / true) |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for key, name, what in ROWS:
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | {what} | {r['error']} | — | — | — | — | — |")
            continue
        f1 = f"{r['f1']:.4f} ({r['tp']} / {r['n_pred']} / {r['n_true']})" if "f1" in r else "—"
        runs = ", ".join(f"{t:.2f}" for t in r.get("all_times_s", [r["time_s"]]))
        lines.append(
            f"| {name} | {what} | {r['time_s']:.2f} | {runs} | {r['peak_rss_mb']:.0f} "
            f"| {r['imports_rss_mb']:.0f} | {r['dice']:.6f} | {f1} |"
        )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]]) -> list[str]:
    """'naive / ours' time and peak memory for each pair that both finished."""
    out = []
    for ours, naive, label in (
        ("ours-dice", "naive-dice", "Dice"),
        ("ours-score", "naive-score", "Dice + object F1"),
    ):
        a, b = results.get(ours, {}), results.get(naive, {})
        if "time_s" in a and "time_s" in b:
            out.append(
                f"{label}: ours is {b['time_s'] / a['time_s']:.1f}x as fast, with "
                f"{b['peak_rss_mb'] / a['peak_rss_mb']:.0f}x less peak memory"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="an 8,192 x 11,000 crop")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement")
    parser.add_argument("--skip-naive-objects", action="store_true", help="needs ~16 GB RAM")
    parser.add_argument("--build-only", action="store_true", help="only build the cached masks")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pred", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "build":
        shape = tuple(int(v) for v in args.shape.split(","))
        paths = {"pred": Path(args.pred), "truth": Path(args.truth)}
        print(json.dumps(build(paths, shape)))  # type: ignore[arg-type]
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.pred, args.truth)))
        return 0

    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    prefix = "quick-" if args.quick else ""
    paths = {name: CACHE_DIR / f"{prefix}{SLIDE_ID}-{name}.zarr" for name in ("pred", "truth")}
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if not all(path.is_dir() for path in paths.values()):
        if not TRAIN_CSV.is_file():
            print(f"needs {TRAIN_CSV}", file=sys.stderr)
            return 1
        print(f"building the masks in {CACHE_DIR} (once) ...", flush=True)
        built = run_child(
            [
                "--child",
                "build",
                "--pred",
                str(paths["pred"]),
                "--truth",
                str(paths["truth"]),
                "--shape",
                ",".join(map(str, shape)),
            ],
            timeout=3600,
            rss_limit_mb=8000,
        )
        if "error" in built:
            print(f"build failed: {built['error']}", file=sys.stderr)
            return 1
        print("built:", json.dumps({k: round(v, 1) for k, v in built.items()}), flush=True)
    if args.build_only:
        return 0

    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for key, _, _ in ROWS:
        if key == "naive-score" and args.skip_naive_objects:
            continue
        limit = max(1000.0, _available_mb() - 1500)
        runs = [
            run_child(
                ["--child", key, "--pred", str(paths["pred"]), "--truth", str(paths["truth"])],
                timeout=TIMEOUT_S,
                rss_limit_mb=limit,
            )
            for _ in range(args.repeat)
        ]
        good = sorted((r for r in runs if "error" not in r), key=lambda r: r["time_s"])
        results[key] = good[len(good) // 2] if good else runs[0]
        if len(good) > 1:
            results[key]["all_times_s"] = [round(r["time_s"], 2) for r in good]
        print(f"{key}: {json.dumps(results[key])}", flush=True)
    load_after = os.getloadavg()

    print()
    print(
        f"Scoring two {shape[0]:,} x {shape[1]:,} zarr masks ({CHUNKS[0]}² chunks, uint8); "
        f"median of {args.repeat} fresh processes each"
    )
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print()
    print(table(results))
    print()
    for line in ratios(results):
        print(line)
    ours, naive = results.get("ours-score", {}), results.get("naive-score", {})
    if "f1" in ours and "f1" in naive:
        same = ours["tp"] == naive["tp"] and abs(ours["dice"] - naive["dice"]) < 1e-12
        print(f"ours and naive agree (Dice, matches): {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

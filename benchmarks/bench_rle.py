"""Benchmark the Kaggle RLE codec on the 31,299 x 44,066 mask of HuBMAP slide ``8242609fa``.

Compares, side by side in one run:

- **Kaggle**: the numpy one-liners of the competition's public kernels (decode: split the
  string, ``img[lo:hi] = 1`` per run into a flat array, reshape and transpose; encode:
  ``img.T.flatten()``, pad, ``np.where`` on the differences, ``' '.join``);
- **ours, streaming**: ``rle_decode_to_zarr`` into a zarr store on disk (chunks 1024 x 1024),
  and ``rle_encode`` from that store;
- **ours, in memory**: ``rle_decode(rle, shape, out=np.zeros(shape, np.uint8))`` and
  ``rle_encode`` of that numpy array.

Each measurement runs in a fresh Python process and reports its own wall time (the operation
only: no imports, no reading of the CSV, no building of the input) and its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, read right after the operation, before the
result is checked). The driver imports neither numpy nor zarr, so the RSS floor that a child
inherits from it (Linux keeps the parent's peak across vfork + exec) stays far below every
figure; the peak of a child that only imports numpy and zarr and reads the CSV is printed as
the floor. The encoders' input is the decoded mask: a C-ordered numpy array (as a model or an
image reader gives it) for Kaggle and ours-in-memory, which is therefore part of their peak, and
the zarr store for ours-streaming. Every result is checked: decoders by their foreground pixel
count (and the store by re-encoding it), encoders by comparing the string with ``train.csv``.

Operations that take under 10 s are repeated (``--repeat``, default 3) and the median time is
reported, with the highest peak. The machine may be shared with other work: the load average
before and after is printed with the results.

Usage::

    python benchmarks/bench_rle.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_CSV = REPO_ROOT.parent / "shared" / "data" / "glomeruli" / "hubmap_rle" / "train.csv"
SLIDE_ID = "8242609fa"
SHAPE = (31_299, 44_066)  # (height, width)
CHUNKS = (1024, 1024)

TARGET_PEAK_MB = 500.0
REPEAT_UNDER_S = 10.0
#: (operation, method) in the order they run; the streaming decode writes the store that
#: the streaming encode reads.
CASES = [
    ("baseline", "import numpy + zarr"),
    ("baseline", "import numpy + zarr + slide_unet, read the CSV"),
    ("decode", "Kaggle one-liner"),
    ("decode", "ours, streaming to zarr"),
    ("decode", "ours, in memory"),
    ("encode", "Kaggle one-liner"),
    ("encode", "ours, streaming from zarr"),
    ("encode", "ours, in memory"),
]


# -- the Kaggle kernels' code, as published ---------------------------------------------


def kaggle_decode(mask_rle: str, shape: tuple[int, int]) -> Any:
    """The common Kaggle decoder (``shape`` is ``(height, width)``)."""
    import numpy as np

    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends, strict=True):
        img[lo:hi] = 1
    return img.reshape(shape[::-1]).T


def kaggle_encode(img: Any) -> str:
    """The common Kaggle encoder."""
    import numpy as np

    pixels = img.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


# -- one measurement, in a fresh process --------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _mask_in_memory(rle: str) -> Any:
    """The decoded mask as a C-ordered numpy array (input of the in-memory encoders)."""
    import numpy as np

    from slide_unet.core.masks.rle import rle_decode

    return rle_decode(rle, SHAPE, out=np.zeros(SHAPE, np.uint8))


def child(operation: str, method: str, store: Path) -> dict[str, Any]:
    """Run one measurement; return its time, peak RSS and check."""
    import numpy as np
    import zarr

    if method == "import numpy + zarr":  # the floor: nothing of ours imported
        del np, zarr
        peak = _peak_rss_mb()
        return {"seconds": 0.0, "peak_rss_mb": peak, "rss_before_mb": peak, "ok": True}

    from slide_unet.core.masks.rle import rle_decode, rle_decode_to_zarr, rle_encode
    from slide_unet.core.masks.rle_csv import read_rle_csv

    rle = read_rle_csv(TRAIN_CSV, SLIDE_ID)
    foreground = int(np.array(rle.split()[1::2], dtype=np.int64).sum())
    in_memory_input = operation == "encode" and "streaming" not in method
    mask = _mask_in_memory(rle) if in_memory_input else None
    rss_before = _peak_rss_mb()

    start = time.perf_counter()
    if operation == "baseline":
        result: Any = None
    elif operation == "decode" and method.startswith("Kaggle"):
        result = kaggle_decode(rle, SHAPE)
    elif operation == "decode" and "streaming" in method:
        result = rle_decode_to_zarr(rle, SHAPE, store, chunks=CHUNKS)
    elif operation == "decode":
        result = rle_decode(rle, SHAPE, out=np.zeros(SHAPE, np.uint8))
    elif method.startswith("Kaggle"):
        result = kaggle_encode(mask)
    elif "streaming" in method:
        result = rle_encode(zarr.open_array(store, mode="r"))
    else:
        result = rle_encode(mask)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()

    if operation == "baseline":
        ok = True
    elif operation == "encode":
        ok = result == rle
    elif "streaming" in method:
        ok = rle_encode(result) == rle
    else:
        ok = int(np.count_nonzero(result)) == foreground
    return {"seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": rss_before, "ok": ok}


# -- driver (imports neither numpy nor zarr) -----------------------------------------------


def _meminfo_mb(field: str) -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_child(operation: str, method: str, store: Path) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and return its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", operation, method]
    command += ["--store", str(store)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def measure(operation: str, method: str, store: Path, repeat: int) -> dict[str, Any]:
    """Median of `repeat` runs (one run if the first takes over REPEAT_UNDER_S)."""
    runs = [run_child(operation, method, store)]
    if "error" not in runs[0] and runs[0]["seconds"] < REPEAT_UNDER_S:
        runs += [run_child(operation, method, store) for _ in range(repeat - 1)]
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    return {
        "seconds": statistics.median(r["seconds"] for r in good),
        "all_seconds": [round(r["seconds"], 2) for r in good],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
        "rss_before_mb": max(r["rss_before_mb"] for r in good),
        "ok": all(r["ok"] for r in good),
    }


def _machine() -> str:
    model = platform.processor() or "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    total = _meminfo_mb("MemTotal") / 1024
    python = sys.version.split()[0]
    return f"{model}, {os.cpu_count()} logical CPUs, {total:.0f} GiB RAM, Python {python}"


def _table(results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    lines = [
        "| operation | method | seconds | peak RSS MB | RSS before the op MB "
        "| time vs Kaggle | peak vs Kaggle | check |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for (operation, method), r in results.items():
        if "error" in r:
            lines.append(f"| {operation} | {method} | {r['error']} | | | | | |")
            continue
        kaggle = results.get((operation, "Kaggle one-liner"), {})
        if operation == "baseline" or "error" in kaggle:
            speed = memory = ""
        elif method == "Kaggle one-liner":
            speed = memory = "reference"
        else:
            speed = f"{kaggle['seconds'] / r['seconds']:.2f}x faster"
            memory = f"{r['peak_rss_mb'] / kaggle['peak_rss_mb']:.3f}x"
        input_mb = f"{r['rss_before_mb']:.0f}"
        check = "ok" if r["ok"] else "WRONG"
        runs = ", ".join(f"{s:.2f}" for s in r["all_seconds"])
        lines.append(
            f"| {operation} | {method} | {r['seconds']:.2f} ({runs}) | {r['peak_rss_mb']:.0f} "
            f"| {input_mb} | {speed} | {memory} | {check} |"
        )
    return lines


def _targets(results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    lines = []
    streaming = [(op, method) for op, method in CASES if "streaming" in method]
    for operation, method in streaming:
        ours, kaggle = results[(operation, method)], results[(operation, "Kaggle one-liner")]
        if "error" in ours or "error" in kaggle:
            lines.append(f"- {operation}, {method}: FAIL (a measurement failed)")
            continue
        peak_ok = ours["peak_rss_mb"] < TARGET_PEAK_MB
        fast_ok = ours["seconds"] <= kaggle["seconds"]
        lines.append(
            f"- {operation}, {method}: peak {ours['peak_rss_mb']:.0f} MB < "
            f"{TARGET_PEAK_MB:.0f} MB: {'PASS' if peak_ok else 'FAIL'}; "
            f"{ours['seconds']:.2f} s <= Kaggle "
            f"{kaggle['seconds']:.2f} s: {'PASS' if fast_ok else 'FAIL'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each quick operation")
    parser.add_argument(
        "--child", nargs=2, metavar=("OPERATION", "METHOD"), help=argparse.SUPPRESS
    )
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.store)))
        return 0
    if not TRAIN_CSV.is_file():
        print(f"bench_rle: {TRAIN_CSV} not found (needs ../shared/data)", file=sys.stderr)
        return 1

    print(f"Machine: {_machine()}")
    available = _meminfo_mb("MemAvailable")
    print(f"Load average before: {os.getloadavg()}, available memory {available:.0f} MB")
    workdir = Path(tempfile.mkdtemp(prefix="bench_rle-"))
    store = workdir / "mask.zarr"
    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for operation, method in CASES:
            started = time.perf_counter()
            results[(operation, method)] = measure(operation, method, store, args.repeat)
            print(
                f"  {operation}, {method}: done in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        files = [p for p in store.rglob("*") if p.is_file()]
        store_mb = sum(p.stat().st_size for p in files) / 1e6
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"Load average after: {os.getloadavg()}")
    height, width = SHAPE
    print(
        f"\nSlide {SLIDE_ID}: {height:,} x {width:,} = {height * width / 1e9:.2f} gigapixels; "
        f"zarr store: chunks {CHUNKS}, {len(files)} files, {store_mb:.1f} MB on disk\n"
    )
    print("\n".join(_table(results)))
    print(
        "\nTargets (streaming: peak under 500 MB, and at least as fast as the Kaggle one-liner):"
    )
    print("\n".join(_targets(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every case of issue 15 (hostile files, faults and races), run and measured in one table.

Builds each case in a temporary folder (real files, made by the builders of the bad-input
tests, imported from ``tests/``), runs it through the user's path and prints one markdown
table, then a total line:

- files go through the ``slide-unet`` command line (its ``main()``) in a child process;
- mask-store races and damage, which have no command, go through a small Python child that
  calls what the napari reader and widgets call (``MaskStore``, ``salvage``, ``TolerantLevel``);
- a bug's ``ValueError`` is injected into ``slide-unet info`` (as ``tests/cli/test_cli_info.py``
  does), the only way to meet a bug on purpose.

Each child runs in its own session, under a 6 GiB address-space limit (a safety net, as in
the tests) and is killed after 60 s wall time. Measured per case:

- **user gets**: exit status and the first line of stderr (shortened), or the right result,
  checked (mask read back, pixels counted, ids compared);
- **s**: wall seconds of the child (its CPU seconds, threads and waited-for children
  included, in brackets);
- **peak MB**: the child's own ``VmHWM`` (written at exit), or, if larger, the highest sum of
  ``VmRSS`` over the child and its descendants (polled every 50 ms: dask workers, a second
  writer). Not ``ru_maxrss``: Linux keeps the parent's peak across vfork + exec;
- **inputs unchanged**: sha256 of every input file (and every file of an input folder) before
  and after. For a damaged store, which is repaired by design, every chunk's bytes must still
  be in the store or in its ``.damaged`` copy;
- **nothing half-written**: no new ``.tmp-`` entry in the case's folders, and no output where
  the command was refused.

A case meets all when it gives one line (or, where that is the right answer, the right
result), within 60 s and 1.5 GB, its inputs unchanged and nothing half-written.

Usage::

    nice -n 10 python benchmarks/bench_hostile.py           # about 5 minutes on 2 cores
    nice -n 10 python benchmarks/bench_hostile.py --only mpp,store   # cases whose name has these
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
for _folder in ("src", "tests", "tests/core/slide", "tests/core/model", "tests/core/masks"):
    sys.path.insert(0, str(ROOT / _folder))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from hostile_slide_files import deflated_zeros, write_raw_tiff  # noqa: E402
from test_hostile_masks import (  # noqa: E402
    SQUARE,
    ZATTRS_CASES,
    _edit_json,
    _feature,
    _geojson,
    _palette_png,
    _store,
)
from test_hostile_models import _edit_card, _saved  # noqa: E402
from test_hostile_slides import (  # noqa: E402
    _ome_tiny_pixels,
    _png_50000,
    _resolution_tiny_pixels,
    _strip,
    _write_pyramid,
)

SECONDS, PEAK_MB = 60, 1536
SAMPLE = ROOT / "sample_data" / "kidney_pas.ome.tif"
RLE = ROOT / "sample_data" / "kidney_pas_mask.csv"
REGION = ("--region", "0:512,0:512")

#: Every child starts with this: the safety net, and its own peak written at exit.
PRELUDE = """
import atexit, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
def _peak():
    with open("/proc/self/status") as f:
        kb = next(line for line in f if line.startswith("VmHWM:")).split()[1]
    with open(os.environ["BENCH_PEAK_FILE"], "w") as f:
        f.write(kb)
atexit.register(_peak)
"""
CLI = PRELUDE + "from slide_unet.cli import main\nsys.exit(main(sys.argv[1:]))\n"
BUG = (
    PRELUDE
    + """
from slide_unet import cli
from slide_unet.cli import info
def broken(slide):
    return {"levels": [int("not a number")]}  # a bug's ValueError, not the user's
info.slide_info = broken
sys.exit(cli.main(sys.argv[1:]))
"""
)
#: Writes every other row of a store (from argv[2]) with its region record, as a widget would.
WRITER = """
import sys, time
import numpy as np
from slide_unet.core.errors import StoreBusyError
from slide_unet.core.masks.store import MaskStore
store = MaskStore(sys.argv[1])
for row in range(int(sys.argv[2]), 512, 2):
    try:
        store.write(row, 0, np.ones((1, 600), np.uint8))
        store.add_region(row, row + 1, 0, 600)
    except StoreBusyError as error:
        print("busy", error, flush=True)
        break
    print(row, flush=True)
    time.sleep(0.005)
"""
RACE = (
    PRELUDE
    + f"""
import json, subprocess
import numpy as np
from slide_unet.core.masks.pyramids import halve_max
from slide_unet.core.masks.store import MaskStore
path = sys.argv[1]
procs = [subprocess.Popen([sys.executable, "-c", {WRITER!r}, path, str(first)],
         stdout=subprocess.PIPE, text=True) for first in (0, 1)]
outs = [p.communicate()[0] for p in procs]
rows = sorted(int(w) for out in outs for w in out.split() if w.isdigit())
busy = [line for out in outs for line in out.splitlines() if line.startswith("busy")]
store = MaskStore(path)
level0 = np.asarray(store.level0[:])
expected, in_step = level0, True
for k in range(1, len(store.levels)):
    expected = halve_max(expected)
    in_step &= bool(np.array_equal(np.asarray(store.levels[k][:]), expected))
print(json.dumps({{"rows": len(rows), "missing": int((~level0[rows].all(axis=1)).sum()),
    "records": len(store.regions), "in_step": in_step, "busy": busy}}))
"""
)
BUSY = (
    PRELUDE
    + """
import subprocess
import numpy as np
from slide_unet.core.errors import StoreBusyError
from slide_unet.core.masks.store import MaskStore
holder = subprocess.Popen([sys.executable, "-c", "import sys, time\\n"
    "from slide_unet.core.masks.store import MaskStore\\n"
    "with MaskStore(sys.argv[1]).writing('segmenting with glomeruli'):\\n"
    "    print('holding', flush=True); time.sleep(30)", sys.argv[1]],
    stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == "holding"
print(holder.pid, flush=True)
try:
    MaskStore(sys.argv[1]).write(100, 100, np.ones((5, 5), np.uint8))
except StoreBusyError as error:
    print(f"StoreBusyError: {error}", file=sys.stderr)
    sys.exit(1)
finally:
    holder.kill()
"""
)
#: What the napari reader does with a slide's store: open it, salvage it, show level 0.
DAMAGED = (
    PRELUDE
    + """
import json, warnings
import numpy as np
from slide_unet.core.masks.salvage import TolerantLevel, salvage
from slide_unet.core.masks.store import MaskStore
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    store = MaskStore.existing(sys.argv[1], (int(sys.argv[2]),) * 2, 0.5)
    found = salvage(store) if store is not None else []
    shown = np.asarray(TolerantLevel(store, 0)) if store is not None else np.zeros(0)
for w in said:
    print(f"{w.category.__name__}: {w.message}", file=sys.stderr)
print(json.dumps({"shown": int(np.count_nonzero(shown)), "found": found}))
"""
)


@dataclass
class Case:
    name: str
    args: list
    inputs: list[Path]
    output: Path | None = None
    # "refuse": one line, exit 1 or 2; "ok": exit 0 and check; "either"; "bug"
    expect: str = "refuse"
    code: str = CLI
    check: Callable[[str], str] | None = None  # stdout -> what was right, or AssertionError
    env: dict = field(default_factory=dict)
    kill: Callable[[list[int], float], None] | None = None  # (descendants, seconds) per poll
    store_chunks: Path | None = None  # a store repaired by design: its bytes must be kept
    folder: Path | None = None  # where it runs


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    wall: float
    cpu: float
    peak_mb: float


def _proc(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith(key)).split()[1]) * 1024
    except (OSError, StopIteration):
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def run_child(case: Case, cwd: Path) -> Result:
    peak_file = cwd / ".bench-peak"
    env = {**os.environ, "PYTHONPATH": str(SRC), "MALLOC_ARENA_MAX": "2", **case.env}
    env["BENCH_PEAK_FILE"] = str(peak_file)
    env.pop("SLIDE_UNET_MAX_DECODE_MB", None)
    out, err = cwd / ".bench-stdout", cwd / ".bench-stderr"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-c", case.code, *map(str, case.args)],
            cwd=cwd,
            env=env,
            stdout=o,
            stderr=e,
            start_new_session=True,
        )
    start, polled = time.monotonic(), 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        tree = descendants(proc.pid)
        polled = max(polled, sum(_proc(p, "VmRSS:") for p in [proc.pid, *tree]))
        elapsed = time.monotonic() - start
        if case.kill is not None:
            case.kill(tree, elapsed)
        if elapsed > SECONDS:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.05)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # workers, a holder
        os.killpg(proc.pid, signal.SIGKILL)
    own = int(peak_file.read_text()) * 1024 if peak_file.exists() else 0
    results = Result(proc.returncode, out.read_text(), err.read_text(), wall, 0.0, 0.0)
    results.cpu = usage.ru_utime + usage.ru_stime
    results.peak_mb = max(own, polled) / 2**20
    for scratch in (peak_file, out, err):
        scratch.unlink(missing_ok=True)
    return results


def digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def temporaries(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*") if ".tmp-" in p.name}


#: The temporary folder, left out of the messages shown.
HIDE: list[str] = []


def short(text: str, n: int = 110) -> str:
    for hide in HIDE:
        text = text.replace(hide, "")
    text = text.replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def judge(case: Case, r: Result) -> tuple[str, bool]:
    """What the user got, and whether it is one line or the right result."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith(("usage:", " "))]
    first = errors[0] if errors else (lines[0] if lines else "(nothing on stderr)")
    if case.expect == "bug":
        ok = r.rc == 70 and lines[:1] == ["Traceback (most recent call last):"]
        ok = ok and "This is a bug" in lines[-1]
        said = f"exit {r.rc}: traceback, `{short(lines[-2] if len(lines) > 1 else '', 50)}`"
        return f"{said}, then `{short(lines[-1] if lines else '', 60)}`", ok
    if case.expect == "refuse" or r.rc != 0:
        ok = case.expect in ("refuse", "either") and r.rc in (1, 2) and len(errors) == 1
        ok = ok and "Traceback" not in r.stderr
        said = f"exit {r.rc}: `{short(first)}`" + ("" if ok else f" ({len(lines)} lines)")
        if ok and case.check is not None:
            try:
                case.check(r.stdout + "\n" + first)
            except AssertionError as exc:
                return f"{said}; not what was expected: {short(str(exc), 60)}", False
        return said, ok
    try:
        right = case.check(r.stdout) if case.check else "done"
    except Exception as exc:  # a wrong result is a result: say it
        return f"exit 0, WRONG: {short(f'{type(exc).__name__}: {exc}')}", False
    warned = f"; warns `{short(first, 70)}`" if lines else ""
    return f"exit 0, right result: {right}{warned}", "Traceback" not in r.stderr


def says(text: str) -> Callable[[str], str]:
    def check(said: str) -> str:
        assert text in said, f"not `{text}`"
        return said

    return check


def read(path: Path) -> np.ndarray:
    from slide_unet import read_mask

    return np.asarray(read_mask(path))


def empty_512(out: Path) -> Callable[[str], str]:
    def check(_: str) -> str:
        mask = read(out)
        assert mask.shape == (512, 512), mask.shape
        return f"512² mask, {np.count_nonzero(mask)} px foreground"

    return check


def build(tmp: Path) -> list[Case]:
    """Every case, its files written under ``tmp``."""
    from test_mask_salvage import SIDE, _chunk_files, _edited_store

    from slide_unet.core.masks.store import MaskStore
    from slide_unet.core.slide.slide import open_slide

    cases: list[Case] = []

    def add(name: str, args: list, inputs: list, out: Path | None = None, **kw: object) -> Case:
        cases.append(Case(name, args, inputs, out, folder=here[-1], **kw))
        return cases[-1]

    here: list[Path] = []

    def folder(name: str) -> Path:
        here.append(tmp / re.sub(r"[^A-Za-z0-9]+", "-", name)[:60])
        here[-1].mkdir(parents=True)
        return here[-1]

    def slide(name: str) -> Path:
        return Path(shutil.copy(SAMPLE, folder(name) / "slide.ome.tif"))

    # -- no command writes over its input
    s = slide("S -o S")
    add("`segment S -o S`", ["segment", s, "-o", s], [s])
    s = slide("rle S")
    add("`segment S -o out --rle S`", ["segment", s, "-o", "o.ome.tif", "--rle", s], [s])
    cases[-1].output = s.parent / "o.ome.tif"
    s = slide("export S")
    m = Path(shutil.copy(RLE, s.parent / "mask.csv"))
    add("`export mask.csv -o S --image S`", ["export", m, "-o", s, "--image", s], [s, m])
    s = slide("hard link")
    os.link(s, s.parent / "linked.ome.tif")
    add("`segment S -o L`, L a hard link to S", ["segment", s, "-o", "linked.ome.tif"], [s])
    s = slide("other path")
    (s.parent / "via").symlink_to(s.parent)
    add(
        "`segment S -o via/S`, via a link to its folder",
        ["segment", s, "-o", "via/" + s.name],
        [s],
    )

    # -- two writers on one store; a damaged store
    folder("race")
    store = MaskStore.for_key("race", (512, 600)).path

    def no_loss(stdout: str) -> str:
        got = json.loads(stdout.splitlines()[-1])
        assert got["missing"] == 0, got
        assert got["records"] == got["rows"], got
        assert got["in_step"], got
        return f"{got['rows']} rows, 0 lost, as many records, overviews in step"

    add("two processes writing one store at once", [store], [], expect="ok", code=RACE)
    cases[-1].check = no_loss
    folder("busy")
    busy = MaskStore.for_key("busy", (512, 600))
    busy.write(0, 0, np.ones((10, 10), np.uint8))

    def names_the_holder(said: str) -> str:
        holder, line = said.split("\n", 1)[0].strip(), said.splitlines()[-1]
        assert f"process {holder}" in line, f"holder {holder} not named"
        return line

    add("a second writer while a Segment run holds the store", [busy.path], [busy.path])
    cases[-1].code, cases[-1].check = BUSY, names_the_holder

    def damage(name: str, how: Callable) -> None:
        path, st, edit = _edited_store(folder(name))
        how(st)

        def check(stdout: str, total: int = int(edit.sum()), path: Path = st.path) -> str:
            got = json.loads(stdout.splitlines()[-1])
            kept = [p.name for p in path.parent.iterdir() if ".damaged" in p.name]
            assert got["shown"] >= total // 2, f"{got['shown']} of {total} edited px shown"
            named = "; ".join(got["found"]) or "nothing named by salvage"
            copy = f"`{kept[0][-24:]}` kept" if kept else "no copy kept"
            return f"{got['shown']:,} of {total:,} edited px shown, {copy}; {short(named, 70)}"

        add(name, [path, SIDE], [path], expect="ok", code=DAMAGED, check=check)
        cases[-1].store_chunks = st.path

    damage("store: one chunk corrupt", lambda st: _chunk_files(st)[-1].write_bytes(b"junk" * 9))
    damage("store: metadata deleted", lambda st: [p.unlink() for p in st.path.rglob("zarr.json")])
    damage("store: one chunk deleted", lambda st: _chunk_files(st)[0].unlink())

    # -- small files declaring huge images, pixel sizes (a 512² region segmented)
    def segment(name: str, image: Path, *extra: str, expect: str = "refuse") -> Case:
        out = image.parent / "mask.zarr"
        case = add(name, ["segment", image, "-o", out, *REGION, *extra], [image], out)
        case.expect, case.check = expect, (empty_512(out) if expect == "ok" else None)
        return case

    bomb = _png_50000(folder("png bomb"))
    segment(f"PNG of {bomb.stat().st_size:,} B declaring 50,000²", bomb)
    empty = [b""] * 64
    tiles = write_raw_tiff(
        folder("tiles") / "t.tif", 32_768, 32_768, empty, samples=3, tile=(4096,) * 2
    )
    segment(f"TIFF of {tiles.stat().st_size} B: 32,768² of empty tiles", tiles, expect="ok")
    zeros = [deflated_zeros(20_000**2 * 3)]
    whole = write_raw_tiff(
        folder("strip") / "s.tif", 20_000, 20_000, zeros, samples=3, deflated=True
    )
    name = f"single strip 20,000², whole ({whole.stat().st_size / 1e6:.1f} MB deflated)"
    segment(name, whole, expect="ok")
    segment("single strip 20,000², 16 rows stored", _strip(20_000, 16)(folder("strip 16")))
    segment("single strip 200,000², 1 row stored", _strip(200_000, 1)(folder("strip 200000")))
    segment("pixel size 1e-6 µm in OME metadata", _ome_tiny_pixels(folder("ome")), expect="ok")
    tags = _resolution_tiny_pixels(folder("tags"))
    segment("pixel size 2.5e-6 µm in TIFF resolution tags", tags, expect="ok")
    for value in ("1e-6", "-1", "inf", "1e9", "nan"):
        small = folder(f"mpp {value}") / "small.tif"
        tifffile.imwrite(small, np.full((512, 512, 3), 200, np.uint8), photometric="rgb")
        segment(f"`--mpp={value}`", small, f"--mpp={value}")

    # -- model cards asking for huge networks, in the user's models folder
    for name, changes in [
        ("depth 20", {"depth": 20, "tile": 2**20}),
        ("depth 50", {"depth": 50, "tile": 2**50}),
        ("width 20,000", {"base_width": 20_000, "depth": 1}),
    ]:
        s = slide(f"model {name}")
        (s.parent / "models").mkdir()
        weights = _saved(s.parent / "models", "hostile")
        _edit_card(weights, **changes)
        case = segment(f"model card {name} (`--model hostile`)", s, "--model", "hostile")
        case.inputs += [weights, weights.with_suffix(".json")]
        case.env = {"SLIDE_UNET_MODELS_DIR": str(s.parent / "models")}

    # -- export: shapes no mask has, vertices that cannot be drawn, palettes
    for source, side in itertools.product(("geojson", "rle"), ("100000000", "3000000")):
        d = folder(f"export {source} {side}")
        src = _geojson(d / "m.geojson", _feature(SQUARE)) if source == "geojson" else d / "m.csv"
        if source == "rle":
            src.write_text("id,predicted\nslide,1 5 100 20\n")
        args = ["export", src, "--shape", f"{side},{side}", "-o", "o.ome.tif"]
        add(f"`export m.{source} --shape {side},{side}`", args, [src], d / "o.ome.tif")
        cases[-1].check = says("more than a mask can have")
    for vertex in ("NaN", "Infinity", "1e308"):
        src = folder(f"geojson {vertex}") / "bad.geojson"
        bad = json.dumps(_feature([[10, 10], [99999, 10], [50, 50], [10, 10]], "glom-7"))
        text = json.dumps({"type": "FeatureCollection", "features": ["X"]})
        src.write_text(text.replace('"X"', bad.replace("99999", vertex)))
        args = ["export", src, "--shape", "100,100", "-o", "o.png"]
        add(f"GeoJSON vertex {vertex}", args, [src], src.parent / "o.png")

    indices = np.zeros((64, 80), np.uint8)
    indices[10:20, 30:45] = 1
    png = _palette_png(folder("white0") / "w.png", indices, [255, 255, 255, 0, 0, 0])

    def runs_150(_: str, out: Path = png.parent / "m.csv") -> str:
        lengths = [int(n) for n in out.read_text().splitlines()[1].split(",")[1].split()[1::2]]
        assert sum(lengths) == 150, f"{sum(lengths)} px foreground, not 150"
        return "150 px foreground (by index; by colour it would be 4,970)"

    add("palette PNG, index 0 drawn white", ["export", png, "-o", "m.csv"], [png], expect="ok")
    cases[-1].output, cases[-1].check = png.parent / "m.csv", runs_150
    ids = np.zeros((64, 64), np.uint8)
    for i in range(30):
        ids[i // 6 * 10 : i // 6 * 10 + 8, i % 6 * 10 : i % 6 * 10 + 8] = i + 1
    colours = np.random.default_rng(0).integers(1, 256, 3 * 31).tolist()
    png = _palette_png(folder("ids") / "objects.png", ids, [0, 0, 0, *colours])

    def same_ids(_: str, out: Path = png.parent / "o.ome.tif") -> str:
        np.testing.assert_array_equal(read(out), ids)
        return "the 30 ids kept"

    add("palette PNG instance mask, 30 ids", ["export", png, "-o", "o.ome.tif"], [png])
    cases[-1].output, cases[-1].expect, cases[-1].check = png.parent / "o.ome.tif", "ok", same_ids

    # -- a pyramid whose levels lie
    with open_slide(SAMPLE) as proper:
        good = [np.asarray(level) for level in proper.levels]
    blank = [np.zeros((1500, 512, 3), np.uint8), np.zeros((360, 256, 3), np.uint8)]
    lying = _write_pyramid(folder("pyramid") / "lying.ome.tif", [*good[:2], *blank])
    reference = _write_pyramid(lying.parent / "proper.ome.tif", good[:2])
    region = ("--region", "0:1024,0:1024")

    def as_proper(_: str, out: Path = lying.parent / "mask.zarr") -> str:
        ref = out.with_name("reference.zarr")
        args = ["-m", "slide_unet.cli", "segment", reference, "-o", ref, *region]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        subprocess.run([sys.executable, *args], env=env, capture_output=True, check=True)
        np.testing.assert_array_equal(read(out), read(ref))
        return f"{np.count_nonzero(read(out)):,} px, as from the consistent levels alone"

    args = ["segment", lying, "-o", "mask.zarr", *region]
    add("pyramid level taller than the one before", args, [lying], lying.parent / "mask.zarr")
    cases[-1].expect, cases[-1].check = "ok", as_proper

    # -- malformed OME-Zarr masks
    for name in (
        "empty multiscales",
        "missing array",
        "datasets a string",
        "negative scale",
        "huge",
    ):
        zarr_mask = _store(folder(f"zarr {name}"))
        if name == "huge":
            name = "shape 10¹² x 10¹²"
            _edit_json(zarr_mask / "0" / ".zarray", lambda z: z.update(shape=[10**12] * 2))
        else:
            _edit_json(zarr_mask / ".zattrs", ZATTRS_CASES[name][0])
        out = zarr_mask.parent / "o.zarr"
        add(f"OME-Zarr mask: {name}", ["export", zarr_mask, "-o", out], [zarr_mask], out)

    # -- every worker killed (as the run starts, and while it runs), a bug, a killed run
    for when in ("as the run starts", "while they run blocks"):
        s = slide(f"workers {when}")
        out = s.parent / "w.zarr"
        args = ["segment", s, "-o", out, "--workers", "2", "--tile", "320"]
        add(f"`segment --workers 2`, every worker killed {when}", args, [s], out)
        cases[-1].kill, cases[-1].check = killer(s, out, early=when.startswith("as"))
        cases[-1].expect = "either"
    s = slide("bug")
    add("a bug's ValueError (injected into `info`)", ["info", "--json", s], [s], code=BUG)
    cases[-1].expect = "bug"
    s = slide("stale")
    dead = s.parent / ".mask.ome.tif.tmp-999999999-abcd1234"  # no such process
    (dead / "mask.zarr").mkdir(parents=True)
    live = s.parent / f".other.zarr.tmp-{os.getpid()}-abcd1234"  # a running writer's: kept
    live.mkdir()

    def cleaned(_: str, out: Path = s.parent / "m.ome.tif") -> str:
        assert not dead.exists(), "the dead run's folder is still there"
        assert live.exists(), "a live run's folder was removed"
        return f"dead run's folder removed, a live one's kept, {read(out).shape[0]}² mask"

    add("stale `.X.tmp-*` of a dead process", ["segment", s, "-o", "m.ome.tif", *REGION], [s])
    cases[-1].output, cases[-1].expect, cases[-1].check = s.parent / "m.ome.tif", "ok", cleaned
    for case in cases:
        case.env.setdefault("SLIDE_UNET_MASKS_DIR", str(tmp / "masks"))
    return cases


def _landed(folder: Path) -> bool:
    """Whether a chunk was written in a run's temporary zarr store in ``folder``."""
    stores = [p for p in folder.iterdir() if ".tmp-" in p.name]
    return any(f.is_file() and f.name != "zarr.json" for t in stores for f in t.rglob("*"))


def killer(slide: Path, out: Path, *, early: bool) -> tuple[Callable, Callable]:
    """Kill every dask worker of a run: as soon as both import torch (the cluster's
    setup), or once the first block landed in the run's temporary output (small tiles:
    many blocks, most still to run).

    Either answer is right: one line saying the workers died, or (dask's nannies
    start new workers, which run the lost tasks again) the mask a run that no one
    disturbed writes."""
    killed: list[int] = []
    seen: list[float] = []
    folder = slide.parent

    def kill(tree: list[int], elapsed: float) -> None:
        workers = [p for p in tree if b"spawn_main" in _cmdline(p)]
        started = [p for p in workers if _proc(p, "VmRSS:") > 200 * 2**20]  # torch in
        if not seen and _landed(folder):
            seen.append(elapsed)
        ready = len(started) >= 2 if early else bool(seen)
        if not killed and ready:
            for p in workers:
                os.kill(p, signal.SIGKILL)
                killed.append(p)

    def died_or_right(said: str) -> str:
        assert killed, "the workers were not killed in time"
        if "workers died" in said:
            return said
        assert not said.strip(), f"not `workers died`: {said.strip()[:60]}"
        from slide_unet.core.inference.segment import segment

        got = read(out)
        assert np.array_equal(got, segment(slide, "glomeruli")), (
            "a mask unlike an undisturbed run's"
        )
        return (
            f"new workers redid the lost blocks: the undisturbed run's mask, {int(got.sum()):,} px"
        )

    return kill, died_or_right


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated parts of case names to run")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as name:
        tmp = Path(name)
        HIDE.append(f"{tmp}/")
        for var, sub in (
            ("SLIDE_UNET_MASKS_DIR", "masks"),
            ("SLIDE_UNET_CACHE_DIR", "cache"),
            ("SLIDE_UNET_MODELS_DIR", "no-models"),
        ):
            os.environ[var] = str(tmp / sub)
        cases = build(tmp)
        if args.only:
            cases = [c for c in cases if any(w in c.name for w in args.only.split(","))]
        print(
            f"built {len(cases)} cases in {time.monotonic() - started:.0f} s, "
            f"load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
        )
        rows, met = [], 0
        for case in cases:
            watch = tmp
            before = {p: digest(p) for p in case.inputs}
            chunks = set(digest(case.store_chunks).values()) if case.store_chunks else set()
            tmps = temporaries(watch)
            r = run_child(case, case.folder)
            said, right = judge(case, r)
            changed = [p.name for p in case.inputs if digest(p) != before[p]]
            if chunks:
                kept = set(digest(case.store_chunks.parent).values())
                changed += [f"{len(chunks - kept)} chunk(s) lost"] if chunks - kept else []
            left = sorted(temporaries(watch) - tmps)
            if (
                case.output is not None
                and r.rc != 0
                and case.output.exists()
                and case.output not in case.inputs
            ):
                left.append(case.output.name)
            ok = right and r.wall <= SECONDS and r.peak_mb <= PEAK_MB and not changed and not left
            met += ok
            rows.append(
                f"| {case.name} | {said} | {r.wall:.1f} ({r.cpu:.1f}) | {r.peak_mb:.0f} | "
                f"{'yes' if not changed else 'NO: ' + ', '.join(changed)} | "
                f"{'yes' if not left else 'NO: ' + ', '.join(Path(p).name for p in left)} |"
            )
            print(f"{case.name}: {r.rc} {r.wall:.1f} s", file=sys.stderr)
    print(
        "| case | what the user gets | s (CPU s) | peak MB | inputs unchanged "
        "| nothing half-written |"
    )
    print("| --- | --- | ---: | ---: | --- | --- |")
    print("\n".join(rows))
    print(
        f"\n{len(rows)} cases; {met} met all of: one line or the right result, <= {SECONDS} s, "
        f"<= 1.5 GB, inputs unchanged, nothing half-written. "
        f"Wall {time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.2f}."
    )
    return 0 if met == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""How responsive napari stays while the Segment widget segments the whole sample slide.

A real napari window (run under a virtual display: ``xvfb-run -a python
benchmarks/bench_responsiveness.py``) opens ``sample_data/kidney_pas.ome.tif``
with the plugin reader; a ``QTimer`` asks to tick every 10 ms, and the gaps
between the ticks the Qt event loop actually delivers are recorded while a
whole-slide segmentation runs. A gap is how long the window could not react
to the user (repaint, pan, click Cancel). The target is a longest gap under
200 ms.

Side by side, in the same process and on the same slide:

- **Segment widget**: the engine in a worker thread, tiles streaming into the
  mask store, the Labels layer refreshed at most every 250 ms. The click
  handler (checks, the mask store, adding the Labels layer: napari's own
  cost, most of a second the first time a Labels layer is drawn) runs on the
  UI thread before the run starts; it is timed separately and the gaps are
  those of the run itself;
- **naive**: ``slide_unet.segment`` called on the UI thread and the result
  added as a Labels layer, which is what a plain magicgui function widget does.

Usage::

    xvfb-run -a python benchmarks/bench_responsiveness.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "sample_data" / "kidney_pas.ome.tif"
TICK_MS = 10


class Ticks:
    """Timestamps of a QTimer's ticks: the event loop's heartbeat."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def start(self) -> None:
        self.times = [time.perf_counter()]
        self.timer.start()

    def stop(self) -> np.ndarray:
        self.timer.stop()
        self.times.append(time.perf_counter())
        return np.diff(self.times) * 1000


def run_widget(viewer, qapp) -> tuple[float, float, np.ndarray]:
    _, widget = viewer.window.add_plugin_dock_widget("napari-slide-unet", "Segment")
    widget.model.value = "glomeruli"
    widget.settings.region.value = "Whole slide"
    ticks = Ticks()
    done = []
    widget.finished.connect(lambda: done.append(time.perf_counter()))
    started = time.perf_counter()
    widget.run()  # on the UI thread: checks, the store, the Labels layer
    click = time.perf_counter() - started
    ticks.start()
    while not done:
        qapp.processEvents()
        time.sleep(0.001)
    gaps = ticks.stop()
    viewer.window.remove_dock_widget(widget)
    return done[0] - started, click, gaps


def run_naive(viewer, qapp) -> tuple[float, float, np.ndarray]:
    from qtpy.QtCore import QTimer

    import slide_unet

    ticks = Ticks()
    done = []

    def work() -> None:
        mask = slide_unet.segment(SAMPLE, "glomeruli")
        viewer.add_labels(mask, name="naive", scale=viewer.layers[0].scale)
        done.append(time.perf_counter())

    ticks.start()
    started = time.perf_counter()
    QTimer.singleShot(0, work)
    while not done:
        qapp.processEvents()
        time.sleep(0.001)
    # Let the loop deliver the ticks that were due while it was blocked.
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
        qapp.processEvents()
    gaps = ticks.stop()
    viewer.layers.remove("naive")
    return done[0] - started, 0.0, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("SLIDE_UNET_MASKS_DIR", tempfile.mkdtemp(prefix="bench-masks-"))
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.open(SAMPLE, plugin="napari-slide-unet")
    qapp = QApplication.instance()
    for _ in range(20):  # let the window appear and draw
        qapp.processEvents()
        time.sleep(0.01)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"slide: {SAMPLE.name}, 2048 x 2048 px; event-loop tick asked every {TICK_MS} ms\n")
    print(
        "| run | segment (s) | click handler (ms) | ticks | longest gap (ms) "
        "| 99th pct gap (ms) | median gap (ms) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for repeat in range(args.repeats):
        for name, run in (("Segment widget", run_widget), ("naive, on the UI thread", run_naive)):
            seconds, click, gaps = run(viewer, qapp)
            rows.append((name, seconds, gaps))
            print(
                f"| {name} (#{repeat + 1}) | {seconds:.1f} | {click * 1000:.0f} | {gaps.size} "
                f"| {gaps.max():.0f} | "
                f"{np.percentile(gaps, 99):.0f} | {np.median(gaps):.0f} |",
                flush=True,
            )
    widget_max = max(g.max() for n, _, g in rows if n.startswith("Segment"))
    naive_max = max(g.max() for n, _, g in rows if n.startswith("naive"))
    print(f"\nlongest gap: widget {widget_max:.0f} ms (target < 200), naive {naive_max:.0f} ms")
    viewer.close()


if __name__ == "__main__":
    main()

"""Screenshots of the widgets at work, in a real napari window, for the README.

Run under a virtual display (napari needs OpenGL; Qt's offscreen platform does
not work with vispy here)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py [--out docs/screenshots]

It opens ``sample_data/kidney_pas.ome.tif`` with the plugin reader, then, as a
user would: segments the whole slide with the Segment widget; removes false
positives (small specks) with the Correct widget; scores the result against the sample's
expert mask with the Score widget (overlay and per-tile table); and shows the
Export widget. Each step waits for its job's signal and saves a PNG of the
whole window. The mask store goes to a temporary folder, so the user's own
autosaved masks are untouched.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "kidney_pas.ome.tif"
TRUTH = ROOT / "sample_data" / "kidney_pas_mask.ome.tif"
PLUGIN = "napari-slide-unet"


def settle(app, seconds: float = 0.5) -> None:
    """Let Qt draw (the canvas and the docks) for a moment."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app, signal, start, timeout: float = 300.0) -> None:
    """Call ``start()``, then process events until ``signal`` fires."""
    fired = []
    signal.connect(lambda *_: fired.append(True))
    start()
    end = time.perf_counter() + timeout
    while not fired:
        if time.perf_counter() > end:
            raise TimeoutError("the job did not finish")
        app.processEvents()
        time.sleep(0.01)


def shoot(viewer, app, path: Path) -> None:
    settle(app)
    from PIL import Image

    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(path)
    print(f"wrote {path}")


def remove_docks(viewer) -> None:
    for name in list(viewer.window.dock_widgets):
        viewer.window.remove_dock_widget(viewer.window.dock_widgets[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SLIDE_UNET_MASKS_DIR"] = tempfile.mkdtemp(prefix="screenshots-masks-")

    import napari
    from qtpy.QtWidgets import QApplication

    from slide_unet.napari.layers import unproxied

    viewer = napari.Viewer(show=True, title="napari-slide-unet")
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    viewer.open(SAMPLE, plugin=PLUGIN)
    viewer.reset_view()

    # Segment: the whole slide with the bundled glomeruli model.
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.model.value = "glomeruli"
    segment.settings.region.value = "Whole slide"
    wait(app, segment.finished, segment.run)
    mask = segment.layer
    shoot(viewer, app, args.out / "segment.png")

    # Correct: remove the small false-positive specks (one undo step), with the
    # mask layer selected so napari's own paint tools show too.
    remove_docks(viewer)
    _, correct = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct")
    correct.layer.value = unproxied(mask)
    correct.settings.min_area.value = 2000.0
    correct.remove_small_objects()
    viewer.layers.selection.active = mask
    mask.mode = "paint"
    shoot(viewer, app, args.out / "correct.png")

    # Score: against the sample's expert mask file, with the overlay.
    remove_docks(viewer)
    viewer.reset_view()
    _, score = viewer.window.add_plugin_dock_widget(PLUGIN, "Score")
    score.prediction.value = mask.name
    score.truth_source.value = "File"
    score.truth_file.value = TRUTH
    wait(app, score.finished, score.score)
    shoot(viewer, app, args.out / "score.png")

    # Export: the corrected mask as a pyramidal OME-TIFF (the widget only).
    remove_docks(viewer)
    viewer.layers.remove(score.overlay)
    _, export = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    export.layer.value = unproxied(mask)
    shoot(viewer, app, args.out / "export.png")
    viewer.close()


if __name__ == "__main__":
    main()

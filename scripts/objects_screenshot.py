"""Screenshot of the Objects and Review docks on the sample slide: ``docs/objects.png``.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/objects_screenshot.py

It opens ``sample_data/kidney_pas.ome.tif`` with the plugin reader, segments the whole
slide with the Segment widget (the bundled glomeruli model, every object kept: *Min.
object* 0; the store keeps its probabilities, so the table has a mean probability per
object), measures the result in the Objects dock (sorted by area, the largest clicked: the
view centres on it), builds the Review queue against the sample's expert mask file (false
positives first), and saves the window, downscaled to keep the PNG small.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshots import PLUGIN, ROOT, SAMPLE, TRUTH, remove_docks, settle, wait


def main() -> None:
    os.environ["SLIDE_UNET_MASKS_DIR"] = tempfile.mkdtemp(prefix="screenshots-masks-")
    import napari
    from PIL import Image
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True, title="napari-slide-unet")
    viewer.window._qt_window.resize(1500, 1000)
    app = QApplication.instance()
    viewer.open(SAMPLE, plugin=PLUGIN)
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    segment.model.value = "glomeruli"
    segment.settings.region.value = "Whole slide"
    # Keep every object (the card's minimum area would remove the specks), so that the
    # review queue has false positives to show.
    segment.advanced.min_object_um2.value = 0.0
    wait(app, segment.finished, segment.run)
    mask = segment.layer
    remove_docks(viewer)
    viewer.reset_view()
    objects_dock, objects = viewer.window.add_plugin_dock_widget(PLUGIN, "Objects")
    review_dock, review = viewer.window.add_plugin_dock_widget(PLUGIN, "Review")
    window = viewer.window._qt_window
    window.resizeDocks([objects_dock], [560], Qt.Orientation.Horizontal)
    window.resizeDocks([objects_dock, review_dock], [420, 480], Qt.Orientation.Vertical)
    objects.reset_choices()
    objects.layer.value = mask
    start = time.perf_counter()
    wait(app, objects.finished, objects.measure)
    print(f"measured {len(objects.table)} objects in {time.perf_counter() - start:.2f} s")
    objects.view.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    objects.view.selectRow(0)
    objects.go_to(objects.model.row_of(0))
    review.reset_choices()
    review.layer.value = mask
    review.truth_source.value = "File"
    review.truth_file.value = TRUTH
    wait(app, review.finished, review.build)
    # The queue starts with one-pixel specks; show the first object of some size.
    area = review.table[f"area_{review.table.unit}2"]
    review.show_entry(
        next(k for k, e in enumerate(review.queue) if not e.in_truth and area[e.row] >= 100)
    )
    settle(app, 1.0)
    shot = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).convert("RGB")
    shot.thumbnail((1300, 1300))
    out = ROOT / "docs" / "objects.png"
    # A 256-colour palette keeps the PNG small (the slide's colours survive it).
    shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    viewer.close()


if __name__ == "__main__":
    main()

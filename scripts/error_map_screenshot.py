"""Screenshot of the Score dock's error map over the sample slide: ``docs/error_map.png``.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/error_map_screenshot.py

It opens ``sample_data/kidney_pas.ome.tif`` with the plugin reader, makes a damaged
copy of the sample's expert mask as the "prediction" (eroded a little, the bottom-left
glomerulus erased, a false object added top right), scores it against the expert
mask file on 256 px tiles (an 8 x 8 grid: the sample is only 2048 px a side), shows
the error map with the prediction and the overlay hidden, and saves the window
zoomed out to the whole slide, with the status bar as when hovering a tile (its
Dice), downscaled to keep the PNG small.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshots import PLUGIN, ROOT, SAMPLE, TRUTH, settle, wait


def main() -> None:
    os.environ["SLIDE_UNET_MASKS_DIR"] = tempfile.mkdtemp(prefix="screenshots-masks-")
    import napari
    import numpy as np
    from PIL import Image
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage as ndi

    from slide_unet.core.masks.io import read_mask
    from slide_unet.napari.truth_choice import FILE

    viewer = napari.Viewer(show=True, title="napari-slide-unet")
    viewer.window._qt_window.resize(1500, 1000)
    app = QApplication.instance()
    (image,) = viewer.open(SAMPLE, plugin=PLUGIN)
    truth = np.asarray(read_mask(TRUTH)) != 0
    damaged = ndi.binary_erosion(truth, np.ones((3, 3), bool), iterations=6)
    damaged[1024:, :1024] = False  # the bottom-left glomerulus missed
    damaged[300:420, 1250:1370] = True  # a false object where there is none
    pred = viewer.add_labels(
        damaged.astype(np.uint8), name="prediction", scale=image.scale, units=image.units
    )
    dock, score = viewer.window.add_plugin_dock_widget(PLUGIN, "Score")
    viewer.window._qt_window.resizeDocks([dock], [520], Qt.Orientation.Horizontal)
    score.reset_choices()
    score.prediction.value = pred.name
    score.truth_source.value = FILE
    score.truth_file.value = TRUTH
    score.params.tile.value = 256
    wait(app, score.finished, score.score)
    heat = score.show_error_map()
    pred.visible = False
    score.overlay.visible = False
    viewer.layers.selection.active = viewer.layers[heat.name]
    viewer.reset_view()
    # The status bar as when hovering the half-missed tile (3, 6): its Dice.
    viewer.cursor.position = tuple(image.data_to_world((3 * 256 + 127.5, 6 * 256 + 127.5)))
    viewer.status = viewer.layers[heat.name].get_status(viewer.cursor.position, world=True)
    settle(app, 1.0)
    shot = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).convert("RGB")
    shot.thumbnail((1300, 1300))
    out = ROOT / "docs" / "error_map.png"
    # A 256-colour palette keeps the PNG small (the slide's colours survive it).
    shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB); Dice {score.scores.dice:.3f}")
    viewer.close()


if __name__ == "__main__":
    main()

"""*Edit here*: paint a slide's mask at full resolution, one window at a time.

napari cannot paint a multiscale Labels layer, and a slide's mask too large
for one editable layer is shown as one (:mod:`slide_unet.napari.layer_data`). An
edit window is the full-resolution part of the mask under the view (at most
:data:`WINDOW_SIDE` pixels a side) opened as an ordinary Labels layer on top
of it, with the same scale, units and a translate that puts it in place. Its
data is an :class:`~slide_unet.core.masks.windows.AutosavedWindow`: napari's
brush, fill, eraser, polygon, undo and redo, and the Correct tools change
memory at once (a brush dab costs a numpy assignment), and a background
thread writes the changed boxes to the store and its overviews within
``AUTOSAVE_SECONDS``; the multiscale view below is refreshed after each save.
*Done* saves what is pending and removes the window layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import Box
from slide_unet.napari.layer_data import editable_window
from slide_unet.napari.layers import full_resolution, unproxied, visible_region
from slide_unet.napari.mask_layer import show_store_changes

if TYPE_CHECKING:
    import napari

__all__ = [
    "MIN_WINDOW_SIDE",
    "WINDOW_SIDE",
    "EditWindow",
    "window_region",
]

#: Largest side of an edit window (pixels): napari re-reads the whole window
#: on every refresh, and the object tools label all of it.
WINDOW_SIDE = 4096
#: Smallest side of an edit window where the image allows: zoomed far in, a
#: window the size of the view would end at the first pan.
MIN_WINDOW_SIDE = 1024
#: The view layer is refreshed this long after the last save of a burst (ms).
REFRESH_MS = 150


class _Saved(QObject):
    """Carries the autosave thread's "saved" to the main thread (a queued signal)."""

    saved = Signal(object)


def window_region(
    visible: Box,
    shape: tuple[int, int],
    *,
    side: int = WINDOW_SIDE,
    min_side: int = MIN_WINDOW_SIDE,
) -> Box:
    """The edit window for a view: the visible region, at most ``side`` pixels
    a side (centred on the view), at least ``min_side`` where the image allows.

    Parameters
    ----------
    visible : tuple of int
        ``(y0, y1, x0, x1)`` on screen, in full-resolution pixels.
    shape : tuple of int
        The mask's full-resolution ``(height, width)``.
    """
    bounds = []
    for lo, hi, size in ((visible[0], visible[1], shape[0]), (visible[2], visible[3], shape[1])):
        length = min(max(hi - lo, min_side), side, size)
        start = (lo + hi) // 2 - length // 2
        start = min(max(start, 0), size - length)
        bounds += [start, start + length]
    return bounds[0], bounds[1], bounds[2], bounds[3]


class EditWindow:
    """An editable full-resolution window over a multiscale mask layer.

    Parameters
    ----------
    viewer : napari.Viewer
    view : napari.layers.Labels
        The multiscale Labels layer showing the store (view only).
    store : MaskStore
        The store behind `view`.
    region : tuple of int, optional
        ``(y0, y1, x0, x1)`` to open; default :func:`window_region` of the view.

    Attributes
    ----------
    layer : napari.layers.Labels
        The window: an ordinary Labels layer over an autosaved window of the store.
    region : tuple of int
        Its ``(y0, y1, x0, x1)`` in full-resolution pixels.
    """

    def __init__(
        self, viewer: napari.Viewer, view: Any, store: MaskStore, region: Box | None = None
    ) -> None:
        self.viewer = viewer
        self.view = unproxied(view)
        self.store = store
        if region is None:
            shape = tuple(int(n) for n in full_resolution(view).shape[-2:])
            region = window_region(visible_region(viewer, view), shape)  # type: ignore[arg-type]
        self._signals = _Saved()
        self.array = editable_window(store, region)
        self.array.on_saved = self._signals.saved.emit
        self.region = self.array.region
        y0, y1, x0, x1 = self.region
        scale = np.asarray(view.scale[-2:], dtype=float)
        translate = np.asarray(view.translate[-2:], dtype=float) + scale * (y0, x0)
        metadata = dict(view.metadata or {})
        metadata.pop("mask_store", None)  # find_mask_layer must keep finding the view
        metadata["edit_window"] = {"view": view.name, "region": list(self.region)}
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh_view)
        self._signals.saved.connect(self._saved)
        self.layer = unproxied(
            viewer.add_labels(
                self.array,
                name=f"{view.name} [edit {y0}:{y1}, {x0}:{x1}]",
                scale=tuple(scale),
                translate=tuple(translate),
                units=tuple(str(u) for u in view.units[-2:]),
                metadata=metadata,
                opacity=view.opacity,
            )
        )
        self.layer.mode = "paint"

    def _saved(self, _box: Box) -> None:
        self._timer.start()  # restarted by each save: one refresh after a burst

    def refresh_view(self) -> None:
        """Show the store's current pixels in the multiscale view layer."""
        self._timer.stop()
        show_store_changes(self.view, self.store)

    @property
    def is_open(self) -> bool:
        """Whether the window layer is still in the viewer."""
        return self.layer in self.viewer.layers

    def close(self) -> None:
        """Save what is pending, remove the window layer and refresh the view."""
        self.array.close()
        if self.is_open:
            self.viewer.layers.remove(self.layer)
        if self.view in self.viewer.layers:
            self.refresh_view()
        self._timer.stop()

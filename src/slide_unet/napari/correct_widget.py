"""The Correct widget: object-level tools on a mask, each one napari undo step.

napari's own brush, fill and eraser work on any editable Labels layer; this
widget adds tools that act on whole objects (8-connected components, as
everywhere in the package): delete the object under a click, merge two
objects, split one along its necks, remove objects below an area, fill holes,
smooth outlines. Each is a :mod:`slide_unet.core.objects.edit` function that returns
only the pixels that change, applied with ``layer.data_setitem`` inside
``layer.block_history()``: one use of a tool is one undo step, and it is a
paint event, so a mask backed by its slide's store is autosaved
(:mod:`slide_unet.napari.mask_layer`).

A slide's mask too large for one editable layer is a multiscale view; *Edit
here* opens the full-resolution window under the view as an editable layer
(:mod:`slide_unet.napari.edit_window`) and the tools act on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox
from qtpy.QtWidgets import QGridLayout, QLabel, QPushButton, QWidget
from scipy import ndimage

from slide_unet.core.errors import InputError, UserError
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.objects import edit
from slide_unet.napari.edit_window import EditWindow
from slide_unet.napari.jobs import notify_error
from slide_unet.napari.layers import labels_layers, layer_mpp, unproxied, visible_region
from slide_unet.napari.mask_layer import store_behind
from slide_unet.napari.params import form, read_form, setting
from slide_unet.napari.scroll import scrolling_layout

if TYPE_CHECKING:
    import napari

__all__ = ["WHOLE_LAYER_SIDE", "CorrectSettings", "CorrectWidget"]

#: Layers up to this many pixels a side are corrected whole; on larger ones
#: the tools work on the part on screen (labelling a whole slide per click
#: would take seconds and gigabytes).
WHOLE_LAYER_SIDE = 4096

DELETE, MERGE, SPLIT = "delete", "merge", "split"
SMOOTHING = ["open-close", "open", "close"]
Box = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class CorrectSettings:
    """The object tools' options (areas in µm², lengths in µm; pixels without a pixel size)."""

    min_area: float = setting(
        500.0,
        "Min. area",
        "Remove small objects: objects smaller than this are erased",
        min=0.0,
        max=1e9,
        step=100.0,
    )
    max_hole: float = setting(
        0.0,
        "Max. hole",
        "Fill holes: fill only holes up to this area; 0 fills every hole",
        min=0.0,
        max=1e9,
        step=100.0,
    )
    radius: float = setting(
        2.0,
        "Radius",
        "Smooth: radius of the disk (at least one pixel)",
        min=0.0,
        max=1000.0,
        step=0.5,
    )
    operation: str = setting(
        "open-close",
        "Smooth by",
        "open: cut spurs and thin bridges; close: fill notches and narrow gaps; open-close: both",
        choices=SMOOTHING,
    )
    pieces: int = setting(2, "Split into", "Split: number of parts", min=2, max=16)


_UNITS = {"min_area": ("µm²", "px"), "max_hole": ("µm²", "px"), "radius": ("µm", "px")}


def _count(change: edit.Change, structure: Any = None) -> int:
    """Connected groups among a change's pixels (objects removed, holes filled)."""
    if not change:
        return 0
    rows, cols = change.indices
    y0, x0 = int(rows.min()), int(cols.min())
    touched = np.zeros((int(rows.max()) - y0 + 1, int(cols.max()) - x0 + 1), dtype=bool)
    touched[rows - y0, cols - x0] = True
    return int(ndimage.label(touched, structure=structure)[1])


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _unhook(viewer: Any, on_mouse: Any) -> Callable[..., None]:
    """What to undo on the viewer when the widget is destroyed (a closure:
    the widget itself is gone by then)."""

    def unhook(*_args: Any) -> None:
        if on_mouse in viewer.mouse_drag_callbacks:
            viewer.mouse_drag_callbacks.remove(on_mouse)
        for key in ("Shift-E", "Shift-D"):
            viewer.bind_key(key, None)

    return unhook


class CorrectWidget(QWidget):
    """Correct a mask: delete, merge, split, remove small objects, fill holes, smooth.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose Labels layers are corrected.

    Attributes
    ----------
    armed : str or None
        The click tool waiting for a click on the canvas (``"delete"``,
        ``"merge"``, ``"split"``), or None.
    window : EditWindow or None
        The open *Edit here* window.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.armed: str | None = None
        self._mode_before: tuple[Any, str] | None = None
        self.window: EditWindow | None = None
        self._first_click: tuple[Any, tuple[float, float]] | None = None

        self.layer = ComboBox(label="Mask", choices=self._layer_choices)
        self.settings = form(CorrectSettings)
        self.pixel_info = QLabel()
        self.pixel_info.setWordWrap(True)
        self.status = QLabel()
        self.status.setWordWrap(True)

        self.edit_button = QPushButton("Edit here")
        self.edit_button.setToolTip(
            "Open the full-resolution part of a large mask under the view for "
            "painting (Shift+E). Every change is saved as it is made."
        )
        self.done_button = QPushButton("Done")
        self.done_button.setToolTip("Close the edit window (its changes are already saved)")
        self.tool_buttons: dict[str, QPushButton] = {}
        for tool, text, tip in (
            (DELETE, "Delete object", "Then click an object to erase it (Shift+D)"),
            (MERGE, "Merge", "Then click two objects to join them"),
            (SPLIT, "Split", "Then click an object to cut it along its necks"),
        ):
            button = QPushButton(text)
            button.setCheckable(True)
            button.setToolTip(tip)
            button.clicked.connect(lambda checked, tool=tool: self.arm(tool if checked else None))
            self.tool_buttons[tool] = button
        self.remove_button = QPushButton("Remove small objects")
        self.fill_button = QPushButton("Fill holes")
        self.smooth_button = QPushButton("Smooth")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last change to the mask (as Ctrl+Z)")

        layout = scrolling_layout(self)
        layout.addWidget(self.layer.native)
        layout.addWidget(self.pixel_info)
        layout.addLayout(self._row(self.edit_button, self.done_button))
        layout.addLayout(self._row(*self.tool_buttons.values()))
        layout.addWidget(self.settings.native)
        layout.addLayout(self._row(self.remove_button, self.fill_button, self.smooth_button))
        layout.addWidget(self.undo_button)
        layout.addWidget(self.status)
        layout.addStretch()

        self.layer.changed.connect(self._layer_changed)
        self.edit_button.clicked.connect(self.edit_here)
        self.done_button.clicked.connect(self.done)
        self.remove_button.clicked.connect(self.remove_small_objects)
        self.fill_button.clicked.connect(self.fill_holes)
        self.smooth_button.clicked.connect(self.smooth)
        self.undo_button.clicked.connect(self.undo)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self.viewer.bind_key("Shift-E", self._edit_key, overwrite=True)
        self.viewer.bind_key("Shift-D", self._delete_key, overwrite=True)
        self.destroyed.connect(_unhook(self.viewer, self._on_mouse))
        self._layer_changed()

    @staticmethod
    def _row(*buttons: QWidget) -> QGridLayout:
        row = QGridLayout()
        for column, button in enumerate(buttons):
            row.addWidget(button, 0, column)
        return row

    # -- the layer --------------------------------------------------------------------

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, unproxied(layer)) for layer in labels_layers(self.viewer)]

    def reset_choices(self, _event: Any = None) -> None:
        """Refresh the layer list (napari calls this when layers change)."""
        self.layer.reset_choices()

    def _pick(self, layer: Any) -> None:
        self.layer.reset_choices()  # the layer may be newer than the list
        if any(layer is choice for _, choice in self._layer_choices()):
            self.layer.value = layer

    def _follow_active(self, _event: Any = None) -> None:
        active = unproxied(self.viewer.layers.selection.active)
        if active is not None and active is not self.layer.value:
            self._pick(active)

    def _layer_changed(self, _value: Any = None) -> None:
        layer = self.layer.value
        mpp = layer_mpp(layer) if layer is not None else None
        for name, (micron, pixel) in _UNITS.items():
            base = CorrectSettings.__dataclass_fields__[name].metadata["label"]
            self.settings[name].label = f"{base} ({micron if mpp else pixel})"
        if layer is None:
            self.pixel_info.setText("No Labels layer: segment a slide or open a mask.")
        elif mpp:
            self.pixel_info.setText(f"Pixel size {mpp:g} µm: areas in µm², radius in µm.")
        else:
            self.pixel_info.setText("No pixel size: areas and radius are in pixels.")
        if layer is not None and layer.multiscale and not self._window_of(layer):
            self.pixel_info.setText(
                self.pixel_info.text() + " Too large to edit at once: zoom in and press Edit here."
            )

    def _layer_removed(self, event: Any) -> None:
        window = self.window
        removed = unproxied(event.value)
        if window is not None and (removed is window.layer or removed is window.view):
            self.window = None
            window.close()
        if self._first_click is not None and removed is self._first_click[0]:
            self.arm(None)

    def _window_of(self, layer: Any) -> bool:
        window = self.window
        return (
            window is not None
            and window.is_open
            and (layer is window.layer or layer is window.view)
        )

    @staticmethod
    def _store(layer: Any) -> MaskStore | None:
        """The mask store behind a layer; None for a plain layer."""
        return store_behind(layer)

    def target(self) -> Any:
        """The editable layer the tools act on: the picked layer, or its edit window.

        Raises
        ------
        ValueError
            No Labels layer is picked, or it cannot be edited as it is.
        """
        layer = self.layer.value
        if layer is None:
            raise InputError("no Labels layer to correct: segment a slide or open a mask first")
        if self._window_of(layer):
            return self.window.layer  # type: ignore[union-attr]
        if layer.multiscale:
            raise InputError(
                f"{layer.name!r} is too large to edit at once: zoom in on the part to "
                "correct and press Edit here"
            )
        if layer.ndim != 2:
            raise InputError(
                f"the Correct tools work on 2-D masks; {layer.name!r} is {layer.ndim}-D"
            )
        self._store(layer)
        return layer

    def _region(self, layer: Any) -> tuple[Box, str]:
        """The part of ``layer`` a tool works on, and words for the status line."""
        height, width = layer.data.shape
        if max(height, width) <= WHOLE_LAYER_SIDE:
            return (0, height, 0, width), ""
        y0, y1, x0, x1 = visible_region(self.viewer, layer)
        return (y0, y1, x0, x1), f" (visible region {y0}:{y1}, {x0}:{x1} only)"

    # -- applying ---------------------------------------------------------------------

    @staticmethod
    def _apply(layer: Any, change: edit.Change, origin: tuple[int, int]) -> None:
        """One change as one undo step (and one paint event: the autosave)."""
        if not change:
            return
        rows, cols = change.indices
        with layer.block_history():
            layer.data_setitem((rows + origin[0], cols + origin[1]), change.values)

    def _run(self, tool: Callable[[np.ndarray, float | None], tuple[edit.Change, str]]) -> bool:
        """Run a whole-region tool on the target; a user error is one notification."""
        try:
            layer = self.target()
            region, where = self._region(layer)
            y0, y1, x0, x1 = region
            window = np.asarray(layer.data[y0:y1, x0:x1])
            change, said = tool(window, layer_mpp(layer))
            self._apply(layer, change, (y0, x0))
        except (UserError, OSError) as exc:
            notify_error(exc)
            return False
        self.status.setText(said + where)
        return True

    def remove_small_objects(self) -> bool:
        """Erase the objects smaller than *Min. area*; True when it ran."""
        options = read_form(CorrectSettings, self.settings)

        def tool(window: np.ndarray, mpp: float | None) -> tuple[edit.Change, str]:
            change = edit.remove_small_objects(window, options.min_area, mpp)
            count = _count(change, structure=np.ones((3, 3)))
            unit = "µm²" if mpp else "px"
            return change, (
                f"removed {_plural(count, 'object')} smaller than {options.min_area:g} {unit} "
                f"({len(change):,} px)"
            )

        return self._run(tool)

    def fill_holes(self) -> bool:
        """Fill holes (up to *Max. hole*, 0: all); True when it ran."""
        options = read_form(CorrectSettings, self.settings)

        def tool(window: np.ndarray, mpp: float | None) -> tuple[edit.Change, str]:
            limit = options.max_hole or None
            change = edit.fill_holes(window, limit, mpp)
            count = _count(change)  # holes are 4-connected
            return change, f"filled {_plural(count, 'hole')} ({len(change):,} px)"

        return self._run(tool)

    def smooth(self) -> bool:
        """Smooth outlines by *Smooth by* with a disk of *Radius*; True when it ran."""
        options = read_form(CorrectSettings, self.settings)

        def tool(window: np.ndarray, mpp: float | None) -> tuple[edit.Change, str]:
            change = edit.smooth(window, options.radius, mpp, options.operation)
            unit = "µm" if mpp else "px"
            return change, (
                f"smoothed ({options.operation}, radius {options.radius:g} {unit}): "
                f"{len(change):,} px changed"
            )

        return self._run(tool)

    def undo(self) -> None:
        """Undo the last change to the target layer (napari's undo)."""
        try:
            layer = self.target()
        except UserError as exc:
            notify_error(exc)
            return
        layer.undo()  # a store-backed layer's data writes the undo through to the store
        self.status.setText("undone the last change")

    # -- click tools ------------------------------------------------------------------

    def arm(self, tool: str | None) -> None:
        """Make the next click on the canvas run ``tool`` (None: disarm)."""
        if tool is not None and tool not in self.tool_buttons:
            raise InputError(f"unknown click tool {tool!r}")
        if self._mode_before is not None:
            layer, mode = self._mode_before
            self._mode_before = None
            if layer.mode == "pan_zoom":
                layer.mode = mode
        if tool is not None:
            try:
                layer = self.target()
            except UserError as exc:
                notify_error(exc)
                tool = None
            else:
                # The click belongs to the tool: it must not also paint.
                self._mode_before = (layer, layer.mode)
                layer.mode = "pan_zoom"
        self.armed = tool
        self._first_click = None
        for name, button in self.tool_buttons.items():
            button.setChecked(name == tool)
        prompts = {
            DELETE: "click the object to delete",
            MERGE: "click the first object to merge",
            SPLIT: "click the object to split",
        }
        if tool is not None:
            self.status.setText(prompts[tool])

    def _on_mouse(self, _viewer: Any, event: Any) -> Generator[None, None, None]:
        """A click (press and release without a drag) runs the armed tool."""
        if self.armed is None:
            return
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged:
            self.click(event.position)

    def click(self, position: Any) -> bool:
        """Run the armed tool at a world position (what a canvas click does).

        Returns
        -------
        bool
            True when the mask changed.
        """
        tool = self.armed
        if tool is None:
            return False
        try:
            layer = self.target()
            point = tuple(float(v) for v in layer.world_to_data(position)[-2:])
            return self._click(tool, layer, point)
        except (UserError, OSError) as exc:
            notify_error(exc)
            self.arm(None)
            return False

    def _click(self, tool: str, layer: Any, point: tuple[float, float]) -> bool:
        (y0, y1, x0, x1), where = self._region(layer)
        window = np.asarray(layer.data[y0:y1, x0:x1])
        row, col = point[0] - y0, point[1] - x0
        inside = 0 <= round(row) < window.shape[0] and 0 <= round(col) < window.shape[1]
        if not inside or window[round(row), round(col)] == 0:
            raise InputError(f"there is no object under the click: nothing to {tool}")
        if tool == DELETE:
            change = edit.delete_object(window, row, col)
            said = f"deleted 1 object ({len(change):,} px)"
        elif tool == SPLIT:
            pieces = read_form(CorrectSettings, self.settings).pieces
            change = edit.split_object(window, row, col, pieces)
            said = f"split 1 object into {pieces} parts ({len(change):,} px cut)"
        elif self._first_click is None or self._first_click[0] is not layer:
            self._first_click = (layer, point)
            self.status.setText("click the second object to merge")
            return False
        else:
            first = self._first_click[1]
            change = edit.merge_objects(window, [(first[0] - y0, first[1] - x0), (row, col)])
            said = f"merged 2 objects ({len(change):,} px filled)"
        self._apply(layer, change, (y0, x0))
        self.arm(None)
        self.status.setText(said + where)
        return bool(change)

    def _delete_key(self, _viewer: Any = None) -> None:
        self.arm(None if self.armed == DELETE else DELETE)

    # -- edit window ------------------------------------------------------------------

    def edit_here(self) -> EditWindow | None:
        """Open the full-resolution window under the view of a large mask for editing."""
        try:
            return self._open_window()
        except (UserError, OSError) as exc:
            notify_error(exc)
            return None

    def _open_window(self) -> EditWindow:
        layer = self.layer.value
        if layer is None:
            raise InputError("no Labels layer to edit: segment a slide or open a mask first")
        if self._window_of(layer):
            layer = self.window.view  # type: ignore[union-attr]
        if not layer.multiscale:
            raise InputError(
                f"{layer.name!r} is editable as it is: paint on it or use the tools "
                "(Edit here is for masks too large for one layer)"
            )
        store = self._store(layer)
        if store is None:
            raise InputError(
                f"{layer.name!r} is not a slide mask made here (it has no mask store to "
                "write to); Edit here works on masks from the Segment widget"
            )
        if self.window is not None:
            self.done()
        self.arm(None)
        window = EditWindow(self.viewer, layer, store)
        self.window = window
        self._pick(window.layer)
        y0, y1, x0, x1 = window.region
        self.status.setText(
            f"editing {y1 - y0:,} x {x1 - x0:,} px at ({y0:,}, {x0:,}): paint or use the "
            "tools; every change is saved within a second. Done closes the window."
        )
        return window

    def _edit_key(self, _viewer: Any = None) -> None:
        self.edit_here()

    def done(self) -> None:
        """Close the edit window, saving what is pending to the store."""
        window, self.window = self.window, None
        if window is None:
            return
        self.arm(None)
        window.close()
        if window.view in self.viewer.layers:
            self._pick(window.view)
        self.status.setText("edit window closed: its changes are saved")

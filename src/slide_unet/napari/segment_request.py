"""What another widget may ask of the Segment widget, without importing it.

The Fine-tune widget, once it has saved a model, asks two things: every open
Segment widget lists (and selects) the new model, and *Segment viewport with
it* runs it on what is on screen, into the same Labels layer and mask store as
the Segment widget's own button. It asks through here, so that neither widget
module imports the other (an import-linter contract keeps it so):

- the Segment widgets are found among the viewer's docked widgets as instances
  of the class the plugin's manifest names for its ``segment`` command (napari's
  plugin manager, which is how napari docks it too), and one is docked from the
  manifest when none is open;
- they are driven only through the two public methods of :class:`SegmentTarget`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import napari

    from slide_unet.napari.jobs import Job

__all__ = ["SegmentTarget", "publish_model", "segment_viewport", "segment_widgets"]

#: The plugin's name and its Segment widget's command and menu name in napari.yaml.
PLUGIN = "napari-slide-unet"
SEGMENT_COMMAND = f"{PLUGIN}.segment"
SEGMENT = "Segment"


class SegmentTarget(Protocol):
    """What the Segment widget answers to (all that is asked of it from here)."""

    def refresh_models(self, select: str | None = None) -> None:
        """Re-read the model list and select ``select`` when it is listed."""

    def segment_viewport(self, model: str, image: str | None = None) -> Job | None:
        """Segment what is on screen with ``model`` (on the image layer ``image`` when
        given); the running job, or None after one notification."""


def _segment_class_name() -> str:
    """``module:Class`` of the Segment widget, as the plugin's manifest names it."""
    from npe2 import PluginManager

    return str(PluginManager.instance().get_command(SEGMENT_COMMAND).python_name)


def segment_widgets(viewer: napari.Viewer) -> list[SegmentTarget]:
    """The Segment widgets docked in ``viewer``'s window (none for a headless viewer)."""
    window = getattr(viewer, "window", None)
    docked: Any = getattr(window, "dock_widgets", None) or {}
    name = _segment_class_name()
    return [
        widget
        for widget in docked.values()
        if f"{type(widget).__module__}:{type(widget).__qualname__}" == name
    ]


def publish_model(viewer: napari.Viewer, name: str) -> None:
    """List (and select) model ``name`` in every Segment widget open in ``viewer``."""
    for widget in segment_widgets(viewer):
        widget.refresh_models(select=name)


def segment_viewport(viewer: napari.Viewer, model: str, image: str | None = None) -> Job | None:
    """Segment what is on screen with ``model`` in ``viewer``'s Segment widget (docked
    first when none is open); on the image layer ``image`` when it is one.

    Returns the running job, or None when the Segment widget refused (it says why in
    one notification).
    """
    widgets = segment_widgets(viewer)
    if widgets:
        widget = widgets[0]
    else:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, SEGMENT)
    return widget.segment_viewport(model, image)

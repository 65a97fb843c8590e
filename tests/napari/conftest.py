"""Fixtures of the napari tests: a viewer, a widget docked in it the way napari docks
it (through the plugin's manifest), a slide reopened in a fresh viewer, and the error
notifications the widgets show.

``@pytest.mark.viewer(show=True, size=(width, height))`` asks for a shown window (for
tests that render or measure the layout), resized to ``size``; every other keyword
goes to ``napari.Viewer``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: The plugin's name in napari.yaml.
PLUGIN = "napari-slide-unet"


@pytest.fixture
def viewer(request: pytest.FixtureRequest, make_napari_viewer: Callable[..., Any]) -> Any:
    """A napari viewer, closed after the test (made as ``@pytest.mark.viewer`` says)."""
    marker = request.node.get_closest_marker("viewer")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    size = kwargs.pop("size", None)
    made = make_napari_viewer(**kwargs)
    if size is not None:
        made.window._qt_window.resize(*size)
    return made


@pytest.fixture
def reopened(viewer: Any, make_napari_viewer: Callable[..., Any]) -> Callable[[Path], Any]:
    """``reopened(path)``: close ``viewer`` and open ``path`` with the plugin in a fresh
    viewer, as a user opens the slide again later; returns the layers it opened."""

    def reopen(path: Path) -> Any:
        viewer.close()
        return make_napari_viewer().open(path, plugin=PLUGIN)

    return reopen


@pytest.fixture
def dock(viewer: Any) -> Callable[[str], Any]:
    """``dock(name)``: the plugin widget ``name`` ("Segment", "Correct", ...) docked in
    ``viewer`` as napari's Plugins menu docks it."""

    def add(name: str) -> Any:
        _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        return widget

    return add


@pytest.fixture
def errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The error notifications shown (every user-facing error goes through
    ``slide_unet.napari.jobs.show_error``)."""
    from slide_unet.napari import jobs

    shown: list[str] = []
    monkeypatch.setattr(jobs, "show_error", shown.append)
    return shown

"""Fixtures of the widget tests: a viewer, a widget docked in it the way napari docks
it (through the plugin's manifest), and the error notifications the widgets show."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

#: The plugin's name in napari.yaml.
PLUGIN = "napari-slide-unet"


@pytest.fixture
def viewer(make_napari_viewer: Callable[..., Any]) -> Any:
    """A napari viewer, closed after the test."""
    return make_napari_viewer()


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

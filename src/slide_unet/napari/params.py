"""Parameters defined once: a dataclass gives both a widget's fields and the core's arguments.

Each widget keeps its options in a frozen dataclass whose fields carry their
label, tooltip and widget options in ``field(metadata=...)``. :func:`form`
builds a magicgui :class:`~magicgui.widgets.Container` from it;
:func:`read_form` turns the container's current values back into the
dataclass, whose fields are then the keyword arguments of the core call.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from magicgui.widgets import Container, create_widget

__all__ = ["form", "option_settings", "read_form", "setting"]

T = TypeVar("T")


def setting(
    default: Any, label: str, tooltip: str = "", *, advanced: bool = False, **options: Any
) -> Any:
    """A dataclass field with what its widget needs.

    Parameters
    ----------
    default : value
        The default (also the widget's initial value).
    label, tooltip : str
        What the user reads.
    advanced : bool
        Folded away with the other advanced options.
    **options
        magicgui widget options (``min``, ``max``, ``step``, ``choices``,
        ``widget_type``...).
    """
    return dataclasses.field(
        default=default,
        metadata={"label": label, "tooltip": tooltip, "advanced": advanced, "options": options},
    )


def option_settings(options: type, **overrides: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The form fields of a core options dataclass (such as
    :class:`~slide_unet.core.inference.options.SegmentOptions`), for
    :func:`dataclasses.make_dataclass`: each of its fields whose metadata has a
    ``form`` entry, with that entry's label, tooltip, type and widget options, and
    the form's default (``options.form_value``: 0 for a None the form shows as 0).

    ``overrides`` maps a field name to widget options that replace the core's
    (what only the GUI knows, such as a device list read when the widget docks).
    """
    fields = []
    for f in dataclasses.fields(options):
        spec = f.metadata.get("form")
        if spec is None:
            continue
        widget_options = {**spec.get("options", {}), **overrides.get(f.name, {})}
        field = setting(
            options.form_value(f.name),  # type: ignore[attr-defined]
            spec["label"],
            spec.get("tooltip", f.metadata.get("help", "")),
            advanced=spec.get("advanced", False),
            **widget_options,
        )
        fields.append((f.name, spec.get("type", type(f.default)), field))
    return fields


def form(cls: type, *, advanced: bool | None = None, **values: Any) -> Container:
    """A magicgui container with one widget per field of dataclass ``cls``.

    Parameters
    ----------
    cls : dataclass type
    advanced : bool or None
        Only the advanced fields (True), only the others (False), or all (None).
    **values
        Initial values overriding the defaults.
    """
    hints = typing.get_type_hints(cls)
    widgets = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if advanced is not None and bool(meta.get("advanced")) != advanced:
            continue
        widget = create_widget(
            value=values.get(f.name, f.default),
            annotation=hints[f.name],
            name=f.name,
            label=meta.get("label", f.name.replace("_", " ")),
            options=dict(meta.get("options", {})),
        )
        widget.tooltip = meta.get("tooltip") or None
        widgets.append(widget)
    return Container(widgets=widgets)


def read_form(cls: type[T], *containers: Container) -> T:
    """An instance of dataclass ``cls`` from the current values of ``containers``."""
    values = {}
    for container in containers:
        for widget in container:
            values[widget.name] = widget.value
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names})

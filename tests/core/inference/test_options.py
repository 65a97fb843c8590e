"""SegmentOptions: the one declaration of the segment options."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from slide_unet.core.inference.distributed import segment_distributed
from slide_unet.core.inference.options import SegmentOptions
from slide_unet.core.inference.segment import segment


@pytest.mark.parametrize("function", [segment, segment_distributed])
def test_the_engines_keywords_have_the_options_defaults(function) -> None:
    parameters = inspect.signature(function).parameters
    for field in dataclasses.fields(SegmentOptions):
        assert field.name in parameters, (function.__name__, field.name)
        assert parameters[field.name].default == field.default, (function.__name__, field.name)


def test_from_form_maps_zero_to_none_where_the_form_uses_it() -> None:
    options = SegmentOptions.from_form(tile=0, batch_size=0, threshold=0.0, min_object_um2=0.0)
    assert options.tile is None
    assert options.batch_size is None
    assert options.threshold is None
    assert options.min_object_um2 == 0.0  # a real value: keep everything
    assert SegmentOptions.from_form(tile=256, threshold=0.7).threshold == 0.7


def test_form_value_shows_none_as_zero() -> None:
    assert SegmentOptions.form_value("tile") == 0
    assert SegmentOptions.form_value("threshold", 0.6) == 0.6
    assert SegmentOptions.form_value("device") == "auto"


def test_from_form_refuses_unknown_names() -> None:
    with pytest.raises(TypeError, match="region"):
        SegmentOptions.from_form(region="Viewport")


def test_engine_kwargs_are_every_field_but_the_model() -> None:
    kwargs = SegmentOptions(model="nuclei", tile=256).engine_kwargs()
    assert "model" not in kwargs
    assert kwargs["tile"] == 256
    assert set(kwargs) == {f.name for f in dataclasses.fields(SegmentOptions)} - {"model"}


@pytest.mark.parametrize(
    "function",
    [
        pytest.param("planning:plan_segmentation", id="plan_segmentation"),
        pytest.param("live:LiveSegmenter", id="LiveSegmenter"),
    ],
)
def test_the_options_other_takers_share_their_defaults(function: str) -> None:
    import importlib

    module, name = function.split(":")
    taker = getattr(importlib.import_module(f"slide_unet.core.inference.{module}"), name)
    parameters = inspect.signature(taker).parameters
    shared = [f for f in dataclasses.fields(SegmentOptions) if f.name in parameters]
    assert len(shared) >= 5
    for field in shared:
        assert parameters[field.name].default == field.default, field.name

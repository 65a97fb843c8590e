"""Property-based tests of the mask parsers (issue 15): whatever the input, the
RLE and GeoJSON parsers give the right mask or a MaskError/InputError (one
line), never another exception; and encoding then decoding gives the mask back."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from slide_unet.core.errors import InputError
from slide_unet.core.masks.geojson import geojson_polygons, geojson_to_mask, mask_to_geojson
from slide_unet.core.masks.io import read_mask
from slide_unet.core.masks.rle import rle_decode, rle_encode
from slide_unet.core.masks.rle_csv import read_rle_csv, rle_csv_ids, write_rle_csv

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

small_shapes = st.tuples(st.integers(0, 12), st.integers(0, 12))
binary_masks = small_shapes.flatmap(
    lambda shape: arrays(np.uint8, shape, elements=st.integers(0, 1))
)


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, InputError), repr(exc)
    assert str(exc).strip()
    assert "\n" not in str(exc)


# -- RLE ---------------------------------------------------------------------------------


_SPACE = "[ \\t\\n\\r\\v\\f]"


def _reference_decode(rle: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The Kaggle definition, one number at a time: None where it is invalid.

    Numbers are ASCII digits with an optional sign, between ASCII whitespace
    (not what else ``int`` and ``str.split`` take: ``1_000``, Arabic digits,
    the separators ``\\x1c``-``\\x1f``).
    """
    if not re.fullmatch(rf"{_SPACE}*(?:[+-]?[0-9]+(?:{_SPACE}+[+-]?[0-9]+)*)?{_SPACE}*", rle):
        return None
    values = [int(v) for v in re.split(f"{_SPACE}+", rle.strip(" \t\n\r\v\f")) if v]
    if len(values) % 2:
        return None
    flat = np.zeros(shape[0] * shape[1], np.uint8)
    end = 0
    for start, length in zip(values[0::2], values[1::2], strict=True):
        if start < 1 or length < 1 or start - 1 < end or start - 1 + length > flat.size:
            return None
        flat[start - 1 : start - 1 + length] = 1
        end = start - 1 + length
    return flat.reshape(shape[1], shape[0]).T


@SETTINGS
@given(binary_masks)
def test_rle_round_trips(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle, mask.shape), mask)


RLE_ALPHABET = st.sampled_from([*"0123456789", " ", "  ", "\t", "\n", "+", "-", "1", "٣", "x"])


@SETTINGS
@given(
    st.one_of(
        st.text(),
        st.lists(RLE_ALPHABET, max_size=40).map("".join),
        st.lists(st.integers(-(2**70), 2**70), max_size=12).map(lambda v: " ".join(map(str, v))),
        st.lists(st.integers(-2, 60), max_size=12).map(lambda v: " ".join(map(str, v))),
    ),
    small_shapes,
)
def test_rle_decode_of_any_text_is_right_or_one_input_error(rle: str, shape) -> None:
    expected = _reference_decode(rle, shape)
    if expected is None:
        with pytest.raises(InputError) as caught:
            rle_decode(rle, shape)
        _one_line(caught.value)
    else:
        np.testing.assert_array_equal(rle_decode(rle, shape), expected)


@SETTINGS
@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True), binary_masks))
def test_rle_csv_round_trips(tmp_path: Path, masks: dict[str, np.ndarray]) -> None:
    path = tmp_path / "masks.csv"
    write_rle_csv(path, masks)
    assert rle_csv_ids(path) == list(masks)
    for image_id, mask in masks.items():
        np.testing.assert_array_equal(rle_decode(read_rle_csv(path, image_id), mask.shape), mask)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["a", "slide", ""]))
def test_an_rle_csv_of_any_bytes_reads_or_is_one_input_error(
    tmp_path: Path, data: bytes, image_id: str
) -> None:
    path = tmp_path / "any.csv"
    path.write_bytes(data)
    for read in (
        lambda: rle_csv_ids(path),
        lambda: read_rle_csv(path, image_id),
        lambda: read_mask(path, image_id=image_id or None, shape=(7, 9)),
    ):
        try:
            read()
        except InputError as exc:
            _one_line(exc)


@SETTINGS
@given(
    st.lists(st.text(st.sampled_from([*'0123456789 ,"-\r\nidpreictngx']), max_size=30), max_size=6)
)
def test_an_rle_csv_of_csv_like_text_reads_or_is_one_input_error(tmp_path, rows) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,predicted\n" + "\n".join(rows), encoding="utf-8")
    try:
        ids = rle_csv_ids(path)
        for image_id in ids:
            mask = read_mask(path, image_id=image_id, shape=(5, 6))
            assert mask.shape == (5, 6)
    except InputError as exc:
        _one_line(exc)


# -- GeoJSON -----------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(-50, 80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**80), 2**80),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
positions = st.lists(numbers, min_size=0, max_size=3) | json_values
rings = st.lists(positions, max_size=6) | json_values
geometries = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "GeometryCollection", 3]),
        "coordinates": st.lists(rings, max_size=3)
        | st.lists(st.lists(rings, max_size=2), max_size=2)
        | json_values,
    },
    optional={"geometries": st.lists(json_values, max_size=2)},
)
features = st.fixed_dictionaries(
    {"type": st.just("Feature"), "geometry": geometries | json_values},
    optional={
        "id": json_values,
        "properties": st.fixed_dictionaries({}, optional={"name": json_values}) | json_values,
    },
)
documents = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("FeatureCollection"), "features": st.lists(features, max_size=3)}
    ),
    features,
    geometries,
    json_values,
)


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= 2.0**32
    except (TypeError, ValueError, OverflowError):
        return False


@SETTINGS
@given(documents)
def test_geojson_of_any_structure_draws_or_is_one_mask_error(document) -> None:
    try:
        polygons = geojson_polygons(document)
        mask = geojson_to_mask(document, (16, 16))
    except InputError as exc:
        _one_line(exc)
        return
    assert mask.shape == (16, 16)
    assert set(np.unique(mask)) <= {0, 1}
    for polygon in polygons:  # every vertex kept is a finite pixel position
        for ring in polygon:
            assert np.isfinite(ring).all()
            assert ring.shape[1] == 2


@SETTINGS
@given(st.lists(st.tuples(numbers, numbers), min_size=3, max_size=8))
def test_a_polygon_draws_iff_its_vertices_are_finite_positions(points) -> None:
    document = {
        "type": "Feature",
        "id": "f-1",
        "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in points]]},
    }
    if all(_finite(x) and _finite(y) for x, y in points):
        assert geojson_to_mask(document, (24, 24)).shape == (24, 24)
    else:
        with pytest.raises(InputError, match=r"feature 0 \(id 'f-1'\): vertex \d") as caught:
            geojson_to_mask(document, (24, 24))
        _one_line(caught.value)


@SETTINGS
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_a_geojson_file_of_any_bytes_reads_or_is_one_input_error(tmp_path, data) -> None:
    path = tmp_path / "any.geojson"
    path.write_bytes(data)
    try:
        mask = read_mask(path, shape=(8, 8))
    except InputError as exc:
        _one_line(exc)
        return
    assert mask.shape == (8, 8)


@SETTINGS
@given(binary_masks)
def test_geojson_round_trips(mask: np.ndarray) -> None:
    assume(min(mask.shape) > 0)
    document = json.loads(json.dumps(mask_to_geojson(mask)))
    np.testing.assert_array_equal(geojson_to_mask(document, mask.shape), mask)


@pytest.mark.parametrize("depth", [50, 100_000])
def test_deeply_nested_geojson_is_one_mask_error(tmp_path, depth) -> None:
    path = tmp_path / "deep.geojson"
    path.write_text('{"type": "Feature", "geometry": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(InputError) as caught:
        read_mask(path, shape=(8, 8))
    _one_line(caught.value)
    collection: dict = {"type": "Polygon", "coordinates": []}
    for _ in range(depth if depth < 1000 else 200):
        collection = {"type": "GeometryCollection", "geometries": [collection]}
    with pytest.raises(InputError, match="nested"):
        geojson_polygons(collection)

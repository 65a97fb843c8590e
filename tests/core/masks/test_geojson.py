"""GeoJSON polygons in and out: exact pixel-edge outlines, QuPath's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from slide_unet.core.masks import geojson
from slide_unet.core.masks.geojson import (
    geojson_polygons,
    geojson_to_dask,
    geojson_to_mask,
    iter_mask_features,
    mask_to_geojson,
    read_geojson,
    write_geojson,
)

ndimage = pytest.importorskip("scipy.ndimage")  # only the tests need scipy


def _area2(ring: list[list[int]]) -> int:
    x = np.array([p[0] for p in ring[:-1]])
    y = np.array([p[1] for p in ring[:-1]])
    return int(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _polygons(feature: dict) -> list:
    geometry = feature["geometry"]
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def _objects(mask: np.ndarray) -> int:
    """8-connected objects of equal non-zero values (what one Feature is)."""
    full = np.ones((3, 3), dtype=bool)
    return sum(ndimage.label(mask == v, structure=full)[1] for v in np.unique(mask) if v)


def _check_valid(fc: dict, mask: np.ndarray) -> None:
    """Each feature one object; each polygon a 4-connected part with simple rings."""
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == _objects(mask)
    height, width = mask.shape
    for feature in fc["features"]:
        polygons = _polygons(feature)
        assert feature["geometry"]["type"] == ("Polygon" if len(polygons) == 1 else "MultiPolygon")
        pixels = geojson_to_mask(feature, mask.shape)
        assert ndimage.label(pixels, structure=np.ones((3, 3)))[1] == 1
        for polygon in polygons:
            assert _area2(polygon[0]) > 0  # exterior first, counter-clockwise (RFC 7946)
            assert all(_area2(hole) < 0 for hole in polygon[1:])
            for ring in polygon:
                assert ring[0] == ring[-1]
                corners = [tuple(p) for p in ring[:-1]]
                assert len(set(corners)) == len(corners), "a ring passes a corner twice"
                assert all(0 <= x <= width and 0 <= y <= height for x, y in corners)
                # Collinear points merged: edges alternate horizontal and vertical.
                closed = [*corners, corners[0], corners[1]]
                for a, b, c in zip(closed, closed[1:], closed[2:], strict=False):
                    assert (a[0] == b[0]) != (b[0] == c[0])
            alone = geojson_to_mask({"type": "Polygon", "coordinates": polygon}, mask.shape)
            assert ndimage.label(alone)[1] == 1  # 4-connected


# -- outlines ----------------------------------------------------------------------


def test_square_outline_runs_along_pixel_corners() -> None:
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[1:3, 2:4] = 1
    fc = mask_to_geojson(mask)
    (feature,) = fc["features"]
    assert feature["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[2, 1], [4, 1], [4, 3], [2, 3], [2, 1]]],
    }


def test_feature_properties_are_qupaths() -> None:
    fc = mask_to_geojson(np.ones((2, 2), np.uint8), classification="Nucleus", color=(0, 0, 255))
    props = fc["features"][0]["properties"]
    assert props == {
        "objectType": "annotation",
        "classification": {"name": "Nucleus", "color": [0, 0, 255]},
    }
    bare = mask_to_geojson(np.ones((2, 2), bool), classification=None, object_type="detection")
    assert bare["features"][0]["properties"] == {"objectType": "detection"}


def test_collinear_points_are_merged() -> None:
    fc = mask_to_geojson(np.ones((1, 50), dtype=np.uint8))
    assert fc["features"][0]["geometry"]["coordinates"] == [
        [[0, 0], [50, 0], [50, 1], [0, 1], [0, 0]]
    ]


def test_hole_is_kept_as_a_clockwise_interior_ring() -> None:
    mask = np.ones((5, 5), dtype=np.uint8)
    mask[1:4, 1:4] = 0
    mask[2, 2] = 1  # an island in the hole: its own object
    fc = mask_to_geojson(mask)
    _check_valid(fc, mask)
    ring_counts = sorted(len(f["geometry"]["coordinates"]) for f in fc["features"])
    assert ring_counts == [1, 2]
    np.testing.assert_array_equal(geojson_to_mask(fc, mask.shape), mask)


def test_pixels_touching_at_a_corner_are_one_object_of_two_polygons() -> None:
    mask = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    fc = mask_to_geojson(mask)
    (feature,) = fc["features"]
    assert feature["geometry"]["type"] == "MultiPolygon"
    assert len(feature["geometry"]["coordinates"]) == 2
    np.testing.assert_array_equal(geojson_to_mask(fc, mask.shape), mask)


def test_hole_touching_the_outline_at_a_corner_is_a_valid_interior_ring() -> None:
    # The pocket at row 1, column 1 reaches the outside only through the corner
    # it shares with the background pixel at row 2, column 2, where the ring of
    # object pixels around it also touches itself: an exterior and a hole that
    # meet at that corner, not one ring through it twice.
    mask = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 0, 1],
            [0, 0, 1, 1],
        ],
        dtype=np.uint8,
    )
    fc = mask_to_geojson(mask)
    _check_valid(fc, mask)
    np.testing.assert_array_equal(geojson_to_mask(fc, mask.shape), mask)


def test_touching_instances_stay_separate_features() -> None:
    labels = np.array([[1, 1, 2], [1, 2, 2]], dtype=np.uint16)
    fc = mask_to_geojson(labels)
    assert len(fc["features"]) == 2
    np.testing.assert_array_equal(geojson_to_mask(fc, labels.shape), labels != 0)


def test_empty_mask_gives_an_empty_collection() -> None:
    empty = mask_to_geojson(np.zeros((3, 3), np.uint8))
    assert empty == {"type": "FeatureCollection", "features": []}


def test_objects_cut_by_bands_come_out_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    mask = (rng.random((60, 70)) < 0.45).astype(np.uint8)
    mask[:, 30:34] = 0
    whole = mask_to_geojson(mask)["features"]
    monkeypatch.setattr(geojson, "COLUMN_GAP", 1)
    for rows in (2, 7, 64):
        banded = list(iter_mask_features(mask, band_rows=rows))
        key = lambda f: json.dumps(f, sort_keys=True)  # noqa: E731
        assert sorted(map(key, banded)) == sorted(map(key, whole))


def test_features_report_each_band_once_its_objects_are_out() -> None:
    mask = np.zeros((35, 20), np.uint8)
    mask[5:25, 2:8] = 1  # crosses two band edges: carried over, emitted in band 3
    mask[31:34, 10:15] = 2
    seen: list[tuple[int, int, int]] = []
    features = []
    for feature in iter_mask_features(
        mask, band_rows=10, progress=lambda done, total: seen.append((done, total, len(features)))
    ):
        features.append(feature)
    assert seen == [(1, 4, 0), (2, 4, 0), (3, 4, 1), (4, 4, 2)]
    assert features == mask_to_geojson(mask)["features"]


mask_strategy = st.integers(1, 14).flatmap(
    lambda h: st.integers(1, 14).flatmap(
        lambda w: arrays(np.uint8, (h, w), elements=st.integers(0, 3))
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask=mask_strategy, binary=st.booleans(), rows=st.integers(2, 6))
def test_mask_to_geojson_round_trips_exactly(mask: np.ndarray, binary: bool, rows: int) -> None:
    if binary:
        mask = (mask > 1).astype(np.uint8)
    fc = mask_to_geojson(mask)
    _check_valid(fc, mask)
    np.testing.assert_array_equal(geojson_to_mask(fc, mask.shape), (mask != 0).astype(np.uint8))
    banded = {
        "type": "FeatureCollection",
        "features": list(iter_mask_features(mask, band_rows=rows)),
    }
    assert len(banded["features"]) == len(fc["features"])
    np.testing.assert_array_equal(geojson_to_mask(banded, mask.shape), mask != 0)


# -- rasterising what others wrote -------------------------------------------------------


def test_float_polygon_fills_the_pixels_whose_centres_are_inside() -> None:
    square = {"type": "Polygon", "coordinates": [[[0.5, 0.5], [3.5, 0.5], [3.5, 2.5], [0.5, 2.5]]]}
    expected = np.zeros((4, 5), dtype=np.uint8)
    expected[0:2, 0:3] = 1  # centres 0.5..2.5 in x, 0.5..1.5 in y
    np.testing.assert_array_equal(geojson_to_mask(square, (4, 5)), expected)


def test_triangle_matches_the_centre_test() -> None:
    triangle = [[1.2, 0.7], [9.6, 2.1], [3.3, 8.8]]
    mask = geojson_to_mask({"type": "Polygon", "coordinates": [triangle]}, (10, 10))
    (x0, y0), (x1, y1), (x2, y2) = triangle
    yy, xx = np.mgrid[0:10, 0:10] + 0.5

    def side(ax: float, ay: float, bx: float, by: float) -> np.ndarray:
        return (bx - ax) * (yy - ay) - (by - ay) * (xx - ax)

    inside = (side(x0, y0, x1, y1) > 0) & (side(x1, y1, x2, y2) > 0) & (side(x2, y2, x0, y0) > 0)
    np.testing.assert_array_equal(mask, inside)


def test_qupath_inputs_are_accepted() -> None:
    feature = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]]},
        "properties": {"classification": {"name": "Glomerulus"}},
    }
    other = {
        "type": "Feature",
        "geometry": {"type": "MultiPolygon", "coordinates": [[[[3, 3], [4, 3], [4, 4], [3, 3]]]]},
        "properties": {"classification": {"name": "Tissue"}},
    }
    expected = np.zeros((5, 5), dtype=np.uint8)
    expected[0:2, 0:2] = 1
    # QuPath before 0.3 exported a bare list; a single Feature; a GeometryCollection.
    for data in (
        [feature],
        feature,
        {"type": "GeometryCollection", "geometries": [feature["geometry"]]},
    ):
        np.testing.assert_array_equal(geojson_to_mask(data, (5, 5)), expected)
    both = {"type": "FeatureCollection", "features": [feature, other]}
    assert geojson_to_mask(both, (5, 5)).sum() == 4 + 1
    np.testing.assert_array_equal(
        geojson_to_mask(both, (5, 5), classification="Glomerulus"), expected
    )
    assert len(geojson_polygons(both, classification="Tissue")) == 1


def test_geojson_to_dask_equals_the_eager_version() -> None:
    rng = np.random.default_rng(5)
    mask = (rng.random((37, 53)) < 0.3).astype(np.uint8)
    fc = mask_to_geojson(mask)
    lazy = geojson_to_dask(fc, mask.shape, chunk=16)
    assert lazy.chunksize == (16, 16)
    np.testing.assert_array_equal(lazy.compute(), mask)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "Point", "coordinates": [1, 2]}, "Point has no area"),
        ({"type": "FeatureCollection", "features": [{"type": "Polygon"}]}, "expected a Feature"),
        ({"type": "FeatureCollection"}, "no 'features' list"),
        (42, "must be a FeatureCollection"),
        ({"coordinates": []}, "must be a FeatureCollection"),
        (
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
            },
            "LineString has no area",
        ),
        ({"type": "Polygon", "coordinates": [["a", "b"]]}, "lists of \\[x, y\\] positions"),
    ],
)
def test_bad_geojson_gets_one_clear_error(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        geojson_to_mask(data, (4, 4))


def test_bad_shape_and_bad_mask_are_refused() -> None:
    with pytest.raises(ValueError, match="shape must be"):
        geojson_to_mask({"type": "FeatureCollection", "features": []}, (0, 3))
    with pytest.raises(ValueError, match="2-D"):
        mask_to_geojson(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="integers or booleans"):
        mask_to_geojson(np.zeros((2, 2), dtype=np.float32))


# -- files -------------------------------------------------------------------------------


def test_write_geojson_reads_back(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:8, 3:9] = 1
    mask[4:6, 5:7] = 0
    mask[15:, 25:] = 1
    path = write_geojson(mask, tmp_path / "objects.geojson", classification="Glomerulus")
    data = read_geojson(path)
    assert data == mask_to_geojson(mask)
    np.testing.assert_array_equal(geojson_to_mask(data, mask.shape), mask)


def test_write_geojson_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "objects.geojson"
    path.write_text("old")
    calls = []

    def failing_dumps(obj: object, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return json.JSONEncoder(**kwargs).encode(obj)

    monkeypatch.setattr(geojson.json, "dumps", failing_dumps)
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[1, 1] = mask[5, 5] = mask[8, 8] = 1
    with pytest.raises(RuntimeError, match="disk full"):
        write_geojson(mask, path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["objects.geojson"]


def test_read_geojson_refuses_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(ValueError, match="not valid GeoJSON"):
        read_geojson(path)


# -- real masks ---------------------------------------------------------------------------


def test_real_nuclei_masks_round_trip_through_geojson(shared_data: Path) -> None:
    from PIL import Image

    monuseg = sorted((shared_data / "nuclei/monuseg_train/masks").glob("*.png"))[0]
    mask = (np.asarray(Image.open(monuseg).convert("L")) != 0).astype(np.uint8)
    fc = mask_to_geojson(mask, classification="Nucleus")
    assert len(fc["features"]) == ndimage.label(mask, structure=np.ones((3, 3)))[1]
    np.testing.assert_array_equal(geojson_to_mask(fc, mask.shape), mask)

    labels_path = sorted((shared_data / "nuclei/dsb2018/masks").glob("*.png"))[0]
    labels = np.asarray(Image.open(labels_path))
    fc = mask_to_geojson(labels, classification="Nucleus")
    assert len(fc["features"]) == _objects(labels)
    np.testing.assert_array_equal(geojson_to_mask(fc, labels.shape), labels != 0)

"""The QuPath round trip: our GeoJSON with measurements and object types, and
QuPath's own exports (written by hand here, following its documented
structure) read back into masks, by class."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from slide_unet.core.errors import InputError
from slide_unet.core.masks.geojson import (
    geojson_classes,
    geojson_file_classes,
    geojson_to_dask,
    geojson_to_mask,
    mask_to_geojson,
    write_geojson,
)
from slide_unet.core.masks.io import export_mask, read_mask
from slide_unet.core.objects.measure import measure
from slide_unet.core.objects.qupath import feature_measurements

SHAPE = (20, 24)


def _square(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """A ring along pixel edges, clockwise on screen, as QuPath writes them."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def qupath_export() -> dict:
    """A FeatureCollection as QuPath 0.4+ exports it (File > Export objects as GeoJSON)."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "3f0c5a1e-8a4b-4f43-9d7e-2b1c0d6e9a10",
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [
                        # a 8 x 8 square with a 3 x 3 hole, and a second part apart
                        [_square(1, 1, 9, 9), _square(3, 3, 6, 6)[::-1]],
                        [_square(12, 1, 15, 4)],
                    ],
                },
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Glomerulus", "color": [255, 0, 0]},
                    "isLocked": False,
                },
            },
            {
                "type": "Feature",
                "id": "9b2e7c44-1d3a-4e8f-a0b6-5c7d8e9f0a21",
                "geometry": {"type": "Polygon", "coordinates": [_square(1, 12, 6, 16)]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tubule", "color": [0, 200, 0]},
                    "isLocked": False,
                },
            },
            {
                "type": "Feature",
                "id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
                "geometry": {"type": "Polygon", "coordinates": [_square(18, 14, 22, 18)]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": "Glomerulus", "color": [255, 0, 0]},
                    "measurements": {"Area px^2": 16.0},
                },
            },
        ],
    }


def expected(*names: str) -> np.ndarray:
    """The pixels of the features of these classes in :func:`qupath_export`."""
    out = np.zeros(SHAPE, dtype=np.uint8)
    if "Glomerulus" in names:
        out[1:9, 1:9] = 1
        out[3:6, 3:6] = 0  # the hole
        out[1:4, 12:15] = 1
        out[14:18, 18:22] = 1  # the detection
    if "Tubule" in names:
        out[12:16, 1:6] = 1
    return out


def test_qupath_export_by_class_holes_empty() -> None:
    fc = qupath_export()
    glomeruli = geojson_to_mask(fc, SHAPE, classification="Glomerulus")
    np.testing.assert_array_equal(glomeruli, expected("Glomerulus"))
    assert glomeruli[4, 4] == 0
    assert glomeruli[2, 2] == 1
    np.testing.assert_array_equal(
        geojson_to_mask(fc, SHAPE, classification="Tubule"), expected("Tubule")
    )
    np.testing.assert_array_equal(geojson_to_mask(fc, SHAPE), expected("Glomerulus", "Tubule"))


def test_qupath_export_object_type_filter() -> None:
    annotations = geojson_to_mask(qupath_export(), SHAPE, object_type="annotation")
    assert annotations[14:18, 18:22].sum() == 0
    detections = geojson_to_mask(qupath_export(), SHAPE, object_type="detection")
    assert detections.sum() == 16


def test_label_mask_one_value_per_sorted_class() -> None:
    fc = qupath_export()
    classes = geojson_classes(fc)
    assert classes == ["Glomerulus", "Tubule"]
    labels = geojson_to_mask(fc, SHAPE, classes=classes)
    want = expected("Glomerulus") + 2 * expected("Tubule")
    np.testing.assert_array_equal(labels, want)
    lazy = geojson_to_dask(fc, SHAPE, classes=classes, chunk=7).compute()
    np.testing.assert_array_equal(lazy, want)


def test_read_mask_file_by_class_and_labels(tmp_path) -> None:
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath_export(), indent=2))
    np.testing.assert_array_equal(
        read_mask(path, shape=SHAPE, classification="Tubule"), expected("Tubule")
    )
    labels = read_mask(path, shape=SHAPE)  # two classes: a label per class
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels == 1, expected("Glomerulus") == 1)
    with pytest.raises(
        InputError, match=r"no feature of class 'Nope' \(classes: Glomerulus, Tubule\)"
    ):
        read_mask(path, shape=SHAPE, classification="Nope")


def test_file_classes_list_the_classes_of_a_qupath_export(tmp_path) -> None:
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath_export()))
    assert geojson_file_classes(path) == ["Glomerulus", "Tubule"]
    assert geojson_file_classes(path, object_type="detection") == ["Glomerulus"]


def test_old_qupath_style_and_unclassified(tmp_path) -> None:
    # QuPath before 0.3: a bare list of features, colorRGB, measurements as a list
    old = [
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {"type": "Polygon", "coordinates": [_square(2, 2, 5, 5)]},
            "properties": {
                "classification": {"name": "Glomerulus", "colorRGB": -65536},
                "isLocked": False,
                "measurements": [],
            },
        },
        {
            "type": "Feature",
            "id": "PathAnnotationObject",
            "geometry": {"type": "Polygon", "coordinates": [_square(10, 10, 12, 12)]},
            "properties": {"isLocked": False, "measurements": []},
        },
        {  # a derived class (QuPath 0.4+ writes its parts as "names")
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [_square(15, 2, 17, 4)]},
            "properties": {
                "objectType": "detection",
                "classification": {"names": ["Tumor", "Positive"], "color": [200, 0, 0]},
            },
        },
    ]
    assert geojson_classes(old) == ["Glomerulus", "Tumor: Positive", "Unclassified"]
    glomeruli = geojson_to_mask(old, SHAPE, classification="Glomerulus")
    assert glomeruli.sum() == 9
    assert glomeruli[2:5, 2:5].all()
    unclassified = geojson_to_mask(old, SHAPE, classification="Unclassified")
    assert unclassified.sum() == 4
    assert unclassified[10:12, 10:12].all()
    labels = geojson_to_mask(old, SHAPE, classes=geojson_classes(old))
    assert labels[3, 3] == 1
    assert labels[3, 16] == 2
    assert labels[11, 11] == 3


def _blobs(shape=(200, 260), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = (ndimage.gaussian_filter(rng.random(shape), 4) > 0.52).astype(np.uint8)
    mask[50:90, 50:90] = 1
    mask[60:70, 60:70] = 0  # a hole
    return mask


def test_round_trip_with_measurements_equals_mask(tmp_path) -> None:
    mask = _blobs()
    path = write_geojson(
        mask, tmp_path / "m.geojson", measurements=feature_measurements(mask, mpp=0.5)
    )
    fc = json.loads(path.read_text(encoding="utf-8"))
    np.testing.assert_array_equal(geojson_to_mask(fc, mask.shape), mask)
    table = measure(mask, mpp=0.5)
    assert len(fc["features"]) == len(table)
    by_area = sorted(f["properties"]["measurements"]["Area µm^2"] for f in fc["features"])
    assert by_area == sorted(table["area_um2"].tolist())
    for feature in fc["features"]:
        values = feature["properties"]["measurements"]
        assert set(values) == {
            "Centroid X µm",
            "Centroid Y µm",
            "Area µm^2",
            "Perimeter µm",
            "Equivalent diameter µm",
            "Solidity",
        }
        assert all(isinstance(v, float) for v in values.values())


def test_measurements_match_each_objects_row() -> None:
    mask = np.zeros((12, 14), dtype=np.uint8)
    mask[1:4, 1:5] = 1  # 12 pixels
    mask[6:11, 8:10] = 1  # 10 pixels
    fc = mask_to_geojson(mask, measurements=feature_measurements(mask))
    table = measure(mask)
    for feature in fc["features"]:
        values = feature["properties"]["measurements"]
        xs = [p[0] for p in feature["geometry"]["coordinates"][0]]
        row = int(np.flatnonzero(table["bbox_x0_px"] == min(xs))[0])
        assert values["Area px^2"] == table["area_px2"][row]
        assert values["Perimeter px"] == pytest.approx(table["perimeter_px"][row])
        # QuPath's coordinates: pixel corners at whole numbers, so half a pixel more
        assert values["Centroid X px"] == table["centroid_x_px"][row] + 0.5
        assert values["Centroid Y px"] == table["centroid_y_px"][row] + 0.5


def test_touching_instances_measured_alone() -> None:
    labels = np.zeros((10, 10), dtype=np.uint16)
    labels[1:4, 1:4] = 1
    labels[1:4, 4:7] = 2  # touches 1: one object of the table, two features
    measured = feature_measurements(labels)
    fc = mask_to_geojson(labels, measurements=measured)
    areas = [f["properties"]["measurements"]["Area px^2"] for f in fc["features"]]
    assert areas == [9.0, 9.0]
    assert measured.measured_alone == 2
    centroids = sorted(f["properties"]["measurements"]["Centroid X px"] for f in fc["features"])
    assert centroids == [2.5, 5.5]


def test_detection_object_type_and_bad_type() -> None:
    mask = _blobs((40, 40))
    fc = mask_to_geojson(mask, object_type="detection")
    assert {f["properties"]["objectType"] for f in fc["features"]} == {"detection"}
    with pytest.raises(InputError, match="object_type must be one of annotation, detection"):
        mask_to_geojson(mask, object_type="cell")


def test_export_mask_measures_for_geojson(tmp_path) -> None:
    from slide_unet.core.masks.io import write_mask

    mask = _blobs((60, 60))
    src = write_mask(mask, tmp_path / "m.ome.tif", mpp=0.25)
    out = export_mask(
        src,
        tmp_path / "m.geojson",
        object_type="detection",
        measure_objects=lambda m, mpp: feature_measurements(m, mpp=mpp),
    )
    fc = json.loads(out.read_text(encoding="utf-8"))
    first = fc["features"][0]["properties"]
    assert first["objectType"] == "detection"
    assert "Area µm^2" in first["measurements"]


def test_a_qupath_export_beside_an_image_is_a_training_pair(tmp_path) -> None:
    """Fine-tune and train read masks folders: a QuPath GeoJSON named like its image is
    its mask, drawn at the image's size (any class is foreground)."""
    from PIL import Image

    from slide_unet.core.training.image_pairs import find_pairs, read_pair

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((*SHAPE, 3), 200, np.uint8)).save(tmp_path / "images" / "t1.png")
    (tmp_path / "masks" / "t1.geojson").write_text(json.dumps(qupath_export()))
    pairs, unpaired = find_pairs(tmp_path / "images", tmp_path / "masks")
    assert [p.stem for p in pairs] == ["t1"]
    assert unpaired == []
    image, mask, _ = read_pair(pairs[0])
    assert image.shape[:2] == SHAPE
    np.testing.assert_array_equal(mask, expected("Glomerulus", "Tubule") != 0)

"""The npe2 writers, through napari's own save: each format reads back pixel for pixel."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from slide_unet.core.masks.io import mask_suffix, read_mask
from slide_unet.core.masks.pyramids import halve_max, read_ome_zarr
from slide_unet.core.masks.rle_csv import rle_csv_ids
from slide_unet.core.slide.slide import open_slide
from slide_unet.napari import writers as napari_writers

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MASK = ROOT / "sample_data" / "kidney_pas_mask.ome.tif"
SAMPLE_MPP = 0.5
PLUGIN = "napari-slide-unet"
EXTENSIONS = [".ome.tif", ".ome.tiff", ".tif", ".tiff", ".csv", ".geojson", ".zarr", ".ome.zarr"]
#: Formats that record the pixel size.
WITH_MPP = {".ome.tif", ".ome.tiff", ".tif", ".tiff", ".zarr", ".ome.zarr", ".png"}


@pytest.fixture(scope="module")
def sample_mask() -> np.ndarray:
    return np.asarray(read_mask(SAMPLE_MASK))


def read_back(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A written mask as numpy (RLE and GeoJSON need the image's shape)."""
    return np.asarray(read_mask(path, shape=shape[:2]))


def stored_mpp(path: Path) -> float | None:
    """The pixel size a mask file records."""
    if mask_suffix(path) in (".zarr", ".ome.zarr"):
        return read_ome_zarr(path)[1]
    with open_slide(path) as slide:
        return slide.mpp


def save(viewer, path: Path) -> list[str]:
    """Save the selected layer with the plugin, as File > Save would."""
    return viewer.layers.save(str(path), selected=True, plugin=PLUGIN)


@pytest.mark.gui
@pytest.mark.parametrize("extension", EXTENSIONS)
def test_napari_saves_a_labels_layer_that_reads_back_pixel_for_pixel(
    viewer, tmp_path, sample_mask, extension
):
    layer = viewer.add_labels(sample_mask, name="kidney_pas", scale=(SAMPLE_MPP, SAMPLE_MPP))
    viewer.layers.selection = {layer}
    path = tmp_path / f"kidney_pas{extension}"

    written = save(viewer, path)

    assert written == [str(path)]
    np.testing.assert_array_equal(read_back(path, sample_mask.shape), sample_mask)
    if extension in WITH_MPP:
        assert stored_mpp(path) == pytest.approx(SAMPLE_MPP)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left over


@pytest.mark.gui
def test_rle_csv_row_is_named_by_the_layers_rle_id_else_the_file_stem(
    viewer, tmp_path, sample_mask
):
    plain = viewer.add_labels(sample_mask, name="plain")
    named = viewer.add_labels(sample_mask, name="named", metadata={"rle_id": "aaa0f1"})

    viewer.layers.selection = {plain}
    save(viewer, tmp_path / "kidney_pas.csv")
    viewer.layers.selection = {named}
    save(viewer, tmp_path / "other.csv")

    assert rle_csv_ids(tmp_path / "kidney_pas.csv") == ["kidney_pas"]
    assert rle_csv_ids(tmp_path / "other.csv") == ["aaa0f1"]
    got = read_mask(tmp_path / "other.csv", image_id="aaa0f1", shape=sample_mask.shape)
    np.testing.assert_array_equal(got, sample_mask)


@pytest.mark.gui
@pytest.mark.parametrize("extension", [".ome.tif", ".ome.zarr", ".csv", ".geojson"])
def test_a_multiscale_labels_layer_writes_its_full_resolution_level(
    viewer, tmp_path, sample_mask, extension
):
    levels = [sample_mask, halve_max(sample_mask), halve_max(halve_max(sample_mask))]
    layer = viewer.add_labels(levels, multiscale=True, metadata={"mpp": SAMPLE_MPP})
    viewer.layers.selection = {layer}
    path = tmp_path / f"pyramid{extension}"

    assert save(viewer, path) == [str(path)]
    np.testing.assert_array_equal(read_back(path, sample_mask.shape), sample_mask)
    if extension in WITH_MPP:
        assert stored_mpp(path) == pytest.approx(SAMPLE_MPP)


@pytest.mark.gui
@pytest.mark.parametrize("extension", [".ome.tif", ".zarr"])
def test_instance_labels_keep_their_ids(viewer, tmp_path, sample_mask, extension):
    labels, count = ndimage.label(sample_mask, structure=np.ones((3, 3)))
    assert count > 1
    viewer.layers.selection = {viewer.add_labels(labels.astype(np.uint16))}
    path = tmp_path / f"instances{extension}"

    save(viewer, path)

    np.testing.assert_array_equal(read_back(path, labels.shape), labels)


@pytest.mark.gui
def test_a_layer_that_is_not_one_plane_writes_nothing(viewer, tmp_path):
    viewer.layers.selection = {viewer.add_labels(np.zeros((3, 32, 32), np.uint8))}
    path = tmp_path / "stack.ome.tif"

    # napari turns a writer's ValueError into a warning that the plugin wrote nothing.
    with warnings.catch_warnings(), contextlib.suppress(ValueError):
        warnings.simplefilter("ignore")
        save(viewer, path)

    assert list(tmp_path.iterdir()) == []


# -- the writer functions as napari calls them ---------------------------------------


def test_writer_refuses_an_extension_it_was_not_chosen_for(tmp_path):
    with pytest.raises(ValueError, match=r"writes \.ome\.tif.*not \.csv"):
        napari_writers.write_ome_tiff(str(tmp_path / "mask.csv"), np.ones((4, 4), np.uint8), {})
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_several_planes_and_leaves_the_old_file(tmp_path):
    path = tmp_path / "mask.csv"
    napari_writers.write_rle_csv(str(path), np.ones((4, 4), np.uint8), {})
    before = path.read_bytes()

    with pytest.raises(ValueError, match=r"one 2-D plane.*\(2, 4, 4\)"):
        napari_writers.write_rle_csv(str(path), np.ones((2, 4, 4), np.uint8), {})

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mask.csv"]


def test_writer_refuses_to_replace_a_folder(tmp_path):
    folder = tmp_path / "results.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")

    with pytest.raises(ValueError, match="is a folder"):
        napari_writers.write_ome_zarr(str(folder), np.ones((4, 4), np.uint8), {})

    assert (folder / "notes.txt").read_text() == "keep me"


def test_writer_replaces_an_ome_zarr_store(tmp_path):
    path = tmp_path / "mask.ome.zarr"
    first = np.zeros((8, 8), np.uint8)
    second = np.eye(8, dtype=np.uint8)
    napari_writers.write_ome_zarr(str(path), first, {})
    napari_writers.write_ome_zarr(str(path), second, {})
    np.testing.assert_array_equal(read_mask(path), second)


def test_writer_reads_a_squeezable_leading_axis_as_one_plane(tmp_path):
    mask = np.eye(6, dtype=np.uint8)[None]
    path = tmp_path / "mask.tif"
    napari_writers.write_ome_tiff(str(path), mask, {})
    np.testing.assert_array_equal(read_mask(path), mask[0])


@pytest.mark.parametrize(
    ("metadata", "scale", "units", "expected"),
    [
        ({"mpp": 0.25}, (0.5, 0.5), None, 0.25),  # the layer's own record wins
        ({}, (0.5, 0.5), None, 0.5),  # the plugin's layers are in microns
        ({}, (0.5, 0.5), ("pixel", "pixel"), 0.5),  # napari's default units
        ({}, (1.0, 1.0), ("pixel", "pixel"), None),  # napari's default scale says nothing
        ({}, (1.0, 1.0), ("micrometer", "micrometer"), 1.0),  # ...unless it has a unit
        ({}, (0.0005, 0.0005), ("mm", "mm"), 0.5),
        ({}, (250.0, 250.0), ("nanometer", "nanometer"), 0.25),
        ({}, (2.0, 2.0), ("second", "second"), None),  # not a length
        (None, None, None, None),
    ],
)
def test_pixel_size_from_metadata_else_scale_in_microns(metadata, scale, units, expected):
    got = napari_writers.pixel_size(metadata, scale, units)
    assert got == (pytest.approx(expected) if expected else None)

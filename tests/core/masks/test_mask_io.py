"""Mask files in and out: every format round trips, pyramids, pixel size, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from slide_unet import open_slide
from slide_unet.core.errors import Cancelled
from slide_unet.core.masks import io as mask_io
from slide_unet.core.masks import rle_csv
from slide_unet.core.masks.io import (
    MASK_SUFFIXES,
    check_same_shape,
    export_mask,
    read_mask,
    write_mask,
)
from slide_unet.core.masks.pyramids import halve_max, level_count

ALL_SUFFIXES = [".ome.tif", ".tif", ".ome.zarr", ".zarr", ".png", ".csv", ".geojson"]
LABEL_SUFFIXES = [".ome.tif", ".zarr", ".png"]  # those that keep instance ids


def binary_mask(height: int = 300, width: int = 410, seed: int = 0) -> np.ndarray:
    """Blobs with holes, objects at the border, a single pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(12):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(3, 40)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1
    mask[(yy - 150) ** 2 + (xx - 200) ** 2 < 10**2] = 0
    mask[0, :7] = 1
    mask[-1, -1] = 1
    mask[100, 5] = 1
    return mask


def label_mask() -> np.ndarray:
    labels = np.zeros((200, 260), dtype=np.uint16)
    labels[10:50, 10:60] = 1
    labels[10:50, 60:90] = 2  # touches 1
    labels[100:180, 100:250] = 700
    labels[190:, :5] = 65535
    return labels


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ALL_SUFFIXES)
def test_binary_mask_round_trips(tmp_path: Path, suffix: str) -> None:
    mask = binary_mask()
    path = write_mask(mask, tmp_path / f"mask{suffix}", mpp=0.5)
    back = read_mask(path, shape=mask.shape)
    assert isinstance(back, np.ndarray)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask)


@pytest.mark.parametrize("suffix", LABEL_SUFFIXES)
def test_instance_labels_keep_their_ids(tmp_path: Path, suffix: str) -> None:
    labels = label_mask()
    back = read_mask(write_mask(labels, tmp_path / f"labels{suffix}"))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)


def test_bool_and_dask_and_zarr_sources_are_written(tmp_path: Path) -> None:
    mask = binary_mask()
    lazy = da.from_array(mask.astype(bool), chunks=(64, 100))
    np.testing.assert_array_equal(read_mask(write_mask(lazy, tmp_path / "a.ome.tif")), mask)
    store = zarr.create_array(tmp_path / "src.zarr", shape=mask.shape, chunks=(50, 50), dtype="u1")
    store[:] = mask
    np.testing.assert_array_equal(read_mask(write_mask(store, tmp_path / "b.zarr")), mask)


def test_png_holds_0_255_for_binary_masks_and_keeps_pixel_size(tmp_path: Path) -> None:
    mask = binary_mask()
    path = write_mask(mask, tmp_path / "mask.png", mpp=0.25)
    with Image.open(path) as image:
        assert image.mode == "L"
        assert set(np.unique(np.asarray(image))) == {0, 255}
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25, rel=1e-3)


def test_png_refuses_a_whole_slide(tmp_path: Path) -> None:
    huge = da.zeros((2**15, 2**13 + 1), dtype=np.uint8, chunks=4096)
    with pytest.raises(ValueError, match=r"too big for PNG.*ome\.tif"):
        write_mask(huge, tmp_path / "huge.png")
    assert _files(tmp_path) == []


# -- OME-TIFF -------------------------------------------------------------------------


def test_ome_tiff_is_tiled_deflated_pyramid_with_pixel_size(tmp_path: Path) -> None:
    mask = np.zeros((3000, 2100), dtype=np.uint8)
    mask[1001, 1001] = 1  # one pixel: still visible at the smallest level
    mask[:40, :40] = 1
    path = write_mask(mask, tmp_path / "mask.ome.tif", mpp=0.5)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert [level.shape for level in series.levels] == [(3000, 2100), (1500, 1050), (750, 525)]
        page = series.pages[0]
        assert page.is_tiled
        assert (page.tilelength, page.tilewidth) == (512, 512)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert 'PhysicalSizeX="0.5"' in tif.ome_metadata
        assert 'PhysicalSizeXUnit="µm"' in tif.ome_metadata
        expected = mask
        for level in series.levels:
            np.testing.assert_array_equal(level.asarray(), expected)
            expected = halve_max(expected)
        smallest = series.levels[-1].asarray()
        assert smallest[1001 // 4, 1001 // 4] == 1
        xres = series.levels[2].pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1e4 / 2.0)  # pixels per cm at 2 µm
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert [lv.shape for lv in slide.levels] == [(3000, 2100), (1500, 1050), (750, 525)]


def test_pyramid_levels_can_be_chosen(tmp_path: Path) -> None:
    mask = binary_mask()
    for levels in (1, 3):
        path = write_mask(mask, tmp_path / f"m{levels}.ome.tif", levels=levels)
        with tifffile.TiffFile(path) as tif:
            assert len(tif.series[0].levels) == levels
    with pytest.raises(ValueError, match="levels"):
        write_mask(mask, tmp_path / "bad.ome.tif", levels=0)
    assert level_count((31299, 44066)) == 7  # 44066 / 64 = 689 <= 1024


# -- OME-Zarr ------------------------------------------------------------------------------


def test_ome_zarr_is_an_ngff_label_image_with_scale(tmp_path: Path) -> None:
    mask = np.zeros((2500, 1200), dtype=np.uint8)
    mask[5:9, 7:8] = 1
    path = write_mask(mask, tmp_path / "mask.ome.zarr", mpp=0.25)
    root = zarr.open_group(path, mode="r")
    assert root.metadata.zarr_format == 2
    attrs = root.attrs.asdict()
    (multiscale,) = attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [a["name"] for a in multiscale["axes"]] == ["y", "x"]
    assert all(a["unit"] == "micrometer" for a in multiscale["axes"])
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[0.25, 0.25], [0.5, 0.5], [1.0, 1.0]]
    assert attrs["image-label"]["colors"] == [{"label-value": 1, "rgba": [255, 0, 0, 255]}]
    assert root["0"].chunks == (1024, 1024)
    assert root["2"].shape == (625, 300)
    assert root["2"][1, 1] == 1  # 2x2 max: a thin object stays visible
    back = mask_io._read(path)
    assert back[1] == pytest.approx(0.25)


def test_ome_zarr_metadata_validates_and_ome_zarr_py_reads_it(tmp_path: Path) -> None:
    models = pytest.importorskip("ome_zarr_models.v04.image_label")
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    mask = binary_mask()
    path = write_mask(mask, tmp_path / "mask.ome.zarr", mpp=0.5, levels=2)
    label = models.ImageLabel.from_zarr(zarr.open_group(path, mode="r"))
    assert label.attributes.image_label.colors[0].label_value == 1
    nodes = list(reader.Reader(io.parse_url(str(path)))())
    node = nodes[0]
    assert node.load(reader.Label) is not None
    assert [d.shape for d in node.data] == [mask.shape, (150, 205)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), mask)


def test_reads_ngff_05_images_with_labels_and_plain_arrays(tmp_path: Path) -> None:
    mask = binary_mask()
    # NGFF 0.5 (zarr v3, metadata under "ome"): an image whose mask is a label.
    image = zarr.open_group(tmp_path / "slide.ome.zarr", mode="w", zarr_format=3)
    axes = [{"name": n, "type": "channel" if n == "c" else "space"} for n in "cyx"]
    datasets = [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 2]}]}
    ]
    image.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    image.create_array("0", shape=(3, *mask.shape), dtype="u1", fill_value=0)
    labels = image.create_group("labels")
    labels.attrs["ome"] = {"version": "0.5", "labels": ["glomeruli"]}
    label = labels.create_group("glomeruli")
    label_axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    label_sets = [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.4, 0.4]}]}
    ]
    label.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": label_axes, "datasets": label_sets}],
        "image-label": {},
    }
    label.create_array("0", shape=(1, *mask.shape), dtype="u1", fill_value=0)[0] = mask
    back, mpp = mask_io._read(tmp_path / "slide.ome.zarr")
    np.testing.assert_array_equal(back, mask)
    assert mpp == pytest.approx(0.4)
    # A plain zarr array, 0/255.
    plain = zarr.create_array(tmp_path / "plain.zarr", shape=mask.shape, dtype="u1")
    plain[:] = mask * 255
    np.testing.assert_array_equal(read_mask(tmp_path / "plain.zarr"), mask)


def test_zarr_with_several_planes_is_refused(tmp_path: Path) -> None:
    stack = zarr.open_group(tmp_path / "stack.zarr", mode="w", zarr_format=2)
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    stack.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]
    stack.create_array("0", shape=(4, 10, 10), dtype="u1")
    with pytest.raises(ValueError, match=r"one 2-D plane.*'z' has 4"):
        read_mask(tmp_path / "stack.zarr")


# -- what a mask file may hold --------------------------------------------------------------


def test_rgb_rgba_and_0_255_masks_become_0_1(tmp_path: Path) -> None:
    mask = binary_mask()
    red = np.zeros((*mask.shape, 3), dtype=np.uint8)
    red[..., 0] = mask * 255
    Image.fromarray(red).save(tmp_path / "red.png")
    rgba = np.dstack([red, np.full(mask.shape, 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    tifffile.imwrite(tmp_path / "grey.tif", mask * 255)
    tifffile.imwrite(tmp_path / "labels.tif", mask.astype(np.int32))
    for name in ("red.png", "rgba.png", "grey.tif", "labels.tif"):
        back = read_mask(tmp_path / name)
        assert back.dtype == np.uint8, name
        np.testing.assert_array_equal(back, mask, err_msg=name)


def test_a_picture_is_not_a_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "he.png")
    with pytest.raises(ValueError, match=r"not a mask: found \d+ distinct colours"):
        read_mask(tmp_path / "he.png")
    tifffile.imwrite(tmp_path / "prob.tif", rng.random((32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"not a mask.*fractional"):
        read_mask(tmp_path / "prob.tif")


def test_big_mask_files_are_read_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mask_io, "IN_MEMORY_PIXELS", 1000)
    mask = binary_mask()
    for suffix in (".ome.tif", ".zarr", ".csv", ".geojson"):
        path = write_mask(mask, tmp_path / f"big{suffix}")
        back = read_mask(path, shape=mask.shape)
        assert isinstance(back, da.Array), suffix
        np.testing.assert_array_equal(back.compute(), mask)


# -- RLE CSV --------------------------------------------------------------------------------


def test_rle_csv_ids_and_shape(tmp_path: Path) -> None:
    mask = binary_mask()
    path = write_mask(mask, tmp_path / "preds.csv")
    assert path.read_text().splitlines()[0] == "id,predicted"
    assert path.read_text().splitlines()[1].startswith("preds,")  # id: the file's stem
    np.testing.assert_array_equal(read_mask(path, image_id="preds", shape=mask.shape), mask)
    with pytest.raises(ValueError, match=r"pass shape=\(height, width\)"):
        read_mask(path)
    with pytest.raises(ValueError, match="'other' not found"):
        read_mask(path, image_id="other", shape=mask.shape)
    two = tmp_path / "two.csv"
    two.write_text("id,encoding\na,1 2\nb,3 1\n")
    with pytest.raises(ValueError, match=r"2 masks: choose one with image_id=.*--id.*a, b"):
        read_mask(two, shape=(2, 2))
    assert read_mask(two, image_id="b", shape=(2, 2)).tolist() == [[0, 1], [0, 0]]


def test_geojson_needs_the_shape(tmp_path: Path) -> None:
    path = write_mask(binary_mask(), tmp_path / "m.geojson")
    with pytest.raises(ValueError, match=r"pass shape=\(height, width\)"):
        read_mask(path)


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_extension_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown mask format '\.bmp'.*ome\.tif.*zarr.*csv"):
        write_mask(binary_mask(), tmp_path / "mask.bmp")
    with pytest.raises(ValueError, match="unknown mask format"):
        export_mask(tmp_path / "missing.png", tmp_path / "out.txt")
    assert set(ALL_SUFFIXES) <= set(MASK_SUFFIXES)


def test_bad_masks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_mask(np.zeros((4, 4, 3), np.uint8), tmp_path / "m.ome.tif")
    with pytest.raises(ValueError, match="integers or booleans"):
        write_mask(np.zeros((4, 4), np.float32), tmp_path / "m.ome.tif")
    with pytest.raises(FileNotFoundError):
        read_mask(tmp_path / "nothing.tif")
    (tmp_path / "text.tif").write_text("not an image")
    with pytest.raises(ValueError, match="not a TIFF"):
        read_mask(tmp_path / "text.tif")


def test_check_same_shape_says_what_differs() -> None:
    check_same_shape(np.zeros((3, 4)), np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match=r"mask shape \(3, 4\) does not match image \(3, 5\)"):
        check_same_shape((3, 4), (3, 5))
    with pytest.raises(ValueError, match=r"prediction .* truth .*swapped"):
        check_same_shape((4, 3), (3, 4), names=("prediction", "truth"))


# -- atomic writes -------------------------------------------------------------------------


def _failing_mask(fail_from_row: int) -> da.Array:
    """A 3000 x 300 mask whose chunks fail to load from a row on (a cancel, a bad disk)."""

    def block(block_info: dict | None = None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        if y0 >= fail_from_row:
            raise OSError("cancelled")
        return np.ones((y1 - y0, x1 - x0), np.uint8)

    return da.map_blocks(block, chunks=((256,) * 11 + (184,), (300,)), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".ome.tif", ".zarr", ".png", ".csv", ".geojson"])
def test_a_failing_writer_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    old = binary_mask(seed=1)
    path = write_mask(old, tmp_path / f"mask{suffix}")
    before = _files(tmp_path)
    new = _failing_mask(fail_from_row=2048)  # after some of the output is written
    if suffix == ".png":
        new = da.ones((3000, 300), dtype=np.uint8, chunks=256)

        def failing_save(image: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
            Path(fp).write_bytes(b"\x89PNG partial")
            raise OSError("cancelled")

        monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="cancelled"):
        write_mask(new, path)
    assert _files(tmp_path) == before
    monkeypatch.undo()
    np.testing.assert_array_equal(read_mask(path, shape=old.shape), old)


# -- progress and cancel -------------------------------------------------------------------

WRITE_SUFFIXES = [".ome.tif", ".zarr", ".png", ".csv", ".geojson"]
#: Steps each writer takes for a 3000 x 2500 mask: OME-TIFF 6 bands of 512 rows and
#: 2 overview levels; OME-Zarr 3 bands of 1024 rows; PNG 3 bands and the encoding;
#: RLE 3 bands of 1024 columns; GeoJSON 3 bands of 1024 rows.
STEPS = {".ome.tif": 8, ".zarr": 3, ".png": 4, ".csv": 3, ".geojson": 3}


def _tiled_blobs() -> np.ndarray:
    """A 3000 x 2500 mask with objects in every band of rows and columns."""
    return np.tile(binary_mask(), (10, 6))[:3000, :2500]


@pytest.mark.parametrize("suffix", WRITE_SUFFIXES)
def test_every_writer_reports_each_step_while_it_writes(tmp_path: Path, suffix: str) -> None:
    mask = _tiled_blobs()
    path = tmp_path / f"mask{suffix}"
    calls: list[tuple[int, int, bool]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total, path.exists()))

    write_mask(da.from_array(mask, chunks=512), path, progress=progress)

    total = STEPS[suffix]
    assert [(done, t) for done, t, _ in calls] == [(k, total) for k in range(1, total + 1)]
    assert not any(exists for *_, exists in calls)  # reported during the write, not after
    np.testing.assert_array_equal(read_mask(path, shape=mask.shape), mask)


@pytest.mark.parametrize("suffix", WRITE_SUFFIXES)
def test_a_cancelled_write_stops_and_leaves_the_old_file(tmp_path: Path, suffix: str) -> None:
    old = binary_mask(seed=1)
    path = write_mask(old, tmp_path / f"mask{suffix}")
    before = _files(tmp_path)
    cancel = threading.Event()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            cancel.set()  # as the Cancel button does, from another thread

    with pytest.raises(Cancelled, match="export cancelled"):
        write_mask(_tiled_blobs(), path, progress=progress, cancel=cancel)

    assert calls == [1, 2]  # stopped at the next step
    assert _files(tmp_path) == before
    np.testing.assert_array_equal(read_mask(path, shape=old.shape), old)


def test_a_write_cancelled_before_it_starts_reads_nothing(tmp_path: Path) -> None:
    unreadable = _failing_mask(fail_from_row=0)  # any read raises OSError
    with pytest.raises(Cancelled):
        write_mask(unreadable, tmp_path / "mask.ome.tif", cancel=lambda: True)
    assert _files(tmp_path) == []


def test_cancel_must_be_an_event_or_a_callable(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"cancel must be a threading\.Event or a callable"):
        write_mask(binary_mask(), tmp_path / "mask.png", cancel=True)
    assert _files(tmp_path) == []


def test_export_of_a_big_rle_reports_decoding_then_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mask = _tiled_blobs()
    csv = write_mask(mask, tmp_path / "slide.csv")
    # As for a slide: decoded into compressed chunks first, then written.
    monkeypatch.setattr(mask_io, "IN_MEMORY_PIXELS", 1000)
    calls: list[tuple[int, int]] = []

    out = export_mask(
        csv, tmp_path / "slide.zarr", shape=mask.shape, progress=lambda *a: calls.append(a)
    )

    decoding = calls[0][1]  # bands of columns decoded
    assert decoding > 1
    assert calls[:decoding] == [(k, decoding) for k in range(1, decoding + 1)]
    writing = STEPS[".zarr"]
    assert calls[decoding:] == [(k, writing) for k in range(1, writing + 1)]
    np.testing.assert_array_equal(read_mask(out), mask)


def test_export_cancelled_while_decoding_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = write_mask(_tiled_blobs(), tmp_path / "slide.csv")
    monkeypatch.setattr(mask_io, "IN_MEMORY_PIXELS", 1000)
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        export_mask(
            csv,
            tmp_path / "slide.ome.tif",
            shape=(3000, 2500),
            progress=lambda done, total: cancel.set(),
            cancel=cancel,
        )
    assert _files(tmp_path) == ["slide.csv"]


# -- export ---------------------------------------------------------------------------------


def test_export_keeps_pixel_size_and_names_the_row_after_the_slide(tmp_path: Path) -> None:
    mask = binary_mask()
    src = write_mask(mask, tmp_path / "slide42.ome.tif", mpp=0.5)
    zarr_out = export_mask(src, tmp_path / "out.ome.zarr")
    assert mask_io._read(zarr_out)[1] == pytest.approx(0.5)
    csv_out = export_mask(zarr_out, tmp_path / "submission.csv")
    assert csv_out.read_text().splitlines()[1].startswith("out,")
    csv_out = export_mask(src, tmp_path / "submission.csv")
    assert csv_out.read_text().splitlines()[1].startswith("slide42,")
    tif_out = export_mask(csv_out, tmp_path / "back.tif", shape=mask.shape, mpp=0.25)
    with open_slide(tif_out) as slide:
        assert slide.mpp == pytest.approx(0.25)
    np.testing.assert_array_equal(read_mask(tif_out), mask)
    geo = export_mask(tif_out, tmp_path / "objects.geojson", classification="Glomerulus")
    png = export_mask(geo, tmp_path / "objects.png", shape=mask.shape)
    np.testing.assert_array_equal(read_mask(png), mask)


# -- big masks, bounded memory ------------------------------------------------------------------

_BIG_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, tracemalloc
    import dask.array as da, numpy as np
    from slide_unet.core.masks.io import write_mask, read_mask

    H, W, CHUNK = 20_000, 30_000, 2048
    BLOBS = [(5000, 7000), (12345, 20000), (19990, 29990), (3000, 100), (10240, 15000)]

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        out = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for cy, cx in BLOBS:  # squares 600 px a side, some cut by chunk and band edges
            ys = slice(max(cy - 300, y0), min(cy + 300, y1))
            xs = slice(max(cx - 300, x0), min(cx + 300, x1))
            if ys.start < ys.stop and xs.start < xs.stop:
                out[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = 1
        return out

    chunks = tuple(tuple(min(CHUNK, n - i) for i in range(0, n, CHUNK)) for n in (H, W))
    mask = da.map_blocks(block, chunks=chunks, dtype=np.uint8)
    results = {}
    tracemalloc.start()
    for name in sys.argv[2:]:
        tracemalloc.reset_peak()
        start = time.perf_counter()
        path = write_mask(mask, sys.argv[1] + "/big" + name, mpp=0.25)
        results[name] = [tracemalloc.get_traced_memory()[1], time.perf_counter() - start]
        back = read_mask(path, shape=(H, W))
        for cy, cx in BLOBS:
            window = np.asarray(back[max(cy - 301, 0) : cy + 301, max(cx - 301, 0) : cx + 301])
            results[name].append(int(window.sum()))
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_big_mask_is_written_with_bounded_memory(tmp_path: Path) -> None:
    """A 20,000 x 30,000 mask (600 MB as uint8) streams to each format."""
    formats = [".ome.tif", ".zarr", ".geojson"]
    out = subprocess.run(
        [sys.executable, "-c", _BIG_SCRIPT, str(tmp_path), *formats],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    results = json.loads(out.stdout)
    full = 20_000 * 30_000
    for name in formats:
        peak, _seconds, *sums = results[name]
        assert peak < full / 3, f"{name}: peak {peak / 2**20:.0f} MB"
        # Each blob's window holds the part of its 600 x 600 square inside the image.
        assert sums == [600 * 600, 600 * 600, 310 * 310, 600 * 400, 600 * 600]


# -- real data ------------------------------------------------------------------------------------


def test_real_masks_of_every_kind(shared_data: Path) -> None:
    bueno = sorted((shared_data / "glomeruli/bueno_pas/masks").glob("*.png"))[0]
    red = np.asarray(Image.open(bueno))
    mask = read_mask(bueno)
    assert mask.shape == red.shape[:2]
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, red.any(axis=2))

    hubmap = shared_data / "glomeruli/hubmap_fullres/masks/0486052bb_positive_0000_000096.png"
    mask = read_mask(hubmap)
    assert set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask, np.asarray(Image.open(hubmap)) == 255)

    dsb = sorted((shared_data / "nuclei/dsb2018/masks").glob("*.png"))[0]
    labels = read_mask(dsb)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, np.asarray(Image.open(dsb)))
    assert labels.max() > 1

    monuseg = sorted((shared_data / "nuclei/monuseg_train/masks").glob("*.png"))[0]
    with Image.open(monuseg) as image:
        assert image.mode == "LA"
        grey = np.asarray(image.convert("L"))
    np.testing.assert_array_equal(read_mask(monuseg), grey != 0)

    picture = sorted((shared_data / "glomeruli/bueno_pas/images").glob("*.png"))[0]
    with pytest.raises(ValueError, match="not a mask"):
        read_mask(picture)


@pytest.mark.slow
def test_hubmap_rle_reads_lazily_and_exports(shared_data: Path, tmp_path: Path) -> None:
    csv = shared_data / "glomeruli/hubmap_rle/train.csv"
    mask = read_mask(csv, image_id="2f6ecfcdf", shape=(31278, 25794))
    assert isinstance(mask, da.Array)
    lengths = rle_csv.read_rle_csv(csv, "2f6ecfcdf").split()[1::2]
    assert int(mask.sum().compute()) == sum(map(int, lengths))
    tile = read_mask(shared_data / "glomeruli/hubmap_red16/masks/2f6ecfcdf_10red16.png")
    assert tile.shape == (256, 256)

"""Tests of ``open_slide``: every layout the reader must handle, pixel for pixel.

Ground truth is what ``tifffile.imread`` (or Pillow) decodes from the same
file, so lossy JPEG is compared exactly: the same codec decodes both sides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import dask
import numpy as np
import pytest
import tifffile
from PIL import Image

import slide_unet
from slide_unet import Slide, SlideError, open_slide
from slide_unet.core.slide import files as slide_files
from slide_unet.core.slide import slide as slide_module
from slide_unet.core.slide import tiff_level
from slide_unet.core.slide.tiff_level import TiffLevelReader


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep any overview cache a test might touch out of the user's cache folder."""
    monkeypatch.setenv("SLIDE_UNET_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def _as_yxc(array: np.ndarray, axes: str) -> np.ndarray:
    """Squeeze singleton axes and move samples last, as the reader promises."""
    sizes = zip(axes, array.shape, strict=True)
    keep = [i for i, (axis, n) in enumerate(sizes) if axis in "YX" or n > 1]
    array = array.reshape([array.shape[i] for i in keep])
    kept = "".join(axes[i] for i in keep)
    order = [kept.index("Y"), kept.index("X")] + [i for i, a in enumerate(kept) if a not in "YX"]
    return array.transpose(order)


def tiff_truth(path: Path, *, series: int = 0, level: int = 0) -> np.ndarray:
    """What tifffile decodes for a series level, as YX or YXC."""
    with tifffile.TiffFile(path) as tif:
        axes = tif.series[series].levels[level].axes
        array = tif.series[series].levels[level].asarray()
    return _as_yxc(array, axes)


def pil_truth(path: Path, mode: str | None = None) -> np.ndarray:
    """What Pillow decodes (converted to ``mode`` when given)."""
    with Image.open(path) as image:
        return np.asarray(image if mode is None else image.convert(mode))


def assert_levels_equal(slide: Slide, expected: list[np.ndarray]) -> None:
    assert len(slide.levels) == len(expected)
    for k, (level, truth) in enumerate(zip(slide.levels, expected, strict=True)):
        assert level.shape == truth.shape, f"level {k}"
        assert level.dtype == truth.dtype, f"level {k}"
        np.testing.assert_array_equal(level.compute(), truth, err_msg=f"level {k}")


# -- every layout, pixel for pixel ---------------------------------------------------


@dataclass
class Layout:
    """A synthetic slide and what ``open_slide`` must make of it."""

    path: Path
    expected: list[np.ndarray]
    axes: str
    rgb: bool
    mpp: float | None = None
    #: The pixels written, where the codec is lossless (else None).
    written: np.ndarray | None = None


def _ome_jpeg(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(700, 900)
    path = slides.write_ome_pyramid(tmp / "pyramid.ome.tif", image, compression="jpeg")
    expected = [tiff_truth(path, level=k) for k in range(3)]
    return Layout(path, expected, "YXC", rgb=True, mpp=0.25)


def _ome_zlib(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(700, 900, seed=1)
    path = slides.write_ome_pyramid(tmp / "pyramid.ome.tif", image, compression="zlib")
    expected = [slides.halved(image, k) for k in range(3)]
    return Layout(path, expected, "YXC", rgb=True, mpp=0.25, written=image)


def _ome_gray_uint16(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.gray_image(600, 520, "uint16")
    path = slides.write_ome_pyramid(tmp / "gray.ome.tiff", image, compression="zlib", levels=2)
    return Layout(path, [image, slides.halved(image, 1)], "YX", rgb=False, mpp=0.25, written=image)


def _svs(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(768, 1024, seed=2)
    path = slides.write_svs(tmp / "slide.svs", image)
    expected = [tiff_truth(path, level=k) for k in range(3)]
    return Layout(path, expected, "YXC", rgb=True, mpp=0.499)


def _multiseries(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(520, 600, seed=3)
    path = slides.write_multiseries(tmp / "series.tif", image)
    expected = [tiff_truth(path, series=k) for k in range(3)]
    assert all(np.array_equal(e, slides.halved(image, k)) for k, e in enumerate(expected))
    return Layout(path, expected, "YXC", rgb=True, written=image)


def _flat_tiled_bigtiff_jpeg(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(700, 900, seed=4)
    path = slides.write_tiled(tmp / "flat.tif", image, compression="jpeg", bigtiff=True)
    return Layout(path, [tiff_truth(path)], "YXC", rgb=True)


def _flat_striped_uint16(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.gray_image(300, 410, "uint16", seed=5)
    path = slides.write_striped(tmp / "striped.tif", image, rowsperstrip=16, compression="zlib")
    return Layout(path, [image], "YX", rgb=False, written=image)


def _striped_rgb(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(300, 410, seed=6)
    path = slides.write_striped(tmp / "striped_rgb.tif", image, rowsperstrip=7, compression="lzw")
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _planar_rgb(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(300, 410, seed=7)
    path = slides.write_planar(tmp / "planar.tif", image)
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _planar_rgb_tiled(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(300, 410, seed=8)
    path = slides.write_planar(tmp / "planar_tiled.tif", image, tile=128)
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _hubmap_planar_rgb(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(300, 410, seed=9)
    path = slides.write_hubmap(tmp / "hubmap.tiff", image, photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == (1, 1, 3, 300, 410)
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _hubmap_three_pages(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(300, 410, seed=10)
    path = slides.write_hubmap(tmp / "hubmap_pages.tiff", image, photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == (1, 1, 3, 300, 410)
        assert tif.series[0].axes == "QQQYX"
        assert len(tif.pages) == 3
    # Three 8-bit planes are shown as colour, whatever the photometric tag says.
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _rgba(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(300, 410, seed=11, channels=4)
    path = slides.write_tiled(
        tmp / "rgba.tif", image, compression="zlib", tile=128, extrasamples=[2]
    )
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _uint16_gray_tiled(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.gray_image(300, 410, "uint16", seed=12)
    path = slides.write_tiled(
        tmp / "gray16.tif", image, compression="zlib", tile=128, bigtiff=False
    )
    return Layout(path, [image], "YX", rgb=False, written=image)


def _float32(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.gray_image(300, 410, "float32", seed=13)
    path = slides.write_tiled(tmp / "float.tif", image, compression="zlib", tile=128)
    return Layout(path, [image], "YX", rgb=False, written=image)


def _png_rgb(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(123, 157, seed=14)
    path = slides.write_pil(tmp / "rgb.png", Image.fromarray(image))
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _png_gray(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(123, 157, seed=15)[..., 0].copy()
    path = slides.write_pil(tmp / "gray.png", Image.fromarray(image, mode="L"))
    return Layout(path, [image], "YX", rgb=False, written=image)


def _png_16bit(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.gray_image(123, 157, "uint16", seed=16)
    path = slides.write_pil(tmp / "gray16.png", Image.fromarray(image))
    with Image.open(path) as reread:
        assert reread.mode == "I;16"
    return Layout(path, [image], "YX", rgb=False, written=image)


def _png_rgba(tmp: Path, slides: SimpleNamespace) -> Layout:
    image = slides.rgb_image(123, 157, seed=17, channels=4)
    path = slides.write_pil(tmp / "rgba.png", Image.fromarray(image, mode="RGBA"))
    return Layout(path, [image], "YXC", rgb=True, written=image)


def _png_palette(tmp: Path, slides: SimpleNamespace) -> Layout:
    rgb = Image.fromarray(slides.rgb_image(123, 157, seed=18))
    path = slides.write_pil(tmp / "palette.png", rgb.quantize(colors=16))
    with Image.open(path) as reread:
        assert reread.mode == "P"
    return Layout(path, [pil_truth(path, "RGB")], "YXC", rgb=True)


def _png_palette_transparent(tmp: Path, slides: SimpleNamespace) -> Layout:
    rgb = Image.fromarray(slides.rgb_image(123, 157, seed=19))
    path = slides.write_pil(tmp / "palette_alpha.png", rgb.quantize(colors=16), transparency=0)
    return Layout(path, [pil_truth(path, "RGBA")], "YXC", rgb=True)


def _png_1bit(tmp: Path, slides: SimpleNamespace) -> Layout:
    bits = slides.rgb_image(123, 157, seed=22)[..., 0] > 127
    path = slides.write_pil(tmp / "bits.png", Image.fromarray(bits).convert("1"))
    with Image.open(path) as reread:
        assert reread.mode == "1"
    return Layout(path, [np.where(bits, 255, 0).astype(np.uint8)], "YX", rgb=False)


def _jpeg_cmyk(tmp: Path, slides: SimpleNamespace) -> Layout:
    cmyk = Image.fromarray(slides.rgb_image(123, 157, seed=23)).convert("CMYK")
    path = slides.write_pil(tmp / "cmyk.jpg", cmyk)
    with Image.open(path) as reread:
        assert reread.mode == "CMYK"
    return Layout(path, [pil_truth(path, "RGB")], "YXC", rgb=True)


def _jpeg(tmp: Path, slides: SimpleNamespace) -> Layout:
    path = slides.write_pil(
        tmp / "photo.jpg", Image.fromarray(slides.rgb_image(123, 157, seed=20)), quality=80
    )
    return Layout(path, [pil_truth(path)], "YXC", rgb=True)


def _jpeg_gray(tmp: Path, slides: SimpleNamespace) -> Layout:
    gray = Image.fromarray(slides.rgb_image(123, 157, seed=21)[..., 1].copy(), mode="L")
    path = slides.write_pil(tmp / "gray.jpeg", gray)
    return Layout(path, [pil_truth(path)], "YX", rgb=False)


LAYOUTS: dict[str, Callable[[Path, SimpleNamespace], Layout]] = {
    "ome-subifds-jpeg": _ome_jpeg,
    "ome-subifds-zlib": _ome_zlib,
    "ome-subifds-uint16-gray": _ome_gray_uint16,
    "svs": _svs,
    "multi-series-pyramid": _multiseries,
    "flat-tiled-bigtiff-jpeg": _flat_tiled_bigtiff_jpeg,
    "flat-striped-uint16-zlib": _flat_striped_uint16,
    "flat-striped-rgb-lzw": _striped_rgb,
    "planar-rgb-striped": _planar_rgb,
    "planar-rgb-tiled": _planar_rgb_tiled,
    "hubmap-1x1x3xYxX-planar-rgb": _hubmap_planar_rgb,
    "hubmap-1x1x3xYxX-three-pages": _hubmap_three_pages,
    "rgba-tiff": _rgba,
    "uint16-gray-tiff": _uint16_gray_tiled,
    "float32-tiff": _float32,
    "png-rgb": _png_rgb,
    "png-gray": _png_gray,
    "png-16bit": _png_16bit,
    "png-rgba": _png_rgba,
    "png-palette": _png_palette,
    "png-palette-transparency": _png_palette_transparent,
    "png-1bit": _png_1bit,
    "jpeg-rgb": _jpeg,
    "jpeg-cmyk": _jpeg_cmyk,
    "jpeg-gray": _jpeg_gray,
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_layout_reads_exactly_what_the_codec_decodes(
    slides, tmp_path: Path, layout: Callable[[Path, SimpleNamespace], Layout]
) -> None:
    case = layout(tmp_path, slides)
    with open_slide(case.path) as slide:
        assert slide.axes == case.axes
        assert slide.rgb is case.rgb
        assert slide.dtype == case.expected[0].dtype
        assert slide.shape == case.expected[0].shape
        assert slide.channels == (case.expected[0].shape[2] if case.axes == "YXC" else 1)
        if case.mpp is None:
            assert slide.mpp is None
        else:
            assert slide.mpp == pytest.approx(case.mpp)
        for level in slide.levels:
            assert level.ndim == len(case.axes)
        assert_levels_equal(slide, case.expected)
        if case.written is not None:
            np.testing.assert_array_equal(slide.levels[0].compute(), case.written)


def test_ome_pyramid_lists_levels_largest_first_with_their_pixel_size(
    slides, tmp_path: Path
) -> None:
    image = slides.rgb_image(700, 900)
    path = slides.write_ome_pyramid(tmp_path / "p.ome.tif", image, levels=3, mpp=0.25)
    with open_slide(path) as slide:
        assert [level.shape for level in slide.levels] == [
            (700, 900, 3),
            (350, 450, 3),
            (175, 225, 3),
        ]
        assert slide.downsamples == [1.0, 2.0, 4.0]
        assert slide.mpp == pytest.approx(0.25)
        assert [slide.level_mpp(k) for k in range(3)] == pytest.approx([0.25, 0.5, 1.0])
        assert slide.name == "p"
        assert not slide.needs_overviews
        assert slide.overview_cache is None
        assert "p" in repr(slide)
        assert "700x900x3" in repr(slide)


def test_svs_like_file_is_an_svs_pyramid_for_tifffile_and_for_open_slide(
    slides, tmp_path: Path
) -> None:
    image = slides.rgb_image(768, 1024, seed=2)
    path = slides.write_svs(tmp_path / "CMU-1.svs", image, levels=3, mpp=0.499)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_svs
        assert tif.series[0].kind == "svs"
        assert tif.series[0].name == "Baseline"
        assert [lv.shape for lv in tif.series[0].levels] == [
            (768, 1024, 3),
            (384, 512, 3),
            (192, 256, 3),
        ]
    with open_slide(path) as slide:
        # The thumbnail series is not a pyramid level.
        assert [level.shape[:2] for level in slide.levels] == [(768, 1024), (384, 512), (192, 256)]
        assert slide.mpp == pytest.approx(0.499)
        assert slide.level_mpp(2) == pytest.approx(4 * 0.499)
        assert slide.name == "CMU-1"


def test_multi_series_pyramid_returns_all_levels(slides, tmp_path: Path) -> None:
    image = slides.rgb_image(520, 600)
    path = slides.write_multiseries(tmp_path / "series.tif", image, levels=4)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 4
        assert all(len(s.levels) == 1 for s in tif.series)
    with open_slide(path) as slide:
        assert [level.shape[:2] for level in slide.levels] == [
            (520, 600),
            (260, 300),
            (130, 150),
            (65, 75),
        ]
        assert slide.downsamples == [1.0, 2.0, 4.0, 8.0]
        for k, level in enumerate(slide.levels):
            np.testing.assert_array_equal(level.compute(), slides.halved(image, k))


def test_multi_series_ignores_series_of_another_aspect_or_channel_count(
    slides, tmp_path: Path
) -> None:
    image = slides.rgb_image(400, 600)
    path = tmp_path / "with_label.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), photometric="rgb")
        tif.write(slides.halved(image, 1), tile=(128, 128), photometric="rgb")
        tif.write(slides.rgb_image(100, 100), photometric="rgb")  # a square label photo
        tif.write(slides.halved(image, 1)[..., 0], photometric="minisblack")  # gray, same size
    with open_slide(path) as slide:
        assert [level.shape for level in slide.levels] == [(400, 600, 3), (200, 300, 3)]


def test_main_series_is_the_largest_not_the_first(slides, tmp_path: Path) -> None:
    image = slides.rgb_image(300, 400)
    path = tmp_path / "label_first.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(slides.rgb_image(50, 50, seed=9), photometric="rgb")
        tif.write(image, tile=(128, 128), photometric="rgb")
    with open_slide(path) as slide:
        assert slide.shape == (300, 400, 3)
        np.testing.assert_array_equal(slide.levels[0].compute(), image)


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("a.ome.tif", "a"),
        ("a.OME.TIFF", "a"),
        ("a.b.tiff", "a.b"),
        ("x.svs", "x"),
        ("y.png", "y"),
        ("z.jpeg", "z"),
        ("w.jpg", "w"),
        ("v.bin", "v"),
    ],
)
def test_slide_name_drops_image_extensions(
    slides, tmp_path: Path, filename: str, name: str
) -> None:
    path = slides.write_tiled(tmp_path / filename, slides.gray_image(20, 30, "uint8"), tile=16)
    with open_slide(path) as slide:
        assert slide.name == name


def test_open_slide_accepts_str_and_pathlike(slides, tmp_path: Path) -> None:
    path = slides.write_tiled(tmp_path / "a.tif", slides.gray_image(20, 30, "uint8"), tile=16)
    for argument in (str(path), path):
        with open_slide(argument) as slide:
            assert slide.path == path
    assert slide_unet.open_slide is open_slide


# -- pixel size ----------------------------------------------------------------------


def _gray(slides: SimpleNamespace, height: int = 40, width: int = 50) -> np.ndarray:
    return slides.gray_image(height, width, "uint8")


def _mpp_ome_um(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(path, _gray(slides), ome=True, metadata={"PhysicalSizeX": 0.25})


def _mpp_ome_nm(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(
        path, _gray(slides), ome=True, metadata={"PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm"}
    )


def _mpp_aperio(path: Path, slides: SimpleNamespace) -> None:
    slides.write_svs(path, slides.rgb_image(512, 512), levels=2, mpp=0.499)


def _mpp_resolution_cm(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(
        path, _gray(slides), resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER"
    )


def _mpp_resolution_inch(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(
        path, _gray(slides), resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH"
    )


def _mpp_imagej_micron(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(
        path,
        _gray(slides),
        imagej=True,
        resolution=(1 / 0.3, 1 / 0.3),
        metadata={"unit": "micron"},
    )


def _mpp_imagej_escaped_micro_sign(path: Path, slides: SimpleNamespace) -> None:
    """Fiji writes "µm" as the ASCII escape ``\\u00B5m`` in the ImageJ description."""
    tifffile.imwrite(
        path,
        _gray(slides),
        imagej=True,
        resolution=(1 / 0.3, 1 / 0.3),
        metadata={"unit": "\\u00B5m"},
    )


def _mpp_none(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(path, _gray(slides), metadata=None)


def _mpp_screen_72dpi(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(path, _gray(slides), resolution=(72, 72), resolutionunit="INCH")


def _mpp_unitless_resolution(path: Path, slides: SimpleNamespace) -> None:
    tifffile.imwrite(path, _gray(slides), resolution=(4, 4), resolutionunit="NONE")


def _mpp_png_dpi(path: Path, slides: SimpleNamespace) -> None:
    Image.fromarray(_gray(slides)).save(path, dpi=(50800, 50800))


def _mpp_png_72dpi(path: Path, slides: SimpleNamespace) -> None:
    Image.fromarray(_gray(slides)).save(path, dpi=(72, 72))


def _mpp_jpeg_dpi(path: Path, slides: SimpleNamespace) -> None:
    Image.fromarray(_gray(slides)).save(path, dpi=(50800, 50800))


@pytest.mark.parametrize(
    ("write", "filename", "mpp"),
    [
        (_mpp_ome_um, "a.ome.tif", 0.25),
        (_mpp_ome_nm, "a.ome.tif", 0.25),
        (_mpp_aperio, "a.svs", 0.499),
        (_mpp_resolution_cm, "a.tif", 0.5),
        (_mpp_resolution_inch, "a.tif", 0.5),
        (_mpp_imagej_micron, "a.tif", 0.3),
        (_mpp_imagej_escaped_micro_sign, "a.tif", 0.3),
        (_mpp_none, "a.tif", None),
        (_mpp_screen_72dpi, "a.tif", None),
        (_mpp_unitless_resolution, "a.tif", None),
        (_mpp_png_dpi, "a.png", 0.5),
        (_mpp_png_72dpi, "a.png", None),
        (_mpp_jpeg_dpi, "a.jpg", 0.5),
    ],
    ids=[
        "ome-PhysicalSizeX-um",
        "ome-PhysicalSizeX-nm",
        "aperio-MPP",
        "resolution-tag-cm",
        "resolution-tag-inch",
        "imagej-unit-micron",
        "imagej-unit-escaped-micro-sign",
        "none",
        "72dpi-screen-is-not-a-pixel-size",
        "resolution-without-unit",
        "png-dpi",
        "png-72dpi",
        "jpeg-dpi",
    ],
)
def test_pixel_size_comes_from_the_file_or_is_none(
    slides,
    tmp_path: Path,
    write: Callable[[Path, SimpleNamespace], None],
    filename: str,
    mpp: float | None,
) -> None:
    path = tmp_path / filename
    write(path, slides)
    with open_slide(path) as slide:
        if mpp is None:
            assert slide.mpp is None
            assert slide.level_mpp(0) is None
        else:
            assert slide.mpp == pytest.approx(mpp, rel=1e-6)
            assert isinstance(slide.mpp, float)


# -- laziness and parallel decoding ----------------------------------------------------


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("pixel data was read")


@pytest.mark.parametrize(
    "layout",
    [_ome_zlib, _svs, _multiseries, _flat_striped_uint16, _hubmap_planar_rgb, _png_rgb, _jpeg],
    ids=["ome", "svs", "multi-series", "striped", "hubmap", "png", "jpeg"],
)
def test_open_reads_no_pixel_data(
    slides,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    layout: Callable[[Path, SimpleNamespace], Layout],
) -> None:
    case = layout(tmp_path, slides)  # writes the file and its ground truth before the patch
    monkeypatch.setattr(TiffLevelReader, "read", _refuse)
    monkeypatch.setattr(TiffLevelReader, "_native_chunk", _refuse)
    monkeypatch.setattr(slide_files, "_decode_plain", _refuse)
    with open_slide(case.path) as slide:
        assert [level.shape for level in slide.levels] == [e.shape for e in case.expected]
        assert slide.dtype == case.expected[0].dtype
        with pytest.raises(AssertionError, match="pixel data was read"):
            slide.levels[-1].compute()


def test_open_of_a_large_flat_slide_reads_no_pixel_data(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = slides.write_tiled(
        tmp_path / "flat.tif", slides.rgb_image(600, 700), compression="zlib"
    )
    monkeypatch.setattr(slide_module, "OVERVIEW_THRESHOLD", 256)
    monkeypatch.setattr(TiffLevelReader, "read", _refuse)
    with open_slide(path) as slide:
        assert slide.shape == (600, 700, 3)
        assert slide.needs_overviews


def test_full_level_decodes_on_more_than_one_thread(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = slides.rgb_image(1024, 1024, seed=3)
    path = slides.write_tiled(tmp_path / "flat.tif", image, tile=128, compression="jpeg")
    monkeypatch.setattr(tiff_level, "TARGET_CHUNK_SIDE", 256)
    threads: set[int] = set()
    original = TiffLevelReader.read

    def recording_read(self: TiffLevelReader, box: tuple[slice, ...]) -> np.ndarray:
        threads.add(threading.get_ident())
        time.sleep(0.005)  # hold the worker so the pool's other threads take tasks too
        return original(self, box)

    monkeypatch.setattr(TiffLevelReader, "read", recording_read)
    with open_slide(path) as slide:
        level = slide.levels[0]
        assert level.npartitions >= 16
        with dask.config.set(scheduler="threads", num_workers=4):
            pixels = level.compute()
    np.testing.assert_array_equal(pixels, tiff_truth(path))
    assert len(threads) > 1


def test_default_scheduler_is_threaded(slides, tmp_path: Path) -> None:
    """``levels[0].compute()`` without any dask config uses the threaded scheduler."""
    path = slides.write_tiled(
        tmp_path / "flat.tif", slides.rgb_image(64, 64), tile=16, compression=None
    )
    with open_slide(path) as slide:
        assert dask.base.get_scheduler(collections=[slide.levels[0]]) is dask.threaded.get


# -- regions and chunking --------------------------------------------------------------


@pytest.mark.parametrize(("y", "x"), [(0, 0), (300, 517), (1, 1), (1500 - 512, 1700 - 512)])
def test_region_read_equals_the_same_region_of_the_full_array(
    slides, tmp_path: Path, y: int, x: int
) -> None:
    image = slides.rgb_image(1500, 1700, seed=5)
    path = slides.write_tiled(tmp_path / "flat.tif", image, tile=256, compression="zlib")
    with open_slide(path) as slide:
        region = slide.levels[0][y : y + 512, x : x + 512].compute()
    np.testing.assert_array_equal(region, image[y : y + 512, x : x + 512])


def test_region_read_of_a_striped_slide_at_unaligned_offsets(slides, tmp_path: Path) -> None:
    image = slides.gray_image(900, 700, "uint16", seed=6)
    path = slides.write_striped(tmp_path / "striped.tif", image, rowsperstrip=16)
    with open_slide(path) as slide:
        region = slide.levels[0][131:643, 77:589].compute()
    np.testing.assert_array_equal(region, image[131:643, 77:589])


def test_region_read_of_a_pyramid_level_at_unaligned_offsets(slides, tmp_path: Path) -> None:
    image = slides.rgb_image(1400, 1800, seed=7)
    path = slides.write_ome_pyramid(tmp_path / "p.ome.tif", image, compression="jpeg", levels=2)
    truth = tiff_truth(path, level=1)
    with open_slide(path) as slide:
        region = slide.levels[1][33:545, 101:613].compute()
    np.testing.assert_array_equal(region, truth[33:545, 101:613])


def _native_tile(path: Path, series: int = 0, level: int = 0) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tif:
        page = tif.series[series].levels[level].keyframe
        if page.is_tiled:
            return page.tilelength, page.tilewidth
        return page.rowsperstrip, page.imagewidth


@pytest.mark.parametrize(
    ("write", "tile"),
    [
        (
            lambda p, im, slides: slides.write_tiled(p, im, tile=256, compression="jpeg"),
            (256, 256),
        ),
        (
            lambda p, im, slides: slides.write_tiled(p, im, tile=128, compression="zlib"),
            (128, 128),
        ),
        (
            lambda p, im, slides: slides.write_tiled(p, im, tile=192, compression="zlib"),
            (192, 192),
        ),
        (lambda p, im, slides: slides.write_striped(p, im, rowsperstrip=16), (16, 2300)),
        (lambda p, im, slides: slides.write_planar(p, im, tile=256), (256, 256)),
    ],
    ids=["tile256", "tile128", "tile192", "strips16", "planar-tile256"],
)
def test_dask_chunks_are_whole_native_tiles(
    slides,
    tmp_path: Path,
    write: Callable[[Path, np.ndarray, SimpleNamespace], Path],
    tile: tuple[int, int],
) -> None:
    image = slides.rgb_image(2100, 2300, seed=8)
    path = write(tmp_path / "flat.tif", image, slides)
    assert _native_tile(path) == tile
    with open_slide(path) as slide:
        level = slide.levels[0]
        ychunks, xchunks = level.chunks[:2]
        assert sum(ychunks) == 2100
        assert sum(xchunks) == 2300
        for chunks, native in ((ychunks, tile[0]), (xchunks, tile[1])):
            # Every chunk but the last is a whole number of tiles; the last ends the image.
            assert all(c % native == 0 for c in chunks[:-1]), chunks
        # Chunks are big enough that task overhead stays small, but not whole images.
        assert max(ychunks) * max(xchunks) >= 256 * 256
        assert level.npartitions > 1
        assert sum(level.chunks[2]) == 3


def test_pyramid_levels_are_chunked_by_their_own_tiles(slides, tmp_path: Path) -> None:
    image = slides.rgb_image(2100, 2300, seed=9)
    path = slides.write_ome_pyramid(tmp_path / "p.ome.tif", image, tile=256, levels=3)
    with open_slide(path) as slide:
        for level in slide.levels:
            for chunks in level.chunks[:2]:
                assert all(c % 256 == 0 for c in chunks[:-1])


# -- context manager and close -----------------------------------------------------


def test_context_manager_closes_the_file(slides, tmp_path: Path) -> None:
    path = slides.write_ome_pyramid(tmp_path / "p.ome.tif", slides.rgb_image(300, 300), levels=2)
    with open_slide(path) as slide:
        tif = slide._source.tif
        assert not tif.filehandle.closed
        pixels = slide.levels[1].compute()
    assert tif.filehandle.closed
    # Arrays computed before closing stay valid.
    assert pixels.shape == (150, 150, 3)


def test_close_is_explicit_too_and_releases_the_file(slides, tmp_path: Path) -> None:
    path = slides.write_tiled(
        tmp_path / "flat.tif", slides.rgb_image(300, 300), compression="zlib"
    )
    slide = open_slide(path)
    slide.close()
    assert slide._source.tif.filehandle.closed


def test_plain_image_decodes_on_demand_even_after_close(slides, tmp_path: Path) -> None:
    path = slides.write_pil(tmp_path / "a.png", Image.fromarray(slides.rgb_image(40, 50)))
    with open_slide(path) as slide:
        slide.levels[0].compute()
    # The image decodes again after close (it is reopened on demand).
    np.testing.assert_array_equal(slide.levels[0].compute(), pil_truth(path))


# -- bad input ----------------------------------------------------------------------


def _missing(tmp: Path, slides: SimpleNamespace) -> Path:
    return tmp / "nothing-here.tif"


def _folder(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "folder.tif"
    path.mkdir()
    return path


def _empty(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "empty.tif"
    path.touch()
    return path


def _truncated_tiff(tmp: Path, slides: SimpleNamespace) -> Path:
    path = slides.write_tiled(
        tmp / "truncated.tif", slides.rgb_image(512, 512), compression="zlib"
    )
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    return path


def _truncated_tiff_header(tmp: Path, slides: SimpleNamespace) -> Path:
    path = slides.write_tiled(
        tmp / "cut_header.tif", slides.rgb_image(512, 512), compression="zlib"
    )
    path.write_bytes(path.read_bytes()[:20])
    return path


def _text_named_tif(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "notes.tif"
    path.write_text("this is not an image\n")
    return path


def _random_bytes(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "noise.tif"
    path.write_bytes(b"\x00" + np.random.default_rng(0).bytes(4095))
    return path


def _random_after_tiff_magic(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "bad_ifd.tif"
    path.write_bytes(b"II*\0" + np.random.default_rng(1).bytes(4092))
    return path


def _z_stack(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "stack.tif"
    stack = np.stack([slides.gray_image(40, 50, "uint8", seed=s) for s in range(5)])
    tifffile.imwrite(path, stack, metadata={"axes": "ZYX"})
    return path


def _imagej_z_stack(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "stack_ij.tif"
    stack = np.stack([slides.gray_image(40, 50, "uint8", seed=s) for s in range(5)])
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    return path


def _ome_time_series(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "timelapse.ome.tif"
    frames = np.stack([slides.rgb_image(40, 50, seed=s) for s in range(3)])
    tifffile.imwrite(path, frames, ome=True, photometric="rgb", metadata={"axes": "TYXS"})
    return path


def _complex64(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "complex.tif"
    tifffile.imwrite(path, np.ones((40, 50), np.complex64))
    return path


def _zero_width_header(tmp: Path, slides: SimpleNamespace) -> Path:
    path = slides.write_tiled(
        tmp / "zero.tif", slides.gray_image(64, 64, "uint8"), tile=16, metadata=None
    )
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages.first.tags["ImageWidth"].overwrite(0)
    return path


def _absurd_width_header(tmp: Path, slides: SimpleNamespace) -> Path:
    path = slides.write_striped(
        tmp / "huge.tif", slides.gray_image(64, 64, "uint8"), rowsperstrip=16
    )
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages.first.tags["ImageWidth"].overwrite(3_000_000)
    return path


def _truncated_png_header(tmp: Path, slides: SimpleNamespace) -> Path:
    path = slides.write_pil(tmp / "cut.png", Image.fromarray(slides.rgb_image(40, 50)))
    path.write_bytes(path.read_bytes()[:30])
    return path


BAD_FILES: dict[str, tuple[Callable[[Path, SimpleNamespace], Path], str]] = {
    "missing": (_missing, "no such file"),
    "folder": (_folder, "folder"),
    "empty": (_empty, "empty"),
    "truncated-tiff": (_truncated_tiff, "truncated"),
    "truncated-tiff-header": (_truncated_tiff_header, "TIFF"),
    "text-named-tif": (_text_named_tif, "not a TIFF, PNG or JPEG"),
    "random-bytes": (_random_bytes, "not a TIFF, PNG or JPEG"),
    "random-after-tiff-magic": (_random_after_tiff_magic, "TIFF"),
    "z-stack": (_z_stack, "2-D"),
    "imagej-z-stack": (_imagej_z_stack, "2-D"),
    "ome-time-series": (_ome_time_series, "2-D"),
    "complex64": (_complex64, "complex64 is not supported"),
    "zero-width-header": (_zero_width_header, ""),
    "absurd-width-header": (_absurd_width_header, "implausible"),
    "truncated-png-header": (_truncated_png_header, "not a readable PNG or JPEG"),
}


@pytest.mark.parametrize(("make", "problem"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_input_raises_one_slide_error_naming_the_file(
    slides, tmp_path: Path, make: Callable[[Path, SimpleNamespace], Path], problem: str
) -> None:
    path = make(tmp_path, slides)
    with pytest.raises(SlideError) as caught:
        open_slide(path)
    error = caught.value
    assert isinstance(error, ValueError)  # callers that catch ValueError still work
    assert error.path == str(path)
    assert str(error).startswith(f"{path}: ")
    assert problem in error.problem
    assert "\n" not in str(error)


def test_unsupported_dtype_message_lists_what_is_supported(slides, tmp_path: Path) -> None:
    with pytest.raises(SlideError, match=r"complex64 .*expected one of .*uint8"):
        open_slide(_complex64(tmp_path, slides))


def test_absurd_shape_is_refused_before_any_pixel_is_read(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = slides.write_tiled(
        tmp_path / "wide.tif", slides.rgb_image(64, 300), tile=16, compression=None
    )
    monkeypatch.setattr(slide_module, "MAX_SIDE", 256)
    monkeypatch.setattr(TiffLevelReader, "read", _refuse)
    with pytest.raises(SlideError, match=r"wide\.tif: shape \(64, 300, 3\) is implausible"):
        open_slide(path)


def test_too_many_channels_is_refused(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = slides.rgb_image(32, 32, channels=4)
    path = slides.write_tiled(
        tmp_path / "rgba.tif", image, tile=16, compression="zlib", extrasamples=[2]
    )
    monkeypatch.setattr(slide_module, "MAX_CHANNELS", 3)
    with pytest.raises(SlideError, match="implausible"):
        open_slide(path)


def test_failed_open_closes_the_tiff(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tifffile.TiffFile] = []
    original = tifffile.TiffFile.__init__

    def recording_init(self: tifffile.TiffFile, *args: object, **kwargs: object) -> None:
        opened.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffFile, "__init__", recording_init)
    for make in (_complex64, _z_stack, _truncated_tiff):
        path = make(tmp_path, slides)
        opened.clear()
        with pytest.raises(SlideError):
            open_slide(path)
        assert opened
        assert all(tif.filehandle.closed for tif in opened), path.name


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_plain_image_fails_with_a_slide_error_when_read(
    slides, tmp_path: Path, suffix: str
) -> None:
    """A cut PNG/JPEG has a valid header, so (lazy) open succeeds; decoding names the file."""
    path = slides.write_pil(tmp_path / f"cut{suffix}", Image.fromarray(slides.rgb_image(200, 300)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with open_slide(path) as slide:
        assert slide.shape == (200, 300, 3)
        with pytest.raises(SlideError, match=rf"cut\{suffix}: cannot decode the image"):
            slide.levels[0].compute()


@pytest.mark.parametrize("compression", ["jpeg", "zlib"])
def test_corrupt_tile_raises_a_slide_error_naming_the_file_when_read(
    slides, tmp_path: Path, compression: str
) -> None:
    path = slides.write_tiled(
        tmp_path / "corrupt.tif", slides.rgb_image(512, 512), compression=compression
    )
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages.first.dataoffsets[1], tif.pages.first.databytecounts[1]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(count)  # the second tile zeroed, same length
    path.write_bytes(bytes(data))
    slide = open_slide(path)  # the header is intact: opening succeeds
    with slide, pytest.raises(SlideError, match=r"corrupt\.tif"):
        slide.levels[0].compute()


def test_one_bit_tiff_masks_open_as_bool(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), bool)
    mask[5:20, 10:30] = True
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    with open_slide(tmp_path / "mask.tif") as slide:
        assert slide.dtype == np.bool_
        np.testing.assert_array_equal(slide.levels[0].compute(), mask)


@pytest.mark.parametrize("dpi", [72, 96])
def test_a_screen_resolution_is_no_pixel_size_and_no_warning(tmp_path: Path, dpi: int) -> None:
    import warnings

    png, tif = tmp_path / "photo.png", tmp_path / "photo.tif"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(png, dpi=(dpi, dpi))
    tifffile.imwrite(tif, np.zeros((40, 60), np.uint8), resolution=(dpi, dpi), resolutionunit=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert open_slide(png).mpp is None
        assert open_slide(tif).mpp is None


def test_a_microscope_pixel_size_out_of_range_is_ignored_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.zeros((40, 60), np.uint8), resolution=(4e9, 4e9), resolutionunit=3)
    with pytest.warns(UserWarning, match="outside 0.01-100 µm and is ignored"):
        assert open_slide(path).mpp is None

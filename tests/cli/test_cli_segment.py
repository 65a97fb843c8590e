"""``slide-unet segment``: writes masks by extension, one-line errors on bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

import slide_unet
from slide_unet import cli

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "kidney_pas.ome.tif"


@pytest.fixture(autouse=True)
def _quiet_placeholder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_segment_writes_a_pyramidal_ome_tiff_and_its_rle(tmp_path, capsys):
    out, rle = tmp_path / "mask.ome.tif", tmp_path / "mask.csv"
    assert cli.main(["segment", str(SAMPLE), "-o", str(out), "--rle", str(rle)]) == 0
    assert "wrote" in capsys.readouterr().out
    with slide_unet.open_slide(out) as written:
        assert written.shape == (2048, 2048)
        assert written.mpp == pytest.approx(0.5)
        assert len(written.levels) > 1
        mask = written.levels[0].compute()
    np.testing.assert_array_equal(
        slide_unet.read_mask(rle, shape=mask.shape), (mask != 0).astype(np.uint8)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.csv", "mask.ome.tif"]


def test_segment_region_gives_the_region_shape(tmp_path):
    out = tmp_path / "part.zarr"
    assert cli.main(["segment", str(SAMPLE), "-o", str(out), "--region", "0:512,256:1024"]) == 0
    assert slide_unet.read_mask(out).shape == (512, 768)


def test_segment_min_object_area_drops_the_small_false_positives(tmp_path):
    plain, cleaned = tmp_path / "plain.zarr", tmp_path / "cleaned.zarr"
    # Every object kept (the bundled card's own area would already drop the specks).
    assert cli.main(["segment", str(SAMPLE), "-o", str(plain), "--min-object-um2", "0"]) == 0
    assert cli.main(["segment", str(SAMPLE), "-o", str(cleaned), "--min-object-um2", "1500"]) == 0
    before = np.asarray(slide_unet.read_mask(plain)).copy()
    after = np.asarray(slide_unet.read_mask(cleaned))
    labels, n = ndimage.label(before, structure=np.ones((3, 3)))
    areas = ndimage.sum_labels(before, labels, range(1, n + 1)) * 0.25  # µm² at 0.5 µm/px
    assert areas.min() < 1500 <= areas.max()  # the sample has both
    keep = np.flatnonzero(areas >= 1500) + 1
    np.testing.assert_array_equal(after, np.isin(labels, keep).astype(np.uint8))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "unknown model"),
        (["--region", "0:512,4000:5000"], "region"),
    ],
)
def test_segment_bad_input_is_one_line_and_leaves_no_file(tmp_path, capsys, args, message):
    out = tmp_path / "mask.ome.tif"
    assert cli.main(["segment", str(SAMPLE), "-o", str(out), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("slide-unet segment: error:")
    assert message in err[0]
    assert list(tmp_path.iterdir()) == []


def test_segment_of_a_missing_slide_is_one_line(tmp_path, capsys):
    assert cli.main(["segment", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "m.zarr")]) == 1
    assert "no such file" in capsys.readouterr().err

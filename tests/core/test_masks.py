"""Tests of the HuBMAP Kaggle RLE codec and its CSV files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from slide_unet.core.masks import read_rle_csv, rle_decode, rle_encode, write_rle_csv

#: Slides of the competition's train.csv: id -> (height, width).
TRAIN_SLIDES = {"2f6ecfcdf": (31278, 25794), "8242609fa": (31299, 44066)}


def _train_csv(shared_data: Path) -> Path:
    path = shared_data / "glomeruli" / "hubmap_rle" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


# --- small, hand-checked cases ------------------------------------------------


def test_encode_is_column_major_and_one_based() -> None:
    mask = np.array([[0, 1, 0], [1, 1, 0]], dtype=np.uint8)
    # Column-major: [0, 1, 1, 1, 0, 0] -> one run starting at pixel 2, length 3.
    assert rle_encode(mask) == "2 3"


def test_decode_small() -> None:
    out = rle_decode("2 3 6 1", (2, 3))
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 1, 1]])
    assert out.dtype == np.uint8


def test_runs_touching_both_ends() -> None:
    mask = np.ones((3, 4), dtype=bool)
    mask[1, 1] = False
    rle = rle_encode(mask)
    assert rle == "1 4 6 7"
    np.testing.assert_array_equal(rle_decode(rle, mask.shape), mask)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (4, 0), (1, 1), (5, 7)])
def test_empty_mask(shape: tuple[int, int]) -> None:
    assert rle_encode(np.zeros(shape, np.uint8)) == ""
    out = rle_decode("", shape)
    assert out.shape == shape
    assert not out.any()
    assert rle_decode("  \n", shape).shape == shape


def test_any_nonzero_is_foreground() -> None:
    mask = np.array([[0, 255], [7, -1]], dtype=np.int16)
    assert rle_encode(mask) == rle_encode(mask != 0) == "2 3"


def test_fortran_and_c_order_agree() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((37, 23)) > 0.6
    assert rle_encode(mask) == rle_encode(np.asfortranarray(mask))


def test_decode_accepts_touching_runs() -> None:
    # Not what the encoder writes, but a valid description of the same mask.
    np.testing.assert_array_equal(rle_decode("1 2 3 2", (2, 2)), np.ones((2, 2)))


@pytest.mark.parametrize(
    ("rle", "shape", "message"),
    [
        ("1 2 3", (2, 2), "odd number"),
        ("1 a", (2, 2), "only integers"),
        ("1.5 2", (2, 2), "only integers"),
        ("0 2", (2, 2), "1-based"),
        ("-3 2", (2, 2), "1-based"),
        ("1 0", (2, 2), "positive"),
        ("2 -1", (2, 2), "positive"),
        ("3 3", (2, 2), "past the end"),
        ("5 1", (2, 2), "past the end"),
        ("1 3 2 1", (3, 3), "overlap"),
        ("5 1 1 1", (3, 3), "not sorted"),
        ("1 1", (2,), "two integers"),
        ("1 1", (-1, 2), "negative"),
    ],
)
def test_decode_bad_input(rle: str, shape: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, shape)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_encode_needs_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros(shape, np.uint8))


# --- properties -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.bool_, np.uint8, np.int32]),
        shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
        elements=st.integers(0, 1),
    )
)
def test_roundtrip_mask(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    out = rle_decode(rle, mask.shape)
    assert out.dtype == np.uint8
    assert out.shape == mask.shape
    np.testing.assert_array_equal(out, mask != 0)
    assert rle_encode(out) == rle
    if rle:
        values = np.array(rle.split(), dtype=np.int64)
        assert values.size % 2 == 0
        assert values[0] >= 1
        assert values[1::2].sum() == np.count_nonzero(mask)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), max_size=20),
)
def test_roundtrip_rle(height: int, width: int, gaps_and_lengths: list[tuple[int, int]]) -> None:
    # Canonical RLE: sorted, gaps of at least one background pixel, inside the mask.
    pairs, pos = [], 0
    for gap, length in gaps_and_lengths:
        start = pos + gap + (1 if pairs else 0)
        if start + length - 1 > height * width:
            break
        pairs.append(f"{start} {length}")
        pos = start + length - 1
    rle = " ".join(pairs)
    assert rle_encode(rle_decode(rle, (height, width))) == rle


# --- CSV ------------------------------------------------------------------------


def test_csv_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    masks = {"a": rng.random((20, 30)) > 0.5, "b": np.zeros((4, 4), np.uint8)}
    path = write_rle_csv(tmp_path / "sub.csv", {**masks, "c": "3 2"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,predicted"
    assert [line.split(",")[0] for line in lines[1:]] == ["a", "b", "c"]
    for key, mask in masks.items():
        np.testing.assert_array_equal(rle_decode(read_rle_csv(path, key), mask.shape), mask)
    assert read_rle_csv(path, "b") == ""
    assert read_rle_csv(path, "c") == "3 2"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]  # no temp files left


def test_csv_encoding_header(tmp_path: Path) -> None:
    path = write_rle_csv(tmp_path / "train.csv", {"x": "1 2"}, column="encoding")
    assert path.read_text(encoding="utf-8") == "id,encoding\nx,1 2\n"
    assert read_rle_csv(path, "x") == "1 2"


def test_csv_replaces_atomically_and_keeps_old_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_rle_csv(path, {"old": "1 1"})
    with pytest.raises(ValueError, match="2-D"):
        write_rle_csv(path, {"new": np.zeros((2, 2, 2))})
    with pytest.raises(ValueError, match="comma"):
        write_rle_csv(path, {"a,b": "1 1"})
    assert read_rle_csv(path, "old") == "1 1"
    write_rle_csv(path, {"new": "2 1"})
    assert read_rle_csv(path, "new") == "2 1"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_csv_missing_id(tmp_path: Path) -> None:
    path = write_rle_csv(tmp_path / "s.csv", {"one": "1 1", "two": ""})
    with pytest.raises(ValueError, match=re.escape("id 'three' not found")):
        read_rle_csv(path, "three")


def test_csv_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,rle\nx,1 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header"):
        read_rle_csv(path, "x")


def test_csv_bad_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="column"):
        write_rle_csv(tmp_path / "x.csv", {"x": "1 1"}, column="rle")


# --- golden tests on the real competition data -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("slide_id", sorted(TRAIN_SLIDES))
def test_train_csv_roundtrip(shared_data: Path, slide_id: str) -> None:
    rle = read_rle_csv(_train_csv(shared_data), slide_id)
    assert rle_encode(rle_decode(rle, TRAIN_SLIDES[slide_id])) == rle


def _pad_and_sample(mask: np.ndarray, multiple: int, step: int) -> np.ndarray:
    """``np.pad(mask, even padding to `multiple`)[::step, ::step]`` without the big copy."""
    out_shape = tuple(-(-n // multiple) * multiple // step for n in mask.shape)
    index = []
    for n, m in zip(mask.shape, out_shape, strict=True):
        before = (m * step - n) // 2
        index.append(np.arange(m) * step - before)
    rows, cols = index
    out = np.zeros(out_shape, dtype=mask.dtype)
    r_ok = (rows >= 0) & (rows < mask.shape[0])
    c_ok = (cols >= 0) & (cols < mask.shape[1])
    out[np.ix_(r_ok, c_ok)] = mask[np.ix_(rows[r_ok], cols[c_ok])]
    return out


def test_pad_and_sample_matches_np_pad() -> None:
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 2, (45, 29), dtype=np.uint8)
    pad = [(-n % 16 // 2, -n % 16 - -n % 16 // 2) for n in mask.shape]
    expected = np.pad(mask, pad)[::4, ::4]
    np.testing.assert_array_equal(_pad_and_sample(mask, 16, 4), expected)


@pytest.mark.slow
def test_golden_hubmap_red16_tiles(shared_data: Path) -> None:
    """Decoding 2f6ecfcdf, padding to 4096, sampling 16x gives the red16 mask tiles."""
    tiles_dir = shared_data / "glomeruli" / "hubmap_red16" / "masks"
    files = sorted(tiles_dir.glob("2f6ecfcdf_*red16.png"))
    if not files:
        pytest.skip(f"no mask tiles in {tiles_dir}")
    mask = rle_decode(read_rle_csv(_train_csv(shared_data), "2f6ecfcdf"), (31278, 25794))
    small = _pad_and_sample(mask, multiple=4096, step=16)
    del mask
    assert small.shape == (2048, 1792)
    n_cols = small.shape[1] // 256
    checked_positive = 0
    for file in files:
        index = int(re.fullmatch(r"2f6ecfcdf_(\d+)red16", file.stem)[1])
        row, col = divmod(index, n_cols)
        expected = np.asarray(Image.open(file))
        got = small[row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256]
        np.testing.assert_array_equal(got, expected, err_msg=file.name)
        checked_positive += bool(expected.any())
    assert checked_positive >= 3  # the test is not vacuous

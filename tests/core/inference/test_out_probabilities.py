"""Probabilities beside the mask in one run (issue 19): ``segment(out=mask,
out_probabilities=p)`` fills ``p`` with uint8 ``round(p * 255)`` from the same pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slide_unet.core.errors import InputError
from slide_unet.core.inference.segment import segment

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "kidney_pas.ome.tif"


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    """The sample's mask and float32 probabilities, each from its own plain run."""
    kwargs = {"device": "cpu", "precision": "fp32"}
    mask = segment(SAMPLE, "glomeruli", **kwargs)
    probabilities = segment(SAMPLE, "glomeruli", probabilities=True, **kwargs)
    return mask, probabilities


def test_out_probabilities_are_the_probabilities_quantised_and_the_mask_unchanged(
    reference: tuple[np.ndarray, np.ndarray],
) -> None:
    mask, probabilities = reference
    out = np.full(mask.shape, 7, np.uint8)  # an earlier result, replaced everywhere
    quantised = np.full(mask.shape, 200, np.uint8)
    result = segment(
        SAMPLE, "glomeruli", device="cpu", precision="fp32", out=out, out_probabilities=quantised
    )
    assert result is out
    np.testing.assert_array_equal(out, mask)  # the mask is what it is without them
    assert mask.any()
    # Within one step of 1/255 of the float run; where it ran, exactly round(p * 255).
    error = np.abs(quantised.astype(np.float64) / 255 - probabilities)
    assert error.max() <= 1 / 255 + 1e-6
    ran = probabilities > 0  # blocks skipped as background are 0 in both
    expected = np.rint(probabilities[ran].astype(np.float64) * 255)
    assert np.abs(quantised[ran] - expected).max() <= 1  # float rounding at .5 only
    assert np.mean(quantised[ran] == expected) > 0.999
    assert (quantised[~ran] == 0).all()  # skipped blocks: cleared with the mask
    # The mask is the probability above the card's threshold (0.5) on the same values.
    assert (quantised[mask == 1] >= 127).all()


def test_out_probabilities_are_refused_without_an_out_array(tmp_path: Path) -> None:
    quantised = np.zeros((2048, 2048), np.uint8)
    with pytest.raises(InputError, match="out= an array"):
        segment(SAMPLE, "glomeruli", device="cpu", out_probabilities=quantised)
    with pytest.raises(InputError, match="out= an array"):
        segment(
            SAMPLE,
            "glomeruli",
            device="cpu",
            out=tmp_path / "mask.zarr",
            out_probabilities=quantised,
        )
    with pytest.raises(InputError, match="not with probabilities=True"):
        segment(
            SAMPLE,
            "glomeruli",
            device="cpu",
            probabilities=True,
            out=np.zeros((2048, 2048), np.float32),
            out_probabilities=quantised,
        )
    with pytest.raises(InputError, match="shape"):
        segment(
            SAMPLE,
            "glomeruli",
            device="cpu",
            out=np.zeros((2048, 2048), np.uint8),
            out_probabilities=np.zeros((10, 10), np.uint8),
        )

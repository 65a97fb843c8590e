"""Colour matching: a slide's tissue colour measured at a coarse scale and brought to the
colour a model's training tissue had (its card's ``colour_reference``), folded into the
input normalisation, the same for every tile, region, worker and Live block."""

from __future__ import annotations

import types

import numpy as np
import pytest

from slide_unet.core.errors import ModelError
from slide_unet.core.inference.planning import COLOUR_GAIN, colour_match, plan_segmentation
from slide_unet.core.inference.segment import segment
from slide_unet.core.model.card import ModelCard
from slide_unet.core.slide.tissue import TissueColour, tissue_colour

MPP = 0.5


def _slide(seed: int = 0, side: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """White background around a square of pinkish tissue whose red channel straddles
    one half (the stand-in model's threshold); and where the tissue is."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), 245, np.uint8)
    tissue = np.zeros((side, side), bool)
    tissue[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = True
    smooth = np.kron(rng.normal(0, 1, (side // 32, side // 32, 3)), np.ones((32, 32, 1)))
    colour = np.array([0.52, 0.35, 0.60]) + np.array([0.10, 0.08, 0.06]) * smooth
    image[tissue] = np.clip(colour[tissue] * 255, 0, 255).astype(np.uint8)
    return image, tissue


def _rescanned(image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """The same tissue from a darker, bluer scanner (the background stays white)."""
    out = image.copy()
    pixels = image[tissue].astype(np.float64)
    out[tissue] = np.clip(pixels * [0.7, 0.8, 1.05] + [-15, -5, 8], 0, 255).astype(np.uint8)
    return out


def _model(red_threshold, reference: dict | None):
    model = red_threshold(tile=256)
    model.card = types.SimpleNamespace(**vars(model.card), colour_reference=reference)
    return model


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_the_card_records_the_pooled_colour_and_the_range_of_the_images() -> None:
    parts = [tissue_colour(_slide(seed=s)[0], mpp=MPP) for s in (1, 2, 3)]
    card = TissueColour.pooled(parts).to_card(parts)
    for c in range(3):
        means = [p.mean[c] for p in parts]
        assert card["mean_range"][0][c] == pytest.approx(min(means), abs=1e-5)
        assert card["mean_range"][1][c] == pytest.approx(max(means), abs=1e-5)
        assert min(means) <= card["mean"][c] <= max(means)
    ModelCard(name="m", normalization={}, colour_reference=card)  # a valid card


def test_tissue_colour_is_the_tissue_only_at_eight_microns() -> None:
    image, tissue = _slide()
    found = tissue_colour(image, mpp=MPP)
    assert found is not None
    assert found.mpp == 8.0
    # A 1024² image at 0.5 µm is 64² pixels at 8 µm; the tissue is the middle quarter.
    assert found.pixels == pytest.approx(32 * 32, rel=0.05)
    expected = image[tissue].mean(0) / 255
    np.testing.assert_allclose(found.mean, expected, atol=0.01)
    # Averaged over 16 x 16 pixels: smooth colour keeps most of its spread.
    assert all(0.03 < s < 0.12 for s in found.std)


def test_tissue_colour_says_nothing_of_fluorescence_or_a_speck_of_tissue() -> None:
    dark = np.zeros((512, 512, 3), np.uint8)
    dark[200:300, 200:300] = (0, 200, 0)
    assert tissue_colour(dark, mpp=MPP) is None  # dark background: not brightfield
    speck = np.full((1024, 1024, 3), 245, np.uint8)
    speck[500:540, 500:540] = (150, 60, 150)
    assert tissue_colour(speck, mpp=MPP) is None  # too few pixels to say a colour
    assert tissue_colour(np.zeros((64, 64), np.uint8), mpp=MPP) is None  # gray


def test_pooled_colour_is_that_of_all_the_pixels_together() -> None:
    a, _ = _slide(seed=1)
    b, _ = _slide(seed=2)
    parts = [tissue_colour(a, mpp=MPP), tissue_colour(b, mpp=MPP)]
    together = tissue_colour(np.concatenate([a, b], axis=1), mpp=MPP)
    pooled = TissueColour.pooled(parts)
    assert pooled.pixels == together.pixels
    np.testing.assert_allclose(pooled.mean, together.mean, atol=1e-9)
    np.testing.assert_allclose(pooled.std, together.std, atol=1e-9)


def test_a_rescanned_slide_segments_as_the_original_with_matching_and_not_without(
    red_threshold,
) -> None:
    image, tissue = _slide()
    reference = tissue_colour(image, mpp=MPP).to_card()
    model = _model(red_threshold, reference)
    original = segment(image, model, mpp=MPP, device="cpu", precision="fp32") > 0
    assert 0.2 < original[tissue].mean() < 0.8  # the threshold cuts through the tissue
    other = _rescanned(image, tissue)
    matched = segment(other, model, mpp=MPP, device="cpu", precision="fp32") > 0
    left = segment(other, model, mpp=MPP, device="cpu", precision="fp32", colour=False) > 0
    # The stand-in marks the white background too: compare the tissue.
    assert _dice(matched & tissue, original & tissue) > 0.97
    assert _dice(left & tissue, original & tissue) < 0.5
    # A model whose card records no colour is left as it was.
    plain = _model(red_threshold, None)
    np.testing.assert_array_equal(segment(other, plain, mpp=MPP, device="cpu") > 0, left)


def test_the_match_is_in_the_plan_and_the_same_for_a_region_as_for_the_whole_slide(
    red_threshold,
) -> None:
    image, tissue = _slide()
    model = _model(red_threshold, tissue_colour(image, mpp=MPP).to_card())
    other = _rescanned(image, tissue)
    plan = plan_segmentation(other, model, mpp=MPP, device="cpu")
    assert plan.colour_gain is not None
    assert plan.colour_gain[0] == pytest.approx(1 / 0.7, rel=0.05)  # red spread restored
    assert plan_segmentation(other, model, mpp=MPP, device="cpu", colour=False).colour_gain is None
    whole = segment(other, model, mpp=MPP, device="cpu", precision="fp32")
    box = (256, 600, 300, 700)
    part = segment(other, model, mpp=MPP, device="cpu", precision="fp32", region=box)
    np.testing.assert_array_equal(part, whole[box[0] : box[1], box[2] : box[3]])


def test_the_gain_is_bounded_for_tissue_of_nearly_one_colour() -> None:
    flat = TissueColour(1000, (0.6, 0.4, 0.6), (0.001, 0.2, 0.1))
    gain, shift = colour_match(GOOD, flat)
    assert gain == (COLOUR_GAIN[1], COLOUR_GAIN[0], 1.0)
    assert shift[2] == pytest.approx(0.1)


GOOD = {
    "mpp": 8.0,
    "mean": [0.7, 0.5, 0.7],
    "std": [0.1, 0.1, 0.1],
    "mean_range": [[0.6, 0.4, 0.6], [0.8, 0.6, 0.8]],
    "std_range": [[0.05, 0.05, 0.05], [0.2, 0.2, 0.2]],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mean": [0.7, 0.5]}, "3 numbers"),
        ({"mean": [0.7, 0.5, float("nan")]}, "3 numbers"),
        ({"std": [0.1, 0.0, 0.1]}, "3 numbers"),
        ({"std": [0.1, 0.1, 1e308]}, "3 numbers"),
        ({"mpp": -1}, "µm per pixel"),
        ({"mean_range": [[0.6, 0.4, 0.6]]}, "low, high"),
        ({"mean_range": [[0.9, 0.4, 0.6], [0.8, 0.6, 0.8]]}, "low above its high"),
        ({"std_range": "wide"}, "low, high"),
        ({"extra": 1}, "colour_reference must be"),
    ],
)
def test_a_hostile_colour_reference_is_one_model_error(change, message) -> None:
    assert ModelCard(name="m", normalization={}, colour_reference=GOOD).colour_reference == GOOD
    with pytest.raises(ModelError, match=message):
        ModelCard(name="m", normalization={}, colour_reference={**GOOD, **change})
    for hostile in ("bright", {k: v for k, v in GOOD.items() if k != "mpp"}):
        with pytest.raises(ModelError, match="colour_reference must be"):
            ModelCard(name="m", normalization={}, colour_reference=hostile)


def test_a_gray_model_has_no_colour_reference() -> None:
    parameters = {"in_channels": 1, "out_channels": 1, "base_width": 4, "depth": 2}
    with pytest.raises(ModelError, match="RGB models"):
        ModelCard(name="g", channels="gray", parameters=parameters, colour_reference=GOOD)


def test_a_slide_file_is_measured_once_until_it_changes(tmp_path, monkeypatch) -> None:
    import shutil
    from pathlib import Path

    from slide_unet.core.inference import planning

    sample = Path(__file__).resolve().parents[3] / "sample_data" / "kidney_pas.ome.tif"
    slide = tmp_path / "slide.ome.tif"
    shutil.copy(sample, slide)
    calls = []
    real = planning.tissue_colour

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "tissue_colour", counted)
    first = plan_segmentation(slide, "glomeruli", device="cpu")
    again = plan_segmentation(slide, "glomeruli", device="cpu", region=(0, 512, 0, 512))
    assert len(calls) == 1  # a Viewport click after a Whole slide run reads nothing more
    assert again.colour_gain == first.colour_gain
    slide.touch()  # the file changed (a new modification time): measured again
    plan_segmentation(slide, "glomeruli", device="cpu")
    assert len(calls) == 2

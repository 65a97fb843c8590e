"""The U-Net: output shapes, exact tiling with the halo, input checks, inference mode."""

from __future__ import annotations

import pytest
import torch

from slide_unet.core.errors import InputError
from slide_unet.core.model.unet import (
    MAX_BASE_WIDTH,
    MAX_DEPTH,
    MAX_TENSOR_ELEMENTS,
    NORMS,
    UNet,
    check_unet_config,
    unet_tensor_shapes,
)


def _small(depth: int = 2, norm: str = "batch", seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    model = UNet(in_channels=3, out_channels=1, base_width=4, depth=depth, norm=norm)
    # Non-trivial running statistics, so eval-mode batch norm is not an identity.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize(
    ("depth", "shape"), [(1, (2, 3, 6, 10)), (2, (1, 3, 32, 48)), (4, (1, 3, 64, 16))]
)
def test_output_has_one_logit_channel_and_the_input_size(depth: int, shape: tuple) -> None:
    model = _small(depth)
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 1, *shape[2:])
    assert out.dtype == torch.float32


def test_config_records_constructor_arguments_and_rebuilds_the_same_architecture() -> None:
    model = UNet(in_channels=1, out_channels=2, base_width=8, depth=3, norm="group")
    assert model.config == {
        "in_channels": 1,
        "out_channels": 2,
        "base_width": 8,
        "depth": 3,
        "norm": "group",
    }
    assert model.multiple == 8
    twin = UNet(**model.config)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_halo_is_the_receptive_radius_rounded_up_to_the_multiple() -> None:
    for depth in (1, 2, 3, 4, 5):
        model = UNet(base_width=2, depth=depth)
        assert model.halo % model.multiple == 0
        assert model.receptive_radius <= model.halo < model.receptive_radius + model.multiple


def _tile_vs_whole(model: UNet, dtype: torch.dtype, margin: int) -> float:
    """Largest difference between tiles cropped by ``margin`` and a whole-image pass."""
    model = model.to(dtype)
    m, core = model.multiple, 2 * model.multiple
    side = core + 2 * model.halo + 4 * m
    image = torch.randn(1, 3, side, side + m, generator=torch.Generator().manual_seed(1))
    image = image.to(dtype)
    worst = 0.0
    with torch.no_grad():
        whole = model(image)
        # Tiles start on a multiple of 2**depth so pooling windows line up.
        y_last = side - model.halo - core
        for y0, x0 in [
            (model.halo, model.halo),
            (model.halo + m, model.halo + 3 * m),
            (y_last, model.halo + m),
        ]:
            tile = image[:, :, y0 - margin : y0 + core + margin, x0 - margin : x0 + core + margin]
            out = model(tile)[:, :, margin : margin + core, margin : margin + core]
            expected = whole[:, :, y0 : y0 + core, x0 : x0 + core]
            worst = max(worst, float((out - expected).abs().max()))
    return worst


@pytest.mark.parametrize("norm", ["batch", "none"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_tile_cropped_by_halo_equals_whole_image_pass(norm: str, depth: int) -> None:
    model = _small(depth, norm)
    assert model.tile_exact
    assert _tile_vs_whole(model, torch.float32, model.halo) < 1e-5
    # In float64 the match is exact up to rounding: the halo covers everything a pixel sees.
    assert _tile_vs_whole(model, torch.float64, model.halo) < 1e-12


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_tile_cropped_by_one_multiple_less_than_the_halo_differs(depth: int) -> None:
    # Proves the float64 comparison above would catch a halo that is too small:
    # the halo is the tightest margin that works.
    model = _small(depth, "none")
    margin = model.halo - model.multiple
    assert _tile_vs_whole(model, torch.float64, margin) > 1e-12


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_per_tile_normalisations_are_not_tile_exact(norm: str) -> None:
    assert not UNet(base_width=4, depth=2, norm=norm).tile_exact


def test_wrong_rank_says_a_batch_is_expected() -> None:
    with pytest.raises(
        ValueError, match=r"expected a batch N x C x H x W, got shape \(3, 32, 32\)"
    ):
        _small()(torch.zeros(3, 32, 32))


def test_wrong_channels_says_how_many_are_expected() -> None:
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 4"):
        _small()(torch.zeros(1, 4, 32, 32))


def test_tile_side_not_a_multiple_says_which_sides_would_work() -> None:
    model = _small(depth=4)
    with pytest.raises(ValueError, match="multiples of 16") as info:
        model.check_input(torch.zeros(1, 3, 30, 64))
    assert "H 30 -> 16 or 32" in str(info.value)
    assert "W" not in str(info.value).split("use", 1)[1]
    with pytest.raises(ValueError, match=r"W 8 -> 16 or 16"):
        model.check_input(torch.zeros(1, 3, 16, 8))
    model.check_input(torch.zeros(2, 3, 16, 48))


def test_invalid_constructor_arguments_are_refused() -> None:
    with pytest.raises(InputError, match="norm must be one of"):
        UNet(norm="layer")
    with pytest.raises(InputError, match="depth must be a positive integer, got 0"):
        UNet(depth=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": MAX_DEPTH + 1}, f"depth must be at most {MAX_DEPTH}, got 9"),
        ({"base_width": 20_000, "depth": 1}, f"base_width must be at most {MAX_BASE_WIDTH}"),
        ({"in_channels": 1000}, "in_channels must be at most"),
        ({"base_width": 64, "depth": 5}, r"124,398,295 weights \(0\.5 GB in float32\); at most"),
        ({"base_width": 12, "norm": "group"}, "needs every level's width to be a multiple of 8"),
    ],
)
def test_a_network_too_large_or_unbuildable_is_refused_before_allocating(
    kwargs: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        UNet(**kwargs)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(("in_channels", "base_width", "depth"), [(3, 4, 1), (1, 8, 3), (3, 3, 2)])
def test_tensor_shapes_are_those_of_the_built_network(
    norm: str, in_channels: int, base_width: int, depth: int
) -> None:
    config = {"in_channels": in_channels, "out_channels": 2, "base_width": base_width}
    config.update(depth=depth, norm=norm)
    if norm == "group" and base_width == 3:
        config["base_width"] = 2  # 3, 6, 12: GroupNorm cannot split 12 into 8 groups
    with torch.device("meta"):  # the shapes without the memory
        built = {k: tuple(v.shape) for k, v in UNet(**config).state_dict().items()}
    assert list(unet_tensor_shapes(**config).items()) == list(built.items())


def test_the_largest_accepted_networks_are_real_unets() -> None:
    # The bundled models and the original U-Net (Ronneberger et al.: width 64, depth 4).
    assert check_unet_config(base_width=16, depth=4) == 1_945_539
    assert check_unet_config(base_width=64, depth=4) == 31_049_427 <= MAX_TENSOR_ELEMENTS


def test_predict_returns_probabilities_under_inference_mode_and_restores_training() -> None:
    model = _small(2).train()
    x = torch.randn(2, 3, 16, 16)
    probs = model.predict(x)
    assert model.training, "predict must restore the training flag"
    assert torch.is_inference(probs)
    assert not probs.requires_grad
    assert probs.shape == (2, 1, 16, 16)
    assert float(probs.min()) >= 0
    assert float(probs.max()) <= 1
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(x))
    torch.testing.assert_close(probs, expected)


def test_predict_does_not_update_batch_norm_statistics() -> None:
    model = _small(2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.predict(torch.randn(1, 3, 16, 16) * 5 + 3)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])

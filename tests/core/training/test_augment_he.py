"""H&E rendering and per-channel gamma: the stain augmentations of issue 16."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from slide_unet import cli
from slide_unet.cli.train import training_config
from slide_unet.core.errors import InputError
from slide_unet.core.training.augment import Augmentation, augment
from slide_unet.core.training.augment_he import render_he, stain_density

OFF = Augmentation(
    dihedral=False, stain=0, brightness=0, contrast=0, gamma=0, blur=0, noise=0, scale=0
)


def _disks(n: int = 4, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Fluorescence-like images: bright noisy disks on a dark background, and their masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        for _ in range(4):
            cy, cx = rng.integers(12, size - 12, 2)
            masks[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 < 81] = 1
    signal = masks * rng.uniform(0.4, 0.8, (n, 1, size, size)) + rng.uniform(0, 0.05, masks.shape)
    images = np.repeat(signal, 3, axis=1).astype(np.float32)
    return torch.from_numpy(images), torch.from_numpy(masks)


def test_fluorescence_and_brightfield_give_the_same_stain_density() -> None:
    fluorescence, masks = _disks()
    brightfield = 1 - fluorescence  # dark nuclei on white
    for images in (fluorescence, brightfield):
        density = stain_density(images)
        assert density.shape == masks.shape
        assert float(density.min()) >= 0
        assert float(density.max()) <= 1
        inside = density[masks > 0].mean()
        outside = density[masks == 0].mean()
        assert inside > 0.5
        assert outside < 0.1


def test_render_he_makes_purple_nuclei_on_pink_and_keeps_the_masks() -> None:
    images, masks = _disks()
    rendered = render_he(images, torch.Generator().manual_seed(0))
    assert rendered.shape == images.shape
    assert float(rendered.min()) >= 0
    assert float(rendered.max()) <= 1
    red, green, blue = (rendered[:, c : c + 1] for c in range(3))
    inside, outside = masks > 0, masks == 0
    # Brightfield now: the background is light, nuclei are darker than it...
    luma = rendered.mean(1, keepdim=True)
    assert luma[outside].mean() > 0.6
    assert luma[inside].mean() < luma[outside].mean() - 0.15
    # ...nuclei haematoxylin blue-purple (blue above red), the rest eosin pink
    # (red above green).
    assert (blue - red)[inside].mean() > 0.02
    assert (red - green)[outside].mean() > 0.05
    _, kept = augment(images, masks, dataclasses.replace(OFF, render_he=1.0), torch.Generator())
    assert torch.equal(kept, masks)


def test_channel_gamma_moves_channels_apart_and_both_are_off_by_default() -> None:
    images, masks = _disks()
    grey = images.clamp(0.2, 0.8)
    default = Augmentation()
    assert default.render_he == 0
    assert default.channel_gamma == 0  # off unless asked: the cards' commands reproduce
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    same, _ = augment(grey, masks, OFF, gen)
    assert torch.equal(same, grey)
    assert torch.equal(gen.get_state(), state)  # no draws when off
    tinted, _ = augment(grey, masks, dataclasses.replace(OFF, channel_gamma=0.3), gen)
    spread = (tinted.max(1).values - tinted.min(1).values).mean()
    assert spread > 0.02  # grey pixels are no longer grey
    for bad in ({"render_he": 1.5}, {"channel_gamma": -0.1}, {"channel_gamma": 3.0}):
        with pytest.raises(InputError):
            Augmentation(**bad)


def test_train_takes_the_stain_options_from_the_command_line() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            *("train", "--images", "i", "--masks", "m", "-o", "x", "--epochs", "1"),
            *("--stain", "0.2", "--channel-gamma", "0.15", "--render-he", "0.5"),
        ]
    )
    augmentation = training_config(args).augmentation
    assert (augmentation.stain, augmentation.channel_gamma, augmentation.render_he) == (
        0.2,
        0.15,
        0.5,
    )

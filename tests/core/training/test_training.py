"""Training: the split, patches, augmentation, the loop, resuming, and ``slide-unet train``.

Real PNG files in ``tmp_path``: pink 'tissue' with dark red disks as the
foreground, masks red on black (as in bueno_pas) or 0/255. Models are tiny so
each training run takes seconds on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slide_unet import cli
from slide_unet.core.errors import Cancelled
from slide_unet.core.model.store import load_model
from slide_unet.core.paths import MODELS_DIR_ENV
from slide_unet.core.training.augment import Augmentation, augment, stain_jitter, warp
from slide_unet.core.training.config import TrainingConfig
from slide_unet.core.training.data import split_by_image
from slide_unet.core.training.evaluation import evaluate
from slide_unet.core.training.image_pairs import find_pairs, read_pair
from slide_unet.core.training.train import resume_path, train


@pytest.fixture(autouse=True)
def _private_user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "user-models"))


def disks(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A pink image with a few dark red disks, and the disks' mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(3):
        cy, cx, r = [*rng.integers(12, size - 12, 2).tolist(), int(rng.integers(6, 12))]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    image = np.empty((size, size, 3), np.float32)
    image[:] = (235, 190, 215)
    image[mask] = (150, 40, 90)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(6):
        image, mask = disks(i)
        Image.fromarray(image).save(images / f"tile{i}.png")
        if i % 2:  # red on black, like bueno_pas
            red = np.zeros((*mask.shape, 3), np.uint8)
            red[mask, 0] = 255
            Image.fromarray(red).save(masks / f"tile{i}.png")
        else:  # 0/255
            Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"tile{i}.png")
    Image.fromarray(disks(9)[0]).save(images / "no_mask.png")
    return images, masks


def tiny_config(**changes: object) -> TrainingConfig:
    settings: dict[str, object] = {
        "name": "disks",
        "base_width": 4,
        "depth": 2,
        "patch": 64,
        "batch_size": 4,
        "epochs": 6,
        "steps_per_epoch": 10,
        "learning_rate": 1e-2,
        "val_fraction": 0.34,
        "device": "cpu",
        "tile": 64,
    }
    settings.update(changes)
    return TrainingConfig(**settings)  # type: ignore[arg-type]


def test_pairs_by_stem_and_reads_every_mask_format(folders: tuple[Path, Path]) -> None:
    pairs, unpaired = find_pairs(*folders)
    assert [p.stem for p in pairs] == [f"tile{i}" for i in range(6)]
    assert [p.name for p in unpaired] == ["no_mask.png"]
    for i, pair in enumerate(pairs):
        image, mask, mpp = read_pair(pair)
        assert image.shape == (96, 96, 3)
        np.testing.assert_array_equal(mask, disks(i)[1])
        assert mpp is None


def test_split_is_by_image_seeded_and_never_empty() -> None:
    stems = [f"s{i}" for i in range(10)]
    train_stems, held = split_by_image(stems, 0.2, seed=3)
    assert len(held) == 2
    assert sorted(train_stems + held) == sorted(stems)
    assert not set(train_stems) & set(held)
    assert split_by_image(list(reversed(stems)), 0.2, seed=3) == (train_stems, held)
    assert split_by_image(stems, 0.2, seed=4) != (train_stems, held)
    assert len(split_by_image(["a", "b"], 0.01, seed=0)[1]) == 1
    assert len(split_by_image(["a", "b"], 0.99, seed=0)[0]) == 1
    with pytest.raises(ValueError, match="at least 2 images"):
        split_by_image(["a"], 0.2, seed=0)


def test_augmentation_moves_masks_with_images_and_stays_in_range() -> None:
    image, mask = disks(1, size=64)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().repeat(8, 1, 1, 1) / 255
    m = torch.from_numpy(mask)[None, None].float().repeat(8, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    geometry_only = Augmentation(
        stain=0, brightness=0, contrast=0, gamma=0, blur=0, noise=0, scale=0
    )
    ax, am = augment(x, m, geometry_only, gen)
    assert not torch.equal(ax, x)  # something turned
    dark = ax[:, 1:2] < 0.5  # the disks are dark in green
    assert torch.equal(dark, am > 0.5)
    full = Augmentation(invert=0.5, grayscale=0.5)
    fx, fm = augment(x, m, full, gen)
    assert fx.min() >= 0
    assert fx.max() <= 1
    assert set(fm.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(stain_jitter(x, 0.0, gen), x, atol=1e-4)
    assert (stain_jitter(x, 0.1, gen) - x).abs().max() > 0.01


def test_rotation_and_elastic_warp_move_masks_with_images() -> None:
    image, mask = disks(1, size=96)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().repeat(8, 1, 1, 1) / 255
    m = torch.from_numpy(mask)[None, None].float().repeat(8, 1, 1, 1)
    still = Augmentation(rotate=0.0, elastic=0.0)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    sx, sm = warp(x, m, still, gen)
    assert sx is x
    assert sm is m
    assert torch.equal(gen.get_state(), state)  # off: no random draws, old runs unchanged
    for settings in (Augmentation(rotate=1.0), Augmentation(elastic=1.0, elastic_alpha=6.0)):
        wx, wm = warp(x, m, settings, torch.Generator().manual_seed(1))
        assert wx.shape == x.shape
        assert wm.shape == m.shape
        assert wx.min() >= 0
        assert wx.max() <= 1
        assert set(wm.unique().tolist()) <= {0.0, 1.0}
        assert (wm != m).float().mean() > 0.005  # the masks moved...
        dark = wx[:, 1:2] < 0.5  # ...and the dark disks moved with them
        assert (dark != (wm > 0.5)).float().mean() < 0.005
        # a rotation or a gentle warp keeps the disks' area
        assert abs(wm.sum() / m.sum() - 1) < 0.05


def test_a_coarser_acquisition_loses_detail_keeps_the_masks_and_is_off_by_default() -> None:
    from slide_unet.core.errors import InputError
    from slide_unet.core.training.augment import coarser_acquisition

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((6, 3, 64, 64), dtype=np.float32))  # all fine detail
    m = (x[:, :1] > 0.5).float()
    default = Augmentation(stain=0, brightness=0, contrast=0, gamma=0, blur=0, noise=0)
    assert default.acquisition == 0  # off unless asked: the cards' commands still reproduce

    settings = Augmentation(acquisition=1.0, acquisition_factor=4.0)
    coarse = coarser_acquisition(x, settings, torch.Generator().manual_seed(1))
    assert coarse.shape == x.shape
    assert coarse.min() >= 0
    assert coarse.max() <= 1
    # Shrunk and brought back: the pixel-to-pixel noise is smoothed away, the mean kept.
    changed = [(c - i).abs().mean() > 0.05 for c, i in zip(coarse, x, strict=True)]
    assert sum(changed) >= 5  # factors below 1.05 leave an image as it was
    detail = (coarse[:, :, :, 1:] - coarse[:, :, :, :-1]).abs().mean()
    assert detail < 0.5 * (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    assert abs(float(coarse.mean() - x.mean())) < 0.02
    gen = torch.Generator().manual_seed(2)
    _, am = augment(x, m, dataclasses.replace(default, acquisition=1.0, dihedral=False), gen)
    assert torch.equal(am, m)  # the truth at the working scale is kept
    for bad in ({"acquisition": 1.5}, {"acquisition_factor": 0.5}):
        with pytest.raises(InputError):
            Augmentation(**bad)


def test_training_learns_the_disks_and_saves_a_loadable_card(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    out = tmp_path / "disks.safetensors"
    epochs: list[dict[str, object]] = []
    result = train(
        pairs, tiny_config(), out, command="slide-unet train ...", progress=epochs.append
    )
    assert [e["epoch"] for e in epochs] == list(range(1, 7))
    assert round(result.best_dice, 4) == max(e["val_dice"] for e in epochs)  # type: ignore[type-var]
    assert result.best_dice > 0.8
    model = load_model(out)
    card = model.card
    assert card.trained
    assert card.command == "slide-unet train ..."
    assert card.training["machine"].endswith(f"{os.cpu_count()} cores (cpu)")
    assert card.validation["mean_dice"] == round(result.best_dice, 4)
    held = card.training["validation_images"]
    assert len(held) == 2
    assert not set(held) & set(card.training["train_images"])
    assert not resume_path(out).exists()
    # The same engine scores the held-out images the same way afterwards.
    again = evaluate(out, *folders, stems=held, device="cpu", precision="fp32")
    assert again.mean_dice == pytest.approx(card.validation["mean_dice"], abs=1e-4)


def test_cancel_keeps_the_state_and_resume_finishes_the_run(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    out = tmp_path / "disks.safetensors"
    stop = threading.Event()

    def after_epoch(record: dict[str, object]) -> None:
        if record["epoch"] == 2:
            stop.set()

    config = tiny_config(epochs=4)
    first = train(pairs, config, out, progress=after_epoch, cancel=stop)
    assert first.stopped == "cancelled"
    assert first.card.training["epochs_run"] == 2
    state = resume_path(out)
    assert state.exists()  # written after each epoch, kept on cancel

    with pytest.raises(ValueError, match="other settings"):
        train(pairs, tiny_config(epochs=4, seed=1), out, resume=True)
    resumed = train(pairs, config, out, resume=True)
    assert resumed.stopped == "finished"
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first.history
    assert not state.exists()


def test_weight_average_is_what_is_validated_saved_and_resumed(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    config = tiny_config(epochs=4, ema=0.9)
    straight = train(pairs, config, tmp_path / "straight.safetensors")
    assert straight.card.training["config"]["ema"] == 0.9
    assert straight.best_dice > 0.7
    # The saved weights are the average's: they differ from a run without it.
    plain = train(pairs, tiny_config(epochs=4), tmp_path / "plain.safetensors")
    assert [h["val_dice"] for h in plain.history] != [h["val_dice"] for h in straight.history]

    stop = threading.Event()
    out = tmp_path / "resumed.safetensors"
    train(pairs, config, out, progress=lambda r: r["epoch"] == 2 and stop.set(), cancel=stop)
    resumed = train(pairs, config, out, resume=True)
    # The average is part of the saved state: resuming gives the same run.
    keys = ("epoch", "loss", "val_dice")
    assert [[h[k] for k in keys] for h in resumed.history] == [
        [h[k] for k in keys] for h in straight.history
    ]


def test_weight_average_decay_must_be_below_one() -> None:
    with pytest.raises(ValueError, match="ema must be"):
        tiny_config(ema=1.0)


def test_cancel_before_the_first_epoch_saves_nothing(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    out = tmp_path / "never.safetensors"
    with pytest.raises(Cancelled):
        train(pairs, tiny_config(), out, cancel=lambda: True)
    assert not out.exists()
    with pytest.raises(ValueError, match="nothing to resume"):
        train(pairs, tiny_config(), out, resume=True)


def test_a_working_pixel_size_needs_the_images_pixel_size(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    with pytest.raises(ValueError, match="--mpp"):
        train(pairs, tiny_config(working_mpp=1.0), tmp_path / "x.safetensors")


def test_train_command_writes_weights_card_and_evaluate_reproduces_it(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    out = tmp_path / "cli.safetensors"
    argv = [
        "train",
        "--images", str(images), "--masks", str(masks),
        "--exclude", "tile5",
        "--mpp", "0.5", "--working-mpp", "1.0",
        "--base-width", "4", "--depth", "2", "--patch", "32", "--tile", "64",
        "--epochs", "3", "--steps-per-epoch", "8", "--batch-size", "4",
        "--lr", "0.01", "--val-fraction", "0.4", "--device", "cpu",
        "--licence", "CC0", "--attribution", "synthetic disks",
        "-o", str(out),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 training images, 2 held out" in printed
    assert "epoch 3/3" in printed
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["name"] == "cli"
    assert card["working_mpp"] == 1.0
    assert card["default_input_mpp"] == 0.5
    assert card["licence"] == "CC0"
    assert card["training"]["attribution"] == "synthetic disks"
    assert card["training"]["excluded"] == ["tile5"]
    assert "tile5" not in card["training"]["train_images"] + card["training"]["validation_images"]
    assert card["command"].startswith("slide-unet train --images")
    assert cli.main(["evaluate", "--model", str(out), "--images", str(images), "--masks",
                     str(masks), "--held-out", "--precision", "fp32", "--json"]) == 0  # fmt: skip
    reported = json.loads(capsys.readouterr().out)
    assert reported["mean_dice"] == pytest.approx(card["validation"]["mean_dice"], abs=1e-4)


def test_train_command_errors_are_one_line(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    base = ["train", "--images", str(images), "--masks", str(masks), "-o", str(tmp_path / "m")]
    assert cli.main([*base, "--exclude", "nope"]) == 1
    assert "--exclude names images that are not there: ['nope']" in capsys.readouterr().err
    assert cli.main([*base, "--masks", str(masks)]) == 1
    assert "one --masks folder per --images folder" in capsys.readouterr().err
    assert cli.main([*base, "--patch", "30"]) == 1
    assert "patch must be a multiple of 16" in capsys.readouterr().err
    assert cli.main(["train", "--images", str(tmp_path / "none"), "--masks", str(masks),
                     "-o", "m"]) == 1  # fmt: skip
    assert "expected a folder of images" in capsys.readouterr().err

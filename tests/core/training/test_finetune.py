"""Fine-tuning: a bad model gets better, regions steer the patches, a lone image is
split by region and its held-out band scored with its image as context, cancel and
time budget are honoured, bundled weights stay as they are, and ``slide-unet
finetune`` works end to end.

Synthetic PNGs and arrays in ``tmp_path``: pink 'tissue' with dark red disks as the
foreground (as in ``test_training.py``). The "bad" base model is a tiny U-Net trained
on the same images with inverted masks, so it labels the tissue and misses the disks;
each run takes seconds on a 2-core CPU. The context and time-budget tests use the
bundled glomeruli model on the real sample slide (and a real biopsy tile).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import slide_unet
from slide_unet import cli
from slide_unet.core.inference.segment import segment
from slide_unet.core.model.store import bundled_models_dir, load_model
from slide_unet.core.paths import MODELS_DIR_ENV
from slide_unet.core.scoring.metrics import dice
from slide_unet.core.training.augment import Augmentation
from slide_unet.core.training.budget import MARGIN, TimeBudget
from slide_unet.core.training.config import TrainingConfig
from slide_unet.core.training.data import (
    REGION_FRACTION,
    load_images,
    sample_batch,
    split_one_image,
)
from slide_unet.core.training.finetune import STEPS_PER_EPOCH, ArrayPair, finetune
from slide_unet.core.training.image_pairs import ImagePair, find_pairs, read_pair
from slide_unet.core.training.train import LOSS_EVERY, resume_path, train

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data"
SAMPLE_PAIR = ImagePair(
    "kidney_pas", SAMPLE / "kidney_pas.ome.tif", SAMPLE / "kidney_pas_mask.ome.tif"
)


@pytest.fixture(autouse=True)
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user-models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    return folder


def disks(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A pink image with a few dark red disks, and the disks' mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(3 * (size // 96) ** 2):
        cy, cx, r = [*rng.integers(12, size - 12, 2).tolist(), int(rng.integers(6, 12))]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    image = np.empty((size, size, 3), np.float32)
    image[:] = (235, 190, 215)
    image[mask] = (150, 40, 90)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_folders(root: Path, masks_of: dict[int, np.ndarray] | None = None) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i in range(6):
        image, mask = disks(i)
        mask = (masks_of or {}).get(i, mask)
        Image.fromarray(image).save(images / f"tile{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"tile{i}.png")
    return images, masks


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return write_folders(tmp_path / "data")


@pytest.fixture(scope="module")
def inverted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained to call the tissue foreground and the disks background."""
    root = tmp_path_factory.mktemp("inverted")
    folders = write_folders(root / "data", {i: ~disks(i)[1] for i in range(6)})
    pairs, _ = find_pairs(*folders)
    config = TrainingConfig(
        name="inverted",
        base_width=4,
        depth=2,
        patch=64,
        batch_size=4,
        epochs=3,
        steps_per_epoch=10,
        learning_rate=1e-2,
        val_fraction=0.34,
        device="cpu",
        tile=64,
    )
    out = root / "inverted.safetensors"
    train(pairs, config, out)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


FAST = {"minutes": None, "learning_rate": 1e-2, "batch_size": 4, "patch": 64, "device": "cpu"}


def test_finetuning_fixes_a_bad_model_and_saves_a_named_user_model(
    inverted: Path, folders: tuple[Path, Path], user_models: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    parent_hash = sha256(inverted)
    epochs: list[dict] = []
    losses: list[dict] = []
    said: list[str] = []
    result = finetune(
        inverted,
        pairs,
        "fixed",
        epochs=3,
        progress=epochs.append,
        losses=losses.append,
        say=said.append,
        **FAST,
    )
    assert result.before_dice < 0.3
    assert result.after_dice > result.before_dice + 0.4
    assert result.stopped == "finished"
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert epochs == result.history  # the base model's record as soon as it is made
    # The training loss every few steps, between validations, for a live curve.
    every = range(LOSS_EVERY, 3 * STEPS_PER_EPOCH + 1, LOSS_EVERY)
    assert [r["step"] for r in losses] == list(every)
    assert [r["epoch"] for r in losses] == [1 + (s - 1) // STEPS_PER_EPOCH for s in every]
    assert all(r["loss"] > 0 for r in losses)
    assert result.history[0]["val_dice"] == result.before_dice
    assert any(s.startswith("before training: validation Dice") for s in said)
    assert result.after_dice == max(h["val_dice"] for h in result.history)
    assert result.path == user_models / "fixed.safetensors"
    loaded = slide_unet.load_model("fixed")  # picked by name at once
    assert loaded.card == result.card
    card = result.card
    assert card.parent == "inverted"
    assert card.validation["before_dice"] == result.before_dice
    assert card.validation["mean_dice"] == result.after_dice
    assert card.training["parent_sha256"] == parent_hash
    assert card.training["config"]["steps_per_epoch"] == STEPS_PER_EPOCH
    assert card.licence is None  # the parent's is recorded, not inherited
    assert sha256(inverted) == parent_hash
    assert not resume_path("fixed").exists()


def test_a_loaded_base_model_is_copied_not_trained_in_place(
    inverted: Path, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    base = load_model(inverted)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    pairs, _ = find_pairs(*folders)
    result = finetune(base, pairs, tmp_path / "copy.safetensors", epochs=1, **FAST)
    assert result.model is not base
    for key, value in base.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert result.path == tmp_path / "copy.safetensors"
    assert (tmp_path / "copy.json").is_file()


def test_array_pair_checks_its_shapes_and_regions() -> None:
    image, mask = disks(0)
    with pytest.raises(ValueError, match="same height and width"):
        ArrayPair("a", image, mask[:50])
    with pytest.raises(ValueError, match="YX gray or YXC"):
        ArrayPair("a", image[..., None], mask)
    with pytest.raises(ValueError, match="is empty inside the 96 x 96 image"):
        ArrayPair("a", image, mask, regions=((10, 10, 0, 5),))
    with pytest.raises(ValueError, match=r"a region is \(y0, y1, x0, x1\)"):
        ArrayPair("a", image, mask, regions=((1, 2, 3),))  # type: ignore[arg-type]
    pair = ArrayPair("a", image, mask, regions=[(-5, 40, 60, 200)])  # type: ignore[arg-type]
    assert pair.regions == ((0, 40, 60, 96),)  # clipped to the image


def test_patches_are_drawn_toward_the_corrected_regions() -> None:
    size, region = 256, (0, 96, 0, 96)
    image = np.full((size, size, 3), 200, np.uint8)
    image[: region[1], : region[3], 2] = 0  # the region is yellow: its patches show it
    mask = np.zeros((size, size), bool)
    mask[150:170, 150:170] = True  # foreground outside the region
    config = TrainingConfig(
        name="t", depth=2, patch=32, batch_size=400, augmentation=Augmentation(scale=0.0)
    )
    share = {}
    for regions in [(region,), ()]:
        pairs = [ArrayPair(stem, image, mask, regions=regions) for stem in "ab"]
        images, held = load_images(pairs, config, lambda _: None)
        x, _ = sample_batch(images, config, np.random.default_rng(0))
        share[bool(regions)] = (x[:, 2, 16, 16] < 0.5).float().mean().item()
        if regions:
            assert (images[0].regions < 96).all()  # every region centre is inside it
            assert [h.stem[1:] for h in held] == ["[0:96,0:96]"]  # scored inside it only
        else:
            assert not len(images[0].regions)
    # Drawn anywhere, a patch centre lands in the 96-pixel corner about 7 % of the
    # time here (half the patches go to the foreground); aimed, about half the time.
    assert share[True] > 0.8 * REGION_FRACTION
    assert share[False] < 0.2


def test_a_lone_image_is_split_by_region_into_disjoint_bands() -> None:
    # No regions: the last fifth of the rows (the longer side) is held out.
    train_box, held_box = split_one_image((200, 100), [], 0.2)
    assert (train_box, held_box) == ((0, 160, 0, 100), (160, 200, 0, 100))
    # A wide region: cut across its columns, about a fifth of it held out, at
    # the end that leaves more to train on.
    train_box, held_box = split_one_image((300, 400), [(10, 60, 200, 400)], 0.2)
    assert (train_box, held_box) == ((0, 300, 0, 360), (0, 300, 360, 400))
    train_box, held_box = split_one_image((300, 400), [(10, 60, 0, 200)], 0.2)
    assert (train_box, held_box) == ((0, 300, 40, 400), (0, 300, 0, 40))
    # Two regions: the cut leaves about a fifth of their area held out.
    regions = [(0, 100, 0, 50), (300, 400, 0, 50)]
    train_box, held_box = split_one_image((400, 60), regions, 0.2)
    assert held_box == (360, 400, 0, 60)
    with pytest.raises(ValueError, match="too small to hold a part out"):
        split_one_image((20, 20), [], 0.2)


def test_a_lone_array_pair_trains_on_one_band_and_scores_its_regions_in_the_other(
    inverted: Path, tmp_path: Path
) -> None:
    image, mask = disks(3, size=192)
    regions = ((0, 192, 20, 120),)  # tall: cut across the rows
    said: list[str] = []
    config = TrainingConfig(name="t", depth=2, patch=64, val_fraction=0.25)
    images, held = load_images([ArrayPair("slide", image, mask, regions=regions)], config, print)
    assert [i.stem for i in images] == ["slide[0:144,0:192]"]
    assert [h.stem for h in held] == ["slide[144:192,20:120]"]
    np.testing.assert_array_equal(held[0].truth, mask[144:192, 20:120])
    assert held[0].region == (144, 192, 20, 120)  # scored in place, the image as context
    assert held[0].pixels.shape == image.shape
    assert images[0].pixels.shape == (144, 192, 3)
    assert (images[0].regions[:, 1] >= 20).all()
    assert (images[0].regions[:, 1] < 120).all()

    result = finetune(
        inverted,
        [ArrayPair("slide", image, mask, regions=regions)],
        tmp_path / "lone.safetensors",
        epochs=2,
        val_fraction=0.25,
        say=said.append,
        **FAST,
    )
    assert result.card.training["validation_images"] == ["slide[144:192,20:120]"]
    assert result.card.training["regions"] == {"slide": [[0, 192, 20, 120]]}
    assert result.card.validation["split"].startswith("by region of one image")
    assert any("one image, split by region" in s for s in said)
    assert result.after_dice > result.before_dice


def _before_dice(pair: ImagePair, tmp_path: Path, mpp: float | None) -> tuple[float, dict]:
    """The base model's validation of a lone image, with no training (cancelled at once)."""
    result = finetune(
        "glomeruli",
        [pair],
        tmp_path / "before.safetensors",
        epochs=1,
        mpp=mpp,
        device="cpu",
        cancel=lambda: True,
    )
    assert [h["epoch"] for h in result.history] == [0]
    return result.before_dice, result.card.validation["per_image"]


@pytest.mark.parametrize("image", ["sample slide", "bueno_pas 10149"])
def test_a_held_out_band_scores_as_it_does_in_a_whole_image_segmentation(
    image: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # The band is segmented with the rest of the image around it as context.
    # Cut out and segmented alone it lost that context: the glomeruli model
    # scored 0.0946 on the sample slide's band (0.9044 on the tile's) against
    # 0.6269 (0.9559) for the same band of a whole-image segmentation.
    if image == "sample slide":
        pair, mpp = SAMPLE_PAIR, None
    else:
        root = request.getfixturevalue("shared_data") / "glomeruli" / "bueno_pas"
        pair, mpp = ImagePair("10149", root / "images/10149.png", root / "masks/10149.png"), 0.5
    pixels, truth, _ = read_pair(pair)
    _, (y0, y1, x0, x1) = split_one_image(truth.shape, [], 0.2)
    whole = segment(pixels, "glomeruli", mpp=mpp or 0.5, device="cpu", precision="fp32")
    expected = dice(whole[y0:y1, x0:x1], truth[y0:y1, x0:x1])
    before, per_image = _before_dice(pair, tmp_path, mpp)
    assert per_image == {f"{pair.stem}[{y0}:{y1},{x0}:{x1}]": before}
    assert before == pytest.approx(expected, abs=1e-4)


def test_corrected_boxes_of_a_held_out_band_are_scored_in_place(tmp_path: Path) -> None:
    # A lone image with a corrected box: the part of the box in the held-out
    # band is scored, segmented with the whole image around it (0.9728 here;
    # cut out and segmented alone, 0.8916).
    pixels, truth, mpp = read_pair(SAMPLE_PAIR)
    box = (512, 1536, 512, 1536)
    pair = ArrayPair("slide", pixels, truth, mpp=mpp, regions=(box,))
    _, held = split_one_image(truth.shape, [box], 0.2)
    part = (max(box[0], held[0]), min(box[1], held[1]), max(box[2], held[2]), min(box[3], held[3]))
    whole = segment(pixels, "glomeruli", mpp=mpp, device="cpu", precision="fp32")
    y0, y1, x0, x1 = part
    expected = dice(whole[y0:y1, x0:x1], truth[y0:y1, x0:x1])
    before, per_image = _before_dice(pair, tmp_path, None)
    assert per_image == {f"slide[{y0}:{y1},{x0}:{x1}]": before}
    assert before == pytest.approx(expected, abs=1e-4)


def test_cancel_keeps_the_best_so_far(
    inverted: Path, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    stop = threading.Event()
    out = tmp_path / "cancelled.safetensors"

    def after_epoch(record: dict) -> None:
        if record["epoch"] == 2:
            stop.set()

    result = finetune(inverted, pairs, out, epochs=6, progress=after_epoch, cancel=stop, **FAST)
    assert result.stopped == "cancelled"
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.after_dice == max(h["val_dice"] for h in result.history)
    assert result.card.training["stopped"] == "cancelled"
    assert load_model(out).card.validation["mean_dice"] == result.after_dice
    assert not resume_path(out).exists()


def test_a_time_budget_is_honoured(
    inverted: Path, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pairs, _ = find_pairs(*folders)
    budget = 4 / 60
    started = time.perf_counter()
    result = finetune(
        inverted, pairs, tmp_path / "quick.safetensors", **{**FAST, "minutes": budget}
    )
    elapsed = time.perf_counter() - started
    assert result.stopped == "finished"
    assert len(result.history) >= 2
    # The whole call, loading and saving included, ends within the budget
    # (10 % over at most, for durations that vary from one epoch to the next).
    assert elapsed <= 1.1 * budget * 60


def test_the_time_budget_plans_for_the_end_of_the_run() -> None:
    # 10 s spent of 20; steps of 2 s; the end of an epoch re-estimates batch
    # norms over 8 batches of 0.5 s and validates in 1 s: 6.25 s with the margin.
    clock = TimeBudget(20.0, time.perf_counter() - 10.0, norm_batches=8)
    clock.note_step(2.0)
    clock.note_norm_batch(0.5)
    clock.note_validation(1.0)
    assert clock.reserve() == pytest.approx(MARGIN * (1.0 + 8 * 0.5))
    assert clock.room_for_steps(1)  # 10 + 2.5 + 6.25 < 20
    assert not clock.room_for_steps(2)  # 10 + 5 + 6.25 > 20
    # Once an epoch's end is measured, it replaces the guess, plus the time of
    # its state save again for the final saves of the model.
    clock.note_wrap_up(3.0, save=0.4)
    assert clock.reserve() == pytest.approx(MARGIN * (3.0 + 0.4))
    assert clock.room_for_steps(2)
    # The slowest of the last five steps is planned for.
    for seconds in (1.0, 1.0, 1.0, 1.0):
        clock.note_step(seconds)
    assert clock.step == 2.0
    clock.note_step(1.0)
    assert clock.step == 1.0
    assert TimeBudget(None, time.perf_counter()).room_for_steps(10**6)


def test_the_time_budget_holds_for_a_real_model_on_a_real_slide(tmp_path: Path) -> None:
    # The bundled glomeruli model on the 2048 x 2048 sample slide: each step and
    # each end of epoch (batch-norm re-estimation, validation, saving) takes
    # seconds on a 2-core CPU, so stopping only once the budget was spent
    # overshot a 30 s budget by 3 to 13 s (a 90 s run took 129 s).
    budget = 30.0
    epochs: list[dict] = []
    started = time.perf_counter()
    result = finetune(
        "glomeruli",
        [SAMPLE_PAIR],
        tmp_path / "quick.safetensors",
        minutes=budget / 60,
        device="cpu",
        progress=epochs.append,
    )
    elapsed = time.perf_counter() - started
    assert result.stopped == "finished"
    assert [h["epoch"] for h in epochs][:2] == [0, 1]  # it trained, and validated
    assert elapsed <= 1.1 * budget, f"{elapsed:.1f} s for a {budget:.0f} s budget"
    assert elapsed >= 0.5 * budget  # and used the budget rather than stopping at once


def test_bundled_weights_are_never_modified(folders: tuple[Path, Path]) -> None:
    bundled = sorted(bundled_models_dir().glob("*.*"))
    before = {p.name: sha256(p) for p in bundled}
    pairs, _ = find_pairs(*folders)
    steps = iter(range(4))  # a few steps, then stop: the bundled model is big for a test

    def cancel() -> bool:
        return next(steps, None) is None

    result = finetune(
        "nuclei", pairs, "my-nuclei", batch_size=2, patch=64, device="cpu", cancel=cancel
    )
    assert result.history[-1]["step"] == 4
    assert result.card.parent == "nuclei"
    assert result.path.parent != bundled_models_dir()
    assert {p.name: sha256(p) for p in sorted(bundled_models_dir().glob("*.*"))} == before


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("glomeruli", "'glomeruli' is a bundled model: bundled models are never overwritten"),
        (str(bundled_models_dir() / "mine.safetensors"), "bundled models folder"),
        ("inverted", "is the model being fine-tuned"),
        ("bad name!", "not a usable model name"),
    ],
)
def test_outputs_that_would_overwrite_protected_models_are_refused_before_training(
    inverted: Path, folders: tuple[Path, Path], user_models: Path, out: str, message: str
) -> None:
    pairs, _ = find_pairs(*folders)
    base = inverted if out != "inverted" else load_model(inverted)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        finetune(base, pairs, out, epochs=1, **FAST)
    assert time.perf_counter() - started < 2  # refused before any training
    assert not list(user_models.glob("*.safetensors"))


def test_finetune_command_end_to_end(
    inverted: Path,
    folders: tuple[Path, Path],
    user_models: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, masks = folders
    base = ["finetune", "--model", str(inverted), "--images", str(images), "--masks", str(masks),
            "--lr", "0.01", "--patch", "64", "--batch-size", "4", "--device", "cpu"]  # fmt: skip
    assert cli.main([*base, "--epochs", "2", "--json", "-o", "from-cli"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "from-cli"
    assert report["parent"] == "inverted"
    assert report["path"] == str(user_models / "from-cli.safetensors")
    assert report["after_dice"] > report["before_dice"]
    assert report["gain"] == pytest.approx(report["after_dice"] - report["before_dice"])
    assert report["stopped"] == "finished"
    assert [h["epoch"] for h in report["history"]] == [0, 1, 2]
    card = json.loads((user_models / "from-cli.json").read_text())
    assert card["command"].startswith("slide-unet finetune --model")

    assert cli.main([*base, "--epochs", "1", "-o", "again"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1  loss" in printed
    assert "validation Dice before " in printed
    assert " -> after " in printed
    assert f"saved 'again': {user_models / 'again.safetensors'}" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nope", "-o", "x"], "unknown model 'nope'"),
        (["--model", "nuclei", "-o", "nuclei"], "bundled models are never overwritten"),
        (["--model", "nuclei", "-o", "x", "--minutes", "0"], "--minutes must be positive"),
        (["--model", "nuclei", "-o", "x", "--patch", "30"], "patch must be a multiple of 16"),
    ],
)
def test_finetune_command_errors_are_one_line(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str], extra: list, message: str
) -> None:
    images, masks = folders
    argv = ["finetune", "--images", str(images), "--masks", str(masks), "--device", "cpu", *extra]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1

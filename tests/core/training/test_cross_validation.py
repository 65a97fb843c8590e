"""Cross-validation over whole images, and the shipped model trained on all of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import folders, tiny_config  # noqa: F401 (a fixture)

from slide_unet import cli
from slide_unet.core.errors import InputError
from slide_unet.core.model.store import load_model
from slide_unet.core.training.cross_validation import (
    cross_validate,
    image_folds,
    train_cross_validated,
)
from slide_unet.core.training.image_pairs import find_pairs
from slide_unet.core.training.train import train


def test_folds_deal_whole_images_once_each_in_near_equal_folds() -> None:
    stems = [f"tile{i}" for i in range(11)]
    folds = image_folds(stems, 3, seed=0)
    assert sorted(s for fold in folds for s in fold) == sorted(stems)
    assert sorted(len(f) for f in folds) == [3, 4, 4]
    assert (
        image_folds(list(reversed(stems)), 3, seed=0) == folds
    )  # the order given does not matter
    assert image_folds(stems, 3, seed=1) != folds
    for k in (1, 12):
        with pytest.raises(InputError, match="folds"):
            image_folds(stems, k, seed=0)


def test_a_fixed_validation_set_and_the_last_epoch_are_kept_as_asked(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pairs, _ = find_pairs(*folders)
    epochs: list[dict[str, object]] = []
    config = tiny_config(epochs=3, validation_images=("tile1", "tile4"), keep="last")
    result = train(pairs, config, tmp_path / "m.safetensors", progress=epochs.append)
    assert result.card.training["validation_images"] == ["tile1", "tile4"]
    assert result.best_epoch == 3  # the last, whatever it scored
    assert result.card.validation["mean_dice"] == epochs[-1]["val_dice"]
    with pytest.raises(InputError, match="not among"):
        train(pairs, tiny_config(validation_images=("nope",)), tmp_path / "x.safetensors")


def test_a_fixed_schedule_keeping_its_last_epoch_scores_only_every_few_epochs_and_the_last(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    import threading

    from slide_unet.core.training.data import load_images
    from slide_unet.core.training.train import SPARSE_VALIDATION_EVERY, validate

    assert SPARSE_VALIDATION_EVERY == 5
    pairs, _ = find_pairs(*folders)
    epochs: list[dict[str, object]] = []
    config = tiny_config(epochs=7, steps_per_epoch=2, validation_images=("tile1",), keep="last")
    result = train(pairs, config, tmp_path / "m.safetensors", progress=epochs.append)
    scored = [e["epoch"] for e in epochs if e["val_dice"] is not None]
    assert scored == [5, 7]
    assert result.card.validation["mean_dice"] == epochs[-1]["val_dice"]

    # Stopped after an epoch it did not score: the kept (last) weights are scored then.
    stop = threading.Event()

    def stop_after_6(record: dict[str, object]) -> None:
        if record["epoch"] == 6:
            stop.set()

    stopped = train(pairs, config, tmp_path / "s.safetensors", progress=stop_after_6, cancel=stop)
    assert stopped.stopped == "cancelled"
    assert stopped.best_epoch == 6
    held = load_model(tmp_path / "s.safetensors")
    _, items = load_images(pairs, config, lambda _: None)
    assert stopped.card.validation["per_image"] == validate(held, items, torch.device("cpu"))
    assert stopped.history[-1]["val_dice"] == stopped.card.validation["mean_dice"]


def test_no_validation_trains_on_every_image(folders: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    pairs, _ = find_pairs(*folders)
    epochs: list[dict[str, object]] = []
    config = tiny_config(epochs=2, validation_images=(), keep="last")
    result = train(pairs, config, tmp_path / "all.safetensors", progress=epochs.append)
    assert result.card.training["train_images"] == [p.stem for p in pairs]
    assert result.card.training["validation_images"] == []
    assert [e["val_dice"] for e in epochs] == [None, None]
    assert result.best_epoch == 2
    json.dumps(load_model(tmp_path / "all.safetensors").card.to_dict(), allow_nan=False)


def test_each_image_is_scored_once_by_a_model_that_never_saw_it(
    folders: tuple[Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from slide_unet.core.training import cross_validation

    pairs, _ = find_pairs(*folders)
    trained_on: list[tuple[list[str], list[str]]] = []
    real_train = cross_validation.train

    def recording_train(pairs, config, out, **kwargs):  # the real training, watched
        result = real_train(pairs, config, out, **kwargs)
        card = result.card.training
        trained_on.append((card["train_images"], card["validation_images"]))
        return result

    monkeypatch.setattr(cross_validation, "train", recording_train)
    found = cross_validate(pairs, tiny_config(epochs=2), 3)
    assert found.k == 3
    assert sorted(found.per_image) == sorted(p.stem for p in pairs)
    for (train_stems, held), fold in zip(trained_on, found.folds, strict=True):
        assert held == fold
        assert not set(train_stems) & set(held)
    assert found.mean_dice == pytest.approx(np.mean(list(found.per_image.values())))
    assert found.fold_sd == pytest.approx(np.std(found.fold_dice, ddof=1))
    assert all(0 <= d <= 1 for d in found.per_image.values())


def test_the_shipped_model_is_trained_on_all_and_its_card_carries_the_cv_figure(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pairs, _ = find_pairs(*folders)
    out = tmp_path / "cv.safetensors"
    result, found = train_cross_validated(
        pairs, tiny_config(epochs=2), out, 2, command="slide-unet train --folds 2 ..."
    )
    card = load_model(out).card
    assert card.training["train_images"] == [p.stem for p in pairs]
    assert card.training["validation_images"] == []
    assert card.training["config"]["keep"] == "last"
    assert card.validation["mean_dice"] == round(found.mean_dice, 4)
    assert card.validation["sd_over_folds"] == round(found.fold_sd, 4)
    assert card.validation["folds"] == found.folds
    assert "2-fold cross-validation" in card.validation["split"]
    assert card.command == "slide-unet train --folds 2 ..."
    assert result.best_epoch == 2


def test_cli_folds_prints_the_cross_validated_figure(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, masks = folders
    out = tmp_path / "cli.safetensors"
    args = ["train", "--images", str(images), "--masks", str(masks), "-o", str(out)]
    args += ["--base-width", "4", "--depth", "2", "--patch", "64", "--batch-size", "4"]
    args += ["--epochs", "1", "--steps-per-epoch", "5", "--device", "cpu", "--tile", "64"]
    assert cli.main([*args, "--folds", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    card = load_model(out).card
    assert data["cross_validation"] == card.validation
    assert data["min_object_um2"] == card.min_object_um2 == 0.0  # no working pixel size
    assert len(data["cross_validation"]["folds"]) == 2
    assert cli.main([*args, "--folds", "1"]) == 1
    assert "folds" in capsys.readouterr().err


def test_a_stopped_cross_validation_resumes_where_it_stopped_to_the_same_figure_and_weights(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from slide_unet.core.errors import Cancelled
    from slide_unet.core.training import cross_validation
    from slide_unet.core.training.cross_validation import cv_record_path
    from slide_unet.core.training.train import resume_path

    pairs, _ = find_pairs(*folders)
    config = tiny_config(epochs=2)
    straight, found = train_cross_validated(pairs, config, tmp_path / "straight.safetensors", 3)

    out = tmp_path / "stopped.safetensors"
    stop = threading.Event()

    def stop_in_fold_2(fold: int, record: dict[str, object]) -> None:
        if fold == 1 and record["epoch"] == 1:
            stop.set()

    with pytest.raises(Cancelled, match="--resume"):
        train_cross_validated(pairs, config, out, 3, progress=stop_in_fold_2, cancel=stop)
    record = json.loads(cv_record_path(out).read_text())
    assert sorted(record["done"]) == ["1"]  # fold 1 scored and recorded
    fold2 = tmp_path / "stopped.fold2.safetensors"
    assert resume_path(fold2).exists()  # fold 2 stopped after its first epoch
    assert not (tmp_path / "stopped.fold1.safetensors").exists()  # scored, then removed

    with pytest.raises(InputError, match="other settings"):
        train_cross_validated(pairs, tiny_config(epochs=3), out, 3, resume=True)
    trained: list[tuple[str, bool]] = []
    real_train = cross_validation.train

    def recording_train(pairs, config, target, **kwargs):
        trained.append((Path(target).name, kwargs.get("resume", False)))
        return real_train(pairs, config, target, **kwargs)

    monkeypatch.setattr(cross_validation, "train", recording_train)
    lines: list[str] = []
    resumed, found_again = train_cross_validated(
        pairs, config, out, 3, resume=True, say=lines.append
    )
    # Fold 1 not trained again; fold 2 resumed after its epoch; fold 3 and the final fresh.
    assert trained == [
        ("stopped.fold2.safetensors", True),
        ("stopped.fold3.safetensors", False),
        ("stopped.safetensors", False),
    ]
    assert any(line.startswith("fold 1/3: done before") for line in lines)
    assert found_again.per_image == found.per_image
    assert found_again.fold_dice == found.fold_dice
    weights = load_model(out).state_dict()
    for name, tensor in load_model(tmp_path / "straight.safetensors").state_dict().items():
        assert (weights[name] == tensor).all(), name
    assert not cv_record_path(out).exists()  # the card has the figure now
    assert sorted(p.name for p in tmp_path.glob("stopped*")) == [
        "stopped.json",
        "stopped.safetensors",
    ]
    assert resumed.card.validation == straight.card.validation


def test_resuming_a_cross_validation_that_never_ran_says_so(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pairs, _ = find_pairs(*folders)
    with pytest.raises(InputError, match="nothing to resume"):
        train_cross_validated(
            pairs, tiny_config(epochs=1), tmp_path / "m.safetensors", 2, resume=True
        )

"""``evaluate`` and ``slide-unet evaluate``: a model scored on a folder of images with masks.

Real files throughout: small saved U-Nets, PNG and TIFF images and masks in
``tmp_path``; every expected Dice is computed independently with
:func:`slide_unet.segment` and :func:`slide_unet.dice`.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import slide_unet
from slide_unet import cli
from slide_unet.core.errors import Cancelled, ModelError
from slide_unet.core.inference import pipeline
from slide_unet.core.model.store import load_model, save_model
from slide_unet.core.paths import MODELS_DIR_ENV
from slide_unet.core.training.evaluation import Evaluation, PixelSize, evaluate, held_out_stems

SIZE = (72, 88)


@pytest.fixture(autouse=True)
def _private_user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "user-models"))


def save_tiny(
    tiny_unet: Callable[..., Any], path: Path, *, bias: float | None = None, **card: Any
) -> Path:
    """Save a random tiny U-Net (its head's bias set, if given) with its card."""
    model = tiny_unet(**card)
    if bias is not None:
        with torch.no_grad():
            model.head.bias.fill_(bias)
    return save_model(model, path, model.card)


def blobs(seed: int, shape: tuple[int, int] = SIZE) -> np.ndarray:
    """A 0/1 mask of a few rectangles."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, shape[0] - 20), rng.integers(0, shape[1] - 20)
        mask[y : y + rng.integers(8, 20), x : x + rng.integers(8, 20)] = 1
    return mask


@pytest.fixture
def folders(random_rgb, tmp_path: Path) -> tuple[Path, Path]:
    """images/ a.png b.png c.tif d.png; masks/ a.png (0/255), b.tif (instance labels),
    c.png (RGB red on black); d has no mask."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for seed, name in enumerate(["a.png", "b.png", "d.png"]):
        Image.fromarray(random_rgb(*SIZE, seed=seed)).save(images / name)
    tifffile.imwrite(images / "c.tif", random_rgb(*SIZE, seed=7), photometric="rgb")
    Image.fromarray(blobs(0) * 255).save(masks / "a.png")
    labels = blobs(1).astype(np.uint16)
    labels[labels > 0] = 7
    labels[: SIZE[0] // 3][labels[: SIZE[0] // 3] > 0] = 300
    tifffile.imwrite(masks / "b.tif", labels)
    red = np.zeros((*SIZE, 3), np.uint8)
    red[..., 0] = blobs(2) * 255
    Image.fromarray(red).save(masks / "c.png")
    return images, masks


@pytest.fixture
def model_path(tiny_unet, tmp_path: Path) -> Path:
    return save_tiny(tiny_unet, tmp_path / "tiny")


def expected_dice(image: Path, mask: Path, model: Any, mpp: float | None) -> float:
    truth = slide_unet.read_mask(mask) != 0
    pred = slide_unet.segment(image, load_model(model), mpp=mpp, device="cpu")
    return slide_unet.dice(pred, truth)


# -- evaluate ----------------------------------------------------------------------------


def test_per_image_dice_is_segment_then_dice_and_the_mean_is_their_mean(
    folders: tuple[Path, Path], model_path: Path
) -> None:
    images, masks = folders
    result = evaluate(model_path, images, masks, device="cpu")
    assert isinstance(result, Evaluation)
    assert list(result.per_image) == ["a", "b", "c"]
    assert result.unpaired == ("d",)
    assert result.model == "tiny"
    assert result.seconds > 0
    files = {"a": ("a.png", "a.png"), "b": ("b.png", "b.tif"), "c": ("c.tif", "c.png")}
    for stem, (image, mask) in files.items():
        expected = expected_dice(images / image, masks / mask, model_path, None)
        assert result.per_image[stem] == expected
        pred = slide_unet.segment(images / image, load_model(model_path), device="cpu")
        truth = slide_unet.read_mask(masks / mask) != 0
        assert result.per_image_iou[stem] == pytest.approx(slide_unet.iou(pred, truth))
    values = list(result.per_image.values())
    assert any(0 < v < 1 for v in values)  # the model's output is neither empty nor full
    assert result.mean_dice == pytest.approx(sum(values) / len(values))
    iou = list(result.per_image_iou.values())
    assert result.mean_iou == pytest.approx(sum(iou) / len(iou))
    # No working pixel size on the card: nothing resamples, nothing gave a pixel size.
    assert set(result.mpp.values()) == {PixelSize(None, "unknown")}


def test_a_loaded_model_is_used_as_it_is(folders: tuple[Path, Path], model_path: Path) -> None:
    images, masks = folders
    by_path = evaluate(model_path, images, masks, device="cpu")
    by_module = evaluate(load_model(model_path), images, masks, device="cpu")
    assert by_module.per_image == by_path.per_image


def test_an_empty_mask_and_an_empty_prediction_score_one(
    tiny_unet, random_rgb, tmp_path: Path
) -> None:
    # metrics.dice's convention: two empty masks have Dice 1; empty against non-empty, 0.
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("empty", "full"):
        Image.fromarray(random_rgb(*SIZE, seed=3)).save(images / f"{stem}.png")
    Image.fromarray(np.zeros(SIZE, np.uint8)).save(masks / "empty.png")
    Image.fromarray(blobs(4) * 255).save(masks / "full.png")
    nothing = save_tiny(
        tiny_unet, tmp_path / "nothing", bias=-100.0
    )  # predicts background everywhere
    result = evaluate(nothing, images, masks, device="cpu")
    assert result.per_image == {"empty": 1.0, "full": 0.0}
    assert result.per_image_iou == {"empty": 1.0, "full": 0.0}
    assert result.mean_dice == 0.5


def test_pixel_size_comes_from_the_file_then_mpp_then_the_model_card(
    tiny_unet, random_rgb, slides, tmp_path: Path
) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    slides.write_ome_pyramid(
        images / "ome.ome.tif", random_rgb(96, 96, seed=1), levels=1, tile=32, mpp=0.4
    )
    tifffile.imwrite(
        images / "tags.tif",
        random_rgb(96, 96, seed=2),
        photometric="rgb",
        resolution=(1e4 / 0.6, 1e4 / 0.6),
        resolutionunit="CENTIMETER",
    )
    Image.fromarray(random_rgb(96, 96, seed=3)).save(images / "plain.png")
    for seed, stem in enumerate(["ome", "tags", "plain"]):
        Image.fromarray(blobs(seed, (96, 96))).save(masks / f"{stem}.png")
    model = save_tiny(tiny_unet, tmp_path / "scaled", working_mpp=1.0, default_input_mpp=0.5)
    files = {"ome": "ome.ome.tif", "tags": "tags.tif", "plain": "plain.png"}

    with_mpp = evaluate(model, images, masks, mpp=2.0, device="cpu")
    assert with_mpp.mpp == {
        "ome": PixelSize(0.4, "file"),
        "plain": PixelSize(2.0, "argument"),
        "tags": PixelSize(pytest.approx(0.6), "file"),
    }
    without = evaluate(model, images, masks, device="cpu")
    assert without.mpp["plain"] == PixelSize(0.5, "model card")
    assert without.mpp["ome"] == PixelSize(0.4, "file")
    for result in (with_mpp, without):
        for stem, size in result.mpp.items():
            expected = expected_dice(images / files[stem], masks / f"{stem}.png", model, size.mpp)
            assert result.per_image[stem] == expected


def test_no_pixel_size_anywhere_runs_at_the_image_scale(
    tiny_unet, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    images, masks = folders
    model = save_tiny(tiny_unet, tmp_path / "scaled", working_mpp=1.0)
    with pytest.warns(UserWarning, match="pixel size is unknown"):
        result = evaluate(model, images, masks, device="cpu", stems=["a"])
    assert result.mpp == {"a": PixelSize(None, "unknown")}


def test_stems_select_images_in_their_order(folders: tuple[Path, Path], model_path: Path) -> None:
    images, masks = folders
    every = evaluate(model_path, images, masks, device="cpu")
    some = evaluate(model_path, images, masks, device="cpu", stems=["c", "a", "c"])
    assert list(some.per_image) == ["c", "a"]
    assert some.per_image == {s: every.per_image[s] for s in ("c", "a")}
    assert some.mean_dice == pytest.approx((every.per_image["a"] + every.per_image["c"]) / 2)


@pytest.mark.parametrize(
    ("stems", "message"),
    [
        (["a", "zz"], r"not among the images with masks: 'zz'"),
        (["d"], r"'d' \(no mask\)"),
        ([], "list of stems is empty"),
    ],
)
def test_unknown_stems_are_named(
    folders: tuple[Path, Path], model_path: Path, stems: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(model_path, *folders, device="cpu", stems=stems)


def test_held_out_stems_come_from_the_card(tiny_unet, tmp_path: Path) -> None:
    listed = save_tiny(tiny_unet, tmp_path / "listed", training={"validation_images": ["c", "a"]})
    assert held_out_stems(listed) == ["c", "a"]
    assert held_out_stems(load_model(listed)) == ["c", "a"]
    assert held_out_stems(load_model(listed).card) == ["c", "a"]
    assert held_out_stems(save_tiny(tiny_unet, tmp_path / "none")) is None
    bad = save_tiny(tiny_unet, tmp_path / "bad", training={"validation_images": "a,c"})
    with pytest.raises(ModelError, match="list of image stems"):
        held_out_stems(bad)


def test_progress_counts_images_and_cancel_stops(
    folders: tuple[Path, Path], model_path: Path
) -> None:
    calls: list[tuple[int, int]] = []
    evaluate(model_path, *folders, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]

    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        evaluate(model_path, *folders, device="cpu", cancel=stop)

    seen: list[int] = []
    with pytest.raises(Cancelled):
        evaluate(
            model_path,
            *folders,
            device="cpu",
            progress=lambda d, t: seen.append(d),
            cancel=lambda: len(seen) >= 2,  # after the first image
        )
    assert seen == [0, 1]


def test_big_images_stream_through_a_temporary_store(
    folders: tuple[Path, Path], model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_memory = evaluate(model_path, *folders, device="cpu")
    monkeypatch.setattr("slide_unet.core.training.evaluation.IN_MEMORY_PIXELS", 100)
    streamed = evaluate(model_path, *folders, device="cpu")
    assert streamed.per_image == in_memory.per_image


def test_a_mask_of_another_shape_is_an_error(random_rgb, tmp_path: Path, model_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(random_rgb(*SIZE)).save(images / "a.png")
    Image.fromarray(blobs(0)[:, :40]).save(masks / "a.png")
    with pytest.raises(ValueError, match=r"mask a.png shape \(72, 40\) does not match"):
        evaluate(model_path, images, masks, device="cpu")


def test_evaluation_as_dict_is_json(folders: tuple[Path, Path], model_path: Path) -> None:
    result = evaluate(model_path, *folders, device="cpu")
    data = json.loads(json.dumps(result.as_dict()))
    assert data["mean_dice"] == pytest.approx(result.mean_dice)
    assert data["per_image"] == pytest.approx(result.per_image)
    assert data["mpp"]["a"] == {"mpp": None, "source": "unknown"}
    assert dataclasses.is_dataclass(result)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.mean_dice = 1.0  # type: ignore[misc]


# -- the command ---------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["evaluate", "--device", "cpu", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_a_table_and_the_mean(
    folders: tuple[Path, Path], model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    args = ["--model", str(model_path), "--images", str(images), "--masks", str(masks)]
    code, out, _ = run(capsys, *args, "--mpp", "0.5")
    assert code == 0
    result = evaluate(model_path, images, masks, device="cpu", mpp=0.5)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["image", "Dice", "IoU"]
    for stem, line in zip(["a", "b", "c"], lines[1:4], strict=True):
        assert line.split()[:3] == [
            stem,
            f"{result.per_image[stem]:.4f}",
            f"{result.per_image_iou[stem]:.4f}",
        ]
        assert line.endswith("0.5 µm (--mpp)")
    assert lines[4] == f"mean Dice {result.mean_dice:.4f} over 3 images"
    assert lines[5].startswith(f"pooled Dice {result.pooled_dice:.4f} ")
    assert lines[6].startswith(f"objects: precision {result.pooled.precision:.3f}  recall ")
    assert "1 images without a mask were skipped: d" in lines[7]


def test_pooled_dice_and_objects_add_up_every_image_as_score_counts_them(
    folders: tuple[Path, Path], model_path: Path
) -> None:
    images, masks = folders
    result = evaluate(model_path, images, masks, device="cpu")
    files = {"a": ("a.png", "a.png"), "b": ("b.png", "b.tif"), "c": ("c.tif", "c.png")}
    totals = np.zeros(6, np.int64)
    for stem, (image, mask) in files.items():
        pred = slide_unet.segment(images / image, load_model(model_path), device="cpu")
        scores = slide_unet.score(pred, slide_unet.read_mask(masks / mask))
        counts = (scores.intersection, scores.pred_pixels, scores.true_pixels)
        counts += (scores.true_positives, scores.false_positives, scores.false_negatives)
        assert dataclasses.astuple(result.per_image_counts[stem]) == counts
        totals += counts
    i, p, t, tp, fp, fn = (int(v) for v in totals)
    assert tp + fp + fn > 0  # objects on both sides, some matched or not
    assert result.pooled_dice == pytest.approx(2 * i / (p + t))
    assert result.pooled.precision == pytest.approx(tp / (tp + fp))
    assert result.pooled.recall == pytest.approx(tp / (tp + fn))
    assert result.pooled.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # Pooled is not the mean: images count by their pixels, not once each.
    assert result.pooled_dice != pytest.approx(result.mean_dice)


def test_pooled_scores_of_images_without_objects() -> None:
    from slide_unet.core.training.evaluation import ObjectTotals

    empty = ObjectTotals()
    assert (empty.dice, empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0, 1.0)
    only_false = ObjectTotals(0, 50, 0, 0, 2, 0)
    assert (only_false.dice, only_false.precision, only_false.recall) == (0.0, 0.0, 0.0)
    assert (ObjectTotals(1, 2, 3, 1, 0, 1) + ObjectTotals(4, 5, 6, 0, 1, 0)) == ObjectTotals(
        5, 7, 9, 1, 1, 1
    )


def test_cli_json(
    folders: tuple[Path, Path], model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    args = ["--model", str(model_path), "--images", str(images), "--masks", str(masks)]
    code, out, err = run(capsys, *args, "--mpp", "0.5", "--json")
    assert code == 0, err
    data = json.loads(out)
    result = evaluate(model_path, images, masks, device="cpu", mpp=0.5)
    assert data["mean_dice"] == pytest.approx(result.mean_dice)
    assert data["per_image"] == pytest.approx(result.per_image)
    assert data["mpp"]["a"] == {"mpp": 0.5, "source": "--mpp"}
    assert data["model"] == "tiny"
    assert data["unpaired"] == ["d"]
    assert data["pooled"]["dice"] == pytest.approx(result.pooled_dice)
    assert data["pooled"]["f1"] == pytest.approx(result.pooled.f1)
    assert data["per_image_counts"]["a"] == result.per_image_counts["a"].as_dict()


def test_cli_tta_scores_the_augmented_segmentation(
    folders: tuple[Path, Path],
    model_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images, masks = folders
    averaged = []
    original = pipeline.ModelRunner._dihedral_mean

    def spy(self: Any, x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        averaged.append(len(x))
        return original(self, x, prob)

    monkeypatch.setattr(pipeline.ModelRunner, "_dihedral_mean", spy)
    args = ["--model", str(model_path), "--images", str(images), "--masks", str(masks)]
    code, out, err = run(capsys, *args, "--mpp", "0.5", "--json", "--tta")
    assert code == 0, err
    assert averaged  # the flag reached the engine
    data = json.loads(out)
    image = np.asarray(Image.open(images / "a.png"))
    truth = slide_unet.read_mask(masks / "a.png")
    expected = slide_unet.segment(image, model_path, mpp=0.5, device="cpu", tta=True)
    assert data["per_image"]["a"] == pytest.approx(slide_unet.dice(expected, truth))


def test_cli_min_object_area_is_applied_before_scoring(
    folders: tuple[Path, Path], model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    args = ["--model", str(model_path), "--images", str(images), "--masks", str(masks)]
    code, out, err = run(capsys, *args, "--mpp", "0.5", "--json", "--min-object-um2", "40")
    assert code == 0, err
    image = np.asarray(Image.open(images / "a.png"))
    truth = slide_unet.read_mask(masks / "a.png")
    expected = slide_unet.segment(image, model_path, mpp=0.5, device="cpu", min_object_um2=40)
    plain = slide_unet.segment(image, model_path, mpp=0.5, device="cpu")
    assert json.loads(out)["per_image"]["a"] == pytest.approx(slide_unet.dice(expected, truth))
    assert expected.sum() <= plain.sum()


def test_cli_held_out_evaluates_the_cards_validation_images(
    tiny_unet, folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    model = save_tiny(tiny_unet, tmp_path / "listed", training={"validation_images": ["c", "b"]})
    args = ["--model", str(model), "--images", str(images), "--masks", str(masks)]
    code, out, _ = run(capsys, *args, "--held-out", "--json")
    assert code == 0
    assert list(json.loads(out)["per_image"]) == ["c", "b"]


def _one_line_error(code: int, out: str, err: str, message: str) -> None:
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("slide-unet evaluate: error:")
    assert message in lines[0]


def test_cli_held_out_without_a_list_is_an_error(
    folders: tuple[Path, Path], model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    args = ["--model", str(model_path), "--images", str(images), "--masks", str(masks)]
    _one_line_error(*run(capsys, *args, "--held-out"), "lists no held-out images")


def test_cli_held_out_of_a_cross_validated_model_says_where_its_figure_is(
    tiny_unet, folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    model = save_tiny(
        tiny_unet,
        tmp_path / "cv",
        training={"validation_images": []},
        validation={"mean_dice": 0.5, "folds": [["a"], ["b"], ["c"]]},
    )
    args = ["--model", str(model), "--images", str(images), "--masks", str(masks)]
    _one_line_error(
        *run(capsys, *args, "--held-out"), "trained on every image after 3-fold cross-validation"
    )


def test_cli_held_out_stems_missing_from_the_folder_are_named(
    tiny_unet, folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, masks = folders
    model = save_tiny(tiny_unet, tmp_path / "listed", training={"validation_images": ["a", "zz"]})
    args = ["--model", str(model), "--images", str(images), "--masks", str(masks)]
    _one_line_error(*run(capsys, *args, "--held-out"), "'zz'")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no pairs", "pair up by file stem"),
        ("missing folder", "expected a folder of images, found nothing"),
        ("bad model file", "not a safetensors file"),
        ("unknown model", "unknown model 'no-such-model'"),
        ("bad mpp", "--mpp must be a positive number"),
    ],
)
def test_cli_bad_input_is_one_line(
    folders: tuple[Path, Path],
    model_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    message: str,
) -> None:
    images, masks = folders
    model, extra = str(model_path), []
    if case == "no pairs":
        masks = tmp_path / "other"
        masks.mkdir()
        Image.fromarray(blobs(0)).save(masks / "unrelated.png")
    elif case == "missing folder":
        images = tmp_path / "nowhere"
    elif case == "bad model file":
        broken = tmp_path / "broken.safetensors"
        broken.write_bytes(b"not weights at all")
        load_model(model_path).card.to_json(tmp_path / "broken.json")
        model = str(broken)
    elif case == "unknown model":
        model = "no-such-model"
    else:
        extra = ["--mpp", "-1"]
    args = ["--model", model, "--images", str(images), "--masks", str(masks), *extra]
    _one_line_error(*run(capsys, *args), message)


def test_cli_needs_a_model(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    images, masks = folders
    with pytest.raises(SystemExit) as caught:
        cli.main(["evaluate", "--images", str(images), "--masks", str(masks)])
    assert caught.value.code == 2
    assert "--model" in capsys.readouterr().err


# -- real data ---------------------------------------------------------------------------


def test_real_hubmap_tiles(
    tiny_unet, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three HuBMAP tiles shrunk 16x (about 8 µm/px; masks 0/1 PNG), evaluated as given."""
    folder = shared_data / "glomeruli" / "hubmap_red16"
    stems = ["2f6ecfcdf_10red16", "2f6ecfcdf_3red16", "2f6ecfcdf_9red16"]
    model = save_tiny(tiny_unet, tmp_path / "tiny", working_mpp=4.0, default_input_mpp=0.5)
    result = evaluate(model, folder / "images", folder / "masks", mpp=8, device="cpu", stems=stems)
    assert list(result.per_image) == stems
    assert set(result.mpp.values()) == {PixelSize(8.0, "argument")}
    for stem in stems:
        image, mask = folder / "images" / f"{stem}.png", folder / "masks" / f"{stem}.png"
        assert result.per_image[stem] == expected_dice(image, mask, model, 8.0)
    # Tile 3 holds no glomerulus (its mask is empty), the others do.
    assert not slide_unet.read_mask(folder / "masks" / f"{stems[1]}.png").any()
    assert slide_unet.read_mask(folder / "masks" / f"{stems[0]}.png").any()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trained-looking saved model warns nothing
        code = cli.main(
            [
                "evaluate",
                "--model",
                str(model),
                "--images",
                str(folder / "images"),
                "--masks",
                str(folder / "masks"),
                "--mpp",
                "8",
                "--device",
                "cpu",
                "--json",
            ]
        )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(data["per_image"]) == 6
    assert data["per_image"][stems[0]] == pytest.approx(result.per_image[stems[0]])

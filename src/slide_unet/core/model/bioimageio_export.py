"""Export a model as a bioimage.io model package (format 0.5), and test one.

The package runs in any bioimage.io consumer without this project: it holds the
U-Net's source (``unet.py`` made standalone), its keyword arguments and a
``pytorch_state_dict`` of the weights; the input and output tensors with their
axes, sizes, halo and pixel size in µm; the card's normalisation as
preprocessing and a sigmoid as postprocessing; a test input (a real crop of the
bundled sample slide at the model's working scale) with the model's output on
it; a cover image, a README, the card itself, and the licence and attribution
from the card.

``bioimageio.spec`` and ``bioimageio.core`` are an optional extra
(``pip install "napari-slide-unet[bioimageio]"``), imported only by
:func:`export_bioimageio` and :func:`check_bioimageio_package`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slide_unet.core.atomic import atomic_path, check_not_overwriting
from slide_unet.core.errors import ModelError, UserError
from slide_unet.core.model import unet as unet_module
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.store import load_model, locate_model

__all__ = [
    "EXTRA",
    "BioimageioTestResult",
    "check_bioimageio_package",
    "export_bioimageio",
    "licence_alias",
    "spdx_licence",
    "standalone_unet_source",
]

#: The optional extra that brings ``bioimageio.core`` (and ``bioimageio.spec``).
EXTRA = "bioimageio"
#: The sample slide a test input is cut from, and its pixel size (µm).
SAMPLE_IMAGE = "kidney_pas.ome.tif"
SAMPLE_MASK = "kidney_pas_mask.ome.tif"
SAMPLE_MPP = 0.5
#: Side of the test output's valid core (the test input adds the halo each side).
TEST_CORE = 256
#: ITU-R BT.601 luma, as the engine turns RGB into gray for a one-channel model.
LUMA = (0.299, 0.587, 0.114)
#: Licences as cards write them, to their SPDX identifiers.
_LICENCE_ALIASES = {
    "CC BY 4.0": "CC-BY-4.0",
    "CC-BY 4.0": "CC-BY-4.0",
    "CC BY-SA 4.0": "CC-BY-SA-4.0",
    "CC BY-NC 4.0": "CC-BY-NC-4.0",
    "CC0": "CC0-1.0",
    "CC0 1.0": "CC0-1.0",
    "CC0-1.0": "CC0-1.0",
}
#: The U-Net paper, cited by every package.
UNET_CITATION = (
    "Ronneberger, Fischer and Brox, U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation, MICCAI 2015",
    "10.1007/978-3-319-24574-4_28",
)
_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s,;()]+[^\s,;().])")
_IMPORT_LINE = "from slide_unet.core.errors import InputError\n"
_STANDALONE_ERROR = (
    "class InputError(ValueError):\n"
    '    """An input of the wrong shape (standalone copy: the package needs only torch)."""\n'
)


def _missing_extra(exc: ImportError) -> UserError:
    return UserError(
        f"exporting for bioimage.io needs bioimageio.core ({exc.name or exc} is missing): "
        f'pip install "napari-slide-unet[{EXTRA}]"'
    )


def licence_alias(text: str) -> str:
    """A card's way of writing a licence as its SPDX identifier, where it is a known one
    (``"CC BY 4.0"`` -> ``"CC-BY-4.0"``); anything else as given. Needs no bioimageio."""
    cleaned = " ".join(text.split())
    return _LICENCE_ALIASES.get(cleaned, _LICENCE_ALIASES.get(cleaned.upper(), cleaned))


def spdx_licence(text: str | None) -> str:
    """The SPDX identifier of a card's licence (``"CC BY 4.0"`` -> ``"CC-BY-4.0"``).

    Raises
    ------
    ModelError
        No licence, or one that is not an SPDX identifier bioimage.io accepts.
    """
    if not text or not text.strip():
        raise ModelError(
            "the model card names no licence, and bioimage.io needs one: give an SPDX "
            "licence identifier (e.g. --licence CC-BY-4.0)"
        )
    spdx = licence_alias(text)
    try:
        from bioimageio.spec.model.v0_5 import LicenseId
    except ImportError as exc:
        raise _missing_extra(exc) from None
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(LicenseId).validate_python(spdx)
    except ValidationError:
        raise ModelError(
            f"licence {text!r} is not an SPDX licence identifier bioimage.io accepts "
            "(e.g. CC-BY-4.0, CC0-1.0, MIT): give one (--licence)"
        ) from None
    return spdx


def standalone_unet_source() -> str:
    """The U-Net's source, needing only torch: its one import of this project replaced."""
    source = Path(unet_module.__file__).read_text(encoding="utf-8")
    if source.count(_IMPORT_LINE) != 1:
        raise RuntimeError(f"{unet_module.__file__}: expected one line {_IMPORT_LINE!r}")
    source = source.replace(_IMPORT_LINE, "")
    # After the imports, before the first definition.
    marker = "\nNORMS = "
    if marker not in source or re.search(r"^\s*(from|import)\s+slide_unet", source, re.M):
        raise RuntimeError(f"{unet_module.__file__}: cannot make a standalone copy")
    return source.replace(marker, f"\n\n{_STANDALONE_ERROR}\n{marker}", 1)


def _sample_folder() -> Path:
    candidates: list[Path] = []
    packaged = files("slide_unet") / "sample_data"
    if isinstance(packaged, Path):
        candidates.append(packaged)
    candidates.append(Path(__file__).resolve().parents[4] / "sample_data")
    for folder in candidates:
        if (folder / SAMPLE_IMAGE).is_file():
            return folder
    raise UserError(
        f"the sample slide {SAMPLE_IMAGE} the test input is cut from is not in: "
        + ", ".join(map(str, candidates))
    )


def _resample(image: np.ndarray, factor: float, *, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if abs(factor - 1) < 1e-6:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    filt = Image.Resampling.NEAREST if nearest else Image.Resampling.BOX
    return np.asarray(Image.fromarray(image).resize(size, filt))


def _test_image(card: ModelCard, side: int, halo: int) -> np.ndarray:
    """A ``side`` x ``side`` crop of the sample slide at the card's working scale, as
    uint8 C x H x W, where the expert mask covers most of the crop's core."""
    import tifffile

    folder = _sample_folder()
    image = tifffile.imread(folder / SAMPLE_IMAGE)
    mask_path = folder / SAMPLE_MASK
    mask = tifffile.imread(mask_path) if mask_path.is_file() else None
    factor = SAMPLE_MPP / card.working_mpp if card.working_mpp else 1.0
    image = _resample(np.ascontiguousarray(image[..., :3]), factor)
    if image.shape[0] < side or image.shape[1] < side:
        raise UserError(
            f"the sample slide at {card.working_mpp} µm/px is {image.shape[:2]}, smaller "
            f"than the {side} x {side} test input"
        )
    y0 = x0 = 0
    if mask is not None:
        mask = _resample((mask > 0).astype(np.uint8), factor, nearest=True)
        # Mask pixels in every window's core at once, from a summed-area table.
        core = side - 2 * halo
        table = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        ys = np.arange(0, image.shape[0] - side + 1)[:, None] + halo
        xs = np.arange(0, image.shape[1] - side + 1)[None, :] + halo
        counts = (
            table[ys + core, xs + core]
            - table[ys, xs + core]
            - table[ys + core, xs]
            + table[ys, xs]
        )
        y0, x0 = (int(v) for v in np.unravel_index(np.argmax(counts), counts.shape))
    crop = image[y0 : y0 + side, x0 : x0 + side]
    if card.channels == "gray":
        luma = crop.astype(np.float32) @ np.asarray(LUMA, np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[None]
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def _predict(model: torch.nn.Module, card: ModelCard, batch: np.ndarray) -> np.ndarray:
    """Probabilities for a uint8 batch N x C x H x W, normalised as the engine does."""
    mean = torch.tensor(card.normalization["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(card.normalization["std"], dtype=torch.float32).view(1, -1, 1, 1)
    x = (torch.from_numpy(batch).float() / 255.0 - mean) / std
    model = model.float().eval()
    with torch.inference_mode():
        return torch.sigmoid(model(x)).numpy().astype(np.float32)


def _cover(image: np.ndarray, probability: np.ndarray, threshold: float, path: Path) -> None:
    """Input beside input with the thresholded output in red: a 2:1 PNG."""
    from PIL import Image

    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb = rgb.transpose(1, 2, 0).astype(np.float32)
    foreground = probability[0, 0] > threshold
    overlay = rgb.copy()
    overlay[foreground] = 0.45 * overlay[foreground] + 0.55 * np.array([255, 0, 0])
    both = np.concatenate([rgb, overlay], axis=1)
    Image.fromarray(np.clip(both, 0, 255).astype(np.uint8)).save(path)


def _readme(card: ModelCard, spdx: str, halo: int, multiple: int, side: int) -> str:
    scale = (
        f"{card.working_mpp:g} µm per pixel (resample your image to it first)"
        if card.working_mpp
        else "the image's own resolution"
    )
    mean, std = card.normalization["mean"], card.normalization["std"]
    validation = card.validation or {}
    lines = [
        f"# {card.name}: a U-Net from napari-slide-unet",
        "",
        f"Semantic segmentation of {card.name} in {card.channels} microscopy images: the "
        "output is a foreground probability per pixel "
        f"(threshold {card.threshold:g} for a mask"
        + (
            f"; objects under {card.min_object_um2:g} µm² are then removed, the area its "
            "cross-validation chose"
            if card.min_object_um2
            else ""
        )
        + ").",
        "",
        "## Input and output",
        "",
        f"- input `raw`: uint8, axes batch, channel ({card.channels}), y, x; at {scale}",
        f"- sides: multiples of {multiple}, at least {2 * halo + multiple}",
        f"- preprocessing: pixel / 255, then (x - mean) / std per channel with mean {mean} "
        f"and std {std}",
        "- output `probability`: float32 in 0..1 (sigmoid of the network's logits), the "
        f"input's size; the outer {halo} pixels on each side see past the tile edge, so "
        "tile with that overlap and keep the centres",
        f"- test input: a {side} x {side} crop of the bundled PAS kidney sample "
        "(napari-slide-unet's `sample_data/kidney_pas.ome.tif`, Bueno et al., CC BY 4.0) "
        "at the working scale",
        "",
        "## Training",
        "",
    ]
    if card.parent:
        lines += [f"Fine-tuned from the model `{card.parent}`.", ""]
    attribution = card.training.get("attribution")
    if attribution:
        lines += [f"Training data: {attribution}", ""]
    if card.command:
        lines += ["Command:", "", "```", card.command, "```", ""]
    lines += ["## Validation", ""]
    if validation.get("mean_dice") is not None:
        detail = ", ".join(
            f"{key} {validation[key]}"
            for key in ("n_images", "split", "precision")
            if validation.get(key) is not None
        )
        lines += [
            f"Mean Dice {validation['mean_dice']} on held-out images ({detail}).",
            "",
        ]
    else:
        lines += ["The model card records no validation figures.", ""]
    lines += [
        "## Licence",
        "",
        f"Weights: {spdx}.",
        "",
        "Exported by napari-slide-unet (`slide-unet export-model`).",
        "",
    ]
    return "\n".join(lines)


def _cite(card: ModelCard) -> list[tuple[str, str]]:
    entries = [UNET_CITATION]
    attribution = card.training.get("attribution")
    if isinstance(attribution, str):
        match = _DOI.search(attribution)
        if match:
            entries.append((attribution, match.group(1)))
    return entries


def _package_name(card: ModelCard) -> str:
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", f"slide-unet {card.name}")
    return name[:128]


@dataclass(frozen=True)
class BioimageioTestResult:
    """What ``bioimageio test`` said about a package."""

    status: str
    summary: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def export_bioimageio(
    model: str | os.PathLike[str] | torch.nn.Module,
    output: str | os.PathLike[str],
    *,
    licence: str | None = None,
) -> Path:
    """Write a bioimage.io model package (format 0.5, a zip) for a model.

    Parameters
    ----------
    model
        A model name, card or weights path, or a loaded model with its ``.card``
        (as :func:`~slide_unet.core.model.store.load_model` takes).
    output
        The zip to write, atomically; never the model's own files.
    licence
        SPDX licence identifier of the weights; default: the card's licence.

    Returns
    -------
    pathlib.Path
        The written package.

    Raises
    ------
    UserError
        ``bioimageio.core`` is not installed (the message names the extra), the
        model is an untrained placeholder, its licence is no SPDX identifier, or
        the sample slide the test input is cut from is missing.
    """
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5
    except ImportError as exc:
        raise _missing_extra(exc) from None

    output = Path(output)
    if not isinstance(model, torch.nn.Module):
        check_not_overwriting([output], [p for p in locate_model(model) if p.exists()])
    net = load_model(model)
    card: ModelCard = net.card
    if not card.trained:
        raise ModelError(
            f"model {card.name!r} is an untrained placeholder: there is nothing to share"
        )
    spdx = spdx_licence(licence or card.licence)
    halo, multiple = int(net.halo), int(net.multiple)
    side = TEST_CORE + 2 * halo
    mpp = card.working_mpp
    unit = "micrometer" if mpp else None
    scale = float(mpp) if mpp else 1.0

    with tempfile.TemporaryDirectory(prefix="slide-unet-bioimageio-") as tmp:
        work = Path(tmp)
        (work / "unet.py").write_text(standalone_unet_source(), encoding="utf-8")
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        torch.save(state, work / "weights.pt")
        test_input = _test_image(card, side, halo)[None]
        test_output = _predict(net, card, test_input)
        np.save(work / "test_input.npy", test_input)
        np.save(work / "test_output.npy", test_output)
        _cover(test_input[0], test_output, card.threshold, work / "cover.png")
        (work / "README.md").write_text(
            _readme(card, spdx, halo, multiple, side), encoding="utf-8"
        )
        (work / "model_card.json").write_text(
            json.dumps(card.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

        channel_names = ["r", "g", "b"] if card.channels == "RGB" else ["gray"]
        n_out = int(card.parameters["out_channels"])
        out_names = ["foreground"] if n_out == 1 else [f"class{i}" for i in range(n_out)]
        raw = v0_5.TensorId("raw")

        def space_in(axis: str) -> Any:
            return v0_5.SpaceInputAxis(
                id=v0_5.AxisId(axis),
                size=v0_5.ParameterizedSize(min=2 * halo + multiple, step=multiple),
                scale=scale,
                unit=unit,
            )

        def space_out(axis: str) -> Any:
            return v0_5.SpaceOutputAxisWithHalo(
                id=v0_5.AxisId(axis),
                size=v0_5.SizeReference(tensor_id=raw, axis_id=v0_5.AxisId(axis)),
                halo=halo,
                scale=scale,
                unit=unit,
            )

        channel = v0_5.AxisId("channel")
        inputs = v0_5.InputTensorDescr(
            id=raw,
            description=f"{card.channels} image, uint8"
            + (f", at {mpp:g} µm per pixel" if mpp else ""),
            axes=[
                v0_5.BatchAxis(),
                v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channel_names]),
                space_in("y"),
                space_in("x"),
            ],
            test_tensor=v0_5.FileDescr(source=work / "test_input.npy"),
            data=v0_5.IntervalOrRatioDataDescr(type="uint8"),
            preprocessing=[
                v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
                v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=1 / 255)),
                v0_5.FixedZeroMeanUnitVarianceDescr(
                    kwargs=v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                        mean=card.normalization["mean"],
                        std=card.normalization["std"],
                        axis=channel,
                    )
                ),
                # Without this, bioimageio.spec appends a cast back to the data's uint8.
                v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
            ],
        )
        outputs = v0_5.OutputTensorDescr(
            id=v0_5.TensorId("probability"),
            description="foreground probability (sigmoid of the logits)",
            axes=[
                v0_5.BatchAxis(),
                v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in out_names]),
                space_out("y"),
                space_out("x"),
            ],
            test_tensor=v0_5.FileDescr(source=work / "test_output.npy"),
            data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[v0_5.SigmoidDescr()],
        )
        weights = v0_5.WeightsDescr(
            pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
                source=work / "weights.pt",
                architecture=v0_5.ArchitectureFromFileDescr(
                    source=work / "unet.py",
                    callable=v0_5.Identifier("UNet"),
                    kwargs=dict(card.parameters),
                ),
                pytorch_version=v0_5.Version(torch.__version__.split("+")[0]),
            )
        )
        tags = ["2d", "u-net", "semantic-segmentation", "pytorch", "napari-slide-unet"]
        tags += [card.name.lower()] + (["histology", "pas", "kidney"] if mpp else [])
        descr = v0_5.ModelDescr(
            name=_package_name(card),
            description=(
                f"U-Net segmenting {card.name} in {card.channels} microscopy images"
                + (f" at {mpp:g} µm/px" if mpp else "")
                + (f"; fine-tuned from {card.parent}" if card.parent else "")
                + " (napari-slide-unet)"
            ),
            authors=[v0_5.Author(name="napari-slide-unet developers")],
            cite=[v0_5.CiteEntry(text=text, doi=v0_5.Doi(doi)) for text, doi in _cite(card)],
            license=v0_5.LicenseId(spdx),
            documentation=v0_5.FileDescr(source=work / "README.md"),
            covers=[v0_5.FileDescr(source=work / "cover.png")],
            attachments=[v0_5.FileDescr(source=work / "model_card.json")],
            tags=list(dict.fromkeys(tags)),
            inputs=[inputs],
            outputs=[outputs],
            weights=weights,
            config=v0_5.Config(
                slide_unet={
                    "threshold": card.threshold,
                    "tile": card.tile,
                    "working_mpp": card.working_mpp,
                    "default_input_mpp": card.default_input_mpp,
                    "parent": card.parent,
                    "sha256_safetensors": card.sha256,
                }
            ),
        )
        with atomic_path(output) as tmp_zip:
            save_bioimageio_package(descr, output_path=tmp_zip)
    return output


def check_bioimageio_package(path: str | os.PathLike[str]) -> BioimageioTestResult:
    """Run ``bioimageio.core``'s own test of a package (as ``bioimageio test`` does):
    validate it, run its test input through it and compare with its test output."""
    try:
        from bioimageio.core import test_model
    except ImportError as exc:
        raise _missing_extra(exc) from None
    summary = test_model(os.fspath(path))
    return BioimageioTestResult(status=str(summary.status), summary=summary.format())

"""Find, load and save models: safetensors weights beside a JSON model card.

Models are named (``glomeruli`` and ``nuclei`` are bundled with the package; a
user's fine-tuned models live in a per-user folder) or given as files. Loading
never unpickles anything: weights are read only from safetensors files. Before
anything is allocated, the card's architecture is checked against bounds (see
:func:`slide_unet.core.model.unet.check_unet_config`) and the names, shapes and
dtypes in the file's header against the tensors that architecture has (computed,
not built); then the file is checked against the sha256 in the card, and only
then read and the network built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import warnings
from importlib import resources
from pathlib import Path

import safetensors.torch
import torch

from slide_unet.core.atomic import atomic_path
from slide_unet.core.errors import ModelError, PlaceholderModelWarning
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.unet import UNet
from slide_unet.core.model.weights_header import (
    MAX_HEADER_BYTES,
    check_tensors_fit_card,
    read_safetensors_header,
)
from slide_unet.core.paths import models_dir

__all__ = [
    "MAX_HEADER_BYTES",
    "ModelCard",
    "bundled_models_dir",
    "bundled_names",
    "is_bare_name",
    "list_models",
    "load_model",
    "locate_model",
    "model_files",
    "read_safetensors_header",
    "save_destination",
    "save_model",
    "user_models_dir",
]


WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def user_models_dir() -> Path:
    """Folder of the user's own (trained or fine-tuned) models.

    ``platformdirs.user_data_dir("napari-slide-unet")/models``, or the folder
    named by the environment variable ``SLIDE_UNET_MODELS_DIR``. It may not
    exist yet; :func:`save_model` creates it.
    """
    return models_dir()


def bundled_models_dir() -> Path:
    """Folder of the models shipped in the package (``slide_unet/models``)."""
    return Path(os.fspath(resources.files("slide_unet") / "models"))


def _cards_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*" + CARD_SUFFIX) if not p.name.startswith("."))


def bundled_names() -> list[str]:
    """Names of the models shipped in the package."""
    return [p.stem for p in _cards_in(bundled_models_dir())]


def list_models() -> dict[str, ModelCard]:
    """Return every model that can be loaded by name, bundled ones first.

    Returns
    -------
    dict
        Model name (the file stem) to its :class:`ModelCard`. A user model with
        a bundled model's name, or with an unreadable card, is left out with a
        warning rather than breaking the list.
    """
    models = {p.stem: ModelCard.from_json(p) for p in _cards_in(bundled_models_dir())}
    for path in _cards_in(user_models_dir()):
        if path.stem in models:
            warnings.warn(
                f"{path}: ignored, a user model may not take the bundled name {path.stem!r}",
                stacklevel=2,
            )
            continue
        try:
            models[path.stem] = ModelCard.from_json(path)
        except ModelError as exc:
            warnings.warn(f"ignored an unreadable user model: {exc}", stacklevel=2)
    return models


def is_bare_name(text: str) -> bool:
    """A model name rather than a path: no folder, no weights or card suffix."""
    return (
        Path(text).name == text
        and os.sep not in text
        and "/" not in text
        and not text.endswith((WEIGHTS_SUFFIX, CARD_SUFFIX))
    )


def model_files(path: Path) -> tuple[Path, Path]:
    """Weights and card paths of ``X``, ``X.safetensors`` or ``X.json``."""
    name = path.name
    for suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + WEIGHTS_SUFFIX), path.with_name(name + CARD_SUFFIX)


def locate_model(spec: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Weights and card paths of a model name or file."""
    text = os.fspath(spec)
    if is_bare_name(text):
        for folder in (bundled_models_dir(), user_models_dir()):
            weights, card = model_files(folder / text)
            if card.is_file() or weights.is_file():
                return weights, card
        names = ", ".join(list_models()) or "none"
        raise ModelError(
            f"unknown model {text!r}; available: {names} "
            f"(or give the path to a {WEIGHTS_SUFFIX} or {CARD_SUFFIX} file)"
        )
    path = Path(text).expanduser()
    if path.name in ("", ".", ".."):
        raise ModelError(f"{text!r}: expected a model name or a {WEIGHTS_SUFFIX} file")
    if path.is_file() and path.suffix.lower() not in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        # A .pt/.pth/.ckpt is a pickle: loading one can run code, so it is never read.
        raise ModelError(
            f"{path}: not a model this tool loads: expected a {WEIGHTS_SUFFIX} file with its "
            f"{CARD_SUFFIX} card beside it (pickled {path.suffix or 'files'} are never loaded)"
        )
    weights, card = model_files(path)
    if not path.exists() and path in (weights, card):
        raise ModelError(f"{path}: no such model file")
    if not card.is_file():
        raise ModelError(
            f"{card}: model card not found (every {weights.name} needs its card beside it)"
        )
    return weights, card


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build(card: ModelCard) -> UNet:
    # Building initialises weights from the global RNG; keep the caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        return UNet(**card.parameters)


def _seeded_placeholder(card: ModelCard) -> UNet:
    """The card's architecture with weights drawn from a generator seeded by its name.

    Uniform in ``±1/sqrt(fan_in)`` (PyTorch's default for convolutions), drawn in
    a fixed order, so the same name gives the same weights on every machine.
    """
    model = _build(card)
    seed = int.from_bytes(hashlib.sha256(card.name.encode("utf-8")).digest()[:8], "little")
    generator = torch.Generator().manual_seed(seed & (2**63 - 1))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                bound = module.weight[0].numel() ** -0.5
                for p in (module.weight, module.bias):
                    if p is not None:
                        p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)
    return model


def _load_weights(weights: Path, card: ModelCard, card_path: Path) -> UNet:
    # Everything that can be checked from the header and the card is checked
    # first, so a hostile pair is refused before the file is hashed or read
    # and before the network is allocated.
    tensors = read_safetensors_header(weights)
    if card.sha256 is None:
        raise ModelError(
            f"{card_path}: the card records no sha256 for {weights.name}, so the weights "
            "cannot be checked; save the model with save_model to write one"
        )
    check_tensors_fit_card(weights, tensors, card, card_path)
    actual = _sha256(weights)
    if actual != card.sha256:
        raise ModelError(
            f"{weights}: sha256 {actual} does not match {card.sha256} in its card "
            f"{card_path}: the weights were changed or the card belongs to other weights"
        )
    try:
        state = safetensors.torch.load_file(os.fspath(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{weights}: cannot read the safetensors file ({exc})") from None
    model = _build(card)
    model.load_state_dict(state, strict=True)
    return model


def load_model(
    name_or_path: str | os.PathLike[str] | torch.nn.Module,
    *,
    device: str | torch.device = "cpu",
) -> UNet:
    """Load a model by name or file, check it, and return it ready to run.

    Parameters
    ----------
    name_or_path
        A bundled model name (``"glomeruli"``, ``"nuclei"``), a user model name
        (see :func:`user_models_dir`), the path of ``X.safetensors`` (its card is
        ``X.json``) or of the card ``X.json``; or an already loaded module with
        a ``.card``, which is passed through.
    device
        Where to put the model (``"cpu"``, ``"cuda"``, a ``torch.device``).

    Returns
    -------
    UNet
        In eval mode, on ``device``, with its :class:`ModelCard` as ``.card``.
        It maps a normalised float batch N x C x H x W to logits N x 1 x H x W.

    Raises
    ------
    ModelError
        For an unknown name (the message lists the available ones), a missing
        or invalid card (one whose architecture is out of bounds included), a
        weights file that is not safetensors or whose header is hostile, whose
        tensors (names, shapes, dtypes) do not fit the card's architecture, or
        whose sha256 differs from the card's. All of these are found before the
        network is built.

    Warns
    -----
    PlaceholderModelWarning
        When the card says ``trained: false`` and has no weights file: the
        architecture is built with weights seeded from the model's name, which
        segment nothing.
    """
    if isinstance(name_or_path, torch.nn.Module):
        if not isinstance(getattr(name_or_path, "card", None), ModelCard):
            raise ModelError(
                f"a {type(name_or_path).__name__} passed as a model must carry its ModelCard "
                "as .card (load it with load_model, or set model.card)"
            )
        return name_or_path.to(torch.device(device)).eval()
    weights, card_path = locate_model(name_or_path)
    card = ModelCard.from_json(card_path)
    if weights.is_file():
        model = _load_weights(weights, card, card_path)
    elif not card.trained:
        model = _seeded_placeholder(card)
        warnings.warn(
            f"model {card.name!r} is an untrained placeholder ({card_path} has no "
            f"{weights.name}): its weights are random, seeded from its name, and it does "
            "not segment anything",
            PlaceholderModelWarning,
            stacklevel=2,
        )
    else:
        raise ModelError(f"{weights}: weights file not found (its card {card_path} says trained)")
    model.card = card
    return model.to(torch.device(device)).eval()


def save_destination(path: str | os.PathLike[str], card: ModelCard) -> tuple[Path, Path]:
    """Weights and card paths where :func:`save_model` would write ``card``'s model for
    ``path`` (a bare name goes to the user models folder), checked as it checks them."""
    text = os.fspath(path)
    bundled = set(bundled_names())
    if is_bare_name(text):
        if not _USER_NAME.fullmatch(text):
            raise ModelError(
                f"{text!r} is not a usable model name: use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        weights, card_path = model_files(folder / text)
    else:
        weights, card_path = model_files(Path(text).expanduser())
    user_dir = user_models_dir()
    if user_dir.is_dir() and weights.parent.resolve() == user_dir.resolve():
        name = weights.name[: -len(WEIGHTS_SUFFIX)]
        if name in bundled or card.name in bundled:
            raise ModelError(
                f"{weights}: {name!r} would shadow the bundled model of that name; a user "
                f"model needs a name other than {', '.join(sorted(bundled))}"
            )
        if card.name != name:
            raise ModelError(
                f"{weights}: a user model's card name must be its file name {name!r}, "
                f"got card name {card.name!r}"
            )
    return weights, card_path


def save_model(model: UNet, path: str | os.PathLike[str], card: ModelCard) -> Path:
    """Write a model's weights (safetensors) and its card, each atomically.

    Parameters
    ----------
    model
        The U-Net; its ``config`` must equal ``card.parameters``.
    path
        ``X``, ``X.safetensors`` or ``X.json``: writes ``X.safetensors`` and
        ``X.json``. A bare name (no folder, no suffix) saves a user model in
        :func:`user_models_dir`, where the card's name must be that name and
        may not be a bundled model's.
    card
        The model card; it is written with ``sha256`` set to the weights file's.

    Returns
    -------
    Path
        The ``.safetensors`` file.

    Raises
    ------
    ModelError
        When the card does not describe the model, or the name is taken by a
        bundled model.
    """
    config = getattr(model, "config", None)
    if card.architecture != "unet" or not isinstance(model, UNet) or config != card.parameters:
        raise ModelError(
            f"the card describes {card.architecture} {card.parameters}, but the model is "
            f"{type(model).__name__} {config}"
        )
    weights, card_path = save_destination(path, card)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "architecture": card.architecture, "name": card.name}
    with atomic_path(weights) as tmp:
        safetensors.torch.save_file(state, os.fspath(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # safetensors writes owner-only; a model is for every user
        # Card first, then weights renamed in: either way round, a crash in between
        # leaves a pair whose hashes disagree, which load_model refuses.
        dataclasses.replace(card, sha256=_sha256(tmp)).to_json(card_path)
    return weights

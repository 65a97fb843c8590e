"""Model cards: what a set of weights is, how to feed it, and where it came from.

A card is a small JSON file next to the weights (``X.json`` beside
``X.safetensors``). It holds everything the engine needs to run the model
(architecture and its parameters, input channels, normalisation, working pixel
size, tile, threshold) and everything a reader needs to trust it (training data
and licence, validation figures, the command that produced it, the sha256 of
the weights file).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slide_unet.core.atomic import write_text_atomic
from slide_unet.core.errors import InputError, ModelError
from slide_unet.core.limits import MPP_RANGE
from slide_unet.core.model.unet import brief, check_unet_config

#: Architectures a card may name, with the default keyword arguments of each.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "unet": {"in_channels": 3, "out_channels": 1, "base_width": 16, "depth": 4, "norm": "batch"},
}

#: What the ``channels`` field may say, and how many input channels that is.
CHANNELS: dict[str, int] = {"RGB": 3, "gray": 1}

#: Normalisation used when a card gives none: pixels scaled to 0..1, minus 0.5, over 0.25.
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25

#: The largest tile side a card may ask for by default: a 512-2048 tile is
#: usual, and a depth-8 U-Net needs 4096 (twice its 1,536-pixel halo plus a core).
MAX_TILE = 8192
#: The largest card file read: real cards are 20-60 KB (most of it the
#: training history); anything near this is not a card. Parsed and copied, 4 MB
#: of JSON built to make the most Python objects (``[{}, {}, ...]``) take
#: about 300 MB.
MAX_CARD_BYTES = 4 * 2**20
#: The longest model name: it names files and appears in messages.
MAX_NAME_LENGTH = 200

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = ("name", "parameters", "normalization", "working_mpp", "default_input_mpp")


def _as_float(value: Any) -> float | None:
    """``value`` as a float (an integer too large for one is infinite), or ``None``
    when it is not a number; ``True`` and ``False`` are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # JSON integers may have thousands of digits
        return math.inf if value > 0 else -math.inf


def _mpp_or_none(name: str, value: Any) -> float | None:
    if value is None:
        return None
    number = _as_float(value)
    if number is None:
        raise ModelError(f"{name} must be a number of µm per pixel or null, got {brief(value)}")
    low, high = MPP_RANGE
    if not low <= number <= high:  # NaN too
        raise ModelError(
            f"{name} must be a positive number of µm per pixel from {low:g} to {high:g}, "
            f"got {brief(value)}"
        )
    return number


def _str_or_none(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ModelError(f"{name} must be a string or null, got {brief(value)}")
    return value


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {brief(value)}")
    return value


def _check_parameters(architecture: str, parameters: Any) -> dict[str, Any]:
    if not isinstance(parameters, dict):
        raise ModelError(
            f"parameters must be a mapping of keyword arguments, got {brief(parameters)}"
        )
    defaults = ARCHITECTURES[architecture]
    unknown = sorted(set(parameters) - set(defaults), key=repr)
    if unknown:
        raise ModelError(
            f"unknown {architecture} parameters {brief(unknown)}; "
            f"expected some of {sorted(defaults)}"
        )
    full = {**defaults, **parameters}
    # Bounds first: everything after (2**depth, the tensor list) trusts them.
    try:
        check_unet_config(**full, key="parameters[{!r}]")
    except InputError as exc:
        raise ModelError(str(exc)) from None
    return full


def _check_normalization(normalization: Any, n_channels: int) -> dict[str, list[float]]:
    if normalization is None or normalization == {}:
        return {"mean": [DEFAULT_MEAN] * n_channels, "std": [DEFAULT_STD] * n_channels}
    if not isinstance(normalization, dict) or set(normalization) != {"mean", "std"}:
        raise ModelError(
            f"normalization must be {{'mean': [...], 'std': [...]}}, got {brief(normalization)}"
        )
    out: dict[str, list[float]] = {}
    for key in ("mean", "std"):
        values = normalization[key]
        if not isinstance(values, list | tuple) or len(values) != n_channels:
            raise ModelError(
                f"normalization[{key!r}] must list one number per input channel "
                f"({n_channels}), got {brief(values)}"
            )
        numbers = [_as_float(v) for v in values]
        if not all(v is not None and math.isfinite(v) for v in numbers):
            raise ModelError(
                f"normalization[{key!r}] must hold finite numbers, got {brief(values)}"
            )
        if key == "std" and not all(v > 0 for v in numbers):
            raise ModelError(f"normalization['std'] must be positive, got {brief(values)}")
        out[key] = numbers
    return out


def _colour_triple(name: str, values: Any) -> list[float]:
    numbers = [_as_float(v) for v in values] if isinstance(values, list | tuple) else []
    if len(numbers) != 3 or not all(v is not None and 0 < v <= 1 for v in numbers):
        raise ModelError(
            f"{name} must list 3 numbers in (0, 1] (fractions of the full scale), "
            f"got {brief(values)}"
        )
    return numbers  # type: ignore[return-value]


def _check_colour_reference(reference: Any, channels: str) -> dict[str, Any] | None:
    """``{"mpp": µm, "mean": [r, g, b], "std": [r, g, b], "mean_range": [low, high],
    "std_range": [low, high]}`` (fractions of full scale), or None."""
    if reference is None:
        return None
    keys = {"mpp", "mean", "std", "mean_range", "std_range"}
    if not isinstance(reference, dict) or set(reference) != keys:
        raise ModelError(
            "colour_reference must be {'mpp': ..., 'mean': [r, g, b], 'std': [r, g, b], "
            f"'mean_range': [low, high], 'std_range': [low, high]}}, got {brief(reference)}"
        )
    if channels != "RGB":
        raise ModelError(f"colour_reference is for RGB models; this one is {channels!r}")
    out: dict[str, Any] = {"mpp": _mpp_or_none("colour_reference['mpp']", reference["mpp"])}
    for key in ("mean", "std"):
        out[key] = _colour_triple(f"colour_reference[{key!r}]", reference[key])
        bounds = reference[f"{key}_range"]
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise ModelError(
                f"colour_reference['{key}_range'] must be [low, high], got {brief(bounds)}"
            )
        low, high = (_colour_triple(f"colour_reference['{key}_range']", b) for b in bounds)
        if not all(a <= b for a, b in zip(low, high, strict=True)):
            raise ModelError(f"colour_reference['{key}_range'] has a low above its high")
        out[f"{key}_range"] = [low, high]
    return out


@dataclass
class ModelCard:
    """Everything about a model that is not its weights.

    Parameters
    ----------
    name
        ``"glomeruli"``, ``"nuclei"``, or a user's name for a fine-tuned model.
    architecture
        The network family; only ``"unet"`` (:class:`slide_unet.core.model.unet.UNet`).
    parameters
        Keyword arguments of the architecture (for the U-Net: ``in_channels``,
        ``out_channels``, ``base_width``, ``depth``, ``norm``). Missing ones are
        filled with the architecture's defaults, so a card always says them all.
        They are bounded (:func:`slide_unet.core.model.unet.check_unet_config`), so a
        card cannot ask for a network too large to build.
    channels
        What the input channels are: ``"RGB"`` (3) or ``"gray"`` (1); must agree
        with ``parameters["in_channels"]``.
    normalization
        ``{"mean": [...], "std": [...]}``, one number per channel, applied to
        pixels scaled to 0..1: ``(pixel / max - mean) / std``. Empty means 0.5
        and 0.25 for every channel.
    working_mpp
        Pixel size (µm) the model works at; ``None`` runs it at the input's
        native resolution, without resampling.
    default_input_mpp
        Pixel size (µm) assumed for an input when neither the file nor the user
        gives one; ``None`` assumes nothing.
    tile
        Default tile side at the working scale; a multiple of ``2**depth``, at
        most :data:`MAX_TILE`.
    threshold
        Probability above which a pixel is foreground.
    min_object_um2
        Objects smaller than this (µm², pixels for a model without a working
        pixel size) are removed from its masks unless the user asks otherwise:
        the area its cross-validation chose
        (:mod:`slide_unet.core.training.min_object`), as StarDist's models
        carry the thresholds their validation chose. 0 keeps every object.
    trained
        ``False`` for untrained placeholders: nothing may claim they segment.
    training
        Free-form facts about training: data, licence, attribution, seed,
        time, machine.
    validation
        Validation figures, e.g. ``{"mean_dice": 0.91, "split": "...", "n_images": 4}``.
    command
        The exact command that produced the weights.
    parent
        Name of the model a fine-tuned one started from.
    sha256
        Hex sha256 of the ``.safetensors`` weights file (set by ``save_model``).
    licence
        Licence of the weights.
    colour_reference
        The colour of the training images' tissue (RGB models only):
        ``{"mpp": 8.0, "mean": [r, g, b], "std": [r, g, b], "mean_range": [low,
        high], "std_range": [low, high]}``, fractions of the full scale measured
        by :func:`slide_unet.core.slide.tissue.tissue_colour`: pooled over the
        training images (what the engine brings each slide's tissue colour to,
        ``colour=True``, the default), and the range of the images' own (for
        reference). ``None`` leaves colours as they are.

    Raises
    ------
    ModelError
        (a ``ValueError``) when a field is missing a required value or is invalid.
    """

    name: str
    architecture: str = "unet"
    parameters: dict[str, Any] = field(default_factory=lambda: dict(ARCHITECTURES["unet"]))
    channels: str = "RGB"
    normalization: dict[str, list[float]] = field(default_factory=dict)
    working_mpp: float | None = None
    default_input_mpp: float | None = None
    tile: int = 512
    threshold: float = 0.5
    min_object_um2: float = 0.0
    trained: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    parent: str | None = None
    sha256: str | None = None
    licence: str | None = None
    colour_reference: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ModelError(f"name must be a non-empty string, got {brief(self.name)}")
        if len(self.name) > MAX_NAME_LENGTH or not self.name.isprintable():
            raise ModelError(
                f"name must be at most {MAX_NAME_LENGTH} printable characters, "
                f"got {brief(self.name)}"
            )
        if not isinstance(self.architecture, str) or self.architecture not in ARCHITECTURES:
            raise ModelError(
                f"unknown architecture {brief(self.architecture)}; "
                f"known: {', '.join(ARCHITECTURES)}"
            )
        self.parameters = _check_parameters(self.architecture, self.parameters)
        in_channels = self.parameters["in_channels"]
        if not isinstance(self.channels, str) or self.channels not in CHANNELS:
            raise ModelError(
                f"channels must be one of {list(CHANNELS)}, got {brief(self.channels)}"
            )
        if CHANNELS[self.channels] != in_channels:
            raise ModelError(
                f"channels {self.channels!r} means {CHANNELS[self.channels]} input channels, "
                f"but parameters['in_channels'] is {in_channels}"
            )
        self.normalization = _check_normalization(self.normalization, in_channels)
        self.colour_reference = _check_colour_reference(self.colour_reference, self.channels)
        self.working_mpp = _mpp_or_none("working_mpp", self.working_mpp)
        self.default_input_mpp = _mpp_or_none("default_input_mpp", self.default_input_mpp)
        _positive_int("tile", self.tile)
        if self.tile > MAX_TILE:
            raise ModelError(f"tile must be at most {MAX_TILE}, got {brief(self.tile)}")
        multiple = 2 ** self.parameters["depth"]
        if self.tile % multiple:
            raise ModelError(f"tile must be a multiple of {multiple} (2**depth), got {self.tile}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 1:
            raise ModelError(f"threshold must be a probability between 0 and 1, got {brief(t)}")
        self.threshold = float(t)
        area = self.min_object_um2
        if isinstance(area, bool) or not isinstance(area, int | float) or not 0 <= area < 1e12:
            raise ModelError(f"min_object_um2 must be 0 or a positive area, got {brief(area)}")
        self.min_object_um2 = float(area)
        if not isinstance(self.trained, bool):
            raise ModelError(f"trained must be true or false, got {brief(self.trained)}")
        for key in ("training", "validation"):
            if not isinstance(getattr(self, key), dict):
                raise ModelError(f"{key} must be a mapping, got {brief(getattr(self, key))}")
        for key in ("command", "parent", "licence"):
            _str_or_none(key, getattr(self, key))
        if self.sha256 is not None and not (
            isinstance(self.sha256, str) and _SHA256.fullmatch(self.sha256)
        ):
            raise ModelError(f"sha256 must be 64 lower-case hex digits, got {brief(self.sha256)}")

    @property
    def multiple(self) -> int:
        """Tile sides must be multiples of this (``2**depth``)."""
        return 2 ** int(self.parameters["depth"])

    def to_dict(self) -> dict[str, Any]:
        """Return the card as a plain JSON-ready dict (a deep copy)."""
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from a dict such as :meth:`to_dict` returns.

        Parameters
        ----------
        data
            The card's fields. ``name``, ``parameters``, ``normalization``,
            ``working_mpp`` and ``default_input_mpp`` are required (the last two
            may be ``null``); the others have defaults.

        Returns
        -------
        ModelCard

        Raises
        ------
        ModelError
            (a ``ValueError``) on a missing or unknown field or an invalid value.
        """
        if not isinstance(data, dict):
            raise ModelError(f"a model card must be a JSON object, got {type(data).__name__}")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ModelError(f"model card lacks required field(s) {missing}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known, key=repr)
        if unknown:
            raise ModelError(
                f"model card has unknown field(s) {brief(unknown)}; known: "
                + ", ".join(sorted(known))
            )
        try:
            data = copy.deepcopy(data)
        except RecursionError:
            # Free-form fields (training, validation) may nest; a thousand levels is hostile.
            raise ModelError("model card is nested too deeply") from None
        return cls(**data)

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the card to ``path`` as indented JSON, atomically; return the path."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> ModelCard:
        """Read a card written by :meth:`to_json`.

        Raises
        ------
        ModelError
            When the file is missing, larger than :data:`MAX_CARD_BYTES`, is not
            JSON, or is not a valid card; the message names the file.
        """
        path = Path(path)
        try:
            with path.open("rb") as f:
                # One byte over the limit is enough to refuse, whatever the file claims.
                raw = f.read(MAX_CARD_BYTES + 1)
            if len(raw) > MAX_CARD_BYTES:
                raise ModelError(
                    f"{path}: a model card is a small JSON file (at most "
                    f"{MAX_CARD_BYTES // 2**20} MB), but this one is larger"
                )
            text = raw.decode("utf-8")
        except FileNotFoundError:
            raise ModelError(f"{path}: model card not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path}: cannot read the model card ({exc})") from None
        try:
            data = json.loads(text)
        except RecursionError:
            raise ModelError(f"{path}: model card is not valid JSON (nested too deeply)") from None
        except ValueError as exc:  # JSONDecodeError, and integers of thousands of digits
            raise ModelError(f"{path}: model card is not valid JSON ({exc})") from None
        try:
            return cls.from_dict(data)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None
        except TypeError as exc:
            raise ModelError(f"{path}: invalid model card ({exc})") from None

"""What to train and how: :class:`TrainingConfig`, one frozen dataclass.

Its own module so that the training loop (:mod:`slide_unet.core.training.train`)
and the data it reads (:mod:`slide_unet.core.training.data`) both import it, one
way, without importing each other.

This module is part of the napari-free core.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from slide_unet.core.errors import InputError
from slide_unet.core.training.augment import Augmentation

__all__ = ["TrainingConfig"]


@dataclass(frozen=True)
class TrainingConfig:
    """What to train and how. Defaults suit a small U-Net on a 2-core CPU.

    Attributes
    ----------
    name : str
        The model's name (its card's ``name``).
    working_mpp : float or None
        Pixel size (µm) the model works at; None: each image's own.
    input_mpp : float or None
        Pixel size of images whose files do not say (``--mpp``); also the
        card's ``default_input_mpp``.
    base_width, depth, norm : U-Net parameters (:class:`~slide_unet.core.model.unet.UNet`).
    patch : int
        Side of the training patches at working scale (a multiple of ``2**depth``).
    batch_size : int
    epochs : int or None
        Number of epochs of ``steps_per_epoch`` steps; None: until ``minutes``.
    steps_per_epoch : int
    minutes : float or None
        Time budget for the whole run, the last validation and the save
        included; with ``epochs`` too, whichever ends first. The learning rate
        schedule follows whichever is further along.
    learning_rate, weight_decay : AdamW settings (peak learning rate).
    ema : float
        Decay of an exponential moving average of the weights, updated after
        every step; when non-zero the average, not the raw weights, is
        validated and saved. 0 turns it off.
    val_fraction : float
        Fraction of the images held out for validation (at least one).
    seed : int
        Seeds the split, the patches and the augmentation.
    foreground_fraction : float
        Fraction of patches centred on a foreground pixel.
    norm_batches : int
        Batches of plain patches over which batch-norm statistics are
        re-estimated before each validation (:func:`recalibrate_norms`); more
        make validation, and so the choice of the kept epoch, less noisy.
    augmentation : Augmentation
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    precision : str
        ``"fp32"`` or ``"bf16"`` autocast; ``"auto"`` picks as ``segment`` does
        (:func:`~slide_unet.core.devices.resolve_precision`: bf16 on GPUs and
        on CPUs with native bf16).
    tile : int
        The card's default inference tile.
    validation_images : tuple of str or None
        The stems to hold out for validation, instead of a ``val_fraction``
        split; ``()`` holds none out (no validation: the last epoch is kept).
    keep : {"best", "last"}
        Which weights to save: the epoch with the best validation Dice, or
        the last (a fixed schedule, chosen beforehand: what cross-validation
        measures, and so what its figure is honest for).
    """

    name: str
    working_mpp: float | None = None
    input_mpp: float | None = None
    base_width: int = 16
    depth: int = 4
    norm: str = "batch"
    patch: int = 256
    batch_size: int = 8
    epochs: int | None = 30
    steps_per_epoch: int = 50
    minutes: float | None = None
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    ema: float = 0.0
    val_fraction: float = 0.2
    seed: int = 0
    foreground_fraction: float = 0.5
    norm_batches: int = 8
    augmentation: Augmentation = field(default_factory=Augmentation)
    device: str = "auto"
    precision: str = "auto"
    tile: int = 512
    validation_images: tuple[str, ...] | None = None
    keep: str = "best"

    def __post_init__(self) -> None:
        multiple = 2**self.depth
        if self.patch % multiple or self.patch < multiple:
            raise InputError(
                f"patch must be a multiple of {multiple} (2**depth), got {self.patch}"
            )
        if self.tile % multiple:
            raise InputError(f"tile must be a multiple of {multiple} (2**depth), got {self.tile}")
        if self.epochs is None and self.minutes is None:
            raise InputError("give a number of epochs or of minutes (or both)")
        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"minutes must be positive, got {self.minutes}")
        if self.batch_size < 1 or self.steps_per_epoch < 1 or self.norm_batches < 1:
            raise InputError("batch_size, steps_per_epoch and norm_batches must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if not 0 <= self.ema < 1:
            raise InputError(f"ema must be at least 0 and below 1, got {self.ema}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.keep not in ("best", "last"):
            raise InputError(f"keep must be 'best' or 'last', got {self.keep!r}")
        if self.validation_images is not None:
            object.__setattr__(self, "validation_images", tuple(self.validation_images))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (for the card and the resume state)."""
        out = dataclasses.asdict(self)
        out["augmentation"] = self.augmentation.to_dict()
        return out

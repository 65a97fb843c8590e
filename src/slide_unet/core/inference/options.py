"""The segment options, declared once.

:class:`SegmentOptions` is the one list of what a segmentation run takes besides
its input and output. Each field's metadata says how the command line and the
Segment widget show it:

- ``help``: the text for both (the command line adds its ``default``);
- ``default_text``: what the default is, in words, when it is None ("the model
  card's"); the command line shows it as ``(default: ...)``;
- ``cli``: ``argparse`` keywords (``type``, ``choices``, ``metavar``, ``action``);
  no ``cli`` key: the command line declares no flag for it;
- ``form``: the widget's field (``label``, ``advanced``, magicgui ``options``, the
  form's ``type``, and ``none_shown_as``: the number the form starts at for a
  None default that the widget replaces, as the Segment widget puts the picked
  model's minimum object area in its field); no ``form`` key: the widget has no
  field for it;
- ``zero_is_none``: a form cannot hold None, so 0 stands for it ("the model's");
  :meth:`SegmentOptions.from_form` and :meth:`SegmentOptions.form_value` map it,
  and nothing else does.

``segment`` and ``segment_distributed`` keep their keyword arguments (public API);
``tests/core/inference/test_options.py`` checks that their defaults are these.

This module is part of the napari-free core, and cheap to import (the command
line builds its parser from it): no numpy, no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["DEVICES", "PRECISIONS", "SegmentOptions"]

#: The engine's precisions (as :data:`slide_unet.core.devices.PRECISIONS`, which
#: imports nothing heavy either; repeated here to keep this module import-free).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Where a model may run (``auto``: a GPU when there is one, else the CPU).
DEVICES = ("auto", "cpu", "cuda", "mps")


def _option(
    default: Any,
    help: str,
    *,
    default_text: str | None = None,
    cli: dict[str, Any] | None = None,
    form: dict[str, Any] | None = None,
    zero_is_none: bool = False,
) -> Any:
    metadata: dict[str, Any] = {"help": help, "zero_is_none": zero_is_none}
    if default_text is not None:
        metadata["default_text"] = default_text
    if cli is not None:
        metadata["cli"] = cli
    if form is not None:
        metadata["form"] = form
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment: the model, where and how it runs, and the post-processing.

    The fields are the keyword arguments of
    :func:`~slide_unet.core.inference.segment.segment` of the same names (see
    there for their meaning); :meth:`engine_kwargs` gives them, less ``model``.
    """

    model: str = _option(
        "glomeruli",
        "bundled or user model name, or a model file",
        cli={},
    )
    device: str = _option(
        "auto",
        "where the model runs: auto (a GPU when there is one, else the CPU), cpu, cuda or mps",
        cli={"choices": DEVICES},
        form={"label": "Device", "tooltip": "auto: the GPU when there is one"},
    )
    precision: str = _option(
        "auto",
        "auto: bf16 (else fp16) on a CUDA GPU and on CPUs with native bf16, else fp32; "
        "fp32 gives results exactly independent of the tiling",
        cli={"choices": PRECISIONS},
    )
    tile: int | None = _option(
        None,
        "model tile side at working scale",
        default_text="the model card's, 512 for the bundled models; larger on a GPU",
        cli={"type": int},
        form={
            "label": "Tile (px)",
            "tooltip": "model tile side at working scale; 0: the model's",
            "type": int,
            "advanced": True,
            "options": {"min": 0, "max": 4096, "step": 16},
        },
        zero_is_none=True,
    )
    batch_size: int | None = _option(
        None,
        "tiles per batch",
        default_text="chosen for the device and tile size",
        cli={"type": int},
        form={
            "label": "Batch",
            "tooltip": "tiles per batch; 0: chosen for the device",
            "type": int,
            "advanced": True,
            "options": {"min": 0, "max": 256},
        },
        zero_is_none=True,
    )
    threshold: float | None = _option(
        None,
        "probability above which a pixel is foreground",
        default_text="the model card's, 0.5 for the bundled models",
        cli={"type": float},
        form={
            "label": "Threshold",
            "tooltip": "probability above which a pixel is foreground; 0: the model's",
            "type": float,
            "advanced": True,
            "options": {"min": 0.0, "max": 0.99, "step": 0.05},
        },
        zero_is_none=True,
    )
    tta: bool = _option(
        False,
        "test-time augmentation: average the 8 rotations and flips of each tile "
        "(a little more accurate, 8x slower)",
        cli={"action": "store_true"},
        form={"label": "Test-time augmentation", "advanced": True},
    )
    min_object_um2: float | None = _option(
        None,
        "remove objects smaller than AREA µm² after segmenting (pixels if the pixel size is "
        "unknown); 0: keep all",
        default_text="the model card's, chosen by its cross-validation (0 for a card that "
        "records none)",
        cli={"type": float, "metavar": "AREA"},
        form={
            "label": "Min. object (µm²)",
            "tooltip": "remove objects smaller than this after segmenting; 0: keep all. "
            "Set to the model's own (chosen by its cross-validation) when a model is picked",
            "type": float,
            "none_shown_as": 0.0,
            "advanced": True,
            "options": {"min": 0.0, "max": 1e7, "step": 100.0},
        },
    )
    mpp: float | None = _option(
        None,
        "input pixel size (µm) when the file does not record one",
        default_text="the file's, else the model card's default, else the image's own scale",
        cli={"type": float},
        zero_is_none=True,
    )
    tissue: bool = _option(True, "skip blocks without tissue (brightfield RGB slides only)")
    colour: bool = _option(
        True,
        "bring the slide's tissue colour (mean and spread of each channel) to that of the "
        "model's training images, for models whose card records it (brightfield RGB): "
        "another scanner or stain batch looks like what the model learned",
        cli={"action": "BooleanOptionalAction"},
        form={
            "label": "Match colours",
            "tooltip": "bring the slide's tissue colours to those the model was trained on "
            "(another scanner or stain batch); models whose card records them",
            "advanced": True,
        },
    )

    def engine_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``segment`` / ``segment_distributed``, less ``model``."""
        values = dataclasses.asdict(self)
        del values["model"]
        return values

    @classmethod
    def from_form(cls, **values: Any) -> SegmentOptions:
        """From a form's values, where 0 stands for None ("the model's", "chosen for
        the device"); the only place that maps it. Unknown names are an error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"SegmentOptions has no fields {sorted(unknown)}")
        return cls(
            **{
                name: None if fields[name].metadata["zero_is_none"] and not value else value
                for name, value in values.items()
            }
        )

    @classmethod
    def form_value(cls, name: str, value: Any = dataclasses.MISSING) -> Any:
        """The form's value of field ``name`` for ``value`` (default: the field's
        default): None shown as 0 where the form uses 0 for it."""
        field = {f.name: f for f in dataclasses.fields(cls)}[name]
        if value is dataclasses.MISSING:
            value = field.default
        if value is None and field.metadata["zero_is_none"]:
            return 0
        if value is None:  # a form shows a number, which its widget sets (see "form")
            return field.metadata.get("form", {}).get("none_shown_as", value)
        return value

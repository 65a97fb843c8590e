"""Segment kidney glomeruli and cell nuclei in gigapixel microscopy slides.

The library under the napari plugin: everything here works without napari or Qt.

The public names are imported when first used (PEP 562), so ``import slide_unet``
is light: opening a slide in napari, or ``slide-unet --help``, does not pay for
torch or scipy, which only segmenting, scoring and training need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_PUBLIC = {
    "ArrayPair": "slide_unet.core.training.finetune",
    "FinetuneResult": "slide_unet.core.training.finetune",
    "finetune": "slide_unet.core.training.finetune",
    "SlideError": "slide_unet.core.errors",
    "export_mask": "slide_unet.core.masks.io",
    "read_mask": "slide_unet.core.masks.io",
    "write_mask": "slide_unet.core.masks.io",
    "dice": "slide_unet.core.scoring.metrics",
    "iou": "slide_unet.core.scoring.metrics",
    "match_objects": "slide_unet.core.scoring.metrics",
    "ObjectTable": "slide_unet.core.objects.table",
    "measure": "slide_unet.core.objects.measure",
    "score": "slide_unet.core.scoring.metrics",
    "ModelCard": "slide_unet.core.model.card",
    "ModelError": "slide_unet.core.errors",
    "list_models": "slide_unet.core.model.store",
    "load_model": "slide_unet.core.model.store",
    "save_model": "slide_unet.core.model.store",
    "segment": "slide_unet.core.inference.segment",
    "rle_decode": "slide_unet.core.masks.rle",
    "rle_encode": "slide_unet.core.masks.rle",
    "Slide": "slide_unet.core.slide.slide",
    "open_slide": "slide_unet.core.slide.slide",
}

__all__ = [
    "ArrayPair",
    "FinetuneResult",
    "ModelCard",
    "ModelError",
    "ObjectTable",
    "Slide",
    "SlideError",
    "__version__",
    "dice",
    "export_mask",
    "finetune",
    "iou",
    "list_models",
    "load_model",
    "match_objects",
    "measure",
    "open_slide",
    "read_mask",
    "rle_decode",
    "rle_encode",
    "save_model",
    "score",
    "segment",
    "write_mask",
]

if TYPE_CHECKING:
    from slide_unet.core.errors import ModelError, SlideError
    from slide_unet.core.inference.segment import segment
    from slide_unet.core.masks.io import export_mask, read_mask, write_mask
    from slide_unet.core.masks.rle import rle_decode, rle_encode
    from slide_unet.core.model.card import ModelCard
    from slide_unet.core.model.store import list_models, load_model, save_model
    from slide_unet.core.objects.measure import measure
    from slide_unet.core.objects.table import ObjectTable
    from slide_unet.core.scoring.metrics import dice, iou, match_objects, score
    from slide_unet.core.slide.slide import Slide, open_slide
    from slide_unet.core.training.finetune import ArrayPair, FinetuneResult, finetune


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'slide_unet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})

"""Segment kidney glomeruli and cell nuclei in gigapixel microscopy slides.

The library under the napari plugin: everything here works without napari or Qt.
"""

from __future__ import annotations

from slide_unet.core.errors import SlideError
from slide_unet.core.finetune import ArrayPair, FinetuneResult, finetune
from slide_unet.core.mask_io import export_mask, read_mask, write_mask
from slide_unet.core.metrics import dice, iou, match_objects, score
from slide_unet.core.model_card import ModelCard, ModelError
from slide_unet.core.model_store import list_models, load_model, save_model
from slide_unet.core.predict import segment
from slide_unet.core.rle import rle_decode, rle_encode
from slide_unet.core.slide import Slide, open_slide

__version__ = "0.1.0"

__all__ = [
    "ArrayPair",
    "FinetuneResult",
    "ModelCard",
    "ModelError",
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
    "open_slide",
    "read_mask",
    "rle_decode",
    "rle_encode",
    "save_model",
    "score",
    "segment",
    "write_mask",
]

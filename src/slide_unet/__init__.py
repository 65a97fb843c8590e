"""Segment kidney glomeruli and cell nuclei in gigapixel microscopy slides.

The library under the napari plugin: everything here works without napari or Qt.
"""

from __future__ import annotations

from slide_unet.core.errors import SlideError
from slide_unet.core.slide import Slide, open_slide

__version__ = "0.1.0"

__all__ = ["Slide", "SlideError", "__version__", "open_slide"]

"""Pure computation: slides, tiles, models, masks and metrics.

Nothing in ``slide_unet.core`` imports napari, Qt or magicgui.
"""

from __future__ import annotations

from slide_unet.core.errors import SlideError
from slide_unet.core.slide import Slide, open_slide

__all__ = ["Slide", "SlideError", "open_slide"]

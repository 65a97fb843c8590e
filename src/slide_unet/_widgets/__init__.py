"""napari widgets: the only part of the package that imports napari and Qt.

Each widget is thin over :mod:`slide_unet.core`: long work runs in a
background thread (:mod:`slide_unet._widgets._jobs`) through the core's plain
``progress``/``cancel`` callbacks, and every error a user can cause ends as a
napari notification.
"""

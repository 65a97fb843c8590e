"""The napari plugin: the only part of the package that imports napari, Qt and magicgui.

- the npe2 contributions named in ``napari.yaml``: :mod:`~slide_unet.napari.reader`,
  :mod:`~slide_unet.napari.writers`, :mod:`~slide_unet.napari.sample_data`;
- one module per widget: ``segment_widget``, ``correct_widget``, ``score_widget``,
  ``export_widget``, ``finetune_widget`` (and ``edit_window``, the Correct widget's
  editable window);
- the widget plumbing: background jobs (:mod:`~slide_unet.napari.jobs`), layer
  lookups (``layers``), a layer's mask store (``mask_layer``, ``layer_data``), forms
  built from dataclasses (``params``), the score overlay, the training curve and
  the fine-tune inputs.

Each widget is thin over :mod:`slide_unet.core`: long work runs in a background
thread through the core's plain ``progress``/``cancel`` callbacks, and every error a
user can cause ends as a napari notification. The reader, writers and sample data
import neither napari nor Qt, and importing this package imports nothing.
"""

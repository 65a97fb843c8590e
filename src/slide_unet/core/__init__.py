"""Pure computation: slides, masks, objects, scores, models, inference and training.

One subpackage per layer, each importing only the layers below it (the
import-linter contract in ``pyproject.toml`` states the order)::

    errors, atomic, limits, devices, paths, ngff   the base every layer may use
    slide/       open a slide as a lazy pyramid with its pixel size; overview cache
    masks/       mask formats, the block reader and the per-slide mask store
    objects/     connected components across blocks, morphology, object edits
    scoring/     Dice, IoU, object matching
    model/       the U-Net, model cards, the model registry
    inference/   tiling, planning, the tile pipeline, ``segment``, the distributed runner
    training/    image pairs, augmentation, training, fine-tuning, evaluation

Nothing in ``slide_unet.core`` imports napari, Qt or magicgui, and importing a
package here imports nothing else: the public names live in
:mod:`slide_unet`.
"""

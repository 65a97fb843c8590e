"""Training a model: image pairs, augmentation, the training loop, fine-tuning,
cross-validation and evaluation.
"""

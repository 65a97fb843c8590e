"""Objects in masks: connected components across blocks, morphology and the object edits."""

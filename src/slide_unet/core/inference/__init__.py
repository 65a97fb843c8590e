"""Segmenting a slide: tile grids, the plan, the tile pipeline, post-processing,
``segment`` and the distributed runner.
"""

"""Slides: open one as a lazy pyramid with its pixel size; the overview cache of
flat slides; tissue detection.
"""

"""Masks: the formats (RLE, OME-TIFF, OME-Zarr, GeoJSON, PNG), reading masks block
by block, and the per-slide mask store.
"""

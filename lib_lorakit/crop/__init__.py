"""Crop, letterbox and buckets: how each training copy is cut or padded from its original, and how sd-scripts will
bucket it."""

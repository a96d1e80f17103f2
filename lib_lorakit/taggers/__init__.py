"""Automatic captioning: WD14 (onnxruntime), CLIP (open_clip), the webui's own interrogators, and the pipeline
that keeps a model fed."""

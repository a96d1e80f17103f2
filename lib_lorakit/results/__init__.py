"""Results: LoRA metadata, registration in the webui's Lora folder, grids and the overfitting report."""

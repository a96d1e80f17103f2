"""The VRAM estimate and the preflight finding it feeds."""

from __future__ import annotations

from lib_lorakit.train import presets
from lib_lorakit.train.service import vram_findings
from lib_lorakit.train.vram import estimate_vram


def test_estimates_grow_with_what_costs_memory():
    sd15 = presets.resolve("style-sd15-lora").values
    base = estimate_vram("SD1", sd15).gb
    assert 3 < base < 10
    assert estimate_vram("SD1", {**sd15, "train_batch_size": 4}).gb > base
    assert estimate_vram("SD1", {**sd15, "resolution": 768}).gb > base
    assert estimate_vram("SD1", {**sd15, "gradient_checkpointing": True}).gb <= base
    assert estimate_vram("SDXL", presets.resolve("style-sdxl-lora").values).gb > base


def test_findings_against_the_gpu():
    settings = presets.resolve("style-sdxl-lora", {"gradient_checkpointing": False, "train_batch_size": 4})
    (big,) = vram_findings(settings, (6000, 8192))
    assert big.severity == "error" and "8.0 GB" in big.message and "gradient_checkpointing" in big.fix
    small = presets.resolve("style-sd15-lora")
    assert vram_findings(small, (80_000, 81_559)) == []
    (tight,) = vram_findings(small, (1000, 24_000))
    assert tight.severity == "warning" and "Unloading the webui's model" in tight.message
    assert vram_findings(small, None) == []  # no GPU known: nothing to say

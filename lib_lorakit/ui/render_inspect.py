"""HTML for the Inspect panel: an image's generation parameters and its LoRAs. Everything in a file is anyone's text:
every value is escaped here (render._table escapes each cell)."""

from __future__ import annotations

from html import escape

from ..evaluate.inspect import InspectResult, LoraMatch
from .render import _table

KINDS = {"webui": "the webui's infotext", "comfyui": "a ComfyUI graph", "sd-scripts": "sd-scripts' metadata",
         "none": "no generation parameters"}
MAIN_FIELDS = ("Prompt", "Negative prompt", "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size",
               "Model", "Model hash", "VAE", "VAE hash", "Clip skip", "Denoising strength", "Hires upscale",
               "Hires upscaler", "Hires steps", "Epoch", "Step", "Sample of", "Version")
XYZ_FIELDS = ("Script", "X Type", "X Values", "Y Type", "Y Values", "Z Type", "Z Values", "Fixed X Values",
              "Fixed Y Values", "Fixed Z Values")
HIDDEN = {"Size-1", "Size-2", "Lora hashes"}  # shown as Size and in the LoRA table


def inspect_html(result: InspectResult) -> str:
    info, p = result.info, result.info.parameters
    head = (f"<h3>{escape(result.name)}</h3><p class=\"ts-inspect-kind\">{escape(info.format)} {info.width}×"
            f"{info.height}: {escape(KINDS.get(info.kind, info.kind))}</p>")
    main = [(k, p[k]) for k in MAIN_FIELDS if p.get(k) not in (None, "")]
    xyz = [(k, p[k]) for k in XYZ_FIELDS if p.get(k) not in (None, "")]
    other = [(k, v) for k, v in p.items() if k not in MAIN_FIELDS and k not in XYZ_FIELDS and k not in HIDDEN]
    parts = [head]
    if main:
        parts.append(_table(["field", "value"], main, cls="ts-table ts-inspect-fields"))
    if result.loras:
        parts.append("<h4>LoRAs</h4>" + _table(["LoRA", "weight", "hash", "which", "file"],
                                                [_lora_row(m) for m in result.loras], cls="ts-table ts-inspect-loras"))
    if xyz:
        parts.append("<h4>X/Y/Z plot</h4>" + _table(["field", "value"], xyz, cls="ts-table ts-inspect-xyz"))
    if other:
        parts.append(f"<details><summary>Other fields ({len(other)})</summary>"
                     + _table(["field", "value"], other, cls="ts-table ts-inspect-other") + "</details>")
    parts += [f'<p class="ts-note">{escape(n)}</p>' for n in info.notes]
    return "".join(parts)


def _lora_row(m: LoraMatch) -> tuple[str, str, str, str, str]:
    weight = "" if m.weight is None else f"{m.weight:g}"
    if m.ours:
        where = "epoch " + str(m.epoch) if m.epoch is not None else ("step " + str(m.step) if m.step is not None
                                                                      else "final")
        which = f"ours: {m.project}/{m.run}/{where}"
    elif m.file:
        which = "in the Lora folder"
    else:
        which = "not found here"
    return m.name, weight, m.hash or "–", which, m.file or "–"

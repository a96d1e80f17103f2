"""The Inspect panel: drop a LoRA to read how it was made."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import LorakitError
from ..results.lora_info import read_lora_info
from . import render
from .compat import bind, uploaded


class InspectPanel:
    def render(self) -> None:
        self.drop = gr.File(label="Drop a LoRA (.safetensors) here", file_count="single",
                            elem_id="train_style_inspect_drop")
        self.info = gr.HTML(elem_id="train_style_inspect_info")

    def register(self) -> None:
        bind(self.drop.change, self._show, [self.drop], [self.info])

    def _show(self, file: Any) -> str:
        files = uploaded([file] if file else [])
        if not files:
            return ""
        path, name = files[0]
        try:
            info = read_lora_info(Path(path))
        except LorakitError as e:
            return render.error_html(f"{name}: {e}")
        notes = "".join(f'<p class="ts-note">{escape(n)}</p>' for n in info.notes)  # what a hostile file broke
        return render.lora_info_html(info) + notes

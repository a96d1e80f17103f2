"""The Inspect panel: drop an image to see how it was made and which of our LoRAs made it (PNG Info), or a LoRA to
read how it was made. Inside the webui, the image's infotext goes to txt2img / img2img through the webui's own paste
mechanism (the Host's `bind_paste`)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Optional

import gradio as gr
from PIL import Image

from ..errors import LorakitError
from ..evaluate.pnginfo import MAX_FILE_BYTES, compose_infotext
from ..results.lora_info import read_lora_info
from ..studio import Studio
from . import render
from .compat import bind, uploaded
from .render_inspect import inspect_html

PASTE_TABS = ("txt2img", "img2img")
MAX_SHOWN_PIXELS = 16_000_000  # larger pictures are described, not drawn


class InspectPanel:
    def __init__(self, studio: Optional[Studio] = None):
        self.studio = studio

    def render(self) -> None:
        self.drop = gr.File(label="Drop an image (PNG, JPEG, WebP: how it was made, which LoRAs) or a LoRA "
                            "(.safetensors: how it was trained)", file_count="single",
                            elem_id="train_style_inspect_drop")
        with gr.Row():
            self.picture = gr.Image(label="Picture", type="pil", interactive=False, height=320,
                                    elem_id="train_style_inspect_picture")
            with gr.Column():
                self.infotext = gr.Textbox(label="Infotext (as the webui reads it)", lines=6, interactive=False,
                                           elem_id="train_style_inspect_infotext")
                self.send = self._paste_buttons()
        self.info = gr.HTML(elem_id="train_style_inspect_info")

    def _paste_buttons(self) -> list[Any]:
        """Send to txt2img / img2img, only where the Host can hand an infotext to the webui's paste mechanism."""
        bind_paste = getattr(self.studio.host, "bind_paste", None) if self.studio else None
        if bind_paste is None:
            return []
        buttons = []
        with gr.Row():
            for tab in PASTE_TABS:
                button = gr.Button(f"Send to {tab}", elem_id=f"train_style_inspect_to_{tab}")
                bind_paste(button=button, tab=tab, text=self.infotext, image=self.picture)
                buttons.append(button)
        return buttons

    def register(self) -> None:
        bind(self.drop.change, self._show, [self.drop], [self.info, self.infotext, self.picture])

    def _show(self, file: Any) -> tuple[str, str, Any]:
        files = uploaded([file] if file else [])
        if not files:
            return "", "", None
        path, name = files[0]
        if name.lower().endswith(".safetensors"):
            return self._lora(path, name), "", None
        try:
            result = self._inspect(path, name)
        except LorakitError as e:
            return render.error_html(str(e)), "", None
        info = result.info
        text = info.infotext or (compose_infotext(info.parameters) if info.parameters else "")
        return inspect_html(result), text, _picture(path, info.width * info.height)

    def _inspect(self, path: Path, name: str) -> Any:
        if self.studio is None:
            raise LorakitError("Inspect needs the tab's Studio; reload the page.")
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise LorakitError(f"{name}: the upload cannot be read ({e.strerror or e}); drop it again.") from e
        return self.studio.inspect_upload(data, name=name)

    def _lora(self, path: Path, name: str) -> str:
        try:
            info = read_lora_info(Path(path))
        except LorakitError as e:
            return render.error_html(f"{name}: {e}")
        notes = "".join(f'<p class="ts-note">{escape(n)}</p>' for n in info.notes)  # what a hostile file broke
        return render.lora_info_html(info) + notes


def _picture(path: Path, pixels: int) -> Optional[Image.Image]:
    """The picture itself, when it is small enough to draw (its size was read from its header first)."""
    if pixels > MAX_SHOWN_PIXELS:
        return None
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None

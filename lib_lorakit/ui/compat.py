"""The few places gradio 3.41 (the webui's pin) and gradio 4 (Forge) differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def uploaded(files: Any) -> list[tuple[Path, str]]:
    """(temporary path, the user's file name) for gr.File values of either gradio version."""
    out = []
    for f in files or []:
        path = Path(getattr(f, "name", f))
        out.append((path, Path(getattr(f, "orig_name", None) or path).name))
    return out


def on_load_js(blocks: gr.Blocks, script: str) -> None:
    """Run `script` when the page loads (the standalone app; the webui loads javascript/ itself)."""
    key = "_js" if GRADIO_MAJOR < 4 else "js"
    blocks.load(None, None, None, **{key: f"() => {{ {script}\n }}"})

"""The few places gradio 3.41 (the webui's pin) and gradio 4 (Forge) differ."""

from __future__ import annotations

from collections.abc import Callable
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


# Gradio 4 (Forge) covers every output of an event that raised gr.Error with an "Error" overlay that takes the
# clicks until the component is next updated (a dropdown can't be opened after a failed Resume); with a minimal
# progress display the message shows as a toast and the outputs stay usable. Gradio 3.41 accepts the same value.
SHOW_PROGRESS = "minimal"


def bind(event: Callable, fn: Callable, inputs: list, outputs: list, queue: bool = False) -> Any:
    """Register `fn` for `event`, its LorakitErrors shown with the CLI's text; not queued (in gradio 3.41 a queued
    event whose page closes at the wrong moment leaves a task that hangs "Reload UI")."""
    from .dataset_panel import user_errors

    return event(user_errors(fn), inputs, outputs, queue=queue, show_progress=SHOW_PROGRESS)

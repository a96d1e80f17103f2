"""The few places gradio 3.41 (the webui's pin) and gradio 4 (Forge) differ."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import LorakitError

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


def run_js(event: Callable, script: str) -> Any:
    """Run `script` (a JavaScript function's source, given no arguments) in the page when `event` fires; no Python
    runs. Gradio 3.41 names the argument `_js`, gradio 4 `js`."""
    key = "_js" if GRADIO_MAJOR < 4 else "js"
    return event(None, None, None, queue=False, **{key: script})


# Gradio 4 (Forge) covers every output of an event that raised gr.Error with an "Error" overlay that takes the
# clicks until the component is next updated (a dropdown can't be opened after a failed Resume); with a minimal
# progress display the message shows as a toast and the outputs stay usable. Gradio 3.41 accepts the same value.
SHOW_PROGRESS = "minimal"
# for events the user did not start (the page script's sync of a panel): nothing shows while they run
QUIET = "hidden"


def bind(event: Callable, fn: Callable, inputs: list, outputs: list, *, show_progress: str = SHOW_PROGRESS) -> Any:
    """Register `fn` for `event`, its LorakitErrors shown with the CLI's text; not queued (in gradio 3.41 a queued
    event whose page closes at the wrong moment leaves a task that hangs "Reload UI")."""
    return event(user_errors(fn), inputs, outputs, queue=False, show_progress=show_progress)


def unchanged(count: int) -> tuple:
    """Updates that leave `count` outputs as they are."""
    return tuple(gr.update() for _ in range(count))


def user_errors(fn: Callable) -> Callable:
    """Show LorakitError to the user with the same text the CLI prints."""
    def wrapper(*args):  # no annotations: gradio inspects the handler's type hints
        try:
            return fn(*args)
        except LorakitError as e:
            raise gr.Error(str(e)) from e
    wrapper.__name__ = getattr(fn, "__name__", "train_style_handler")
    return wrapper

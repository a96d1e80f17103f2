"""The standalone app: the same tab as in the webui, served by plain gradio, with the HTTP API beside it."""

from __future__ import annotations

import logging
import time

from .. import api
from ..host import StandaloneHost

log = logging.getLogger(__name__)


def build_app(host: StandaloneHost):
    """The gr.Blocks of the app (tab + page script + style), not yet launched."""
    import gradio as gr

    from .compat import on_load_js
    from .dataset_panel import asset_path
    from .tab import build_tab

    css = asset_path("style.css").read_text(encoding="utf-8")
    script = asset_path("javascript/train_style.js").read_text(encoding="utf-8")
    with gr.Blocks(title="Train Style", css=css, analytics_enabled=False) as app:
        gr.Markdown("## Train Style")
        build_tab(host)  # a Blocks created inside another renders into it
        on_load_js(app, script)
    return app


def serve(host: StandaloneHost, *, host_name: str = "127.0.0.1", port: int = 7861, block: bool = True, **kw):
    """Launch the app and mount the API; returns the FastAPI app when `block` is False."""
    from .compat import GRADIO_MAJOR

    host.projects_home().mkdir(parents=True, exist_ok=True)
    app = build_app(host)
    queue_kw = {"concurrency_count": 8} if GRADIO_MAJOR < 4 else {"default_concurrency_limit": 8}
    app.queue(**queue_kw)
    fastapi_app, local_url, _ = app.launch(server_name=host_name, server_port=port, prevent_thread_lock=True,
                                           show_api=False, inbrowser=False, quiet=True, **kw)
    api.mount(fastapi_app, host)
    from ..train.queue import ensure_worker

    ensure_worker(host)
    log.info("Train Style is running at %s (projects in %s)", local_url, host.projects_home())
    if not block:
        return app
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        app.close()

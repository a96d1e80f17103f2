"""The standalone app: the same tab as in the webui, served by plain gradio, with the HTTP API beside it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from .. import api, websec
from ..errors import LorakitError
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
    with gr.Blocks(title="Train Style", css=css, analytics_enabled=False, theme=_offline_theme(gr)) as app:
        gr.Markdown("## Train Style")
        build_tab(host)  # a Blocks created inside another renders into it
        on_load_js(app, script)
    return app


def _offline_theme(gr):
    """gradio's default look with the machine's own fonts: its theme otherwise makes every page fetch a font from
    fonts.googleapis.com, which a machine without internet waits on, and which tells Google each time the app opens."""
    return gr.themes.Default(font=[gr.themes.Font("system-ui"), "ui-sans-serif", "sans-serif"],
                             font_mono=[gr.themes.Font("ui-monospace"), "Consolas", "monospace"])


def serve(host: StandaloneHost, *, host_name: str = "127.0.0.1", port: int = 7861, block: bool = True,
          credentials: Sequence[tuple[str, str]] = (), allowed_hosts: Sequence[str] = (), **kw):
    """Launch the app and mount the API; returns the gr.Blocks when `block` is False.

    Listening beyond this machine needs `credentials` (gradio's login for the tab, the same user and password
    for the API). Every request passes websec.WebGuard, which is in place before the server takes its first one.
    """
    from starlette.middleware import Middleware

    from .compat import GRADIO_MAJOR

    refusal = websec.exposure_refusal(host_name, credentials)
    if refusal:
        raise LorakitError(refusal)
    home = host.projects_home()
    home.mkdir(parents=True, exist_ok=True)
    policy = websec.WebPolicy.for_bind(host_name, allowed_hosts=allowed_hosts)
    blocked = websec.blocked_file_paths(home)
    app = build_app(host)
    queue_kw = {"concurrency_count": 8} if GRADIO_MAJOR < 4 else {"default_concurrency_limit": 8}
    app.queue(**queue_kw)
    # 1. the guard is one of the app's middlewares from its creation; 2. once started, gradio's CORS goes
    guard = Middleware(websec.WebGuard, policy=policy, blocked=tuple(map(Path, blocked)))
    fastapi_app, local_url, _ = app.launch(server_name=host_name, server_port=port, prevent_thread_lock=True,
                                           show_api=False, inbrowser=False, quiet=True,
                                           auth=list(credentials) or None, blocked_paths=blocked,
                                           app_kwargs={"middleware": [guard]}, **kw)
    websec.install_guard(fastapi_app, policy, blocked=tuple(map(Path, blocked)))
    api.mount(fastapi_app, host, authorize=websec.login_check(fastapi_app), policy=policy)
    from ..train.queue import ensure_worker

    ensure_worker(host)
    log.info("Train Style is running at %s (projects in %s%s)", local_url, home,
             "; login required" if credentials else "")
    if not block:
        return app
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        app.close()

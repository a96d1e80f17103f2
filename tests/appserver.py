"""The standalone app as its own process, for browser tests: started on a free port, stopped afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_LOGS: list[Path] = []  # the logs of the apps running now: a failing browser test shows their tails (conftest)
PAGE_EVENTS: list[str] = []  # the open pages' console messages and failed requests, the latest last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(home: Path, log_dir: Path, *ui_args: str, env: dict | None = None,
                cwd: Path | None = None) -> Iterator[str]:
    """`python -m lib_lorakit --home HOME ui …` until the block ends; yields its URL once the API answers."""
    port = free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(log_dir / "none.toml"),
                "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    log_file = log_dir / "server.log"
    argv: Sequence[str] = [sys.executable, "-m", "lib_lorakit", "--home", str(home), "ui", "--port", str(port),
                           *ui_args]
    with open(log_file, "w") as log:
        proc = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    SERVER_LOGS.append(log_file)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/train-style/v1/projects", timeout=2)
                break
            except OSError as e:
                if getattr(e, "code", None) == 401:  # it answers, asking for the login it was started with
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the app did not start: " + log_file.read_text())
                time.sleep(0.5)
        yield url
    finally:
        SERVER_LOGS.remove(log_file)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def open_page(url: str, *, height: int = 1000, project: str | None = None, tab: str | None = None) -> Iterator:
    """Headless Chromium on the app: waits until the Dataset panel shows `project`, then opens `tab`."""
    from test_browser import CHROMIUM, playwright_api

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.on("console", lambda m: _note(f"console {m.type}: {m.text}"))
        page.on("requestfailed", lambda r: _note(f"request failed: {r.method} {r.url} ({r.failure})"))
        page.goto(url)
        if project:
            page.wait_for_function(
                f"() => document.querySelector('#train_style_project input')?.value === {project!r}")
        if tab:
            page.locator("#train_style_tabs button", has_text=tab).first.click()
        try:
            yield page
        finally:
            browser.close()


def _note(text: str) -> None:
    PAGE_EVENTS.append(f"{time.strftime('%H:%M:%S')} {text[:300]}")
    del PAGE_EVENTS[:-60]


def failure_sections() -> list[tuple[str, str]]:
    """What a failing browser test should show besides its traceback: the app's log tail and the page's events."""
    out = []
    for log in SERVER_LOGS[-2:]:
        try:
            lines = log.read_text(errors="replace").splitlines()[-40:]
        except OSError:
            continue
        out.append((f"app log {log.name} (last lines)", "\n".join(lines)))
    if PAGE_EVENTS:
        out.append(("page events (last)", "\n".join(PAGE_EVENTS[-40:])))
    return out

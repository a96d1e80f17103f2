"""The Train panel's trainer: its status line, Set up trainer (a logged, resumable job) and Check trainer."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Optional

import gradio as gr

from ..cli.train import DEFAULT_TORCH
from ..errors import LorakitError
from ..progress import ProgressFn
from ..studio import Studio
from ..train.door import TrainingDoor
from ..train.environment import ProbeCache, cached_report, setup_trainer
from ..train.service import REPO_ROOT, default_trainer
from . import render_train as render
from .compat import bind

log = logging.getLogger(__name__)
SETUP_KIND = "trainer-setup"


class TrainerSection:
    """The trainer sd-scripts runs in: whether it is ready, and the buttons that make or check it."""

    def __init__(self, studio: Studio, door: Callable[[], TrainingDoor]):
        self.studio = studio
        self.door = door

    def render(self) -> None:
        with gr.Accordion("Trainer", open=False):
            self.trainer_status = gr.HTML(elem_id="train_style_trainer_status")
            with gr.Row():
                self.torch_version = gr.Textbox(label="torch version (the webui's, to reuse its wheel)",
                                                value=getattr(self.studio.host, "torch_version", lambda: None)()
                                                or DEFAULT_TORCH, elem_id="train_style_torch_version")
                self.torch_index = gr.Textbox(label="torch wheel index (optional, e.g. a CUDA index)",
                                              elem_id="train_style_torch_index")
                self.setup = gr.Button("Set up trainer", elem_id="train_style_setup_trainer")
                self.doctor = gr.Button("Check trainer", elem_id="train_style_check_trainer")
            self.setup_job = gr.HTML(render.setup_job_html(None), elem_id="train_style_setup_box")
            self.doctor_report = gr.HTML(elem_id="train_style_doctor")

    def register(self) -> None:
        bind(self.setup.click, self._setup, [self.torch_version, self.torch_index], [self.setup_job])
        # not queued either: it holds a worker thread for the few seconds of its probe, which is harmless, while a
        # queued event left by a closed page can hang the webui's "Reload UI"
        bind(self.doctor.click, self._doctor, [], [self.doctor_report])

    def status_html(self) -> str:
        """One line from the doctor's last probe of the trainer (cached: no process starts here)."""
        env = default_trainer(self.studio.host)
        cache = ProbeCache.under(self.studio.host.projects_home())
        return render.trainer_html(env, cached_report(env, cache, repo_root=REPO_ROOT))

    def setup_job_html(self) -> str:
        """The newest setup job's bar (none drawn when there is none)."""
        setups = [j for j in self.studio.jobs.list("") if j.kind == SETUP_KIND]
        return render.setup_job_html(setups[0] if setups else None)

    def _setup(self, torch_version: str, index_url: str) -> str:
        if os.environ.get("TRAIN_STYLE_TRAINER_PYTHON"):
            raise LorakitError("TRAIN_STYLE_TRAINER_PYTHON names an existing trainer environment; Set up makes our "
                               "own. Unset it to use ours.")
        work = setup_work(self.studio, (torch_version or DEFAULT_TORCH).strip(), (index_url or "").strip() or None)
        return render.setup_job_html(self.studio.jobs.start(kind=SETUP_KIND, project="", title="Trainer setup",
                                                            work=work))

    def _doctor(self) -> str:
        return render.doctor_html(self.door().trainer_report(refresh=True))


def setup_work(studio: Studio, torch_version: str, index_url: Optional[str]) -> Callable[..., dict]:
    """The job body of 'Set up trainer': the same logged, resumable setup as `trainer setup` on the CLI."""
    env = default_trainer(studio.host)

    def work(progress: ProgressFn, cancel: threading.Event) -> dict:
        report = setup_trainer(env.venv_dir, env.sd_scripts_dir, torch_version=torch_version,
                               torch_index_url=index_url, log=log.info, progress=progress, cancel=cancel)
        return {"ran": list(report.ran), "skipped": list(report.skipped), "warnings": list(report.warnings)}
    return work

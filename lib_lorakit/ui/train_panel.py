"""The Train panel: preset, base model and overrides → Check (settings, steps, preflight) → Train; the runs of the
project with progress, samples and the loss curve; Stop, Resume, Register; setting up the trainer.

It only wires three sections together: `PlanSection` (train_plan.py: what to train and how, the request),
`RunsSection` (train_runs.py: starting, watching and moving runs) and `TrainerSection` (train_env.py: the trainer)."""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from ..studio import Studio
from ..train.door import TrainingDoor
from . import render_train as render
from .compat import bind, unchanged
from .train_env import TrainerSection
from .train_plan import PlanSection
from .train_runs import RunsSection


class TrainPanel:
    """Trains the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project
        self.plan = PlanSection(studio, self._door)
        self.runs = RunsSection(studio, self._door, self.plan.request_data)
        self.trainer = TrainerSection(studio, self._door)

    def _door(self) -> TrainingDoor:
        # whoever reaches the page is not trusted as the machine's user: only listed or confined .safetensors models;
        # a queued run starts through this process's queue worker (its lock keeps one start at a time)
        return self.studio.training(local_user=False, start="worker")

    def render(self) -> None:
        self.runs.render_heading()
        self.plan.render()
        self.runs.render()
        self.trainer.render()

    def register(self) -> None:
        # Handlers return at once (a run is a process, setup a job), so they skip gradio's queue like the Dataset
        # panel's.
        plan, runs, trainer = self.plan, self.runs, self.trainer
        plan.register(self.project)
        runs.register(self.project, plan.train, [self.project, *plan.inputs], plan.plan)
        trainer.register()
        bind(self.project.change, self._project_changed, [self.project], [plan.plan, runs.registered, *runs.views])
        bind(self.project.change, runs.concept_choices, [self.project], runs.concept_lists)
        lists = [plan.preset, plan.base, trainer.trainer_status]
        bind(plan.refresh_lists.click, self._lists, [plan.preset, plan.base], lists)
        bind(plan.refresh_lists.click, runs.concept_choices, [self.project, *runs.concept_lists], runs.concept_lists)
        bind(runs.refresh.click, self._refresh, [self.project, runs.runs],
             [*runs.views, trainer.trainer_status, trainer.setup_job])
        self.sync_inputs = [runs.stamp, plan.plan, runs.runs, *runs.concept_lists]
        self.sync_outputs = [plan.plan, *runs.concept_lists, *runs.views]

    def load_event(self, blocks: gr.Blocks) -> None:
        blocks.load(self._lists, [self.plan.preset, self.plan.base],
                    [self.plan.preset, self.plan.base, self.trainer.trainer_status], queue=False)

    # --- handlers that span the sections ----------------------------------------------------------------------------
    def _lists(self, preset: Optional[str], base: Optional[str]) -> tuple[Any, Any, str]:
        return (*self.plan.lists(preset, base), self.trainer.status_html())

    def _project_changed(self, name: Optional[str]) -> tuple:
        return ("", "", *self.runs.run_views(name, None))

    def _refresh(self, name: Optional[str], choice: Optional[str]) -> tuple:
        return (*self.runs.run_views(name, render.run_id_of(choice) or None), self.trainer.status_html(),
                self.trainer.setup_job_html())

    def sync(self, name: Optional[str], stamp: str, plan: str, choice: Optional[str], *concepts: Any) -> tuple:
        """Redrawn when the project changed since `stamp` (images, captions, settings, runs); else as it is. A
        step plan shown is from before the change, so it gives way to a note."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        same = bool(name and stamp.startswith(f"{name}:"))
        note = render.note_html("The project changed since this check: press Check again.") if plan and same else ""
        return (note, *self.runs.concept_choices(name, *concepts),
                *self.runs.run_views(name, render.run_id_of(choice) or None if same else None))

"""The Train panel's runs: the heading with the next step, Train and Train both stages, the runs of the project with
progress, samples and the loss curve, the queue, Stop, Resume, Register, and export/import for another machine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import gradio as gr

from .. import next_step
from ..errors import LorakitError
from ..studio import Studio
from ..train.door import TrainingDoor
from ..train.runner import RunSnapshot
from . import render_train as render
from .compat import bind, uploaded

RequestData = Callable[..., dict]  # (project, *the plan section's values) → the request as plain data


class RunsSection:
    """The project's runs and what starts, moves, stops and exports them; `request_data` reads the settings."""

    def __init__(self, studio: Studio, door: Callable[[], TrainingDoor], request_data: RequestData):
        self.studio = studio
        self.door = door
        self.request_data = request_data

    # --- layout -----------------------------------------------------------------------------------------------------
    def render_heading(self) -> None:
        self.heading = gr.HTML(self.heading_html(None), elem_id="train_style_train_heading")
        self.stamp = gr.State("")  # the project's change stamp the panel was drawn at (see tab.py)

    def render(self) -> None:
        with gr.Row():
            self.runs = gr.Dropdown(label="Runs", choices=[], elem_id="train_style_runs", interactive=True)
            self.stop = gr.Button("Stop", elem_id="train_style_stop", scale=0)
            self.resume = gr.Button("Resume", elem_id="train_style_resume", scale=0)
            self.register_run = gr.Button("Register", elem_id="train_style_register", scale=0)
            self.queue_up = gr.Button("↑ in queue", elem_id="train_style_queue_up", scale=0)
            self.queue_down = gr.Button("↓ in queue", elem_id="train_style_queue_down", scale=0)
            self.refresh = gr.Button("refresh", elem_id="train_style_train_refresh", elem_classes=["ts-hidden"])
        self.queue_box = gr.HTML(elem_id="train_style_queue")
        self.run_box = gr.HTML(render.run_html(None), elem_id="train_style_run_box")
        self.registered = gr.HTML(elem_id="train_style_registered")
        self.samples = gr.Gallery(label="Samples", columns=4, height="auto", elem_id="train_style_samples")
        self._differential()
        self._elsewhere()

    def _differential(self) -> None:
        with gr.Accordion("Two-stage (differential)", open=False):
            gr.HTML('<p class="ts-note">Stage 1 trains a base LoRA on concepts that carry a look to remove (e.g. '
                    "3D renders of varied characters on white); stage 2 trains the target concepts with it merged "
                    "in, so the target's LoRA learns the character and not the look. Both use the preset, base "
                    "model and overrides above.</p>")
            with gr.Row():
                self.stage1_concepts = gr.Dropdown(label="Stage 1 concepts (empty: all but the targets)", choices=[],
                                                   multiselect=True, elem_id="train_style_stage1_concepts",
                                                   interactive=True)
                self.target_concepts = gr.Dropdown(label="Target concepts (stage 2)", choices=[], multiselect=True,
                                                   elem_id="train_style_target_concepts", interactive=True)
                self.train_differential = gr.Button("Train both stages", elem_id="train_style_train_differential")

    def _elsewhere(self) -> None:
        with gr.Accordion("Train on another machine", open=False):
            gr.HTML('<p class="ts-note">Export the chosen run as a zip (its images, captions, settings and a '
                    "train.sh / train.ps1) to train it where a bigger GPU is; import the trained zip back to "
                    "register its LoRAs here.</p>")
            with gr.Row():
                self.include_model = gr.Checkbox(label="Put the base model in the zip too",
                                                 elem_id="train_style_include_model")
                self.export = gr.Button("Export the chosen run", elem_id="train_style_export")
                self.bundle_out = gr.File(label="Bundle", interactive=False, elem_id="train_style_bundle_out")
            with gr.Row():
                self.bundle_in = gr.File(label="A trained bundle (.zip)", file_types=[".zip"],
                                         elem_id="train_style_bundle_in")
                self.import_bundle = gr.Button("Import the trained bundle", elem_id="train_style_import_bundle")

    @property
    def views(self) -> list[Any]:
        """What `run_views` redraws."""
        return [self.runs, self.run_box, self.samples, self.queue_box, self.heading, self.stamp]

    @property
    def concept_lists(self) -> list[Any]:
        return [self.stage1_concepts, self.target_concepts]

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self, project: Any, train: Any, request: list[Any], plan: Any) -> None:
        """`train`: the Train button; `request`: the project and the plan section's inputs; `plan`: its output box."""
        picked = [project, self.runs]
        bind(self.queue_up.click, self._move_up, picked, self.views)
        bind(self.queue_down.click, self._move_down, picked, self.views)
        bind(train.click, self._train, request, self.views)
        bind(self.train_differential.click, self._train_differential, [*self.concept_lists, *request],
             [plan, *self.views])
        # `input`, not `change`: handlers that redraw the list draw the run box themselves, and a redraw caused by
        # the list's new label must not draw a newer state under a stale label
        bind(self.runs.input, self._show, picked, [self.run_box, self.samples])
        bind(self.stop.click, self._stop, picked, self.views)
        bind(self.resume.click, self._resume, picked, self.views)
        bind(self.register_run.click, self._register, picked, [self.registered])
        bind(self.export.click, self._export, [*picked, self.include_model], [self.bundle_out])
        bind(self.import_bundle.click, self._import_bundle, [project, self.bundle_in], self.views)

    # --- drawing ----------------------------------------------------------------------------------------------------
    def heading_html(self, name: Optional[str], latest: Optional[RunSnapshot] = None) -> str:
        """The project, its trigger words and what to do next (`latest`: the newest run)."""
        if not name:
            return render.heading_html("", "", next_step.train_next(None))
        words = ", ".join(self.studio.settings(name).trigger_words) or "none"
        return render.heading_html(name, words, next_step.train_next(self.studio.status(name), latest))

    def run_views(self, name: Optional[str], run_id: Optional[str]) -> tuple[Any, str, list, str, str, str]:
        """The runs dropdown (`run_id` chosen, else the newest), the run box, the samples, the queue, the heading
        with the next step, and the change stamp they were drawn at."""
        stamp = self.studio.stamp(name) if name else ""
        snaps = self.door().runs(name) if name else []
        chosen = next((s for s in snaps if s.id == run_id), snaps[0] if snaps else None)
        choices = render.run_choices(snaps)
        value = render.run_choices([chosen])[0] if chosen else None
        return (gr.update(choices=choices, value=value), render.run_html(chosen), render.sample_items(chosen),
                self._queue_html(), self.heading_html(name, snaps[0] if snaps else None), stamp)

    def concept_choices(self, name: Optional[str], *chosen: Optional[list[str]]) -> tuple[Any, ...]:
        """The project's concepts for both lists, keeping what is still chosen (↻ after adding concepts)."""
        names = [c.name for c in self.studio.concepts(name, "dataset")] if name else []
        chosen = chosen or ([], [])
        return tuple(gr.update(choices=names, value=[n for n in (c or []) if n in names]) for c in chosen)

    def _queue_html(self) -> str:
        rows = self.door().queue_listing()
        return render.queue_html([(r["project"], r["run"], r["state"]) for r in rows])

    # --- handlers: read values → one core call → updates ------------------------------------------------------------
    def _train(self, name: Optional[str], *values: Any) -> tuple:
        made = self.door().train(name or "", self.request_data(name, *values))
        return self.run_views(name, made.snapshot.id)

    def _train_differential(self, stage1: Optional[list[str]], targets: Optional[list[str]], name: Optional[str],
                            *values: Any) -> tuple:
        data = {**self.request_data(name, *values), "target_concepts": list(targets or ()),
                "stage1_concepts": list(stage1 or ())}
        made = self.door().train_differential(name or "", data).runs
        return (render.differential_html(made.stage1, made.stage2), *self.run_views(name, made.stage1.id))

    def _move_up(self, name: Optional[str], choice: Optional[str]) -> tuple:
        return self._move(name, choice, -1)

    def _move_down(self, name: Optional[str], choice: Optional[str]) -> tuple:
        return self._move(name, choice, 1)

    def _move(self, name: Optional[str], choice: Optional[str], offset: int) -> tuple:
        run_id = _need_run(name, choice)
        self.door().queue_move(name or "", run_id, offset)
        return self.run_views(name, run_id)

    def _show(self, name: Optional[str], choice: Optional[str]) -> tuple[str, list]:
        run_id = render.run_id_of(choice)
        snap = self.door().run(name, run_id) if name and run_id else None
        return render.run_html(snap), render.sample_items(snap)

    def _stop(self, name: Optional[str], choice: Optional[str]) -> tuple:
        run_id = _need_run(name, choice)
        self.door().stop(name or "", run_id)
        return self.run_views(name, run_id)

    def _resume(self, name: Optional[str], choice: Optional[str]) -> tuple:
        run_id = _need_run(name, choice)
        self.door().resume(name or "", run_id)
        return self.run_views(name, run_id)

    def _register(self, name: Optional[str], choice: Optional[str]) -> str:
        run_id = _need_run(name, choice)
        return render.registered_html(self.door().register(name or "", run_id))

    def _export(self, name: Optional[str], choice: Optional[str], include_model: bool) -> str:
        run_id = _need_run(name, choice)
        return str(self.door().export(name or "", run_id, include_model=bool(include_model)))

    def _import_bundle(self, name: Optional[str], upload: Any) -> tuple:
        files = uploaded([upload] if upload and not isinstance(upload, list) else upload)
        if not name or not files:
            raise LorakitError("Choose a project, then drop a trained bundle (.zip) on the box.")
        snap = self.door().import_bundle(name, files[0][0], uploaded=True)
        return self.run_views(name, snap.id)


def _need_run(name: Optional[str], choice: Optional[str]) -> str:
    if not name or not render.run_id_of(choice):
        raise LorakitError("Choose a run first.")
    return render.run_id_of(choice)

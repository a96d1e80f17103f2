"""The Results panel: a grid over a run's saved epochs × weights × prompts (× checkpoints × seeds) made by the Host's
generator as a job, the project's grids (they survive a reload), the grid shown with its cells, Resume, "Use this
cell" (the card's preferred weight and notes), and the grid's infotext for the webui's txt2img.

Handlers read the values, make one Studio call with a request built by `GridRequest.from_dict`, and draw the answer
(render_results.py)."""

from __future__ import annotations

from html import escape
from typing import Any, Optional

import gradio as gr
from PIL import Image

from .. import next_step
from ..errors import LorakitError
from ..evaluate.grid import EpochFile, epoch_files, parse_weights
from ..evaluate.service import GRID_SCHEMA, SAME_VERSION, GridRequest
from ..jobs import JobState
from ..schema import InvalidSettings
from ..studio import Studio
from ..train.runner import RunSnapshot
from . import fields, render
from . import render_results as draw
from .compat import bind, unchanged
from .render_train import run_choices, run_id_of

JOB_ID = "train_style_results_job"  # the page script polls this box and clicks the hidden refresh when it ends
DEFAULT_WEIGHTS = "0-1.2 (+0.2)"
GEN_FIELDS = tuple(GRID_SCHEMA[n] for n in ("negative", "steps", "cfg", "sampler", "width", "height"))
PICTURE_SIDE = 1600  # the grid shown in the page is at most this many pixels a side; the link opens it whole


def epoch_word(label: str) -> str:
    """An epoch's label (`epoch 2`, `step 500`, `final`) as the epochs spec names it (`2`, `step500`, `final`)."""
    if label.startswith("epoch "):
        return label[6:].strip()
    if label.startswith("step "):
        return "step" + label[5:].strip()
    return label


class ResultsPanel:
    """Evaluates the runs of the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project

    # --- layout -----------------------------------------------------------------------------------------------------
    def render(self) -> None:
        self.heading = gr.HTML(draw_heading(None), elem_id="train_style_results_heading")
        self.stamp = gr.State("")
        with gr.Row():
            self.run = gr.Dropdown(label="Run (its saved epochs are compared)", choices=[], interactive=True,
                                   elem_id="train_style_results_run")
            self.refresh = gr.Button("refresh", elem_id="train_style_results_refresh", elem_classes=["ts-hidden"])
        self.epochs = gr.CheckboxGroup(label="Epochs (the run's saved files)", choices=[], interactive=True,
                                       elem_id="train_style_results_epochs")
        with gr.Row():
            with gr.Column():
                self.weights = gr.Textbox(label="Weights", value=DEFAULT_WEIGHTS,
                                          info="'0-1.2 (+0.2)', '0,0.4,0.8,1' or '0.2-1 [5]'",
                                          elem_id="train_style_results_weights")
                self.weights_shown = gr.HTML(draw.weights_html(parse_weights(DEFAULT_WEIGHTS)),
                                             elem_id="train_style_results_weights_shown")
            with gr.Column():
                self.prompts = gr.Textbox(label="Prompts (one per line)", lines=3, placeholder="1girl, solo, smile",
                                          elem_id="train_style_results_prompts")
                with gr.Row():
                    self.trigger = gr.Checkbox(label="Each with and without the trigger words", value=True,
                                               elem_id="train_style_results_trigger")
                    self.caption_prompts = gr.Number(label="Add prompts from captions (how many)", value=0,
                                                     precision=0, elem_id="train_style_results_caption_prompts")
        self._checkpoints()
        self._generation()
        self.size = gr.HTML(elem_id="train_style_results_size")
        with gr.Row():
            self.make = gr.Button("Make grid", variant="primary", elem_id="train_style_results_make", scale=0)
            self.job = gr.HTML(render.job_html(None, JOB_ID), elem_id="train_style_results_job_box")
            self.cancel = gr.Button("Cancel", elem_id="train_style_results_cancel", scale=0)
        self.message = gr.HTML(elem_id="train_style_results_message")
        self._grids()

    def _checkpoints(self) -> None:
        with gr.Accordion("Checkpoints (base-model transfer)", open=False):
            gr.Markdown(draw.TRANSFER_NOTE)
            with gr.Row():
                self.checkpoints = gr.Dropdown(label="Checkpoints (none: the current / the project's base model)",
                                               choices=[], multiselect=True, interactive=True,
                                               elem_id="train_style_results_checkpoints")
                self.same_version = gr.Button("All of the same SD version", scale=0,
                                              elem_id="train_style_results_same_version")

    def _generation(self) -> None:
        with gr.Accordion("Generation", open=False):
            with gr.Row():
                self.seeds = gr.Textbox(label="Seeds", value="1", info="one or more, separated by commas",
                                        elem_id="train_style_results_seeds")
                self.gen = [fields.component(f, f.default, elem_id=f"train_style_results_{f.name}")
                            for f in GEN_FIELDS]

    def _grids(self) -> None:
        with gr.Row():
            self.grids = gr.Dropdown(label="Grids of this project", choices=[], interactive=True,
                                     elem_id="train_style_results_grids")
            self.resume = gr.Button("Resume", elem_id="train_style_results_resume", scale=0)
        self.grid = gr.HTML(draw.report_html("", None), elem_id="train_style_results_grid")
        with gr.Row():
            self.cell = gr.Dropdown(label="Cell", choices=[], interactive=True, elem_id="train_style_results_cell")
            self.unregister = gr.Checkbox(label="Unregister the other epochs (they stay in the run)",
                                          elem_id="train_style_results_unregister")
            self.use = gr.Button("Use this cell", elem_id="train_style_results_use", scale=0)
        self.chosen = gr.HTML(elem_id="train_style_results_chosen")
        self.infotext = gr.Textbox(label="The grid's infotext (X/Y/Z plot setup): paste it into txt2img's prompt "
                                   "and press ↙ to restore it", lines=3, interactive=False, show_copy_button=True,
                                   elem_id="train_style_results_infotext")
        bind_paste = getattr(self.studio.host, "bind_paste", None)
        if bind_paste is not None:
            self.send = gr.Button("Send X/Y/Z to txt2img", elem_id="train_style_results_to_txt2img")
            bind_paste(button=self.send, tab="txt2img", text=self.infotext)

    @property
    def form(self) -> list[Any]:
        """The inputs a grid request is read from (after the project)."""
        return [self.run, self.epochs, self.weights, self.prompts, self.trigger, self.caption_prompts,
                self.checkpoints, self.seeds, *self.gen]

    @property
    def views(self) -> list[Any]:
        """What `draw_views` redraws."""
        return [self.run, self.epochs, self.checkpoints, self.grids, self.grid, self.infotext, self.cell,
                self.job, self.heading, self.stamp]

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self) -> None:
        project = self.project
        bind(project.change, lambda name: self.draw_views(name, None, None), [project], self.views)
        bind(project.change, self._size_of, [project], self.gen[-2:])
        bind(self.refresh.click, self.draw_views, [project, self.run, self.grids, self.epochs], self.views)
        bind(self.run.input, self._run_changed, [project, self.run], [self.epochs, self.size])
        for box in [self.epochs, self.weights, self.prompts, self.trigger, self.caption_prompts, self.checkpoints,
                    self.seeds, *self.gen]:
            bind(box.change, self._check, [project, *self.form], [self.weights_shown, self.size])
        bind(self.same_version.click, self._same_version, [project, *self.form], [self.checkpoints])
        grid_views = [self.grids, self.grid, self.infotext, self.cell]
        bind(self.make.click, self._make, [project, *self.form], [self.job, self.message, *grid_views])
        bind(self.cancel.click, self._cancel, [project], [self.job])
        bind(self.grids.input, self._show, [project, self.grids], [self.grid, self.infotext, self.cell])
        bind(self.resume.click, self._resume, [project, self.grids], [self.job, self.message, *grid_views])
        bind(self.use.click, self._use, [project, self.grids, self.cell, self.unregister], [self.chosen])
        self.sync_inputs = [self.stamp, self.run, self.grids, self.epochs]
        self.sync_outputs = self.views

    def sync(self, name: Optional[str], stamp: str, run: Optional[str], grid: Optional[str],
             epochs: Optional[list] = None) -> tuple:
        """Redrawn when the project changed since `stamp` (a new run, new files); else as it is."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        return self.draw_views(name, run, grid, epochs)

    # --- drawing ----------------------------------------------------------------------------------------------------
    def _snapshots(self, name: Optional[str]) -> list[RunSnapshot]:
        """The project's runs that saved a LoRA, newest first."""
        if not name:
            return []
        door = self.studio.training(local_user=False, start="later")  # listing only
        return [s for s in door.runs(name) if _epochs(s)]

    def draw_views(self, name: Optional[str], run: Optional[str], grid: Optional[str],
                   epochs: Optional[list] = None) -> tuple:
        """The runs (`run` kept when it is still there), its epochs (those of `epochs` still there stay ticked when
        the run is kept, else all), the checkpoints, the grids (`grid` kept, else the newest) with the one chosen
        drawn, the newest grid job's bar, the next step and the change stamp."""
        stamp = self.studio.stamp(name) if name else ""
        snaps = self._snapshots(name)
        chosen = next((s for s in snaps if s.id == run_id_of(run)), snaps[0] if snaps else None)
        labels = [e.label for e in _epochs(chosen)] if chosen else []
        kept = [e for e in (epochs or []) if e in labels] if chosen and chosen.id == run_id_of(run) else []
        grids = self.studio.evaluate.list(name) if name else []
        gid = draw.grid_id_of(grid)
        gid = gid if any(g.get("id") == gid for g in grids) else (grids[0].get("id") if grids else "")
        shown, infotext, cells = self._grid_views(name, gid)
        names = [c.name for c in self.studio.host.checkpoints()]
        heading = draw_heading(self.studio.status(name) if name else None, snaps[0] if snaps else None,
                               grids[0] if grids else None)
        return (gr.update(choices=run_choices(snaps), value=run_choices([chosen])[0] if chosen else None),
                gr.update(choices=labels, value=kept or labels), gr.update(choices=names),
                gr.update(choices=draw.grid_choices(grids), value=_choice(grids, gid)), shown, infotext, cells,
                render.job_html(self._last_job(name), JOB_ID, with_error=False), heading, stamp)

    def _grid_views(self, name: Optional[str], gid: str) -> tuple[str, str, Any]:
        """A grid drawn (picture, cells), its infotext, and its made cells for "Use this cell"."""
        if not name or not gid:
            return draw.report_html("", None), "", gr.update(choices=[], value=None)
        try:
            report = self.studio.evaluate.show(name, gid)
        except LorakitError as e:
            return render.error_html(str(e)), "", gr.update(choices=[], value=None)
        picture = self._picture(name, gid) if report.get("grid") else ""
        cells = draw.cell_choices(report)
        return (draw.report_html(name, report, picture), str(report.get("infotext") or ""),
                gr.update(choices=cells, value=None))

    def _picture(self, name: str, gid: str) -> str:
        try:
            with Image.open(self.studio.evaluate.image(name, gid, "grid.png")) as im:
                return render.image_uri(im, PICTURE_SIDE)
        except (OSError, LorakitError, Image.DecompressionBombError):
            return ""

    def _last_job(self, name: Optional[str]) -> Optional[JobState]:
        return next((j for j in self.studio.jobs.list(name) if j.kind == "grid"), None) if name else None

    # --- handlers: read values → one core call → updates ------------------------------------------------------------
    def request_data(self, run: Optional[str], epochs: Optional[list], weights: str, prompts: str, trigger: bool,
                     caption_prompts: Any, checkpoints: Optional[list], seeds: str, *gen: Any) -> dict:
        """The form as the plain data `GridRequest.from_dict` reads; InvalidSettings names every bad field."""
        problems = []
        if not run_id_of(run):
            problems.append("run: choose a run that saved a LoRA.")
        if not epochs:
            problems.append("epochs: tick at least one saved file.")
        try:
            settings = fields.read_all(GEN_FIELDS, gen)
        except InvalidSettings as e:
            problems += e.problems
            settings = {}
        if problems:
            raise InvalidSettings(problems)
        chosen = list(epochs or [])
        return {"run": run_id_of(run), "epochs": ",".join(epoch_word(e) for e in chosen),
                "weights": weights or "", "prompts": [p.strip() for p in (prompts or "").splitlines() if p.strip()],
                "with_and_without_trigger": bool(trigger), "caption_prompts": _whole(caption_prompts),
                "checkpoints": list(checkpoints or []), "seeds": seeds or "", **settings}

    def _request(self, *form: Any) -> GridRequest:
        return GridRequest.from_dict(self.request_data(*form))

    def _check(self, name: Optional[str], *form: Any) -> tuple[str, str]:
        """The weights as values and the grid's size, or what is wrong, field by field (never a pop-up)."""
        weights = form[2]
        try:
            shown = draw.weights_html(parse_weights(weights or ""))
        except LorakitError as e:
            shown = draw.weights_html(error=str(e))
        if not name:
            return shown, ""
        try:
            return shown, draw.size_html(self.studio.evaluate.plan(name, self._request(*form)))
        except InvalidSettings as e:
            return shown, draw.size_html(problems=e.problems)
        except LorakitError as e:
            return shown, draw.size_html(problems=[str(e)])

    def _size_of(self, name: Optional[str]) -> tuple[Any, Any]:
        """The images at the project's training resolution (what the LoRA learnt), until the user changes it."""
        if not name:
            return unchanged(2)
        side = self.studio.settings(name).resolution
        return gr.update(value=side), gr.update(value=side)

    def _run_changed(self, name: Optional[str], run: Optional[str]) -> tuple[Any, str]:
        snap = next((s for s in self._snapshots(name) if s.id == run_id_of(run)), None)
        labels = [e.label for e in _epochs(snap)] if snap else []
        return gr.update(choices=labels, value=labels), ""

    def _same_version(self, name: Optional[str], *form: Any) -> Any:
        """The checkpoints of the run's SD version, resolved by the core's preset (seeds/003's transfer check)."""
        if not name:
            raise LorakitError("Choose a project first.")
        data = self.request_data(*form)
        data.update(checkpoints=[SAME_VERSION], prompts=data["prompts"] or ["-"], caption_prompts=0)
        plan = self.studio.evaluate.plan(name, GridRequest.from_dict(data))
        found = [c for c in plan.checkpoints if c]
        return gr.update(choices=[c.name for c in self.studio.host.checkpoints()], value=found)

    def _make(self, name: Optional[str], *form: Any) -> tuple:
        if not name:
            raise LorakitError("Choose or create a project first.")
        request = self._request(*form)
        plan = self.studio.evaluate.plan(name, request)
        job = self.studio.evaluate.start(name, request)
        return (render.job_html(job, JOB_ID), draw.started_html(plan, request.run),
                *self._grid_list(name, None))

    def _grid_list(self, name: str, gid: Optional[str]) -> tuple:
        grids = self.studio.evaluate.list(name)
        gid = gid or (grids[0].get("id") if grids else "")
        return (gr.update(choices=draw.grid_choices(grids), value=_choice(grids, gid)), *self._grid_views(name, gid))

    def _cancel(self, name: Optional[str]) -> str:
        jobs = [j for j in self.studio.jobs.list(name) if j.active and j.kind == "grid"] if name else []
        for job in jobs:
            self.studio.jobs.cancel(job.id)
        return render.job_html(self.studio.jobs.get(jobs[0].id) if jobs else self._last_job(name), JOB_ID,
                               with_error=False)

    def _show(self, name: Optional[str], grid: Optional[str]) -> tuple[str, str, Any]:
        return self._grid_views(name, draw.grid_id_of(grid))

    def _resume(self, name: Optional[str], grid: Optional[str]) -> tuple:
        gid = draw.grid_id_of(grid)
        if not name or not gid:
            raise LorakitError("Choose a grid first.")
        job = self.studio.evaluate.start_resume(name, gid)
        return (render.job_html(job, JOB_ID), f"<p>Resuming grid {escape(gid)}.</p>",
                *self._grid_list(name, gid))

    def _use(self, name: Optional[str], grid: Optional[str], cell: Optional[str], unregister: bool) -> str:
        gid, index = draw.grid_id_of(grid), draw.cell_index_of(cell)
        if not name or not gid or index is None:
            raise LorakitError("Choose a grid and one of its cells first.")
        report = self.studio.evaluate.show(name, gid)
        found = next((c for c in report["cells"] if c.get("index") == index), None)
        if found is None:
            raise LorakitError(f"Grid {gid} has no cell #{index}; pick the grid again.")
        try:
            weight = float(found.get("weight"))
        except (TypeError, ValueError):
            raise LorakitError(f"Cell #{index}'s weight {found.get('weight')!r} is not a number.") from None
        choice = self.studio.evaluate.choose(name, str(report.get("run", "")), weight=weight,
                                             epoch=epoch_word(str(found.get("epoch", ""))), grid=gid,
                                             unregister_others=bool(unregister))
        return draw.chosen_html(choice)


def draw_heading(status: Any, latest: Optional[RunSnapshot] = None, grid: Optional[dict] = None) -> str:
    return render.next_html(next_step.results_next(status, latest, len(_epochs(latest)) if latest else 0, grid))


def _epochs(snap: Optional[RunSnapshot]) -> list[EpochFile]:
    return epoch_files(snap.dir, snap.files) if snap is not None else []


def _choice(grids: list[dict], gid: str) -> Optional[str]:
    return next((c for g, c in zip(grids, draw.grid_choices(grids), strict=True) if g.get("id") == gid), None)


def _whole(value: Any) -> Any:
    """gradio's Number gives floats: a whole one as an int; anything else goes to the core, which names it."""
    return int(value) if isinstance(value, float) and value.is_integer() else (0 if value is None else value)

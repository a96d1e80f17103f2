"""The Judge panel: does a run's LoRA copy its training images, how strong is its style, does it still follow a
prompt — and which epoch × weight to use. "Judge this run" makes the judge's grid with the Host's generator and
scores it (a job: bar, Cancel, its judge.json on disk, so a reload finds it); "Judge an existing grid" scores a grid
made before. The report (render_judge.py) puts the recommendation first; "Write to the card" stores it.

Handlers read the values, make one Studio call with a request built by `JudgeRequest.from_dict`, and draw the answer.
"""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr
from PIL import Image

from ..errors import LorakitError
from ..evaluate.grid import epoch_files
from ..jobs import JobState
from ..judge.service import DEFAULT_OFF_PROMPTS, JUDGE_SCHEMA, JudgeRequest
from ..schema import InvalidSettings
from ..studio import Studio
from ..train.runner import RunSnapshot
from . import fields, render
from . import render_judge as draw
from .compat import bind, unchanged
from .render_results import grid_choices
from .render_results import grid_id_of as grid_choice_id
from .render_train import run_choices, run_id_of

JOB_ID = "train_style_judge_job"  # the page script polls this box and clicks the hidden refresh when it ends
SAMPLE_SIDE = 256  # a sample's picture in the report, pixels a side (training images come as cached thumbnails)
GROUPS = tuple(g for g, _ in JUDGE_SCHEMA.groups if g != "generation")
JUDGE_FIELDS = tuple(f for f in JUDGE_SCHEMA.fields if f.group in GROUPS)
GEN_FIELDS = tuple(f for f in JUDGE_SCHEMA.fields if f.group not in GROUPS)


class JudgePanel:
    """Judges the runs and grids of the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project

    # --- layout -----------------------------------------------------------------------------------------------------
    def render(self) -> None:
        gr.Markdown("Judge a LoRA: do its samples copy training images, how strong is the style, does it still "
                    "follow prompts it was not trained on — and which epoch and weight to use.")
        self.stamp = gr.State("")
        self.watch = gr.State("")  # the judge job started here: its grid is shown when it ends
        with gr.Row():
            self.run = gr.Dropdown(label="Run (its saved epochs are judged)", choices=[], interactive=True,
                                   elem_id="train_style_judge_run")
            self.refresh = gr.Button("refresh", elem_id="train_style_judge_refresh", elem_classes=["ts-hidden"])
        with gr.Row():
            with gr.Column(scale=2):
                self.prompts = gr.Textbox(label="Off-dataset prompts (one per line; the trigger is added)",
                                          value="\n".join(DEFAULT_OFF_PROMPTS), lines=4,
                                          elem_id="train_style_judge_prompts")
            with gr.Column(scale=3):
                self.settings = self._fields(JUDGE_FIELDS, "Judge settings", open_=True)
        self.gen = self._fields(GEN_FIELDS, "Generation", open_=False)
        with gr.Row():
            self.judge_run = gr.Button("Judge this run", variant="primary", elem_id="train_style_judge_start",
                                       scale=0)
            self.job = gr.HTML(render.job_html(None, JOB_ID), elem_id="train_style_judge_job_box")
            self.cancel = gr.Button("Cancel", elem_id="train_style_judge_cancel", scale=0)
        with gr.Row():
            self.grid = gr.Dropdown(label="Or an existing grid of this project", choices=[], interactive=True,
                                    elem_id="train_style_judge_grid")
            self.judge_grid = gr.Button("Judge an existing grid", elem_id="train_style_judge_grid_start", scale=0)
        self.message = gr.HTML(elem_id="train_style_judge_message")
        with gr.Row():
            self.judged = gr.Dropdown(label="Judged grids", choices=[], interactive=True,
                                      elem_id="train_style_judge_judged")
            self.all_samples = gr.Checkbox(label="Show every sample beside its nearest training image",
                                           elem_id="train_style_judge_all")
            self.apply = gr.Button("Write to the card", elem_id="train_style_judge_apply", scale=0)
        self.applied = gr.HTML(elem_id="train_style_judge_applied")
        self.report = gr.HTML(draw.report_html(None), elem_id="train_style_judge_report")

    def _fields(self, declared: tuple, title: str, *, open_: bool) -> list:
        """The declared fields in an accordion, a row for each of their groups (in `declared`'s order)."""
        out = []
        with gr.Accordion(title, open=open_):
            for group in dict.fromkeys(f.group for f in declared):
                with gr.Row():
                    out += [fields.component(f, f.default, elem_id=f"train_style_judge_{f.name}")
                            for f in declared if f.group == group]
        return out

    @property
    def form(self) -> list[Any]:
        """The inputs a judge request is read from (after the project and the run or grid)."""
        return [self.prompts, *self.settings, *self.gen]

    @property
    def views(self) -> list[Any]:
        """What `draw_views` redraws."""
        return [self.run, self.grid, self.judged, self.report, self.job, self.stamp, self.watch]

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self) -> None:
        project = self.project
        bind(project.change, lambda name: self.draw_views(name, None, None, None), [project], self.views)
        bind(project.change, self._size_of, [project], self.gen[-2:])
        keep = [project, self.run, self.grid, self.judged, self.all_samples, self.watch]
        bind(self.refresh.click, self.draw_views, keep, self.views)
        started = [self.job, self.message, self.judged, self.report, self.watch]
        bind(self.judge_run.click, self._judge_run, [project, self.run, *self.form], started)
        bind(self.judge_grid.click, self._judge_grid, [project, self.grid, *self.form], started)
        bind(self.cancel.click, self._cancel, [project], [self.job])
        bind(self.judged.input, self._show, [project, self.judged, self.all_samples], [self.report])
        bind(self.all_samples.input, self._show, [project, self.judged, self.all_samples], [self.report])
        bind(self.apply.click, self._apply, [project, self.judged], [self.applied])
        self.sync_inputs = [self.stamp, self.run, self.grid, self.judged, self.all_samples, self.watch]
        self.sync_outputs = self.views

    def sync(self, name: Optional[str], stamp: str, run: Optional[str], grid: Optional[str], judged: Optional[str],
             all_samples: bool = False, watch: str = "") -> tuple:
        """Redrawn when the project changed since `stamp` (a new run, a new grid); else as it is."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        return self.draw_views(name, run, grid, judged, all_samples, watch)

    # --- drawing ----------------------------------------------------------------------------------------------------
    def _snapshots(self, name: Optional[str]) -> list[RunSnapshot]:
        """The project's runs that saved a LoRA, newest first."""
        if not name:
            return []
        door = self.studio.training(local_user=False, start="later")  # listing only
        return [s for s in door.runs(name) if epoch_files(s.dir, s.files)]

    def draw_views(self, name: Optional[str], run: Optional[str], grid: Optional[str], judged: Optional[str],
                   all_samples: bool = False, watch: str = "") -> tuple:
        """The runs (`run` kept while it is there), the grids (`grid` kept), the judged grids (`judged` kept, else
        the newest; the grid of the job `watch` once it has ended) with its report drawn, the newest judge job's bar,
        the change stamp and the job still watched."""
        stamp = self.studio.stamp(name) if name else ""
        ended, watch = self._ended(watch)
        judged = ended or judged
        snaps = self._snapshots(name)
        chosen = next((s for s in snaps if s.id == run_id_of(run)), snaps[0] if snaps else None)
        grids = self.studio.evaluate.list(name) if name else []
        gid = grid_choice_id(grid)
        gid = gid if any(g.get("id") == gid for g in grids) else ""
        judged_update, report = self._judged_views(name, draw.grid_id_of(judged), all_samples)
        last = self._last_job(name)
        if not watch and last is not None and last.active:  # a reload while judging: shown when it ends
            watch = last.id
        return (gr.update(choices=run_choices(snaps), value=run_choices([chosen])[0] if chosen else None),
                gr.update(choices=grid_choices(grids), value=_choice(grid_choices(grids), grids, gid)),
                judged_update, report, render.job_html(last, JOB_ID), stamp, watch)

    def _ended(self, watch: str) -> tuple[str, str]:
        """(the grid the watched job judged, once it has ended and made one, else ""; the job still watched)."""
        if not watch:
            return "", ""
        try:
            job = self.studio.jobs.get(watch)
        except LorakitError:
            return "", ""
        if job.active:
            return "", watch
        grid = (job.result or {}).get("grid") if isinstance(job.result, dict) else None
        return (grid if isinstance(grid, str) else ""), ""

    def _judged_views(self, name: Optional[str], gid: str, all_samples: bool) -> tuple[Any, str]:
        """The judged grids (`gid` kept when judged, else the newest) and its report."""
        items = self.studio.judge.list(name) if name else []
        ids = [str(j.get("grid", j.get("id", ""))) for j in items]
        gid = gid if gid in ids else (ids[0] if ids else "")
        choices = draw.judged_choices(items)
        value = next((c for c, i in zip(choices, ids, strict=True) if i == gid), None)
        return gr.update(choices=choices, value=value), self._report(name, gid, all_samples)

    def _report(self, name: Optional[str], gid: str, all_samples: bool) -> str:
        if not name or not gid:
            return draw.report_html(None)
        try:
            report = self.studio.judge.show(name, gid)
        except LorakitError as e:
            return render.error_html(str(e))
        return draw.report_html(report, self._pictures(name, report, all_samples), all_samples=all_samples)

    def _pictures(self, name: str, report: dict, all_samples: bool) -> dict[str, str]:
        """Data URIs of the samples shown and their nearest training images: samples through the grid's own image
        look-up (cells of a grid folder only), training images as the project's cached thumbnails (images of its
        index only)."""
        shown = draw.samples_of(report, all_samples=all_samples)[:draw.PAIRS_LIMIT]
        out: dict[str, str] = {}
        for s in shown:
            path = str(s.get("image") or "")
            if path not in out:
                uri = self._sample_uri(name, path)
                if uri:
                    out[path] = uri
        nearest = list(dict.fromkeys(str(s.get("nearest") or "") for s in shown))
        for t in self.studio.thumbnails(name, nearest, limit=draw.PAIRS_LIMIT):
            out[t.image] = render.file_uri(t.file)
        return out

    def _sample_uri(self, name: str, path: str) -> str:
        """A grid cell's picture (`eval/<grid>/cells/NNNN.png`) as a data URI; "" for anything else."""
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "eval" or parts[2] != "cells":
            return ""
        try:
            with Image.open(self.studio.evaluate.image(name, parts[1], "cells/" + parts[3])) as im:
                return render.image_uri(im, SAMPLE_SIDE)
        except (OSError, LorakitError, Image.DecompressionBombError):
            return ""

    def _last_job(self, name: Optional[str]) -> Optional[JobState]:
        return next((j for j in self.studio.jobs.list(name) if _is_judge(j)), None) if name else None

    # --- handlers: read values → one core call → updates ------------------------------------------------------------
    def request_data(self, prompts: str, *values: Any) -> dict:
        """The form as the plain data `JudgeRequest.from_dict` reads; InvalidSettings names every bad field."""
        settings = fields.read_all(JUDGE_FIELDS + GEN_FIELDS, values)
        return {"prompts": [p.strip() for p in (prompts or "").splitlines() if p.strip()], **settings}

    def _request(self, *form: Any) -> JudgeRequest:
        return JudgeRequest.from_dict(self.request_data(*form))

    def _size_of(self, name: Optional[str]) -> tuple[Any, Any]:
        """The images at the project's training resolution (what the LoRA learnt), until the user changes it."""
        if not name:
            return unchanged(2)
        side = self.studio.settings(name).resolution
        return gr.update(value=side), gr.update(value=side)

    def _judge_run(self, name: Optional[str], run: Optional[str], *form: Any) -> tuple:
        if not name:
            raise LorakitError("Choose or create a project first.")
        if not run_id_of(run):
            raise InvalidSettings(["run: choose a run that saved a LoRA."])
        job = self.studio.judge.start_run(name, run_id_of(run), self._request(*form))
        return (render.job_html(job, JOB_ID), draw.started_html(f"Judging run {run_id_of(run)}: making its grid, "
                                                                "then scoring it"),
                *self._judged_views(name, "", False), job.id)

    def _judge_grid(self, name: Optional[str], grid: Optional[str], *form: Any) -> tuple:
        gid = grid_choice_id(grid)
        if not name or not gid:
            raise LorakitError("Choose a grid of this project first (or judge a run).")
        job = self.studio.judge.start_judge(name, gid, self._request(*form))
        return (render.job_html(job, JOB_ID), draw.started_html("Judging an existing grid", gid),
                *self._judged_views(name, gid, False), job.id)

    def _cancel(self, name: Optional[str]) -> str:
        jobs = [j for j in self.studio.jobs.list(name) if j.active and _is_judge(j)] if name else []
        for job in jobs:
            self.studio.jobs.cancel(job.id)
        return render.job_html(self.studio.jobs.get(jobs[0].id) if jobs else self._last_job(name), JOB_ID)

    def _show(self, name: Optional[str], judged: Optional[str], all_samples: bool) -> str:
        return self._report(name, draw.grid_id_of(judged), bool(all_samples))

    def _apply(self, name: Optional[str], judged: Optional[str]) -> str:
        gid = draw.grid_id_of(judged)
        if not name or not gid:
            raise LorakitError("Choose a judged grid first.")
        return draw.applied_html(self.studio.judge.apply(name, gid))


def _is_judge(job: JobState) -> bool:
    return job.kind.startswith("judge")


def _choice(choices: list[str], grids: list[dict], gid: str) -> Optional[str]:
    return next((c for g, c in zip(grids, choices, strict=True) if g.get("id") == gid), None) if gid else None

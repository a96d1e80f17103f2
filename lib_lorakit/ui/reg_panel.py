"""The Dataset panel's "Generate regularisation images" accordion: a class, its prompt, how many, repeats; the
images are made as a job (progress, cancel) by the Host's generator (evaluate/reg.py)."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any, Optional

import gradio as gr

from ..errors import LorakitError
from ..evaluate.reg import REG_SCHEMA, RegReport, RegRequest
from ..jobs import JobState
from ..studio import Studio
from . import render
from .compat import bind

JOB_ID = "train_style_reg_job"  # the page script polls this box and clicks the hidden refresh when the job ends


class RegAccordion:
    """Works on the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: Optional[gr.components.Component] = None):
        self.studio = studio
        self.project = project

    def render(self) -> None:
        with gr.Accordion("Generate regularisation images", open=False):
            gr.Markdown("Images of the class your subject belongs to, made with the project's base model at the "
                        "training resolution, keep the LoRA from pulling the whole class towards your images "
                        "(seeds/003: they matter more than most settings). They go into `reg/<repeats>_<class>/` "
                        "with the prompt as caption. A cancelled batch keeps what it made; pressing Generate "
                        "again makes only the missing ones.")
            with gr.Row():
                self.class_name = gr.Textbox(label="Class (the set's folder name)", placeholder="woman",
                                             elem_id="train_style_reg_class")
                self.prompt = gr.Textbox(label="Class prompt (each image's caption)", placeholder="1girl, solo",
                                         elem_id="train_style_reg_prompt")
                self.negative = gr.Textbox(label="Negative prompt", elem_id="train_style_reg_negative")
                self.count = gr.Number(label="Images", value=REG_SCHEMA["count"].default, precision=0,
                                       elem_id="train_style_reg_count")
                self.repeats = gr.Number(label="Repeats (0: keep the set's; 1 for a new one)", value=0,
                                         precision=0, elem_id="train_style_reg_repeats")
            with gr.Row():
                self.generate = gr.Button("Generate", variant="primary", elem_id="train_style_reg_generate",
                                          scale=0)
                self.job = gr.HTML(render.job_html(None, JOB_ID), elem_id="train_style_reg_job_box")
                self.cancel = gr.Button("Cancel", elem_id="train_style_reg_cancel", scale=0)
                self.refresh = gr.Button("refresh", elem_id="train_style_reg_refresh", elem_classes=["ts-hidden"])
            self.result = gr.HTML(elem_id="train_style_reg_result")

    def register(self, *, views: list, redraw: Callable[[Optional[str]], tuple]) -> None:
        """`views`/`redraw`: the Dataset panel's outputs and their handler, redrawn when a batch ends."""
        fields = [self.project, self.class_name, self.prompt, self.negative, self.count, self.repeats]
        bind(self.generate.click, self._start, fields, [self.job, self.result])
        bind(self.cancel.click, self._cancel, [self.project], [self.job])
        bind(self.refresh.click, lambda name: (*self._last(name), *redraw(name)), [self.project],
             [self.job, self.result, *views])
        bind(self.project.change, self._last, [self.project], [self.job, self.result])

    # --- handlers: read values → one core call → updates ------------------------------------------------------------
    def _start(self, name: Optional[str], class_name: str, prompt: str, negative: str, count: Any,
               repeats: Any) -> tuple[str, str]:
        if not name:
            raise LorakitError("Choose or create a project first.")
        data: dict[str, Any] = {"class_name": (class_name or "").strip(), "prompt": (prompt or "").strip(),
                                "negative": (negative or "").strip(), "count": _whole(count)}
        if _whole(repeats) not in (0, None):
            data["repeats"] = _whole(repeats)
        request = RegRequest.from_dict(data)
        plan = self.studio.reg.plan(name, request)
        job = self.studio.reg.start(name, request)
        model = escape(plan.checkpoint or "the generator's current model")
        line = (f"<p>Making {len(plan.missing)} of {request.count} images ({plan.present} there already) at "
                f"{plan.width}×{plan.height} (from the {escape(plan.resolution_from)}) with {model} into "
                f"<code>{escape(plan.folder)}</code>, captioned <code>{escape(request.prompt)}</code>.</p>")
        return render.job_html(job, JOB_ID), line

    def _cancel(self, name: Optional[str]) -> str:
        jobs = [j for j in self.studio.jobs.list(name) if j.active and j.kind == "reg"] if name else []
        for job in jobs:
            self.studio.jobs.cancel(job.id)
        return render.job_html(self.studio.jobs.get(jobs[0].id) if jobs else None, JOB_ID, with_error=False)

    def _last(self, name: Optional[str]) -> tuple[str, str]:
        """The project's newest batch: its bar and what it did."""
        last: JobState | None = next((j for j in self.studio.jobs.list(name) if j.kind == "reg"), None) \
            if name else None
        return render.job_html(last, JOB_ID, with_error=False), _outcome(last)


def _outcome(job: Optional[JobState]) -> str:
    if job is None:
        return ""
    if job.error:
        return render.error_html(job.error)
    if not job.result:
        return ""
    report = RegReport(**job.result)
    lines = [escape(report.summary()), *(escape(n) for n in report.notes),
             *(f"{escape(s['image'])}: {escape(s['reason'])}" for s in report.skipped)]
    return "<p>" + "<br>".join(lines) + "</p>"


def _whole(value: Any) -> Any:
    """gradio's Number gives floats: a whole one as an int; anything else goes to the core, which names it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value

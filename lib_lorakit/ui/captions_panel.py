"""The Captions panel: auto-tag (WD14, CLIP, both, the webui's interrogators), trigger words and pruning, batch
operations with preview and undo, the tag-frequency table, the audit with its fixes, and per-image editing."""

from __future__ import annotations

import functools
from html import escape
from typing import Any

import gradio as gr

from .. import next_step
from ..captions.audit import AUDIT_SCHEMA, AuditReport, Finding
from ..captions.ops import CaptionOp
from ..captions.service import TAG_SCHEMA, TagReport, TagRequest
from ..captions.tags import split_tags
from ..errors import LorakitError
from ..jobs import JobState
from ..studio import Studio
from ..taggers.models import DEFAULT_WD14
from . import fields, render
from . import render_captions as rc
from .compat import SHOW_PROGRESS, bind, unchanged

OP_CHOICES = ("add", "remove", "replace", "rename", "reorder", "dedupe")


class CaptionsPanel:
    """Works on the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project

    # --- layout -----------------------------------------------------------------------------------------------------
    def render(self) -> None:
        self.summary = gr.HTML(rc.summary_html([], (), 0, next_step.captions_next(None)),
                               elem_id="train_style_caption_summary")
        self.stamp = gr.State("")
        with gr.Accordion("Auto-tag", open=True):
            with gr.Row():
                self.tagger = gr.Radio(self.studio.captions.available_taggers(), value="wd14", label="Tagger",
                                       elem_id="train_style_tagger")
                self.model = gr.Dropdown(self.studio.captions.wd14_choices(), value=DEFAULT_WD14,
                                         allow_custom_value=True,
                                         label="WD14 model (a name, or a folder with model.onnx + selected_tags.csv)",
                                         elem_id="train_style_wd14_model")
                self.clip_model = _field("clip_model", "train_style_clip_model")
                self.clip_weights = _field("clip_pretrained", "train_style_clip_weights",
                                           label="CLIP weights (a tag or a file)")
            with gr.Row():
                self.general = _slider("general_threshold", "train_style_general_threshold")
                self.character = _slider("character_threshold", "train_style_character_threshold")
                self.exclude = gr.Textbox(label="Never write these tags (comma-separated)",
                                          elem_id="train_style_exclude")
                self.batch = _field("batch", "train_style_tag_batch")
            with gr.Row():
                self.rating = _field("include_rating", "train_style_rating", label="Rating tag")
                self.escape = _field("escape_parentheses", "train_style_escape")
                self.overwrite = _field("overwrite", "train_style_overwrite",
                                        label="Tag images that already have captions (overwrite)")
                self.tag = gr.Button("Tag images", variant="primary", elem_id="train_style_tag")
                self.cancel_tag = gr.Button("Cancel tagging", elem_id="train_style_cancel_tag", scale=0)
            with gr.Row():
                self.job = gr.HTML(render.job_html(None, "train_style_tag_job"), elem_id="train_style_tag_job_box")
                self.refresh = gr.Button("refresh", elem_id="train_style_captions_refresh",
                                         elem_classes=["ts-hidden"])
            self.tag_result = gr.HTML(elem_id="train_style_tag_result")
        with gr.Row():
            self.triggers = gr.Textbox(label="Trigger words (kept first; keep_tokens follows)",
                                       elem_id="train_style_caption_triggers")
            self.set_trigger = gr.Button("Set trigger words", elem_id="train_style_set_trigger")
            self.prune_tags = gr.Textbox(label="Tags the trigger should absorb", elem_id="train_style_prune_tags")
            self.prune = gr.Button("Prune into trigger", elem_id="train_style_prune")
        with gr.Accordion("Edit tags in bulk", open=False):
            with gr.Row():
                self.op = gr.Dropdown(list(OP_CHOICES), value="add", label="Operation", elem_id="train_style_op")
                self.op_tags = gr.Textbox(label="Tags (add/remove/reorder to front) or the tag to replace",
                                          elem_id="train_style_op_tags")
                self.op_new = gr.Textbox(label="Replace/rename with", elem_id="train_style_op_new")
                self.position = gr.Radio(["end", "start"], value="end", label="Add at",
                                         elem_id="train_style_op_position")
                self.order = gr.Radio(["frequency", "alphabetical", "front"], value="frequency", label="Order",
                                      elem_id="train_style_op_order")
            with gr.Row():
                self.preview = gr.Button("Preview", elem_id="train_style_op_preview")
                self.apply = gr.Button("Apply", elem_id="train_style_op_apply")
        with gr.Row():
            self.concept = gr.Dropdown([], label="Concept (empty: all)", elem_id="train_style_caption_concept")
            self.with_all = gr.Textbox(label="Images with all of", elem_id="train_style_filter_with")
            self.without = gr.Textbox(label="Images without", elem_id="train_style_filter_without")
            self.with_any = gr.Textbox(label="Images with any of", elem_id="train_style_filter_any")
            self.filter = gr.Button("Filter", elem_id="train_style_filter", scale=0)
        with gr.Row():
            self.undo = gr.Button("Undo", elem_id="train_style_undo")
            self.redo = gr.Button("Redo", elem_id="train_style_redo")
            self.check = gr.Button("Check captions", elem_id="train_style_check_captions", variant="primary")
        self.outcome = gr.HTML(elem_id="train_style_caption_outcome")
        with gr.Row():
            self.finding = gr.Dropdown([], label="Finding", elem_id="train_style_finding")
            self.show_finding = gr.Button("Show its images", elem_id="train_style_show_finding")
            self.fix_finding = gr.Button("Apply its fix", elem_id="train_style_fix_finding")
        with gr.Accordion("Audit thresholds", open=False, elem_id="train_style_audit_thresholds"):
            with gr.Row():
                self.thresholds = [fields.component(f, f.default, elem_id=f"train_style_audit_{f.name}",
                                                    label=f.title) for f in AUDIT_SHOWN]
        self.audit = gr.HTML(elem_id="train_style_audit")
        self.audit_state = gr.State({})
        with gr.Row():
            with gr.Column(scale=3):
                self.gallery = gr.Gallery(label="Images and captions", columns=6, height="auto",
                                          elem_id="train_style_caption_gallery")
            with gr.Column(scale=2):
                self.image = gr.Textbox(label="Image", interactive=False, elem_id="train_style_caption_image")
                self.caption = gr.Textbox(label="Caption", lines=6, elem_id="train_style_caption_text")
                self.save_caption = gr.Button("Save caption", elem_id="train_style_save_caption")
        self.paths = gr.State([])
        self.freq = gr.HTML(elem_id="train_style_tag_freq")
        self.history = gr.HTML(elem_id="train_style_caption_history")

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self) -> None:
        on = bind  # every handler returns at once; tagging runs as a job
        filters = [self.project, self.concept, self.with_all, self.without, self.with_any]
        views = [self.summary, self.gallery, self.paths, self.freq, self.history, self.triggers, self.concept,
                 self.stamp]
        last_tag = [self.job, self.tag_result]
        self.sync_inputs, self.sync_outputs = [self.stamp, *filters[1:]], views + last_tag
        tag_in = [self.tagger, self.model, self.clip_model, self.clip_weights, self.general, self.character,
                  self.exclude, self.batch, self.rating, self.escape, self.overwrite]
        on(self.project.change, self._select, [self.project], views + last_tag + [self.audit, self.finding,
                                                                                  self.outcome])
        on(self.filter.click, self._views, filters, views)
        on(self.refresh.click, self._tag_finished, filters, views + last_tag)
        on(self.tag.click, self._start_tag, [*filters, *tag_in], [self.job, self.tag_result])
        on(self.cancel_tag.click, self._cancel, [self.project], [self.job])
        on(self.set_trigger.click, self._set_trigger, [*filters, self.triggers], [self.outcome] + views)
        on(self.prune.click, self._prune, [*filters, self.prune_tags], [self.outcome] + views)
        op_in = [self.op, self.op_tags, self.op_new, self.position, self.order]
        on(self.preview.click, self._preview, [*filters, *op_in], [self.outcome])
        on(self.apply.click, self._apply, [*filters, *op_in], [self.outcome] + views)
        on(self.undo.click, functools.partial(self._move, "undo"), filters, [self.outcome] + views)
        on(self.redo.click, functools.partial(self._move, "redo"), filters, [self.outcome] + views)
        on(self.check.click, self._check, [self.project, *self.thresholds], [self.audit, self.finding,
                                                                             self.audit_state])
        on(self.show_finding.click, self._show_finding, [self.project, self.finding, self.audit_state],
           [self.gallery, self.paths])
        on(self.fix_finding.click, self._fix, [*filters, self.finding, self.audit_state, *tag_in, *self.thresholds],
           [self.outcome, self.job] + views + [self.audit, self.finding, self.audit_state])
        self.gallery.select(self._pick, [self.project, self.paths], [self.image, self.caption], queue=False,
                            show_progress=SHOW_PROGRESS)
        on(self.save_caption.click, self._save_caption, [*filters, self.image, self.caption],
           [self.outcome] + views)

    # --- handlers ---------------------------------------------------------------------------------------------------
    def _need(self, name: str | None) -> str:
        if not name:
            raise LorakitError("Choose or create a project first (above the panels).")
        return name

    def _views(self, name: str | None, concept: str | None = None, with_all: str = "", without: str = "",
               with_any: str = "") -> tuple:
        if not name:
            return (rc.summary_html([], (), 0, next_step.captions_next(None)), [], [], "", "", "",
                    gr.update(choices=[], value=None), "")
        view = self.studio.caption_view(name, concept=concept or None, with_all=split_tags(with_all or ""),
                                        without=split_tags(without or ""), with_any=split_tags(with_any or ""))
        gallery, paths = _gallery(view.thumbs, {r.image: r.text for r in view.shown})
        triggers, concepts = view.trigger_words, view.concepts
        return (rc.summary_html(view.records, triggers, len(view.shown), next_step.captions_next(view.status)),
                gallery, paths, rc.frequency_html(view.frequency), rc.history_html(view.history),
                ", ".join(triggers), gr.update(choices=concepts, value=concept if concept in concepts else None),
                view.stamp)

    def _select(self, name: str | None) -> tuple:
        return (*self._views(name), *self._last_tag(name), "", gr.update(choices=[], value=None), "")

    def sync(self, name: str | None, stamp: str, *filters: Any) -> tuple:
        """Redrawn when the project changed since `stamp` (an import, a run, another window); else as it is."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        return (*self._views(name, *filters), *self._last_tag(name))

    def _last_tag(self, name: str | None) -> tuple[str, str]:
        """The newest tagging run's bar and its outcome; a failure's reason shows once, in the outcome."""
        jobs = self.studio.captions.tag_jobs(name) if name else []
        job: JobState | None = jobs[0] if jobs else None
        result = ""
        if job and job.result:
            result = rc.tag_result_html(TagReport(**job.result))
        elif job and job.error:
            result = render.error_html(job.error)
        return render.job_html(job, "train_style_tag_job", with_error=False), result

    def _request(self, tagger: str, model: str, clip_model: str, clip_weights: str, general: float,
                 character: float, exclude: str, batch: float, rating: bool, escape: bool, overwrite: bool,
                 **extra: Any) -> TagRequest:
        return TagRequest.from_dict({
            "tagger": tagger or "wd14", "model": (model or "").strip(), "clip_model": (clip_model or "").strip(),
            "clip_pretrained": (clip_weights or "").strip(), "general_threshold": float(general),
            "character_threshold": float(character), "exclude": exclude or "", "batch": int(batch or 0),
            "include_rating": bool(rating), "escape_parentheses": bool(escape), "overwrite": bool(overwrite),
            **extra})

    def _start_tag(self, name: str, concept: str | None, _w: str, _wo: str, _a: str, *tag_in: Any) -> tuple:
        req = self._request(*tag_in, concept=concept or "")
        job = self.studio.captions.start_tag(self._need(name), req)
        return render.job_html(job, "train_style_tag_job"), ""

    def _tag_finished(self, *filters: Any) -> tuple:
        return (*self._views(*filters), *self._last_tag(filters[0]))

    def _cancel(self, name: str | None) -> str:
        jobs = self.studio.captions.tag_jobs(name, active=True) if name else []
        for job in jobs:
            self.studio.jobs.cancel(job.id)
        return render.job_html(self.studio.jobs.get(jobs[0].id) if jobs else None, "train_style_tag_job",
                               with_error=False)

    @staticmethod
    def _scoped(op: dict, filters: tuple) -> CaptionOp:
        """The op limited to the concept and tag filters shown above the gallery."""
        _, concept, with_all, without, with_any = filters
        return CaptionOp.from_dict({**op, "concept": concept or None, "with_all": with_all or "",
                                    "without": without or "", "with_any": with_any or ""})

    def _run_op(self, filters: tuple, op: dict, *, scoped: bool = True) -> tuple:
        parsed = self._scoped(op, filters) if scoped else CaptionOp.from_dict(op)
        step = self.studio.captions.apply(self._need(filters[0]), parsed)
        return (rc.step_html(step), *self._views(*filters))

    def _set_trigger(self, *args: Any) -> tuple:
        *filters, words = args  # trigger words go first in every caption, whatever the filters show
        return self._run_op(tuple(filters), {"op": "trigger", "tags": words or ""}, scoped=False)

    def _prune(self, *args: Any) -> tuple:
        *filters, tags = args
        return self._run_op(tuple(filters), {"op": "prune", "tags": tags or ""})

    def _op_dict(self, op: str, tags: str, new: str, position: str, order: str) -> dict:
        if op in ("replace", "rename"):
            return {"op": op, "target": (tags or "").strip(), "replacement": new or ""}
        return {"op": op, "tags": tags or "", "position": position or "end", "order": order or "frequency"}

    def _preview(self, name: str, concept: str | None, with_all: str, without: str, with_any: str,
                 *op_in: str) -> str:
        op = self._scoped(self._op_dict(*op_in), (name, concept, with_all, without, with_any))
        return rc.preview_html(self.studio.captions.preview(self._need(name), op))

    def _apply(self, *args: Any) -> tuple:
        return self._run_op(tuple(args[:5]), self._op_dict(*args[5:]))

    def _move(self, which: str, *filters: Any) -> tuple:
        name = self._need(filters[0])
        step = (self.studio.captions.undo if which == "undo" else self.studio.captions.redo)(name)
        return (rc.step_html(step, "Undone" if which == "undo" else "Redone"), *self._views(*filters))

    def _check(self, name: str, *thresholds: Any) -> tuple:
        """The audit with the thresholds' fields (AUDIT_SHOWN, in order; none given: the declared defaults)."""
        chosen = fields.read_all(AUDIT_SHOWN, thresholds) if thresholds else {}
        report = self.studio.captions.audit(self._need(name), **chosen)
        labels = [rc.finding_label(i, f.code, f.detail) for i, f in enumerate(report.findings)]
        return (rc.audit_html(report), gr.update(choices=labels, value=labels[0] if labels else None),
                report.to_dict())

    def _finding(self, label: str | None, state: dict) -> Finding:
        if not label or not state:
            raise LorakitError("Press Check captions, then choose a finding.")
        index = int(label.split(".", 1)[0]) - 1
        return AuditReport.from_dict(state).findings[index]

    def _show_finding(self, name: str, label: str | None, state: dict) -> tuple:
        finding = self._finding(label, state)
        texts = {r.image: r.text for r in self.studio.captions.records(self._need(name))}
        return _gallery(self.studio.thumbnails(name, finding.images), texts)

    def _fix(self, *args: Any) -> tuple:
        shown = len(AUDIT_SHOWN)
        filters, (label, state), tag_in, thresholds = tuple(args[:5]), args[5:7], args[7:-shown], args[-shown:]
        name = self._need(filters[0])
        done = self.studio.fix_finding(name, self._finding(label, state), self._request(*tag_in))
        job_box = gr.update()
        if isinstance(done, JobState):
            outcome, job_box = f"<p>{escape(done.title)}: started.</p>", render.job_html(
                done, "train_style_tag_job")
        else:
            outcome = rc.step_html(done)
        return (outcome, job_box, *self._views(*filters), *self._check(name, *thresholds))

    def _pick(self, name: str, paths: list, evt: gr.SelectData) -> tuple[str, str]:
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not name or index >= len(paths):
            return "", ""
        record = self.studio.caption(name, paths[index])
        return record.image, record.text

    def _save_caption(self, *args: Any) -> tuple:
        *filters, image, text = args
        if not image:
            raise LorakitError("Click an image in the gallery first.")
        step = self.studio.captions.edit(self._need(filters[0]), image, text or "")
        return (rc.step_html(step, "Saved"), *self._views(*filters))


AUDIT_SHOWN = tuple(AUDIT_SCHEMA[n] for n in ("dominant_threshold", "low_variety_threshold", "max_tokens"))


def _gallery(thumbs: list, texts: dict[str, str]) -> tuple[list, list]:
    """The gallery's (thumbnail, "file: caption") pairs and the image each stands for."""
    gallery = [(str(t.file), f"{t.image.rsplit('/', 1)[-1]}: {texts.get(t.image, '')}"[:200]) for t in thumbs]
    return gallery, [t.image for t in thumbs]


def _field(name: str, elem_id: str, *, label: str | None = None) -> gr.components.Component:
    """A tagging setting's field, from its declaration (TAG_SCHEMA): default, type and reason."""
    f = TAG_SCHEMA[name]
    return fields.component(f, f.default, elem_id=elem_id, label=label)


def _slider(name: str, elem_id: str) -> gr.Slider:
    f = TAG_SCHEMA[name]
    return gr.Slider(0.05, f.maximum, value=f.default, step=0.01, label=f.title, info=f.reason, elem_id=elem_id)

"""The Direction panel: which way each subject faces (an estimate job, images grouped by direction, labels and
never-flip marks), Normalise with a preview, the two undos, the direction settings; and the sorter ("teachable
machine"): classes, labels, Train, predictions least certain first, Apply with a preview, a Teachable Machine import.

Pictures are chosen by clicking them (PICK_JS writes their paths into the Chosen images box); every handler reads
the fields, builds a request with `from_dict` and makes one call through `Studio` (`direction`, `sorter`, `crop`,
`captions`); the HTML comes from render_direction.py.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from .. import next_step
from ..direction.service import EstimateRequest, LabelRequest, NormaliseRequest
from ..direction.settings import DIRECTION_SCHEMA
from ..direction.sorter import SORT_SCHEMA, ApplyRequest
from ..embed.service import EMBED_SCHEMA
from ..errors import LorakitError
from ..jobs import JobState
from ..studio import Studio
from . import fields, render
from . import render_direction as rd
from .compat import bind, run_js, unchanged, uploaded

JOB_ID = "train_style_direction_job"
JOB_KINDS = ("direction", "sort-train", "sort-predict")
GRID_LIMIT = 120  # pictures shown in the groups and the predictions (the counts hold every image)
SETTING_FIELDS = tuple(DIRECTION_SCHEMA.fields)
APPLY_FIELDS = tuple(SORT_SCHEMA[n] for n in ("into", "min_confidence", "move", "repeats"))
LABEL_BUTTONS = (("left", "Faces left"), ("right", "Faces right"), ("front", "Front"), ("away", "Away"),
                 ("never-flip", "Never flip"), ("may-flip", "May flip"), ("unlabel", "Forget my label"))
TARGETS = ("the side most face", "left", "right")

# Clicking a picture (`.ts-pick`) adds its path to the Chosen images box, or takes it out; installed once.
PICK_JS = """() => {
  if (window.trainStyleDirectionPick) return;
  window.trainStyleDirectionPick = true;
  const app = () => {
    if (typeof gradioApp === "function") return gradioApp();
    const root = document.querySelector("gradio-app");
    return (root && root.shadowRoot) || document;
  };
  document.addEventListener("click", (e) => {
    const card = e.composedPath().find((el) => el.classList && el.classList.contains("ts-pick"));
    const field = app().querySelector("#train_style_direction_chosen textarea");
    if (!card || !field) return;
    const lines = field.value.split("\\n").map((s) => s.trim()).filter(Boolean);
    const at = lines.indexOf(card.dataset.image);
    if (at >= 0) lines.splice(at, 1); else lines.push(card.dataset.image);
    field.value = lines.join("\\n");
    field.dispatchEvent(new Event("input", {bubbles: true}));
    app().querySelectorAll(".ts-pick").forEach((c) => c.classList.toggle("ts-chosen",
                                                                       lines.includes(c.dataset.image)));
  });
}"""


# The pictures' borders follow the Chosen images box when a handler rewrites it (gradio leaves an HTML box whose
# value did not change as the page script left it).
SHOW_CHOSEN_JS = """() => setTimeout(() => {
  const root = (typeof gradioApp === "function") ? gradioApp() : document;
  const field = root.querySelector("#train_style_direction_chosen textarea");
  if (!field) return;
  const lines = field.value.split("\\n").map((s) => s.trim());
  root.querySelectorAll(".ts-pick").forEach((c) => c.classList.toggle("ts-chosen", lines.includes(c.dataset.image)));
}, 50)"""


class DirectionPanel:
    """Works on the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project

    # --- layout -----------------------------------------------------------------------------------------------------
    def render(self) -> None:
        self.next = gr.HTML(render.next_html(next_step.direction_next(None)), elem_id="train_style_direction_next")
        self.stamp = gr.State("")
        with gr.Row():
            embedder = EMBED_SCHEMA["embedder"]
            self.embedder = fields.component(embedder, embedder.default, elem_id="train_style_direction_embedder")
            self.detector = gr.Checkbox(value=False, label="Also use face/head boxes",
                                        info="a face detector's box inside the head's tells the turn",
                                        elem_id="train_style_direction_detector")
            self.estimate = gr.Button("Estimate", variant="primary", elem_id="train_style_direction_estimate",
                                      scale=0, min_width=140)
            self.cancel = gr.Button("Cancel", elem_id="train_style_direction_cancel", scale=0, min_width=100)
        with gr.Row():
            self.job = gr.HTML(render.job_html(None, JOB_ID), elem_id="train_style_direction_job_box")
            self.refresh = gr.Button("refresh", elem_id="train_style_direction_refresh", elem_classes=["ts-hidden"])
        self.outcome = gr.HTML(elem_id="train_style_direction_outcome")
        with gr.Row():
            self.chosen = gr.Textbox(label="Chosen images: click pictures below to choose them (one path a line), "
                                           "then press a button", lines=2, max_lines=8,
                                     elem_id="train_style_direction_chosen")
            self.clear = gr.Button("Clear choice", elem_id="train_style_direction_clear", scale=0, min_width=120)
        with gr.Row():
            self.label_buttons = [gr.Button(title, elem_id=f"train_style_direction_label_{key.replace('-', '_')}",
                                            size="sm") for key, title in LABEL_BUTTONS]
            self.reestimate = gr.Button("Re-estimate", elem_id="train_style_direction_reestimate", size="sm")
        self.groups = gr.HTML(elem_id="train_style_direction_groups")
        with gr.Accordion("Normalise: turn every subject the same way", open=True):
            with gr.Row():
                self.target = gr.Radio(list(TARGETS), value=TARGETS[0], label="Face",
                                       elem_id="train_style_direction_target")
                self.only_chosen = gr.Checkbox(value=False, label="Flip exactly the chosen images",
                                               info="instead of those facing the other way",
                                               elem_id="train_style_direction_only_chosen")
            with gr.Row():
                self.preview = gr.Button("Preview", elem_id="train_style_direction_preview")
                self.apply = gr.Button("Apply", variant="primary", elem_id="train_style_direction_apply")
                self.undo_flip = gr.Button("Undo the last flip (images)", elem_id="train_style_direction_undo_flip")
                self.undo_swap = gr.Button("Undo the last caption change (captions)",
                                           elem_id="train_style_direction_undo_captions")
            self.normalised = gr.HTML(elem_id="train_style_direction_normalised")
        with gr.Accordion("Direction settings: swap words, never-flip tags", open=False):
            self.settings = [fields.component(f, f.default, elem_id=f"train_style_direction_{f.name}")
                             for f in SETTING_FIELDS]
            self.save_settings = gr.Button("Save settings", elem_id="train_style_direction_save_settings")
        with gr.Accordion("Sort (teachable machine)", open=False, elem_id="train_style_sort"):
            self._render_sorter()

    def _render_sorter(self) -> None:
        self.sort_status = gr.HTML(elem_id="train_style_sort_status")
        with gr.Row():
            self.new_class = gr.Textbox(label="New class", placeholder="3/4 view", elem_id="train_style_sort_new")
            self.add_class = gr.Button("Add class", elem_id="train_style_sort_add", scale=0)
            self.sort_class = gr.Dropdown([], label="Class", elem_id="train_style_sort_class",
                                          info="label the images chosen by clicking (the box at the top)")
            self.label_class = gr.Button("Label chosen as this class", elem_id="train_style_sort_label")
            self.unlabel_class = gr.Button("Unlabel chosen", elem_id="train_style_sort_unlabel", scale=0)
            self.remove_class = gr.Button("Remove class", elem_id="train_style_sort_remove", scale=0)
        with gr.Row():
            self.train = gr.Button("Train", variant="primary", elem_id="train_style_sort_train")
            self.predict = gr.Button("Sort every image", elem_id="train_style_sort_predict")
        self.sort_outcome = gr.HTML(elem_id="train_style_sort_outcome")
        self.predictions = gr.HTML(elem_id="train_style_sort_predictions")
        with gr.Row():
            self.apply_fields = [fields.component(f, f.default, elem_id=f"train_style_sort_{f.name}")
                                 for f in APPLY_FIELDS]
        with gr.Row():
            self.sort_preview = gr.Button("Preview", elem_id="train_style_sort_preview")
            self.sort_apply = gr.Button("Apply", variant="primary", elem_id="train_style_sort_apply")
            self.sort_undo = gr.Button("Undo the last Apply", elem_id="train_style_sort_undo")
        self.sort_applied = gr.HTML(elem_id="train_style_sort_applied")
        with gr.Row():
            self.teachable = gr.File(label="Teachable Machine export: model_unquant.tflite and labels.txt",
                                     file_count="multiple", elem_id="train_style_sort_teachable")
            self.import_teachable = gr.Button("Use this model", elem_id="train_style_sort_import", scale=0)

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self) -> None:
        on = bind  # every handler returns soon; estimating and training run as jobs
        p = self.project
        views = [self.next, self.groups, self.sort_status, self.predictions, self.sort_class, *self.settings,
                 self.chosen, self.stamp]
        self.sync_inputs, self.sync_outputs = [self.stamp, self.chosen], views
        on(p.change, self._select, [p], [*views, self.job, self.outcome, self.normalised, self.sort_outcome,
                                         self.sort_applied])
        run_js(p.change, PICK_JS)
        run_js(self.chosen.change, SHOW_CHOSEN_JS)
        on(self.refresh.click, self._finished, [p, self.chosen], [*views, self.job, self.outcome, self.sort_outcome])
        on(self.estimate.click, self._estimate, [p, self.embedder, self.detector], [self.job, self.outcome])
        on(self.reestimate.click, self._estimate, [p, self.embedder, self.detector], [self.job, self.outcome])
        on(self.cancel.click, self._cancel, [p], [self.job])
        on(self.clear.click, self._views, [p], views)
        for (key, _), button in zip(LABEL_BUTTONS, self.label_buttons, strict=True):
            on(button.click, self._labeller(key), [p, self.chosen], [self.outcome, *views])
        normalise_in = [p, self.target, self.only_chosen, self.chosen]
        on(self.preview.click, self._preview, normalise_in, [self.normalised])
        on(self.apply.click, self._apply, normalise_in, [self.normalised, *views])
        on(self.undo_flip.click, self._undo_flip, [p, self.chosen], [self.normalised, *views])
        on(self.undo_swap.click, self._undo_captions, [p, self.chosen], [self.normalised, *views])
        on(self.save_settings.click, self._save_settings, [p, *self.settings], [self.outcome, *self.settings])
        # the sorter
        on(self.add_class.click, self._add_class, [p, self.new_class, self.chosen], [self.new_class, *views])
        on(self.remove_class.click, self._remove_class, [p, self.sort_class, self.chosen], views)
        on(self.label_class.click, self._label_class, [p, self.sort_class, self.chosen], [self.sort_outcome, *views])
        on(self.unlabel_class.click, self._unlabel_class, [p, self.chosen], [self.sort_outcome, *views])
        on(self.train.click, self._train, [p, self.embedder], [self.job, self.sort_outcome])
        on(self.predict.click, self._predict, [p], [self.job, self.sort_outcome])
        apply_in = [p, *self.apply_fields]
        on(self.sort_preview.click, self._sort_preview, apply_in, [self.sort_applied])
        on(self.sort_apply.click, self._sort_apply, apply_in, [self.sort_applied, *views])
        on(self.sort_undo.click, self._sort_undo, [p, self.chosen], [self.sort_applied, *views])
        on(self.import_teachable.click, self._import_teachable, [p, self.teachable, self.chosen],
           [self.sort_outcome, self.teachable, *views])

    # --- views ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _need(name: Optional[str]) -> str:
        if not name:
            raise LorakitError("Choose or create a project first (above the panels).")
        return name

    def _views(self, name: Optional[str], chosen: str = "") -> tuple:
        """Next line, the groups, the sorter's status, predictions and classes, the settings, the chosen images
        still in the project, and the stamp drawn at."""
        if not name:
            return (render.next_html(next_step.direction_next(None)), "", "", "", gr.update(choices=[], value=None),
                    *[fields.shown(f, f.default) for f in SETTING_FIELDS], "", "")
        stamp = self.studio.stamp(name)
        images = [r.image for r in self.studio.captions.records(name) if r.kind == "dataset"]
        keep = [i for i in parse_chosen(chosen) if i in set(images)]
        pictures = {t.image: rd.file_uri(t.file) for t in self.studio.thumbnails(name, images, limit=GRID_LIMIT)}
        direction = self.studio.direction
        estimate, marks, settings = direction.last_estimate(name), direction.labels(name), direction.settings(name)
        groups, counts = direction_groups(images, estimate, marks, pictures, set(keep),
                                          min_confidence=settings.min_confidence)
        status = self.studio.sorter.status(name)
        classes = list(status["classes"])
        values = settings.values
        step = next_step.direction_next(self.studio.status(name), counts)
        return (render.next_html(step), rd.groups_html(groups, hidden=max(0, len(images) - len(pictures))),
                rd.sort_status_html(status), self._predictions(name, pictures, set(keep)),
                gr.update(choices=classes, value=classes[0] if classes else None),
                *[fields.shown(f, values.get(f.name, f.default)) for f in SETTING_FIELDS], "\n".join(keep), stamp)

    def _predictions(self, name: str, pictures: dict[str, str], chosen: set[str]) -> str:
        job = next((j for j in self.studio.jobs.list(name) if j.kind == "sort-predict" and j.result), None)
        rows = [r for r in (job.result.get("images", []) if job else []) if r.get("image") in pictures]
        cards = [rd.Card(image=r["image"], picture=pictures[r["image"]], chosen=r["image"] in chosen,
                         lines=(f"{r.get('class', '')} {rd.percent(r.get('confidence'))}",),
                         badges=(f"yours: {r['label']}",) if r.get("label") else ())
                 for r in rows[:GRID_LIMIT]]
        return rd.predictions_html(cards, total=len(rows))

    def _select(self, name: Optional[str]) -> tuple:
        """Another project: everything redrawn, the last job's outcome shown, the previews cleared."""
        job_box, direction, sorter = self._last_job(name)
        return (*self._views(name), job_box, direction, "", sorter, "")

    def sync(self, name: Optional[str], stamp: str, chosen: str) -> tuple:
        """Redrawn when the project changed since `stamp` (an import, a crop, another window); else as it is."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        return self._views(name, chosen)

    def _last_job(self, name: Optional[str]) -> tuple[str, str, str]:
        """The newest direction or sorter job's bar, and its outcome for the direction and the sorter part."""
        job: Optional[JobState] = next((j for j in self.studio.jobs.list(name) if j.kind in JOB_KINDS),
                                       None) if name else None
        direction = sorter = ""
        if job and job.error:
            if job.kind == "direction":
                direction = render.error_html(job.error)
            else:
                sorter = render.error_html(job.error)
        elif job and job.result is not None:
            if job.kind == "direction":
                direction = rd.estimate_html(job.result)
            elif job.kind == "sort-train":
                sorter = rd.train_html(job.result)
        return render.job_html(job, JOB_ID, with_error=False), direction, sorter

    def _finished(self, name: Optional[str], chosen: str) -> tuple:
        """A job ended: redraw; a finished training goes on to sort every image (a second job)."""
        job_box, direction, sorter = self._last_job(name)
        newest = next((j for j in self.studio.jobs.list(name) if j.kind in JOB_KINDS), None) if name else None
        if newest and newest.kind == "sort-train" and newest.state == "done" and name:
            job_box = render.job_html(self.studio.sorter.start_predict(name), JOB_ID)
            sorter += "<p>Sorting every image with it…</p>"
        return (*self._views(name, chosen), job_box, direction, sorter)

    # --- direction --------------------------------------------------------------------------------------------------
    def _estimate(self, name: Optional[str], embedder: str, detector: bool) -> tuple[str, str]:
        request = EstimateRequest.from_dict({"embedder": (embedder or "").strip(), "detector": bool(detector)})
        job = self.studio.direction.start_estimate(self._need(name), request)
        return render.job_html(job, JOB_ID), ""

    def _cancel(self, name: Optional[str]) -> str:
        jobs = [j for j in self.studio.jobs.list(name) if j.active and j.kind in JOB_KINDS] if name else []
        for job in jobs:
            self.studio.jobs.cancel(job.id)
        return render.job_html(self.studio.jobs.get(jobs[0].id) if jobs else None, JOB_ID, with_error=False)

    def _labeller(self, label: str):
        def handler(name: Optional[str], chosen: str) -> tuple:
            images = need_chosen(chosen)
            self.studio.direction.label(self._need(name), LabelRequest.from_dict({"images": images, "label": label}))
            return (rd.labels_html(len(images), label), *self._views(name))

        handler.__name__ = f"label_{label.replace('-', '_')}"
        return handler

    def _normalise_request(self, target: str, only_chosen: bool, chosen: str, *, dry_run: bool) -> NormaliseRequest:
        data: dict[str, Any] = {"to": target if target in ("left", "right") else "", "dry_run": dry_run}
        if only_chosen:
            data["images"] = need_chosen(chosen)
        return NormaliseRequest.from_dict(data)

    def _normalised_html(self, name: str, request: NormaliseRequest) -> str:
        report = self.studio.direction.normalise(name, request)
        shown = report.flipped[:rd.ROWS_LIMIT]
        pictures = {t.image: rd.file_uri(t.file) for t in self.studio.thumbnails(name, shown, limit=rd.ROWS_LIMIT)}
        return rd.normalise_html(report.to_dict(), pictures)

    def _preview(self, name: Optional[str], target: str, only_chosen: bool, chosen: str) -> str:
        return self._normalised_html(self._need(name), self._normalise_request(target, only_chosen, chosen,
                                                                                dry_run=True))

    def _apply(self, name: Optional[str], target: str, only_chosen: bool, chosen: str) -> tuple:
        request = self._normalise_request(target, only_chosen, chosen, dry_run=False)
        return (self._normalised_html(self._need(name), request), *self._views(name))

    def _undo_flip(self, name: Optional[str], chosen: str) -> tuple:
        report = self.studio.crop.undo(self._need(name))
        text = rd.undo_html("Images", f"undone: {report.label}" if report.step else "", len(report.derived))
        return (text, *self._views(name, chosen))

    def _undo_captions(self, name: Optional[str], chosen: str) -> tuple:
        entry = self.studio.captions.undo(self._need(name))
        text = rd.undo_html("Captions", f"undone: {entry.label}" if entry.id else "", entry.files)
        return (text, *self._views(name, chosen))

    def _save_settings(self, name: Optional[str], *raw: Any) -> tuple:
        changes = fields.read_all(SETTING_FIELDS, raw)
        saved = self.studio.direction.update_settings(self._need(name), changes)
        return ("<p>Direction settings saved.</p>",
                *[fields.shown(f, saved.values.get(f.name, f.default)) for f in SETTING_FIELDS])

    # --- the sorter -------------------------------------------------------------------------------------------------
    def _add_class(self, name: Optional[str], new: str, chosen: str) -> tuple:
        if not (new or "").strip():
            raise LorakitError("Type a class name first (e.g. 3/4 view, blurry, or a character's name).")
        self.studio.sorter.add_classes(self._need(name), [new])
        return ("", *self._views(name, chosen))

    def _remove_class(self, name: Optional[str], cls: Optional[str], chosen: str) -> tuple:
        if not cls:
            raise LorakitError("Choose the class to remove.")
        self.studio.sorter.remove_classes(self._need(name), [cls])
        return self._views(name, chosen)

    def _label_class(self, name: Optional[str], cls: Optional[str], chosen: str) -> tuple:
        if not cls:
            raise LorakitError("Add a class first (New class, Add class), then choose it.")
        images = need_chosen(chosen)
        self.studio.sorter.label(self._need(name), cls, images)
        return (f"<p>{len(images)} image(s) labelled {escape(cls)}.</p>", *self._views(name))

    def _unlabel_class(self, name: Optional[str], chosen: str) -> tuple:
        images = need_chosen(chosen)
        self.studio.sorter.label(self._need(name), None, images)
        return (f"<p>{len(images)} image(s) unlabelled.</p>", *self._views(name))

    def _train(self, name: Optional[str], embedder: str) -> tuple[str, str]:
        job = self.studio.sorter.start_train(self._need(name), embedder=(embedder or "").strip())
        return render.job_html(job, JOB_ID), ""

    def _predict(self, name: Optional[str]) -> tuple[str, str]:
        job = self.studio.sorter.start_predict(self._need(name))
        return render.job_html(job, JOB_ID), ""

    def _apply_request(self, raw: tuple, *, dry_run: bool) -> ApplyRequest:
        return ApplyRequest.from_dict({**fields.read_all(APPLY_FIELDS, raw), "dry_run": dry_run})

    def _sort_preview(self, name: Optional[str], *raw: Any) -> str:
        report = self.studio.sorter.apply(self._need(name), self._apply_request(raw, dry_run=True))
        return rd.sort_apply_html(report.to_dict())

    def _sort_apply(self, name: Optional[str], *raw: Any) -> tuple:
        report = self.studio.sorter.apply(self._need(name), self._apply_request(raw, dry_run=False))
        return (rd.sort_apply_html(report.to_dict()), *self._views(name))

    def _sort_undo(self, name: Optional[str], chosen: str) -> tuple:
        done = self.studio.sorter.undo(self._need(name))
        text = (f"<p>Undone: {len(done.get('removed', []))} copy(ies) taken back, {len(done.get('restored', []))} "
                "moved image(s) restored.</p>")
        return (text, *self._views(name, chosen))

    def _import_teachable(self, name: Optional[str], files: Any, chosen: str) -> tuple:
        model, labels = teachable_files(uploaded(files))
        classes = self.studio.sorter.import_teachable(self._need(name), str(model), str(labels), uploaded=True)
        text = (f"<p>Teachable Machine model in use, classes: {escape(', '.join(classes))}. Press Sort every "
                "image.</p>")
        return (text, None, *self._views(name, chosen))


# --- helpers ---------------------------------------------------------------------------------------------------------
def parse_chosen(text: Optional[str]) -> list[str]:
    """The image paths in the Chosen images box, one a line, each once."""
    return list(dict.fromkeys(line.strip() for line in (text or "").splitlines() if line.strip()))


def need_chosen(text: Optional[str]) -> list[str]:
    images = parse_chosen(text)
    if not images:
        raise LorakitError("Choose images first: click their pictures (they get a coloured border).")
    return images


def teachable_files(files: list[tuple[Path, str]]) -> tuple[Path, Path]:
    """The model (.tflite) and labels.txt among the uploaded files."""
    models = [p for p, n in files if n.lower().endswith(".tflite")]
    labels = [p for p, n in files if n.lower().endswith(".txt")]
    if len(models) != 1 or len(labels) != 1:
        raise LorakitError("Drop the two files of a Teachable Machine export (Export Model → TensorFlow Lite → "
                           "Floating point): model_unquant.tflite and labels.txt.")
    return models[0], labels[0]


def direction_groups(images: list[str], estimate: dict[str, Any], marks: dict[str, Any], pictures: dict[str, str],
                     chosen: set[str], *, min_confidence: float) -> tuple[list[rd.Group], Optional[dict[str, int]]]:
    """The shown images in one group per direction, the least sure first (those most likely to need a label): the
    user's label where there is one, else the last estimate (an image not estimated yet is unknown); and the count
    per direction (None when nothing is known yet)."""
    rows = {r.get("image"): r for r in estimate.get("images") or () if isinstance(r, dict)}
    labels, never = marks.get("labels") or {}, set(marks.get("never_flip") or ())
    groups = {key: rd.Group(key=key, title=title) for key, title in rd.GROUPS}
    counts = {key: 0 for key, _ in rd.GROUPS}
    sure: dict[str, float] = {}
    for image in images:
        row = rows.get(image) or {}
        label = labels.get(image)
        direction = label or row.get("direction") or "unknown"
        direction = direction if direction in groups else "unknown"
        counts[direction] += 1
        if image not in pictures:
            continue
        confidence = 1.0 if label else row.get("confidence")
        sure[image] = 2.0 if label else float(confidence or 0.0)  # labelled ones last
        line = "your label" if label else ("not estimated" if not row else rd.percent(confidence))
        badges = ("never flip",) if image in never else ()
        groups[direction].cards.append(rd.Card(
            image=image, picture=pictures[image], lines=(line,), badges=badges, chosen=image in chosen,
            title=f"{image}: {row.get('reason') or ('labelled by you' if label else 'not estimated yet')}",
            low=not label and (confidence or 0.0) < min_confidence))
    known = bool(rows) or bool(labels)
    out = [rd.Group(key=g.key, title=g.title, total=counts[g.key],
                    cards=sorted(g.cards, key=lambda c: (sure.get(c.image, 0.0), c.image))) for g in groups.values()]
    return out, counts if known else None

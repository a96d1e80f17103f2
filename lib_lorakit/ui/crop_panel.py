"""The Crop panel: the buckets sd-scripts will put every image in (what its centre crop cuts away shaded, a
histogram, SUBJECT_CUT findings), then smart crop, letterbox, centre or reset for a selection with a preview
before anything is written, Apply as a job, Undo/Redo, and a manual box dragged on one image.

Every handler reads the fields, builds a `BucketRequest` or a `CropRequest` with `from_dict` and makes one call
through `Studio` (`buckets`, `crop`); the HTML comes from render_crop.py.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Optional

import gradio as gr

from .. import next_step
from ..crop.bucket_preview import BUCKET_SCHEMA, BucketReport, BucketRequest
from ..crop.service import CropReport, CropRequest
from ..errors import LorakitError
from ..jobs import JobState
from ..studio import Studio
from . import fields, render
from . import render_crop as rc
from .compat import bind, run_js, unchanged

SELECTIONS = ("all images", "a concept", "chosen images")
MODES = ("smart", "letterbox", "center", "reset")
ASPECTS = ("square", "bucket", "W:H")
FILLS = ("white", "edge", "blur", "colour")
BUCKET_FIELDS = tuple(BUCKET_SCHEMA[n] for n in ("resolution", "min_bucket_reso", "max_bucket_reso",
                                                  "bucket_reso_steps", "bucket_no_upscale"))
GRID_LIMIT = 120  # pictures in the grid (the histogram and findings count every image)
ORIGINAL_SIDE = 640  # px: the picture a manual box is drawn on
PAIR_SIDE = 256  # px: the originals of before/after pairs
JOB_ID = "train_style_crop_job"
_NUMBERS = re.compile(r"-?\d+")

# The manual box: dragging on `.ts-crop-canvas` draws the box and writes it, in the original's pixels (the
# canvas's data-width/height), into the box field. Installed once, for the whole page; the rest is Python's.
BOX_JS = """() => {
  if (window.trainStyleCropBox) return;
  window.trainStyleCropBox = true;
  let drag = null;
  const app = () => {
    if (typeof gradioApp === "function") return gradioApp();
    const root = document.querySelector("gradio-app");
    return (root && root.shadowRoot) || document;
  };
  const at = (e) => {
    const r = drag.canvas.getBoundingClientRect();
    return [Math.min(Math.max(e.clientX - r.left, 0), r.width), Math.min(Math.max(e.clientY - r.top, 0), r.height),
            r];
  };
  const show = (e, done) => {
    const [x, y, r] = at(e), [x0, y0] = drag.start;
    const l = Math.min(x, x0), t = Math.min(y, y0), w = Math.abs(x - x0), h = Math.abs(y - y0);
    Object.assign(drag.box.style, {display: "block", left: l + "px", top: t + "px", width: w + "px",
                                   height: h + "px", boxShadow: "0 0 0 4000px rgba(0, 0, 0, 0.6)"});
    const field = app().querySelector("#train_style_crop_box textarea, #train_style_crop_box input");
    if (!done || w < 2 || h < 2 || !field) return;
    const W = Number(drag.canvas.dataset.width), H = Number(drag.canvas.dataset.height);
    const sx = W / r.width, sy = H / r.height;
    field.value = [Math.round(l * sx), Math.round(t * sy), Math.min(W, Math.round((l + w) * sx)),
                   Math.min(H, Math.round((t + h) * sy))].join(", ");
    field.dispatchEvent(new Event("input", {bubbles: true}));
  };
  document.addEventListener("pointerdown", (e) => {
    const target = e.composedPath()[0];
    const canvas = target && target.closest && target.closest(".ts-crop-canvas");
    if (!canvas) return;
    e.preventDefault();
    drag = {canvas: canvas, box: canvas.querySelector(".ts-crop-box")};
    drag.start = at(e).slice(0, 2);
  });
  document.addEventListener("pointermove", (e) => { if (drag) show(e, false); });
  document.addEventListener("pointerup", (e) => { if (drag) { show(e, true); drag = null; } });
}"""


class CropPanel:
    """Works on the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project

    # --- layout -----------------------------------------------------------------------------------------------------
    def render(self) -> None:
        self.next = gr.HTML(render.next_html(next_step.crop_next(None)), elem_id="train_style_crop_next")
        self.stamp = gr.State("")
        self.cut_images = gr.State([])  # the images SUBJECT_CUT names, for "Choose the cut images"
        with gr.Accordion("Buckets: what sd-scripts will cut away", open=True):
            with gr.Row():
                self.bucket_fields = [_bucket_field(f) for f in BUCKET_FIELDS]
            with gr.Row():
                detect = BUCKET_SCHEMA["detect"]
                self.detect = gr.Checkbox(value=False, label=detect.title, info=detect.reason,
                                          elem_id="train_style_crop_detect")
                self.show = gr.Button("Show buckets", elem_id="train_style_crop_show", variant="primary")
        self.grid = gr.HTML(elem_id="train_style_crop_grid")
        with gr.Accordion("Crop or letterbox", open=True):
            with gr.Row():
                self.selection = gr.Radio(list(SELECTIONS), value="all images", label="Which images",
                                          elem_id="train_style_crop_selection")
                self.concept = gr.Dropdown([], label="Concept", elem_id="train_style_crop_concept")
                self.chosen = gr.Dropdown([], multiselect=True, label="Chosen images",
                                          elem_id="train_style_crop_chosen")
                self.choose_cut = gr.Button("Choose the cut images", elem_id="train_style_crop_choose_cut",
                                            scale=0, min_width=180)
            with gr.Row():
                self.mode = gr.Radio(list(MODES), value="smart", label="Mode", elem_id="train_style_crop_mode",
                                     info="smart: around the face/head; letterbox: pad instead of cutting (padding "
                                          "masked out of the loss); center; reset: the uncropped original")
                self.aspect = gr.Radio(list(ASPECTS), value="square", label="Aspect",
                                       elem_id="train_style_crop_aspect",
                                       info="bucket: each image's own sd-scripts bucket")
                self.ratio = gr.Textbox(value="2:3", label="W:H", elem_id="train_style_crop_ratio")
            with gr.Row():
                self.fill = gr.Dropdown(list(FILLS), value="white", label="Letterbox fill",
                                        elem_id="train_style_crop_fill")
                self.colour = gr.ColorPicker(value="#ffffff", label="Fill colour (fill: colour)",
                                             elem_id="train_style_crop_colour")
                self.fraction = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Share of images letterboxed",
                                          info="the rest is smart-cropped: fewer borders in generations (seeds/002)",
                                          elem_id="train_style_crop_fraction")
                self.tag = gr.Textbox(label="Caption tag for padded images (empty: none)", placeholder="letterboxed",
                                      elem_id="train_style_crop_tag")
            with gr.Row():
                self.preview = gr.Button("Preview", elem_id="train_style_crop_preview")
                self.apply = gr.Button("Apply", variant="primary", elem_id="train_style_crop_apply")
                self.cancel = gr.Button("Cancel", elem_id="train_style_crop_cancel")
                self.undo = gr.Button("Undo", elem_id="train_style_crop_undo")
                self.redo = gr.Button("Redo", elem_id="train_style_crop_redo")
            with gr.Row():
                self.job = gr.HTML(render.job_html(None, JOB_ID), elem_id="train_style_crop_job_box")
                self.refresh = gr.Button("refresh", elem_id="train_style_crop_refresh", elem_classes=["ts-hidden"])
        self.outcome = gr.HTML(elem_id="train_style_crop_outcome")
        with gr.Accordion("Manual crop: draw a box on one image", open=False):
            with gr.Row():
                self.one = gr.Dropdown([], label="Image", elem_id="train_style_crop_one")
                self.box = gr.Textbox(label="Box: left, top, right, bottom (the original's pixels)",
                                      elem_id="train_style_crop_box")
                self.crop_box = gr.Button("Crop to this box", elem_id="train_style_crop_manual")
            self.canvas = gr.HTML(elem_id="train_style_crop_canvas")
        self.history = gr.HTML(elem_id="train_style_crop_history")

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self) -> None:
        on = bind  # every handler returns soon; Apply runs as a job
        bucket_in = [*self.bucket_fields, self.detect]
        picks = [self.concept, self.chosen, self.one]
        views = [self.next, self.grid, self.cut_images, self.concept, self.chosen, self.one, self.history,
                 self.stamp]
        self.sync_inputs, self.sync_outputs = [self.stamp, *bucket_in, *picks], views + [self.job]
        select = [self.selection, self.concept, self.chosen]
        how = [self.mode, self.aspect, self.ratio, self.fill, self.colour, self.fraction, self.tag]
        on(self.project.change, self._select, [self.project, *bucket_in],
           views + [self.job, self.outcome, self.canvas, self.box])
        on(self.show.click, self._views, [self.project, *bucket_in, *picks], views)
        on(self.refresh.click, self._finished, [self.project, *bucket_in, *picks], views + [self.job, self.outcome])
        on(self.preview.click, self._preview, [self.project, *select, *how], [self.outcome])
        on(self.apply.click, self._apply, [self.project, *select, *how], [self.job, self.outcome])
        on(self.cancel.click, self._cancel, [self.project], [self.job])
        for button, which in ((self.undo, "undo"), (self.redo, "redo")):
            on(button.click, functools.partial(self._move, which), [self.project, *bucket_in, *picks],
               [self.outcome] + views)
        on(self.choose_cut.click, self._choose_cut, [self.cut_images], [self.selection, self.chosen])
        on(self.one.change, self._pick_one, [self.project, self.one], [self.canvas, self.box])
        run_js(self.one.change, BOX_JS)
        on(self.crop_box.click, self._crop_box, [self.project, self.box, *bucket_in, *picks],
           [self.outcome] + views + [self.canvas, self.box])

    # --- handlers ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _need(name: Optional[str]) -> str:
        if not name:
            raise LorakitError("Choose or create a project first (above the panels).")
        return name

    @staticmethod
    def _bucket_request(*raw: Any) -> BucketRequest:
        *settings, detect = raw
        return BucketRequest.from_dict({**fields.read_all(BUCKET_FIELDS, tuple(settings)), "detect": bool(detect)})

    def _views(self, name: Optional[str], *rest: Any) -> tuple:
        """Next line, the bucket preview, the cut images, the pickers (choices kept where still valid), history,
        and the stamp drawn at."""
        count = len(BUCKET_FIELDS) + 1
        bucket_raw, (concept, chosen, one) = rest[:count], rest[count:count + 3]
        if not name:
            return (render.next_html(next_step.crop_next(None)), "", [], gr.update(choices=[], value=None),
                    gr.update(choices=[], value=[]), gr.update(choices=[], value=None), "", "")
        request = self._bucket_request(*bucket_raw)
        stamp = self.studio.stamp(name)
        report = self.studio.buckets(name, request)
        status = self.studio.status(name)
        images = [i.image for i in report.images]
        findings = report.findings
        cut = sum(1 for i in report.images if i.placement.cut)
        step = next_step.crop_next(status, cut=cut, heads_cut=None if findings is None else len(findings))
        concepts = [c.name for c in status.concepts]
        return (render.next_html(step), rc.preview_page_html(report, self._cards(name, report)),
                sorted({f.image for f in findings or ()}),
                gr.update(choices=concepts, value=concept if concept in concepts else None),
                gr.update(choices=images, value=[i for i in chosen or () if i in images]),
                gr.update(choices=images, value=one if one in images else None),
                rc.history_html(self.studio.crop.history(name)), stamp)

    def _cards(self, name: str, report: BucketReport) -> list[rc.Card]:
        thumbs = {t.image: t.file for t in self.studio.thumbnails(name, [i.image for i in report.images],
                                                                   limit=GRID_LIMIT)}
        cuts: dict[str, list] = {}
        for f in report.findings or ():
            cuts.setdefault(f.image, []).append(f)
        return [rc.Card(item=i, picture=rc.file_uri(thumbs[i.image]), cuts=cuts.get(i.image, ()))
                for i in report.images if i.image in thumbs]

    def _select(self, name: Optional[str], *bucket_raw: Any) -> tuple:
        return (*self._views(name, *bucket_raw, None, [], None), *self._last_job(name), "", "")

    def sync(self, name: Optional[str], stamp: str, *rest: Any) -> tuple:
        """Redrawn when the project changed since `stamp` (a crop, an import, another window); else as it is."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        return (*self._views(name, *rest), self._last_job(name)[0])

    def _last_job(self, name: Optional[str]) -> tuple[str, str]:
        """The newest crop job's bar and its outcome (a failure's reason once, in the outcome)."""
        job: Optional[JobState] = next((j for j in self.studio.jobs.list(name) if j.kind == "crop"),
                                       None) if name else None
        outcome = ""
        if job and job.result:
            outcome = rc.crop_result_html(job.result)
        elif job and job.error:
            outcome = render.error_html(job.error)
        return render.job_html(job, JOB_ID, with_error=False), outcome

    def _finished(self, name: Optional[str], *rest: Any) -> tuple:
        return (*self._views(name, *rest), *self._last_job(name))

    @staticmethod
    def _crop_dict(selection: str, concept: Optional[str], chosen: Any, mode: str, aspect: str, ratio: str,
                   fill: str, colour: str, fraction: float, tag: str) -> dict[str, Any]:
        """The request's plain data from the fields (CropRequest.from_dict checks it and names a bad field)."""
        data: dict[str, Any] = {"mode": mode, "aspect": (ratio or "").strip() if aspect == "W:H" else aspect,
                                "fill": (colour or "").strip() if fill == "colour" else fill,
                                "fraction": float(fraction if fraction is not None else 1.0),
                                "tag": (tag or "").strip()}
        if selection == "a concept":
            if not concept:
                raise LorakitError("Choose a concept (or select all images).")
            data["concept"] = concept
        elif selection == "chosen images":
            if not chosen:
                raise LorakitError("Choose some images (or press Choose the cut images), or select all images.")
            data["images"] = list(chosen)
        return data

    def _preview(self, name: Optional[str], *args: Any) -> str:
        data = self._crop_dict(*args)
        report = self.studio.crop.crop(self._need(name), CropRequest.from_dict({**data, "dry_run": True}))
        return rc.crop_preview_html(report.summary(), self._pairs(name, report, data["fill"]), len(report.changed),
                                    [s.to_dict() for s in report.skipped])

    def _pairs(self, name: str, report: CropReport, fill: str) -> list[rc.Pair]:
        shown = report.changed[:rc.PREVIEW_LIMIT]
        befores = {t.image: t.file for t in self.studio.thumbnails(name, [c.image for c in shown])}
        pairs = []
        for c in shown:
            if c.image not in befores:
                continue
            picture, size = original_picture(self.studio, name, c.image, PAIR_SIDE)
            pairs.append(rc.Pair(image=c.image, before=rc.file_uri(befores[c.image]), original=picture,
                                 original_size=size, box=c.box, size=c.size, masked=c.masked, mode=c.mode,
                                 fill=fill, note=c.note))
        return pairs

    def _apply(self, name: Optional[str], *args: Any) -> tuple[str, str]:
        job = self.studio.crop.start(self._need(name), CropRequest.from_dict(self._crop_dict(*args)))
        return render.job_html(job, JOB_ID), ""

    def _cancel(self, name: Optional[str]) -> str:
        jobs = [j for j in self.studio.jobs.list(name) if j.active and j.kind == "crop"] if name else []
        for job in jobs:
            self.studio.jobs.cancel(job.id)
        return render.job_html(self.studio.jobs.get(jobs[0].id) if jobs else None, JOB_ID, with_error=False)

    def _move(self, which: str, name: Optional[str], *rest: Any) -> tuple:
        name = self._need(name)
        report = (self.studio.crop.undo if which == "undo" else self.studio.crop.redo)(name)
        return (rc.derive_html(report, "Undone" if which == "undo" else "Redone"), *self._views(name, *rest))

    @staticmethod
    def _choose_cut(cut_images: list) -> tuple:
        if not cut_images:
            raise LorakitError("No face or head is cut: tick Find cut faces and press Show buckets first.")
        return "chosen images", gr.update(value=list(cut_images))

    def _pick_one(self, name: Optional[str], image: Optional[str]) -> tuple[str, str]:
        if not name or not image:
            return "", ""
        picture, size = original_picture(self.studio, name, image, ORIGINAL_SIDE)
        box = self.studio.crop.steps(name, image).crop
        inside = box is not None and box[0] >= 0 and box[1] >= 0 and box[2] <= size[0] and box[3] <= size[1]
        return (rc.canvas_html(image, picture, size, box if inside else None),
                ", ".join(str(v) for v in box) if inside else "")

    def _crop_box(self, name: Optional[str], box_text: str, *rest: Any) -> tuple:
        one = rest[-1]
        if not one:
            raise LorakitError("Choose the image to crop first (Image, above its picture).")
        request = CropRequest.from_dict({"mode": "manual", "images": [one], "box": parse_box(box_text)})
        report = self.studio.crop.crop(self._need(name), request)
        now = report.changed[0].image if report.changed else one  # a new extension renames the copy
        views = self._views(name, *rest[:-1], now)
        return (rc.crop_result_html(report.to_dict()), *views, *self._pick_one(name, now))


def _bucket_field(f: Any) -> gr.components.Component:
    """A bucket setting's field, empty (or none) by default: the value of the latest run, else the default."""
    if fields.kind(f) == "text":
        return gr.Textbox(value="", label=f.title, info=f.reason, placeholder="empty: as the last run",
                          elem_id=f"train_style_crop_{f.name}")
    return fields.component(f, None, elem_id=f"train_style_crop_{f.name}",
                            info=f"{f.reason} none: as the last run.")


def parse_box(text: Optional[str]) -> list[int]:
    """`left, top, right, bottom` as typed or as the box drawing writes it."""
    numbers = _NUMBERS.findall(text or "")
    leftover = _NUMBERS.sub("", text or "").replace(",", "").split()
    if len(numbers) != 4 or leftover:
        raise LorakitError(f"box: expected four whole numbers left, top, right, bottom (e.g. 0, 40, 512, 552) in the "
                           f"original's pixels, got {text!r}; drag on the picture to draw one")
    return [int(n) for n in numbers]


def original_picture(studio: Studio, name: str, image: str, side: int) -> tuple[str, tuple[int, int]]:
    """The upright original `image` is derived from, shrunk for the page (a data URI), and its full size (the
    pixels crop boxes are measured in)."""
    picture, size = studio.crop.original(name, image, side=side)
    return rc.image_uri(picture, side), size

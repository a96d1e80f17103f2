"""The Dataset panel: projects, import by upload or folder, concepts and repeats, the report and the gallery."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from .. import next_step
from ..errors import LorakitError
from ..images import IMAGE_SUFFIXES
from ..jobs import JobState
from ..studio import GALLERY_LIMIT, Studio
from . import render
from .compat import bind, unchanged, uploaded
from .reg_panel import RegAccordion


class DatasetPanel:
    """Works on the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: Optional[gr.components.Component] = None):
        self.studio = studio
        self.project = project

    # --- layout ---------------------------------------------------------------------------------------------------
    def render(self) -> None:
        with gr.Row(elem_classes=["ts-next-row"]):
            self.next = gr.HTML(render.next_html(next_step.dataset_next(None)), elem_id="train_style_dataset_next")
            self.propose = gr.Button("Use proposed repeats", visible=False, elem_id="train_style_propose_repeats",
                                     scale=0, min_width=200)
        self.stamp = gr.State("")
        with gr.Row():
            with gr.Column():
                self.upload = gr.File(label="Drop images and their .txt captions here", file_count="multiple",
                                      elem_id="train_style_upload")
                self.import_uploads = gr.Button("Import uploaded files", elem_id="train_style_import_uploads")
            with gr.Column():
                self.folder = gr.Textbox(label="Or a folder on this server (inside the allowed folders)",
                                         elem_id="train_style_folder")
                self.import_folder = gr.Button("Import folder", elem_id="train_style_import_folder")
                with gr.Row():
                    self.concept = gr.Textbox(label="Concept (default: the project's name)",
                                              elem_id="train_style_concept")
                    self.repeats = gr.Number(label="Repeats (0: keep the concept's; proposed for dropped files)",
                                             value=0, precision=0, elem_id="train_style_repeats")
                    self.reg = gr.Checkbox(label="Regularisation set", elem_id="train_style_reg")
        with gr.Row():
            self.job = gr.HTML(render.job_html(None), elem_id="train_style_job_box")
            self.cancel = gr.Button("Cancel import", elem_id="train_style_cancel", scale=0)
            self.refresh = gr.Button("refresh", elem_id="train_style_refresh", elem_classes=["ts-hidden"])
        self.import_result = gr.HTML(elem_id="train_style_import_result")
        with gr.Accordion("Project settings", open=False):
            with gr.Row():
                self.trigger_words = gr.Textbox(label="Trigger words (comma-separated)",
                                                elem_id="train_style_trigger_words")
                self.resolution = gr.Number(label="Training resolution (px)", precision=0,
                                            elem_id="train_style_resolution")
                self.max_mp = gr.Number(label="Largest image imported (megapixels)", elem_id="train_style_max_mp")
                self.near_distance = gr.Slider(0, 32, step=1, label="Near-duplicate distance (bits of 64)",
                                               elem_id="train_style_near_distance")
                self.background = gr.ColorPicker(label="Background for transparent images",
                                                 elem_id="train_style_background")
            self.notes = gr.Textbox(label="Notes", lines=2, elem_id="train_style_notes")
            self.save_settings = gr.Button("Save settings", elem_id="train_style_save_settings")
        with gr.Accordion("Concepts and repeats", open=False):
            with gr.Row():
                self.concept_pick = gr.Dropdown(label="Concept folder", choices=[], elem_id="train_style_concept_pick")
                self.concept_name = gr.Textbox(label="Name", elem_id="train_style_concept_name")
                self.concept_repeats = gr.Number(label="Repeats", value=1, precision=0, minimum=1,
                                                 elem_id="train_style_concept_repeats")
                self.concept_reg = gr.Checkbox(label="Add as regularisation set", elem_id="train_style_concept_reg")
            with gr.Row():
                self.add_concept = gr.Button("Add", elem_id="train_style_add_concept")
                self.rename_concept = gr.Button("Rename", elem_id="train_style_rename_concept")
                self.set_repeats = gr.Button("Set repeats", elem_id="train_style_set_repeats")
                self.remove_concept = gr.Button("Move to trash", elem_id="train_style_remove_concept")
            with gr.Row():
                self.balance_target = gr.Number(label="Images × repeats per concept (empty: the largest now)",
                                                precision=0, elem_id="train_style_balance_target")
                self.preview_balance = gr.Button("Preview balance", elem_id="train_style_preview_balance")
                self.apply_balance = gr.Button("Apply balance", elem_id="train_style_apply_balance")
            self.balance = gr.HTML(elem_id="train_style_balance")
        self.reg_gen = RegAccordion(self.studio, self.project)
        self.reg_gen.render()
        self.report = gr.HTML(elem_id="train_style_report")
        self.drop_dups = gr.Button("Move extra copies of exact duplicates to the trash",
                                   elem_id="train_style_drop_dups")
        self.gallery = gr.Gallery(label="Training images", columns=8, height="auto", elem_id="train_style_gallery")

    # --- events ---------------------------------------------------------------------------------------------------
    def register(self) -> None:
        # Every handler here returns at once (imports run as jobs), so none goes through gradio's queue: in gradio
        # 3.41 a queued event whose page closes at the wrong moment leaves a task that hangs "Reload UI".
        views = [self.report, self.gallery, self.concept_pick, self.job, self.import_result, self.next, self.propose,
                 self.stamp]
        settings = [self.trigger_words, self.resolution, self.max_mp, self.near_distance, self.background,
                    self.notes]
        self.sync_inputs, self.sync_outputs = [self.stamp], views + settings
        on = bind
        on(self.project.change, self._select, [self.project], views + settings)
        on(self.save_settings.click, self._save_settings, [self.project, *settings], settings + views)
        on(self.upload.change, self._propose_for_upload, [self.project, self.upload, self.concept, self.reg],
           [self.repeats])
        on(self.import_uploads.click, self._start_uploads,
           [self.project, self.upload, self.concept, self.repeats, self.reg], [self.job, self.import_result])
        on(self.import_folder.click, self._start_folder,
           [self.project, self.folder, self.concept, self.repeats, self.reg], [self.job, self.import_result])
        on(self.refresh.click, self._finished, [self.project], views + [self.upload, self.repeats])
        on(self.cancel.click, self._cancel, [self.project], [self.job])
        on(self.propose.click, self._use_proposed, [self.project], views)
        concept_in = [self.project, self.concept_pick, self.concept_name, self.concept_repeats, self.concept_reg]
        for button, op in ((self.add_concept, "add"), (self.rename_concept, "rename"),
                           (self.set_repeats, "repeats"), (self.remove_concept, "remove")):
            on(button.click, functools.partial(self._concept_op, op), concept_in, views)
        on(self.concept_pick.change, self._pick_concept, [self.concept_pick],
           [self.concept_name, self.concept_repeats])
        on(self.preview_balance.click, self._preview_balance, [self.project, self.balance_target], [self.balance])
        on(self.apply_balance.click, self._apply_balance, [self.project, self.balance_target], [self.balance] + views)
        on(self.drop_dups.click, self._drop_dups, [self.project], views)
        self.reg_gen.register(views=views, redraw=self._views)

    # --- handlers: read values → one core call → updates ------------------------------------------------------------
    def _views(self, name: str | None) -> tuple:
        """Report, gallery, concept list, the last import, the next step, its button and the stamp drawn at."""
        if not name:
            return ("", [], gr.update(choices=[], value=None), render.job_html(None), "",
                    render.next_html(next_step.dataset_next(None)), gr.update(visible=False), "")
        view = self.studio.dataset_view(name)
        report, status = view.report, view.status
        images = [(str(t.file), t.image.split("/", 1)[1]) for t in view.thumbs]
        html = render.report_html(report)
        if len(report.entries) > GALLERY_LIMIT:
            html += f"<p>The gallery shows the first {GALLERY_LIMIT} of {len(report.entries)} images.</p>"
        folders = [c.folder for c in report.concepts]
        return (html, images, gr.update(choices=folders, value=folders[0] if folders else None),
                *self._last_import(name), render.next_html(next_step.dataset_next(status)),
                gr.update(visible=bool(next_step.propose_repeats(status))), view.stamp)

    def _last_import(self, name: str) -> tuple[str, str]:
        """The newest import's bar and its outcome; a failure's reason shows once, in the outcome."""
        last: JobState | None = next((j for j in self.studio.jobs.list(name) if j.kind == "import"), None)
        outcome = ""
        if last and last.result:
            outcome = render.import_html(last.result)
        elif last and last.error:
            outcome = render.error_html(last.error)
        return render.job_html(last, with_error=False), outcome

    def _select(self, name: str | None) -> tuple:
        return (*self._views(name), *self._settings(name))

    def sync(self, name: str | None, stamp: str) -> tuple:
        """Redrawn (views and settings) when the project changed since `stamp`; else left as it is."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        return self._select(name)

    def _options(self, concept: str, repeats: float | None, reg: bool) -> dict:
        if isinstance(repeats, float) and repeats.is_integer():
            repeats = int(repeats)  # gradio's Number gives floats; the core refuses fractions with its reason
        if repeats == 0:
            repeats = None  # 0 (or empty: gradio 3 sends 0) keeps an existing concept's repeats; a new one gets 1
        return {"concept": (concept or "").strip(), "repeats": repeats, "kind": "reg" if reg else "dataset"}

    def _need_project(self, name: str | None) -> str:
        if not name:
            raise LorakitError("Choose or create a project first.")
        return name

    def _start_uploads(self, name: str, files: Any, concept: str, repeats: float, reg: bool) -> tuple[str, str]:
        files = uploaded(files)
        if not files:
            raise LorakitError("Drop some images on the upload box first.")
        job = self.studio.start_import(self._need_project(name), uploads=files, **self._options(concept, repeats, reg))
        return render.job_html(job), ""

    def _start_folder(self, name: str, folder: str, concept: str, repeats: float, reg: bool) -> tuple[str, str]:
        if not (folder or "").strip():
            raise LorakitError("Type the folder to import from.")
        job = self.studio.start_import(self._need_project(name), paths=[folder.strip()],
                                       **self._options(concept, repeats, reg))
        return render.job_html(job), ""

    def _finished(self, name: str | None) -> tuple:
        return (*self._views(name), None, 0)  # the upload box cleared; repeats back to 0, "keep"

    def _propose_for_upload(self, name: str | None, files: Any, concept: str, reg: bool) -> Any:
        """Repeats for the dropped images, from the step calculator (reg sets follow the training images)."""
        dropped = sum(1 for _, original in uploaded(files) if Path(original).suffix.lower() in IMAGE_SUFFIXES)
        if not name or not dropped or reg:
            return gr.update()
        status = self.studio.status(name)
        target = (concept or "").strip() or name
        here = next((c for c in status.concepts if c.name == target), None)
        others = status.epoch_images - (here.images * here.repeats if here else 0)
        return next_step.proposed_repeats(dropped + (here.images if here else 0), others)

    def _use_proposed(self, name: str | None) -> tuple:
        status = self.studio.status(self._need_project(name))
        self.studio.apply_balance(name, next_step.propose_repeats(status))
        return self._views(name)

    def _cancel(self, name: str | None) -> str:
        jobs = [j for j in self.studio.jobs.list(name) if j.active and j.kind == "import"] if name else []
        for job in jobs:
            self.studio.jobs.cancel(job.id)
        return render.job_html(self.studio.jobs.get(jobs[0].id) if jobs else None, with_error=False)

    def _pick_concept(self, relpath: str | None) -> tuple[Any, Any]:
        if not relpath:
            return "", 1
        repeats, name = relpath.split("/", 1)[1].split("_", 1)
        return name, int(repeats)

    def _settings(self, name: str | None) -> tuple:
        if not name:
            return "", 512, 100, 6, "#ffffff", ""
        s = self.studio.settings(name)
        return (", ".join(s.trigger_words), s.resolution, round(s.max_image_pixels / 1e6, 1),
                s.near_duplicate_distance, s.background, s.notes)

    def _save_settings(self, name: str, triggers: str, resolution: float, max_mp: float, distance: float,
                       background: str, notes: str) -> tuple:
        words = tuple(w.strip() for w in (triggers or "").split(",") if w.strip())
        self.studio.update_settings(
            self._need_project(name), trigger_words=words, resolution=int(resolution or 512),
            max_image_pixels=int(round((max_mp or 0) * 1e6)), near_duplicate_distance=int(distance or 0),
            background=(background or "#ffffff").lower(), notes=notes or "")
        return (*self._settings(name), *self._views(name))

    def _concept_op(self, op: str, name: str, relpath: str | None, new_name: str, repeats: float,
                    as_reg: bool) -> tuple:
        name = self._need_project(name)
        kind = "reg" if relpath and relpath.startswith("reg/") else "dataset"
        current = self._pick_concept(relpath)[0] if relpath else ""
        new_name = (new_name or "").strip()
        if op == "add":
            self.studio.add_concept(name, new_name, repeats=int(repeats or 1), kind="reg" if as_reg else "dataset")
        elif not current:
            raise LorakitError("Choose a concept folder first.")
        elif op == "rename":
            self.studio.rename_concept(name, current, new_name, kind=kind)
        elif op == "repeats":
            self.studio.set_repeats(name, current, int(repeats or 1), kind=kind)
        else:
            self.studio.remove_concept(name, current, kind=kind)
        return self._views(name)

    def _preview_balance(self, name: str, target: float | None) -> str:
        plan = self.studio.balance_plan(self._need_project(name), int(target) if target else None)
        return render.balance_html(plan)

    def _apply_balance(self, name: str, target: float | None) -> tuple:
        plan = self.studio.balance_plan(self._need_project(name), int(target) if target else None)
        self.studio.apply_balance(name, plan)
        return (render.balance_html(self.studio.balance_plan(name, int(target) if target else None)),
                *self._views(name))

    def _drop_dups(self, name: str) -> tuple:
        self.studio.remove_exact_duplicates(self._need_project(name))
        return self._views(name)


def asset_path(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / name

"""The Train panel: preset, base model and overrides → Check (settings, steps, preflight) → Train; the runs of the
project with progress, samples and the loss curve; Stop, Resume, Register; setting up the trainer."""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Optional

import gradio as gr

from .. import next_step
from ..cli.train import DEFAULT_TORCH
from ..errors import LorakitError
from ..studio import Studio
from ..train import options as _options
from ..train import presets as _presets
from ..train.distributed import ACCELERATE_SCHEMA
from ..train.door import TrainingDoor
from ..train.environment import ProbeCache, cached_report, setup_trainer
from ..train.runner import RunSnapshot
from ..train.service import REPO_ROOT, TrainRequest, default_trainer, set_items
from . import fields
from . import render_train as render
from .compat import QUIET, bind, unchanged, uploaded

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int, str], None]
SETUP_KIND = "trainer-setup"
FIELDS = tuple(f for _, _, group in _options.form_groups() for f in group)  # panel order
FIELDS_PER_ROW = 3
GUIDE_WORDS = ("seeds/", "docs", "guide")  # a preset reason that cites one of these comes from a guide


class TrainPanel:
    """Trains the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project

    # --- layout -----------------------------------------------------------------------------------------------------
    def render(self) -> None:
        self.heading = gr.HTML(self._heading(None), elem_id="train_style_train_heading")
        self.stamp = gr.State("")  # the project's change stamp the panel was drawn at (see tab.py)
        with gr.Row():
            self.preset = gr.Dropdown(label="Preset", choices=self._preset_names(), elem_id="train_style_preset",
                                      interactive=True)
            self.base = gr.Dropdown(label="Base model", choices=list(self._checkpoints()),
                                    elem_id="train_style_base_model", interactive=True)
            self.refresh_lists = gr.Button("↻", elem_id="train_style_refresh_lists", scale=0, min_width=40)
            self.base_path = gr.Textbox(label="Or the base model's path (a .safetensors file in the models folder "
                                        "or an allowed folder)", elem_id="train_style_base_path")
        self._settings_fields()
        with gr.Row():
            self.overrides = gr.Textbox(label="More options (one name=value per line, e.g. max_train_epochs=8; any "
                                        "other sd-scripts argument too, checked by sd-scripts; wins over the fields)",
                                        lines=3, elem_id="train_style_overrides")
            self.prompts = gr.Textbox(label="Sample prompts (one per line; empty: each concept's name)", lines=3,
                                      elem_id="train_style_prompts")
        with gr.Row():
            self.output_name = gr.Textbox(label="Output name (default: the project's name)",
                                          elem_id="train_style_output_name")
            self.without_trigger = gr.Checkbox(label="Also sample each prompt without the trigger words", value=True,
                                               elem_id="train_style_without_trigger")
            self.accept_missing = gr.Checkbox(label="Train images without captions anyway",
                                              elem_id="train_style_accept_missing")
        with gr.Accordion("Multi-GPU", open=False, elem_id="train_style_multi_gpu"):
            with gr.Row():
                self.gpu_fields = [fields.component(f, f.default, elem_id=f"train_style_{f.name}")
                                   for f in ACCELERATE_SCHEMA.fields]
        with gr.Row():
            self.check = gr.Button("Check", elem_id="train_style_check")
            self.train = gr.Button("Train", elem_id="train_style_train", variant="primary")
            self.preset_name = gr.Textbox(label="Save these settings as preset", placeholder="my-style-preset",
                                          elem_id="train_style_preset_name")
            self.save_preset = gr.Button("Save preset", elem_id="train_style_save_preset", scale=0)
        self.plan = gr.HTML(elem_id="train_style_plan")
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

    def _settings_fields(self) -> None:
        """The preset's options as fields, grouped (basics open); each says why it matters and where its value
        came from, and is marked when changed. Filled when the preset changes."""
        gr.HTML('<p class="ts-note" id="train_style_fields_note">The preset&#39;s settings. Each field says why it '
                "matters and where its value comes from (preset, guide, default); a field you change is marked ✎ "
                "and overrides the preset. Changing the preset fills them again.</p>")
        self.fields: list[gr.components.Component] = []
        for key, title, group in _options.form_groups():
            with gr.Accordion(title, open=key == "basics", elem_id=f"train_style_group_{key}"):
                for start in range(0, len(group), FIELDS_PER_ROW):
                    with gr.Row():
                        for f in group[start:start + FIELDS_PER_ROW]:
                            self.fields.append(fields.component(f, f.default, elem_id=f"train_style_opt_{f.name}",
                                                               label=_title(f), info=f"{f.name}: {f.reason}"))

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self) -> None:
        # Handlers return at once (a run is a process, setup a job), so they skip gradio's queue like the Dataset
        # panel's.
        request = [self.project, self.preset, self.base, self.base_path, self.overrides, self.output_name,
                   self.prompts, self.without_trigger, self.accept_missing,
                   *self.gpu_fields, *self.fields]  # ACCELERATE_SCHEMA's fields, then the options' (FIELDS)
        bind(self.preset.change, self._fill, [self.preset], self.fields)
        for f, comp in zip(FIELDS, self.fields, strict=True):
            bind(comp.input, functools.partial(self._mark, f), [comp, self.preset], [comp], show_progress=QUIET)
        run_views = [self.runs, self.run_box, self.samples, self.queue_box, self.heading, self.stamp]
        bind(self.project.change, self._project_changed, [self.project], [self.plan, self.registered, *run_views])
        self.sync_inputs = [self.stamp, self.plan, self.runs, self.stage1_concepts, self.target_concepts]
        self.sync_outputs = [self.plan, self.stage1_concepts, self.target_concepts, *run_views]
        bind(self.refresh_lists.click, self._lists, [self.preset, self.base], [self.preset, self.base,
                                                                              self.trainer_status])
        bind(self.check.click, self._check, request, [self.plan])
        bind(self.save_preset.click, self._save_preset, [self.preset_name, *request], [self.preset, self.plan])
        bind(self.queue_up.click, functools.partial(self._move, -1), [self.project, self.runs], run_views)
        bind(self.queue_down.click, functools.partial(self._move, 1), [self.project, self.runs], run_views)
        bind(self.train.click, self._train, request, run_views)
        concept_lists = [self.stage1_concepts, self.target_concepts]
        bind(self.project.change, self._concept_choices, [self.project], concept_lists)
        bind(self.refresh_lists.click, self._concept_choices, [self.project, *concept_lists], concept_lists)
        bind(self.train_differential.click, self._train_differential,
            [self.stage1_concepts, self.target_concepts, *request], [self.plan, *run_views])
        # `input`, not `change`: handlers that redraw the list draw the run box themselves, and a redraw caused by
        # the list's new label must not draw a newer state under a stale label
        bind(self.runs.input, self._show, [self.project, self.runs], [self.run_box, self.samples])
        bind(self.refresh.click, self._refresh, [self.project, self.runs], [*run_views, self.trainer_status,
                                                                           self.setup_job])
        bind(self.stop.click, self._stop, [self.project, self.runs], run_views)
        bind(self.resume.click, self._resume, [self.project, self.runs], run_views)
        bind(self.register_run.click, self._register, [self.project, self.runs], [self.registered])
        bind(self.setup.click, self._setup, [self.torch_version, self.torch_index], [self.setup_job])
        bind(self.export.click, self._export, [self.project, self.runs, self.include_model], [self.bundle_out])
        bind(self.import_bundle.click, self._import_bundle, [self.project, self.bundle_in], run_views)
        # not queued either: it holds a worker thread for the few seconds of its probe, which is harmless, while a
        # queued event left by a closed page can hang the webui's "Reload UI"
        bind(self.doctor.click, self._doctor, [], [self.doctor_report])

    def load_event(self, blocks: gr.Blocks) -> None:
        blocks.load(self._lists, [self.preset, self.base], [self.preset, self.base, self.trainer_status], queue=False)

    # --- handlers: read values → one core call → updates ------------------------------------------------------------
    def _door(self) -> TrainingDoor:
        # whoever reaches the page is not trusted as the machine's user: only listed or confined .safetensors models;
        # a queued run starts through this process's queue worker (its lock keeps one start at a time)
        return self.studio.training(local_user=False, start="worker")

    def _preset_names(self) -> list[str]:
        return [p.name for p in self._door().presets()]

    def _checkpoints(self) -> dict[str, str]:
        """Dropdown label (`name (arch)`) → path."""
        return {f"{c.name} ({c.arch})": str(c.path) for c in self.studio.host.checkpoints()}

    def _lists(self, preset: Optional[str], base: Optional[str]) -> tuple[Any, Any, str]:
        names, bases = self._preset_names(), list(self._checkpoints())
        return (gr.update(choices=names, value=preset if preset in names else (names[0] if names else None)),
                gr.update(choices=bases, value=base if base in bases else (bases[0] if bases else None)),
                self._trainer_status())

    def _heading(self, name: Optional[str], latest: Optional[RunSnapshot] = None) -> str:
        """The project, its trigger words and what to do next (`latest`: the newest run)."""
        if not name:
            return render.heading_html("", "", next_step.train_next(None))
        project = self.studio.project(name)
        words = ", ".join(project.settings.trigger_words) or "none"
        return render.heading_html(name, words, next_step.train_next(next_step.project_status(project), latest))

    def _request(self, name: Optional[str], *values: Any) -> TrainRequest:
        """The request the panel's values make (see _request_data)."""
        return TrainRequest.from_dict(self._request_data(name, *values), project=name or "")

    def _request_data(self, name: Optional[str], preset: Optional[str], base: Optional[str], base_path: str,
                      overrides: str, output_name: str, prompts: str, without_trigger: bool,
                      accept_missing: bool, *field_values: Any) -> dict[str, Any]:
        """The request as plain data (TrainRequest.from_dict) from the panel's values; `field_values`: the
        multi-GPU fields, then the options' fields."""
        if not name:
            raise LorakitError("Choose or create a project first (above the panels).")
        if not preset:
            raise LorakitError("Choose a preset.")
        model = (base_path or "").strip() or self._checkpoints().get(base or "", "")
        if not model:
            raise LorakitError("Choose a base model or type its path.")
        lines = [ln.strip() for ln in (overrides or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
        typed, extra = set_items(lines)  # a name that is not an option: an extra sd-scripts argument
        gpu_count = len(ACCELERATE_SCHEMA.fields)
        gpu = fields.read_all(ACCELERATE_SCHEMA.fields, field_values[:gpu_count]) if field_values else {}
        return {"preset": preset, "base_model": model,
                "overrides": {**self._field_overrides(preset, field_values[gpu_count:]), **typed},  # the text wins
                "extra_args": extra, "output_name": (output_name or "").strip() or None,
                "samples": [p.strip() for p in (prompts or "").splitlines() if p.strip()],
                "without_trigger": bool(without_trigger), "accept_missing_captions": bool(accept_missing), **gpu}

    # --- the settings fields -----------------------------------------------------------------------------------------
    def _preset_settings(self, preset: str) -> tuple[_presets.Preset, _presets.ResolvedSettings]:
        p = self._door().preset(preset)
        return p, _presets.resolve(p)

    def _field_overrides(self, preset: str, values: tuple[Any, ...]) -> dict[str, Any]:
        """The fields whose value differs from the preset's: the user's overrides (none before the fields)."""
        if not values:
            return {}
        return fields.changed(FIELDS, values, self._preset_settings(preset)[1].values)

    def _fill(self, preset: Optional[str]) -> tuple:
        """Every field at the preset's value, labelled with where it came from."""
        if not preset:
            return unchanged(len(FIELDS))
        p, settings = self._preset_settings(preset)
        return tuple(gr.update(value=fields.shown(f, settings.values[f.name]), label=_label(f, p),
                               info=_info(f, p)) for f in FIELDS)

    def _mark(self, f: Any, raw: Any, preset: Optional[str]) -> Any:
        """The field's label after the user changed it: ✎ and the preset's value, or back to its origin."""
        if not preset:
            return gr.update()
        p, settings = self._preset_settings(preset)
        try:
            value = fields.read(f, raw)
        except _options.InvalidOption as e:
            return gr.update(label=f"⚠ {_title(f)} · not valid: {'; '.join(e.problems)}")
        if fields.same(value, settings.values[f.name]):
            return gr.update(label=_label(f, p))
        was = fields.shown(f, settings.values[f.name])
        return gr.update(label=f"✎ {_title(f)} · yours (preset: {'none' if was in ('', None) else was})")

    def _check(self, name: Optional[str], *values: Any) -> str:
        plan = self._door().plan(name or "", self._request_data(name, *values))
        return render.plan_html(plan, {o["name"]: o["reason"] for o in _options.describe()})

    def _train(self, name: Optional[str], *values: Any) -> tuple:
        made = self._door().train(name or "", self._request_data(name, *values))
        return self._run_views(name, made.snapshot.id)

    def _concept_choices(self, name: Optional[str], *chosen: Optional[list[str]]) -> tuple[Any, ...]:
        """The project's concepts for both lists, keeping what is still chosen (↻ after adding concepts)."""
        names = [c.name for c in self.studio.project(name).concepts("dataset")] if name else []
        chosen = chosen or ([], [])
        return tuple(gr.update(choices=names, value=[n for n in (c or []) if n in names]) for c in chosen)

    def _train_differential(self, stage1: Optional[list[str]], targets: Optional[list[str]], name: Optional[str],
                            *values: Any) -> tuple:
        data = {**self._request_data(name, *values), "target_concepts": list(targets or ()),
                "stage1_concepts": list(stage1 or ())}
        made = self._door().train_differential(name or "", data).runs
        return (render.differential_html(made.stage1, made.stage2), *self._run_views(name, made.stage1.id))

    def _project_changed(self, name: Optional[str]) -> tuple:
        return ("", "", *self._run_views(name, None))

    def sync(self, name: Optional[str], stamp: str, plan: str, choice: Optional[str], *concepts: Any) -> tuple:
        """Redrawn when the project changed since `stamp` (images, captions, settings, runs); else as it is. A
        step plan shown is from before the change, so it gives way to a note."""
        if name and stamp == next_step.change_stamp(self.studio.project(name)):
            return unchanged(len(self.sync_outputs))
        same = bool(name and stamp.startswith(f"{name}:"))
        note = render.note_html("The project changed since this check: press Check again.") if plan and same else ""
        return (note, *self._concept_choices(name, *concepts),
                *self._run_views(name, render.run_id_of(choice) or None if same else None))

    def _run_views(self, name: Optional[str], run_id: Optional[str]) -> tuple[Any, str, list, str, str, str]:
        """The runs dropdown (`run_id` chosen, else the newest), the run box, the samples, the queue, the heading
        with the next step, and the change stamp they were drawn at."""
        stamp = next_step.change_stamp(self.studio.project(name)) if name else ""
        snaps = self._door().runs(name) if name else []
        chosen = next((s for s in snaps if s.id == run_id), snaps[0] if snaps else None)
        choices = render.run_choices(snaps)
        value = render.run_choices([chosen])[0] if chosen else None
        return (gr.update(choices=choices, value=value), render.run_html(chosen), render.sample_items(chosen),
                self._queue_html(), self._heading(name, snaps[0] if snaps else None), stamp)

    def _queue_html(self) -> str:
        rows = self._door().queue_listing()
        return render.queue_html([(r["project"], r["run"], r["state"]) for r in rows])

    def _move(self, offset: int, name: Optional[str], choice: Optional[str]) -> tuple:
        run_id = self._need_run(name, choice)
        self._door().queue_move(name or "", run_id, offset)
        return self._run_views(name, run_id)

    def _save_preset(self, preset_name: str, name: Optional[str], *values: Any) -> tuple[Any, str]:
        req = self._request(name, *values)
        if req.extra_args:
            raise LorakitError(f"A preset holds Train Style options only, not the sd-scripts arguments "
                               f"{', '.join(req.extra_args)}: take them out of the overrides to save the preset.")
        path = self._door().save_preset((preset_name or "").strip(), source=req.preset, overrides=req.overrides,
                                         override_source="tab overrides")
        names = self._preset_names()
        return gr.update(choices=names, value=path.stem), render.note_html(f"Saved preset {path.stem} ({path}).")

    def _snapshot(self, name: Optional[str], choice: Optional[str]) -> Optional[RunSnapshot]:
        run_id = render.run_id_of(choice)
        return self._door().run(name, run_id) if name and run_id else None

    def _need_run(self, name: Optional[str], choice: Optional[str]) -> str:
        if not name or not render.run_id_of(choice):
            raise LorakitError("Choose a run first.")
        return render.run_id_of(choice)

    def _show(self, name: Optional[str], choice: Optional[str]) -> tuple[str, list]:
        snap = self._snapshot(name, choice)
        return render.run_html(snap), render.sample_items(snap)

    def _refresh(self, name: Optional[str], choice: Optional[str]) -> tuple:
        setups = [j for j in self.studio.jobs.list("") if j.kind == SETUP_KIND]
        return (*self._run_views(name, render.run_id_of(choice) or None),
                self._trainer_status(),
                render.setup_job_html(setups[0] if setups else None))

    def _stop(self, name: Optional[str], choice: Optional[str]) -> tuple:
        run_id = self._need_run(name, choice)
        self._door().stop(name or "", run_id)
        return self._run_views(name, run_id)

    def _resume(self, name: Optional[str], choice: Optional[str]) -> tuple:
        run_id = self._need_run(name, choice)
        self._door().resume(name or "", run_id)
        return self._run_views(name, run_id)

    def _export(self, name: Optional[str], choice: Optional[str], include_model: bool) -> str:
        run_id = self._need_run(name, choice)
        return str(self._door().export(name or "", run_id, include_model=bool(include_model)))

    def _import_bundle(self, name: Optional[str], upload: Any) -> tuple:
        files = uploaded([upload] if upload and not isinstance(upload, list) else upload)
        if not name or not files:
            raise LorakitError("Choose a project, then drop a trained bundle (.zip) on the box.")
        snap = self._door().import_bundle(name, files[0][0], uploaded=True)
        return self._run_views(name, snap.id)

    def _register(self, name: Optional[str], choice: Optional[str]) -> str:
        run_id = self._need_run(name, choice)
        return render.registered_html(self._door().register(name or "", run_id))

    def _setup(self, torch_version: str, index_url: str) -> str:
        if os.environ.get("TRAIN_STYLE_TRAINER_PYTHON"):
            raise LorakitError("TRAIN_STYLE_TRAINER_PYTHON names an existing trainer environment; Set up makes our "
                               "own. Unset it to use ours.")
        work = setup_work(self.studio, (torch_version or DEFAULT_TORCH).strip(), (index_url or "").strip() or None)
        return render.setup_job_html(self.studio.jobs.start(kind=SETUP_KIND, project="", title="Trainer setup",
                                                            work=work))

    def _doctor(self) -> str:
        return render.doctor_html(self._door().trainer_report(refresh=True))

    def _trainer_status(self) -> str:
        env = default_trainer(self.studio.host)
        cache = ProbeCache.under(self.studio.host.projects_home())
        return render.trainer_html(env, cached_report(env, cache, repo_root=REPO_ROOT))




def _origin(f: Any, p: _presets.Preset) -> str:
    """Where the preset's value of `f` comes from: a guide it cites, the preset's own rule, or the default."""
    if f.name not in p.values:
        return "default"
    reason = p.values[f.name].reason
    return "guide" if any(w in reason for w in GUIDE_WORDS) else "preset"


def _label(f: Any, p: _presets.Preset) -> str:
    return f"{_title(f)} · {_origin(f, p)}"


def _title(f: Any) -> str:
    return f.title[:1].upper() + f.title[1:]


def _info(f: Any, p: _presets.Preset) -> str:
    """The option's sd-scripts name and reason, then the preset's reason for its value."""
    why = f"{f.name}: {f.reason}"
    if f.name not in p.values:
        return why
    return f"{why} — {p.label}: {p.values[f.name].reason}"


def setup_work(studio: Studio, torch_version: str, index_url: Optional[str]) -> Callable[..., dict]:
    """The job body of 'Set up trainer': the same logged, resumable setup as `trainer setup` on the CLI."""
    env = default_trainer(studio.host)

    def work(progress: ProgressFn, cancel: threading.Event) -> dict:
        report = setup_trainer(env.venv_dir, env.sd_scripts_dir, torch_version=torch_version,
                               torch_index_url=index_url, log=log.info, progress=progress, cancel=cancel)
        return {"ran": list(report.ran), "skipped": list(report.skipped), "warnings": list(report.warnings)}
    return work

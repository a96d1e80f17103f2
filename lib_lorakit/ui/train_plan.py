"""The Train panel's settings: preset, base model, the preset's options as fields, more options, prompts and
multi-GPU → Check (settings, steps, preflight) and Save preset. It builds the request every training button sends."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Optional

import gradio as gr

from ..errors import LorakitError
from ..studio import Studio
from ..train import options as _options
from ..train import presets as _presets
from ..train.distributed import ACCELERATE_SCHEMA
from ..train.door import TrainingDoor
from ..train.service import TrainRequest, set_items
from . import fields
from . import render_train as render
from .compat import QUIET, bind, unchanged

FIELDS = tuple(f for _, _, group in _options.form_groups() for f in group)  # panel order
FIELDS_PER_ROW = 3
GUIDE_WORDS = ("seeds/", "docs", "guide")  # a preset reason that cites one of these comes from a guide


class PlanSection:
    """What to train and how; `door` hands out the tab's training door."""

    def __init__(self, studio: Studio, door: Callable[[], TrainingDoor]):
        self.studio = studio
        self.door = door

    # --- layout -----------------------------------------------------------------------------------------------------
    def render(self) -> None:
        with gr.Row():
            self.preset = gr.Dropdown(label="Preset", choices=self.preset_names(), elem_id="train_style_preset",
                                      interactive=True)
            self.base = gr.Dropdown(label="Base model", choices=list(self.checkpoints()),
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

    @property
    def inputs(self) -> list[gr.components.Component]:
        """What every training button reads, in `request_data`'s order: the multi-GPU fields, then the options'."""
        return [self.preset, self.base, self.base_path, self.overrides, self.output_name, self.prompts,
                self.without_trigger, self.accept_missing, *self.gpu_fields, *self.fields]

    # --- events -----------------------------------------------------------------------------------------------------
    def register(self, project: gr.components.Component) -> None:
        request = [project, *self.inputs]
        bind(self.preset.change, self._fill, [self.preset], self.fields)
        for f, comp in zip(FIELDS, self.fields, strict=True):
            bind(comp.input, functools.partial(self._mark, f), [comp, self.preset], [comp], show_progress=QUIET)
        bind(self.check.click, self._check, request, [self.plan])
        bind(self.save_preset.click, self._save_preset, [self.preset_name, *request], [self.preset, self.plan])

    # --- lists ------------------------------------------------------------------------------------------------------
    def preset_names(self) -> list[str]:
        return [p.name for p in self.door().presets()]

    def checkpoints(self) -> dict[str, str]:
        """Dropdown label (`name (arch)`) → path."""
        return {f"{c.name} ({c.arch})": str(c.path) for c in self.studio.host.checkpoints()}

    def lists(self, preset: Optional[str], base: Optional[str]) -> tuple[Any, Any]:
        """The preset and base-model dropdowns filled again, keeping what is chosen while it still exists."""
        names, bases = self.preset_names(), list(self.checkpoints())
        return (gr.update(choices=names, value=preset if preset in names else (names[0] if names else None)),
                gr.update(choices=bases, value=base if base in bases else (bases[0] if bases else None)))

    # --- the request ------------------------------------------------------------------------------------------------
    def request(self, name: Optional[str], *values: Any) -> TrainRequest:
        """The request the panel's values make (see request_data)."""
        return TrainRequest.from_dict(self.request_data(name, *values), project=name or "")

    def request_data(self, name: Optional[str], preset: Optional[str], base: Optional[str], base_path: str,
                     overrides: str, output_name: str, prompts: str, without_trigger: bool,
                     accept_missing: bool, *field_values: Any) -> dict[str, Any]:
        """The request as plain data (TrainRequest.from_dict) from the panel's values; `field_values`: the
        multi-GPU fields, then the options' fields."""
        if not name:
            raise LorakitError("Choose or create a project first (above the panels).")
        if not preset:
            raise LorakitError("Choose a preset.")
        model = (base_path or "").strip() or self.checkpoints().get(base or "", "")
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

    # --- the settings fields ----------------------------------------------------------------------------------------
    def _preset_settings(self, preset: str) -> tuple[_presets.Preset, _presets.ResolvedSettings]:
        p = self.door().preset(preset)
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

    # --- handlers ---------------------------------------------------------------------------------------------------
    def _check(self, name: Optional[str], *values: Any) -> str:
        plan = self.door().plan(name or "", self.request_data(name, *values))
        return render.plan_html(plan, {o["name"]: o["reason"] for o in _options.describe()})

    def _save_preset(self, preset_name: str, name: Optional[str], *values: Any) -> tuple[Any, str]:
        req = self.request(name, *values)
        if req.extra_args:
            raise LorakitError(f"A preset holds Train Style options only, not the sd-scripts arguments "
                               f"{', '.join(req.extra_args)}: take them out of the overrides to save the preset.")
        path = self.door().save_preset((preset_name or "").strip(), source=req.preset, overrides=req.overrides,
                                       override_source="tab overrides")
        names = self.preset_names()
        return gr.update(choices=names, value=path.stem), render.note_html(f"Saved preset {path.stem} ({path}).")


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

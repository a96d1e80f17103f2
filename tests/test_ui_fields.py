"""Gradio fields from declared settings (ui/fields.py): every training option and audit threshold becomes a
component whose value reads back as the same typed value, so an untouched field is never an override."""

from __future__ import annotations

import gradio as gr
import pytest

from lib_lorakit.captions.audit import AUDIT_SCHEMA
from lib_lorakit.schema import InvalidSettings
from lib_lorakit.train import options, presets
from lib_lorakit.ui import fields


@pytest.mark.parametrize("preset", sorted(presets.BUILTIN))
def test_every_preset_value_survives_the_round_trip_through_its_field(preset):
    values = presets.resolve(preset).values
    raws = tuple(fields.shown(f, values[f.name]) for f in options.OPTIONS)
    assert fields.changed(options.OPTIONS, raws, values) == {}


def test_components_are_built_with_the_reason_as_info():
    with gr.Blocks():
        made = {f.name: fields.component(f, f.default) for f in (*options.OPTIONS, *AUDIT_SCHEMA.fields)}
    assert isinstance(made["learning_rate"], gr.Number)
    assert isinstance(made["enable_bucket"], gr.Checkbox)
    assert isinstance(made["optimizer_type"], gr.Dropdown)
    assert isinstance(made["clip_skip"], gr.Textbox)  # may be none: empty text
    assert "none" in fields.choices(options.OPTION_MAP["use_tucker"])
    assert made["max_tokens"].info == AUDIT_SCHEMA["max_tokens"].reason


def test_a_changed_field_is_an_override_and_a_bad_one_names_the_field():
    base = presets.resolve("style-sd15-lora").values
    raws = [fields.shown(f, base[f.name]) for f in options.OPTIONS]
    names = [f.name for f in options.OPTIONS]
    raws[names.index("network_dim")] = 24.0  # gradio's number box may send a float
    raws[names.index("clip_skip")] = "2"
    raws[names.index("max_token_length")] = "225"
    assert fields.changed(options.OPTIONS, tuple(raws), base) == {"network_dim": 24, "clip_skip": 2,
                                                                   "max_token_length": 225}
    raws[names.index("network_dim")] = 2.5
    raws[names.index("learning_rate")] = None
    with pytest.raises(InvalidSettings) as e:
        fields.changed(options.OPTIONS, tuple(raws), base)
    assert "network_dim" in str(e.value) and "learning_rate" in str(e.value)

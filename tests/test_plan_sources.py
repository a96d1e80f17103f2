"""A value the user set reads "yours" in the plan, whichever front end set it (panel field, panel text box, the
CLI's --set, the API's body); a preset's value keeps its preset as the source."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

pytest.importorskip("gradio")

from test_one_door import PRESET, by_cli, fronts, request  # noqa: E402,F401  (fronts: the fixture)

from lib_lorakit.train.distributed import ACCELERATE_SCHEMA  # noqa: E402
from lib_lorakit.ui import fields  # noqa: E402
from lib_lorakit.ui.train_plan import FIELDS  # noqa: E402


def sources_in_html(html: str) -> dict[str, str]:
    """option → source, from the plan's settings table as the panel draws it."""
    rows = re.findall(r"<tr title=\"[^\"]*\"><td>([^<]*)</td><td>[^<]*</td><td>([^<]*)</td></tr>", html)
    return {unescape(name): unescape(source) for name, source in rows}


def test_a_value_the_user_set_reads_yours_in_every_front_end(fronts):  # noqa: F811
    home, model, client, panel, studio = fronts
    data = request(model)  # overrides: max_train_steps, network_dim, learning_rate
    out = by_cli(home, data)
    assert out.returncode == 0, out.stdout + out.stderr
    by_cli_plan = {r["name"]: r["source"] for r in json.loads(out.stdout)["plan"]["settings"]}
    res = client.post("/train-style/v1/projects/art/train/plan", json=data)
    assert res.status_code == 200, res.text
    by_api = {r["name"]: r["source"] for r in res.json()["settings"]}
    # the panel: network_dim typed into the "More options" box, learning_rate and max_train_steps in their fields
    gpu = [data.get(f.name, f.default) for f in ACCELERATE_SCHEMA.fields]
    field_values = [{"learning_rate": "0.0002", "max_train_steps": 40}.get(f.name, None) for f in FIELDS]
    preset_values = panel.plan._preset_settings(PRESET)[1].values
    field_values = [v if v is not None else fields.shown(f, preset_values[f.name])
                    for f, v in zip(FIELDS, field_values, strict=True)]
    html = panel.plan._check("art", PRESET, None, data["base_model"], "network_dim=8", "door", "", False, False,
                             *gpu, *field_values)
    by_panel = sources_in_html(html)
    for name in ("max_train_steps", "network_dim", "learning_rate"):
        assert by_cli_plan[name] == by_api[name] == by_panel[name] == "yours", name
    # set max_train_steps, so the preset's epochs are off: said with the same word
    assert by_panel["max_train_epochs"] == "yours (set max_train_steps, so max_train_epochs is off)"
    assert by_panel["network_alpha"].startswith(f"preset {PRESET}: ")
    assert not any("--set" in s for s in (*by_cli_plan.values(), *by_api.values(), *by_panel.values()))


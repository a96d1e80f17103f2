"""install.py must never change a package the webui pins; our ranges must admit every pin."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib_lorakit.requirements import FORGE_PINS, WEBUI_PINS, admits, parse_requirements, plan_install

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("pins", [WEBUI_PINS, FORGE_PINS], ids=["webui-1.10.1", "forge"])
def test_requirements_admit_the_webui_pins(pins):
    reqs = {r.key: r for r in parse_requirements((ROOT / "requirements.txt").read_text())}
    checked = [name for name in pins if name in reqs]
    assert checked, "requirements.txt names none of the pinned packages: the test would prove nothing"
    refused = [f"{name} {pins[name]} vs {reqs[name].specifier}" for name in checked
               if not admits(reqs[name], pins[name])]
    assert refused == []


def test_requirements_pin_nothing_exactly():
    exact = [r.line for r in parse_requirements((ROOT / "requirements.txt").read_text()) if "==" in r.specifier]
    assert exact == []


def test_plan_installs_only_what_is_missing_and_leaves_mismatches_alone(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("gradio>=3.41.2,<5\nPillow>=9.5\ntomli-w>=1.0\nnumpy>=1.26\nneverthere>=1; python_version < '3'\n")
    have = {"gradio": "3.41.2", "Pillow": "9.1.0", "numpy": "1.26.2"}
    plan = plan_install(req, version_of=have.get)
    assert plan.install == ["tomli-w>=1.0"]
    assert len(plan.mismatched) == 1 and "Pillow 9.1.0" in plan.mismatched[0]


def test_a_bad_pin_would_be_caught():
    (bad,) = parse_requirements("gradio>=4\n")
    assert not admits(bad, WEBUI_PINS["gradio"])


def test_a_gpu_onnxruntime_counts_as_onnxruntime(tmp_path):
    # installing the CPU build over onnxruntime-gpu would overwrite its files and lose the GPU
    req = tmp_path / "requirements.txt"
    req.write_text("onnxruntime>=1.16\n")
    assert plan_install(req, version_of={"onnxruntime-gpu": "1.18.0"}.get).install == []
    assert plan_install(req, version_of={}.get).install == ["onnxruntime>=1.16"]


def test_the_environment_is_pinned_as_it_is_so_pip_can_only_add():
    from importlib import metadata

    from lib_lorakit.requirements import canonical, pinned_environment

    pins = {canonical(line.split("==")[0]): line.split("==")[1] for line in pinned_environment()}
    assert pins["numpy"] == metadata.version("numpy")
    assert pins["pillow"] == metadata.version("Pillow")
    assert set(pins) == {canonical(d.metadata["Name"]) for d in metadata.distributions() if d.metadata["Name"]}

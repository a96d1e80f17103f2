"""Grids made through a generator into eval/<id>/, their infotext read back, cancel and resume, and cards.

The generators here are thin test classes that paint each request in a colour of its own and write a webui-style
infotext: they stand in for the webui and sd-scripts only so that the logic around them can be checked.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import struct
import subprocess
import threading
from io import StringIO
from pathlib import Path
from typing import Optional

import pytest
from PIL import Image

from lib_lorakit.errors import Cancelled, LorakitError
from lib_lorakit.evaluate import GenImage, GenRequest, GridResult
from lib_lorakit.evaluate.grid import SR
from lib_lorakit.evaluate.service import (
    EvalService,
    GridRequest,
    compose_grid,
    grid_infotext,
)
from lib_lorakit.fsutil import atomic_write_json, read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.schema import InvalidSettings
from lib_lorakit.train.runner import Runs, RunSpec

W = H = 64
FILES = ["zq-000001.safetensors", "zq-000002.safetensors", "zq.safetensors"]


def write_lora(path: Path) -> None:
    header = {"lora_unet_a.lora_up.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
              "__metadata__": {"ss_base_model_version": "sd_v1", "ss_output_name": "zq"}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))


def full_prompt(req: GenRequest) -> str:
    return req.prompt + "".join(f" <lora:{lo.name}:{lo.weight:g}>" for lo in req.loras)


def colour(text: str) -> tuple[int, int, int]:
    d = hashlib.sha256(text.encode()).digest()
    return d[0], d[1], d[2]


def infotext(prompt: str, req: GenRequest) -> str:
    return (f"{prompt}\nSteps: {req.steps}, Sampler: {req.sampler}, CFG scale: {req.cfg:g}, Seed: {req.seed}, "
            f"Size: {req.width}x{req.height}")


class PaintingGenerator:
    """Paints each request in the colour of its full prompt (and seed); `stop_after` sets the cancel flag after that
    many calls, `fail_after` raises a bug then."""

    name = "test-painter"

    def __init__(self, stop_after: Optional[int] = None, fail_after: Optional[int] = None):
        self.calls: list[list[GenRequest]] = []
        self.stop_after, self.fail_after = stop_after, fail_after

    def generate(self, requests, *, progress=None, cancel=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("the generator crashed")
        self.calls.append(list(requests))
        out = []
        for i, req in enumerate(requests):
            text = full_prompt(req)
            out.append(GenImage(Image.new("RGB", (req.width, req.height), colour(f"{text}|{req.seed}")),
                                infotext(text, req), req.seed, req))
            if progress:
                progress(i + 1, len(requests), "painting")
        if self.stop_after is not None and len(self.calls) >= self.stop_after and cancel is not None:
            cancel.set()
        return out


class ScriptGenerator(PaintingGenerator):
    """Also makes whole grids as the webui's X/Y/Z plot script does: Prompt S/R replaces the first value in the
    prompt per cell (X fastest); the grid's infotext carries the script's fields."""

    name = "test-xyz"

    def __init__(self) -> None:
        super().__init__()
        self.grids: list[tuple[GenRequest, list]] = []

    def xyz_grid(self, base, *, x, y=None, z=None, progress=None, cancel=None):
        axes = [a for a in (x, y, z) if a is not None]
        self.grids.append((base, axes))
        cells = []
        import itertools

        for combo in itertools.product(*reversed([range(len(v)) for _, v in axes])):
            prompt, seed = base.prompt, base.seed
            for (label, values), i in zip(axes, reversed(combo), strict=True):
                if label == SR:
                    assert values[0] in prompt
                    prompt = prompt.replace(values[0], values[i])
                elif label == "Seed":
                    seed = int(values[i])
            req = GenRequest(prompt=prompt, seed=seed, width=base.width, height=base.height)
            cells.append(GenImage(Image.new("RGB", (base.width, base.height), colour(f"{prompt}|{seed}")),
                                  infotext(prompt, req), seed, req))
        fields = ", ".join(f'{k} Type: {label}, {k} Values: "{", ".join(v)}"'
                           for k, (label, v) in zip("XYZ", axes, strict=False))
        grid = Image.new("RGB", (base.width * len(axes[0][1]), base.height), "white")
        return GridResult(grid=grid, infotext=f"{base.prompt}\nSteps: {base.steps}, Script: X/Y/Z plot, {fields}",
                          cells=cells)


@pytest.fixture
def setup(workspace, tmp_path):
    project = workspace.create("demo", trigger_words=("zq",))
    runs = Runs(project)
    run_dir = runs.new_dir("t")
    runs.create(run_dir, RunSpec(argv=(), cwd=str(run_dir), output_name="zq"), files={},
                meta={"trigger_words": ["zq"], "base_arch": "SD1"})
    for name in FILES:
        write_lora(run_dir / name)
    data = read_json(run_dir / "run.json")
    data.update(state="done", files=FILES)
    atomic_write_json(run_dir / "run.json", data)
    host = StandaloneHost(home=project.root.parent, lora=tmp_path / "Lora", models=tmp_path / "models")
    return host, project, run_dir.name


def request(run: str, **kw) -> GridRequest:
    data = {"run": run, "prompts": ["a cat"], "weights": "0.5,1", "width": W, "height": H,
            "with_and_without_trigger": True, **kw}
    return GridRequest.from_dict(data)


def cell_colour_in_grid(grid: Image.Image, index: int, ncols: int, rows: int) -> tuple:
    left = grid.width - ncols * W
    top = grid.height - rows * H
    x, y = left + (index % ncols) * W + W // 2, top + (index // ncols) * H + H // 2
    return grid.getpixel((x, y))


def test_a_grid_keeps_cells_with_infotext_and_composes_them_under_their_labels(setup):
    host, project, run = setup
    gen = PaintingGenerator()
    report = EvalService(host).run("demo", request(run), generator=gen)
    assert report["state"] == "done" and report["made"] == 12 == len(report["cells"])
    folder = project.root / report["grid"].rsplit("/", 1)[0]
    assert report["grid"].startswith("eval/") and (project.root / report["grid"]).is_file()
    # one generator call (one sd-scripts process) for the whole checkpoint, LoRA by LoRA
    assert [len(c) for c in gen.calls] == [12]
    assert [r.loras[0].name for r in gen.calls[0]] == ["zq"] * 4 + ["zq-000001"] * 4 + ["zq-000002"] * 4
    for cell in report["cells"]:
        with Image.open(project.root / cell["image"]) as im:
            text = f"{cell['prompt']} <lora:{cell['lora']}:{float(cell['weight']):g}>"
            assert im.info["parameters"].startswith(text + "\n")
            assert im.getpixel((1, 1)) == colour(f"{text}|1")
    # cells × labels: the weight across, epoch · prompt down; each cell painted where its labels say
    cols, rows = report["layout"]
    assert cols == ["0.5", "1"]
    assert rows[:4] == ["epoch 1 · a cat (with trigger)", "epoch 2 · a cat (with trigger)",
                        "final · a cat (with trigger)", "epoch 1 · a cat (without trigger)"]
    with Image.open(folder / "grid.png") as grid:
        grid.load()
        for cell in report["cells"]:
            want = colour(f"{cell['prompt']} <lora:{cell['lora']}:{float(cell['weight']):g}>|1")
            assert cell_colour_in_grid(grid, cell["index"], len(cols), len(rows)) == want
            assert cols[cell["index"] % 2] == cell["weight"]
            assert rows[cell["index"] // 2].startswith({"zq-000001": "epoch 1", "zq-000002": "epoch 2",
                                                        "zq": "final"}[cell["lora"]])
    saved = read_json(folder / "report.json")
    assert saved["request"]["weights"] == "0.5,1" and saved["generator"] == "test-painter"
    assert saved["elapsed_s"] is not None and saved["state"] == "done"


def _values(text: str) -> list[str]:
    return [v.strip() for v in next(csv.reader(StringIO(text), skipinitialspace=True))]


def _restored_cells(prompt: str, params: dict) -> list[str]:
    """Each cell's prompt from a parsed grid infotext, replaying its Prompt S/R axes (X fastest)."""
    import itertools

    axes = [(params[f"{k} Type"], _values(params[f"{k} Values"])) for k in "XYZ" if f"{k} Type" in params]
    out = []
    for combo in itertools.product(*reversed([range(len(v)) for _, v in axes])):
        p = prompt
        for (label, values), i in zip(axes, reversed(combo), strict=True):
            if label == SR:
                p = p.replace(values[0], values[i])
        out.append(p)
    return out


def test_the_grid_infotext_restores_the_axes_with_our_parser(setup):
    pnginfo = pytest.importorskip("lib_lorakit.evaluate.pnginfo")
    host, project, run = setup
    report = EvalService(host).run("demo", request(run, negative="ugly, blurry"), generator=PaintingGenerator())
    params = pnginfo.parse_infotext(report["infotext"])
    assert params["Script"] == "X/Y/Z plot" and params["Negative prompt"] == "ugly, blurry"
    assert params["X Type"] == params["Y Type"] == params["Z Type"] == SR
    cells = {c["index"]: f"{c['prompt']} <lora:{c['lora']}:{c['weight']}>" for c in report["cells"]}
    order = [c for c in _restored_cells(params["Prompt"], params)]
    assert sorted(order) == sorted(cells.values())


WEBUI = os.environ.get("TRAIN_STYLE_WEBUI", "")  # opt-in: a webui 1.10 checkout with its venv
PARSE = """
import json, sys
sys.path.insert(0, ".")
from modules import shared_init
shared_init.initialize()
from modules.infotext_utils import parse_generation_parameters
print("JSON:" + json.dumps([parse_generation_parameters(t) for t in json.load(sys.stdin)], default=str))
"""


@pytest.mark.skipif(not (WEBUI and Path(WEBUI, "venv", "bin", "python").is_file()),
                    reason="the webui 1.10.1 with its venv is not here (TRAIN_STYLE_WEBUI)")
def test_the_webuis_own_parser_restores_the_script_and_its_axes(setup):
    host, project, run = setup
    service = EvalService(host)
    texts = [service.run("demo", request(run, **kw), generator=PaintingGenerator())["infotext"] for kw in (
        {"negative": "ugly, blurry"}, {"prompts": ['say "hi", 0.5: ok'], "seeds": [3, 4]},
        {"epochs": "final", "seeds": [5, 6], "with_and_without_trigger": False})]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([str(Path(WEBUI, "venv", "bin", "python")), "-c", PARSE], input=json.dumps(texts),
                         cwd=WEBUI, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    parsed = json.loads(out.stdout.split("JSON:", 1)[1])
    for text, params in zip(texts, parsed, strict=True):
        assert params["Script"] == "X/Y/Z plot"
        first_line = text.split("\n", 1)[0]
        assert params["Prompt"] == first_line
        restored = _restored_cells(params["Prompt"], params)
        assert len(restored) == len(set(restored)) or "Seed" in (params.get("X Type"), params.get("Y Type"),
                                                                   params.get("Z Type"))
    assert parsed[0]["Negative prompt"] == "ugly, blurry"
    seeds = parsed[2]
    assert {seeds.get("X Type"), seeds.get("Y Type")} == {SR, "Seed"}
    letter = "X" if seeds["X Type"] == "Seed" else "Y"
    assert _values(seeds[f"{letter} Values"]) == ["5", "6"] and seeds[f"Fixed {letter} Values"] == "5, 6"


def test_cancel_mid_grid_leaves_a_consistent_folder_that_resume_completes(setup):
    host, project, run = setup
    service = EvalService(host)
    service.chunk = 2
    cancel = threading.Event()
    report = service.run("demo", request(run), generator=PaintingGenerator(stop_after=2), cancel=cancel)
    folder = project.root / "eval" / report["id"]
    on_disk = sorted(p.name for p in (folder / "cells").iterdir())
    listed = sorted(Path(c["image"]).name for c in report["cells"] if c["image"])
    assert report["state"] == "cancelled" and report["made"] == 4 and on_disk == listed
    assert not [p for p in folder.rglob(".*")]  # no temporary file left behind
    with Image.open(folder / "grid.png") as grid:  # the grid shows what exists, grey where a cell is missing
        grid.load()
        missing = next(c for c in report["cells"] if not c["image"])
        assert cell_colour_in_grid(grid, missing["index"], 2, 6) == (200, 200, 200)
    again = PaintingGenerator()
    done = service.resume("demo", report["id"], generator=again)
    assert done["state"] == "done" and done["made"] == 12
    assert sum(len(c) for c in again.calls) == 8  # only the missing cells were made
    with Image.open(folder / "grid.png") as grid:
        grid.load()
        assert cell_colour_in_grid(grid, missing["index"], 2, 6) != (200, 200, 200)


def test_a_crash_mid_grid_is_reported_interrupted_and_can_be_resumed(setup):
    host, project, run = setup
    service = EvalService(host)
    service.chunk = 2
    with pytest.raises(RuntimeError):
        service.run("demo", request(run), generator=PaintingGenerator(fail_after=1))
    (listed,) = service.list("demo")
    assert listed["state"] == "interrupted" and listed["made"] == 2 and listed["cells"] == 12
    shown = service.show("demo", listed["id"])
    assert "Resume it" in shown["error"]
    assert service.resume("demo", listed["id"], generator=PaintingGenerator())["made"] == 12


def test_an_xyz_generator_makes_the_grid_in_one_go_and_cells_land_where_they_belong(setup):
    host, project, run = setup
    gen = ScriptGenerator()
    report = EvalService(host).run("demo", request(run), generator=gen)
    assert not gen.calls and len(gen.grids) == 1
    base, axes = gen.grids[0]
    assert base.loras == () and "<lora:zq-000001:" in base.prompt
    assert report["infotext"].startswith(base.prompt) and "Script: X/Y/Z plot" in report["infotext"]
    assert "Sampler" not in report["infotext"]  # the script's own grid picture and infotext are kept as they came
    for cell in report["cells"]:
        with Image.open(project.root / cell["image"]) as im:
            assert im.info["parameters"].split("\n")[0] == f"{cell['prompt']} <lora:{cell['lora']}:{cell['weight']}>"


def test_a_grid_runs_as_a_job_whose_result_is_the_report(setup):
    host, project, run = setup
    service = EvalService(host)
    job = service.start("demo", request(run, epochs="final"), generator=PaintingGenerator())
    from lib_lorakit.jobs import job_manager

    finished = job_manager(host.projects_home()).wait(job.id, timeout=60)
    assert finished.state == "done" and finished.result["made"] == 4
    assert finished.result["id"] in [g["id"] for g in service.list("demo")]


@pytest.mark.parametrize("data, words", [
    ({"run": "../x"}, "run: expected a run id"),
    ({"run": "r", "weights": "0-1 (+0)"}, "step of 0"),
    ({"run": "r", "steps": 0}, "steps: expected an integer from 1 to 150"),
    ({"run": "r", "prompts": ["a\nb"]}, r"prompts\[0\]: expected one line"),
    ({"run": "r", "seeds": "1,x"}, "seeds: expected whole numbers"),
    ({"run": "r", "stpes": 3}, "unknown grid setting 'stpes' \\(did you mean steps"),
    ({"run": "r", "caption_prompts": 99}, "caption_prompts: expected an integer from 0 to 16"),
])
def test_a_bad_request_names_its_field(data, words):
    with pytest.raises(InvalidSettings, match=words):
        GridRequest.from_dict(data)


def test_a_request_without_prompts_says_what_to_give(setup):
    host, project, run = setup
    with pytest.raises(LorakitError, match="at least one prompt"):
        EvalService(host).plan("demo", GridRequest.from_dict({"run": run}))


def test_caption_prompts_come_from_the_dataset(setup):
    host, project, run = setup
    concept = project.add_concept("demo", 1)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(concept.folder / f"{i}.png")
        (concept.folder / f"{i}.txt").write_text(f"zq, caption {i}\n", encoding="utf-8")
    plan = EvalService(host).plan("demo", GridRequest.from_dict({"run": run, "caption_prompts": 2,
                                                                 "with_and_without_trigger": False}))
    assert [p.text for p in plan.prompts] == ["zq, caption 0", "zq, caption 2"]


def test_choosing_a_cell_sets_the_card_and_unregisters_the_other_epochs(setup):
    host, project, run = setup
    service = EvalService(host)
    report = service.run("demo", request(run), generator=PaintingGenerator())
    from lib_lorakit.train.registration import register_run

    register_run(host, project, run)
    target = host.lora / "train-style" / "demo"
    choice = service.choose("demo", run, weight=0.5, epoch="2", grid=report["id"], unregister_others=True)
    card = json.loads((target / "zq-000002.json").read_text())
    assert card["preferred weight"] == 0.5 and card["activation text"] == "zq"
    assert str(project.root / "eval" / report["id"] / "grid.png") in card["notes"]
    assert "weights 0.5, 1" in card["notes"] and "epochs epoch 1, epoch 2, final" in card["notes"]
    assert sorted(p.name for p in target.iterdir()) == ["zq-000002.json", "zq-000002.safetensors"]
    assert len(choice.unregistered) == 4  # two LoRAs and their cards
    assert all((project.root / "runs" / run / f).is_file() for f in FILES)  # they stay in the run


def test_choosing_registers_an_unregistered_epoch_and_refuses_a_weight_off_the_slider(setup):
    host, project, run = setup
    service = EvalService(host)
    with pytest.raises(InvalidSettings, match="weight: expected a number from 0 to 2"):
        service.choose("demo", run, weight=3.0)
    choice = service.choose("demo", run, weight=0.8, epoch="final")
    assert choice.lora == host.lora / "train-style" / "demo" / "zq.safetensors" and choice.lora.is_file()
    assert json.loads(choice.card.read_text())["preferred weight"] == 0.8
    assert "set by hand" in choice.note


def test_unregister_keeps_a_registered_file_the_run_no_longer_holds(setup):
    host, project, run = setup
    from lib_lorakit.train.registration import register_run

    register_run(host, project, run)
    (project.root / "runs" / run / "zq-000001.safetensors").unlink()
    data = read_json(project.root / "runs" / run / "run.json")
    data["files"] = FILES[1:]
    atomic_write_json(project.root / "runs" / run / "run.json", data)
    EvalService(host).choose("demo", run, weight=1.0, unregister_others=True)
    assert (host.lora / "train-style" / "demo" / "zq-000001.safetensors").is_file()  # its only copy now


def test_composed_grid_and_infotext_without_an_xyz_expression(setup):
    host, project, run = setup
    req = request(run, epochs="final", seeds=[1, 2], checkpoints=["a", "b"], prompts=["a", "b"],
                  with_and_without_trigger=False)
    plan = EvalService(host).plan("demo", req)
    assert plan.xyz() is None
    text = grid_infotext(plan, req, None)
    assert "Train Style grid:" in text and "Script" not in text
    grid = compose_grid([None] * plan.size, *plan.layout(), size=(W, H))
    assert grid.width > 2 * W and grid.height > 8 * H


def test_cli_grid_list_show_resume_and_card_as_json(setup, monkeypatch, capsys):
    from lib_lorakit.cli import main

    host, project, run = setup
    monkeypatch.setattr(StandaloneHost, "generator", lambda self: PaintingGenerator(), raising=False)
    home = ["--home", str(host.home), "--lora-dir", str(host.lora)]
    code = main([*home, "grid", "demo", run, "--epochs", "2,final", "--weights", "0-1 (+0.5)", "--prompt", "a cat",
                 "--with-and-without-trigger", "--seeds", "3", "--steps", "4", "--size", "64x64", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["state"] == "done" and out["grid"] == f"eval/{out['id']}/grid.png"
    assert len(out["cells"]) == 2 * 3 * 2 and out["infotext"].startswith("zq, a cat <lora:zq-000002:")
    first = out["cells"][0]
    assert {k: first[k] for k in ("epoch", "weight", "prompt", "checkpoint", "seed")} == {
        "epoch": "epoch 2", "weight": "0", "prompt": "zq, a cat", "checkpoint": None, "seed": 3}
    assert first["image"] == f"eval/{out['id']}/cells/0000.png"
    assert main([*home, "grid", "demo", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["grids"][0]["id"] == out["id"]
    assert main([*home, "grid", "demo", "show", out["id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["made"] == 12
    assert main([*home, "card", "demo", run, "--weight", "0.5", "--epoch", "final", "--grid", out["id"],
                 "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert json.loads(Path(card["card"]).read_text())["preferred weight"] == 0.5
    assert main([*home, "grid", "demo", run, "--prompt", "a", "--weights", "0-1 (+0)", "--json"]) == 1
    assert "step of 0" in json.loads(capsys.readouterr().out)["error"]
    assert main([*home, "grid", "demo", "show", "../../etc", "--json"]) == 1
    assert "No grid" in json.loads(capsys.readouterr().out)["error"]


def test_api_grid_as_a_job_its_images_and_the_card(setup):
    import time

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lorakit import api

    host, project, run = setup

    class GeneratingHost(StandaloneHost):
        def generator(self):
            return PaintingGenerator()

    host = GeneratingHost(home=host.home, lora=host.lora, models=host.models)
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    url = "/train-style/v1/projects/demo/eval"
    r = client.post(url, json={"run": run, "prompts": ["a cat"], "weights": "0.5, 1", "width": 64, "height": 64})
    assert r.status_code == 200, r.text
    assert r.json()["cells"] == 6
    job_id = r.json()["job"]["id"]
    for _ in range(400):
        job = client.get(f"/train-style/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["state"] == "done" and job["kind"] == "grid", job
    grid_id = job["result"]["id"]
    assert client.get(url).json()["grids"][0]["id"] == grid_id
    shown = client.get(f"{url}/{grid_id}").json()
    assert shown["made"] == 6 and "Script: X/Y/Z plot" in shown["infotext"]
    png = client.get(f"{url}/{grid_id}/grid.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(__import__("io").BytesIO(png.content)) as im:
        assert im.info["parameters"] == shown["infotext"]
    assert client.get(f"{url}/{grid_id}/cells/0005.png").status_code == 200
    for bad in ("..%2F..%2Frun.json", "0005.txt", "..%2Freport.json"):
        assert client.get(f"{url}/{grid_id}/cells/{bad}").status_code == 404
    assert client.get(f"{url}/..%2F..%2Fproject.toml").status_code == 404
    card = client.post(f"{url}/card", json={"run": run, "weight": 0.7, "epoch": "1", "grid": grid_id,
                                            "unregister_others": False})
    assert card.status_code == 200, card.text
    assert card.json()["weight"] == 0.7
    bad = client.post(url, json={"run": run, "prompts": ["a"], "steps": 0, "webui_url": "http://169.254.169.254"})
    assert bad.status_code == 400 and "steps:" in bad.json()["detail"] and "webui_url" in bad.json()["detail"]
    off = client.post(f"{url}/card", json={"run": run, "weight": 5})
    assert off.status_code == 400 and "weight: expected a number from 0 to 2" in off.json()["detail"]
    assert client.post("/train-style/v1/projects/nope/eval", json={"run": run, "prompts": ["a"]}).status_code == 404


class StoppedScript(ScriptGenerator):
    """The webui's X/Y/Z answer after a cancel: every cell, those not made blank with an empty infotext."""

    def xyz_grid(self, base, *, x, y=None, z=None, progress=None, cancel=None):
        result = super().xyz_grid(base, x=x, y=y, z=z)
        cancel.set()
        cells = [c if i < 3 else GenImage(Image.new("RGB", c.image.size), "", -1) for i, c in enumerate(result.cells)]
        return GridResult(grid=result.grid, infotext=result.infotext, cells=cells)


def test_a_cancelled_xyz_grid_keeps_only_the_cells_made_and_resume_makes_the_rest(setup):
    host, project, run = setup
    service = EvalService(host)
    report = service.run("demo", request(run), generator=StoppedScript(), cancel=threading.Event())
    assert report["state"] == "cancelled" and report["made"] == 3
    for cell in report["cells"]:
        if cell["image"]:
            with Image.open(project.root / cell["image"]) as im:
                assert im.info["parameters"]
    with Image.open(project.root / report["grid"]) as grid:  # composed here: the blank stand-ins are not a grid
        assert "Script: X/Y/Z plot" in grid.info["parameters"] and grid.height > H
    assert service.resume("demo", report["id"], generator=PaintingGenerator())["made"] == 12


class CancelledGenerator(PaintingGenerator):
    def generate(self, requests, *, progress=None, cancel=None):
        if self.calls:
            raise Cancelled("stopped at the cancel")
        return super().generate(requests, progress=progress, cancel=cancel)


def test_a_generator_stopping_with_cancelled_leaves_a_cancelled_grid_not_an_error(setup):
    host, project, run = setup
    service = EvalService(host)
    service.chunk = 2
    report = service.run("demo", request(run), generator=CancelledGenerator())
    assert report["state"] == "cancelled" and report["made"] == 2 and report["grid"]


def test_the_webuis_own_generator_finds_every_compared_file_registered(setup):
    host, project, run = setup

    class InWebui(PaintingGenerator):
        name = "webui"

    EvalService(host).run("demo", request(run, epochs="1,final"), generator=InWebui())
    target = host.lora / "train-style" / "demo"
    assert sorted(p.name for p in target.glob("*.safetensors")) == ["zq-000001.safetensors", "zq.safetensors"]
    assert json.loads((target / "zq.json").read_text())["activation text"] == "zq"


def _real_gen_parts():
    try:
        import test_gen_sd_scripts as real
    except ImportError:
        return None
    ok = (real.REAL_TRAINER.setup_complete() and (real.MODELS / "sd15-random.safetensors").is_file()
          and (real.ROOT / "sd-scripts" / "gen_img.py").is_file())
    return real if ok else None


@pytest.mark.skipif(_real_gen_parts() is None,
                    reason="the real grid needs TRAIN_STYLE_TRAINER_VENV (a complete trainer setup), "
                           "TRAIN_STYLE_SD15_DIR (the random SD1.5) and the sd-scripts submodule")
def test_real_grid_through_sd_scripts_gen_img(workspace, tmp_path):
    """Two saved files × weights 0 and 1 of a random SD1.5 LoRA at 64 px, made by sd-scripts' gen_img.py."""
    pytest.importorskip("torch")
    import time

    from lib_lorakit.evaluate.pnginfo import lora_hashes, parse_infotext
    from lib_lorakit.evaluate.sd_scripts_gen import SdScriptsGenerator

    real = _real_gen_parts()
    project = workspace.create("demo", trigger_words=("zq",))
    runs = Runs(project)
    run_dir = runs.new_dir("real")
    runs.create(run_dir, RunSpec(argv=(), cwd=str(run_dir), output_name="rs"), files={},
                meta={"trigger_words": ["zq"], "base_arch": "SD1"})
    for name in ("rs-000001", "rs"):
        real.random_sd15_lora(run_dir / f"{name}.safetensors")
    data = read_json(run_dir / "run.json")
    data.update(state="done", files=["rs-000001.safetensors", "rs.safetensors"])
    atomic_write_json(run_dir / "run.json", data)
    host = StandaloneHost(home=project.root.parent, lora=tmp_path / "Lora", models=real.MODELS)
    gen = SdScriptsGenerator(host, trainer=real.REAL_TRAINER, tokenizer_cache_dir=real.MODELS / "tokenizers",
                             env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, local_user=True)
    checkpoint = str(real.MODELS / "sd15-random.safetensors")
    started = time.monotonic()
    report = EvalService(host).run("demo", GridRequest.from_dict({
        "run": run_dir.name, "prompts": ["a cat"], "weights": "0,1", "steps": 2, "width": 64, "height": 64,
        "checkpoints": [checkpoint], "seeds": [1234]}), generator=gen)
    print(f"real grid through gen_img.py: 4 images at 64 px in {time.monotonic() - started:.0f} s")
    assert report["state"] == "done" and report["made"] == 4
    pictures = {}
    for cell in report["cells"]:
        with Image.open(project.root / cell["image"]) as im:
            assert im.size == (64, 64)
            params = parse_infotext(im.info["parameters"])
            pictures[(cell["lora"], cell["weight"])] = im.tobytes()
        assert params["Seed"] == "1234" and params["Prompt"].endswith(f"<lora:{cell['lora']}:{cell['weight']}>")
        assert cell["lora"] in lora_hashes(params["Lora hashes"])
    assert pictures[("rs", "0")] != pictures[("rs", "1")]  # the weight changes the picture
    with Image.open(project.root / report["grid"]) as grid:
        assert grid.size[0] >= 2 * 64 and "Script: X/Y/Z plot" in grid.info["parameters"]


@pytest.mark.parametrize("content", ['{"cells": [{"index": "0; rm"}]}', "[1, 2]", "{not json"])
def test_a_damaged_report_is_listed_as_damaged_and_hides_no_other_grid(setup, content):
    host, project, run = setup
    service = EvalService(host)
    good = service.run("demo", request(run, epochs="final"), generator=PaintingGenerator())
    bad = project.root / "eval" / "0-damaged"
    (bad / "cells").mkdir(parents=True)
    (bad / "report.json").write_text(content)
    listed = {g["id"]: g for g in service.list("demo")}
    assert listed[good["id"]]["state"] == "done"
    assert listed["0-damaged"]["state"] == "damaged" and "report.json" in listed["0-damaged"]["error"]
    with pytest.raises(LorakitError, match="delete the folder or repair the file"):
        service.show("demo", "0-damaged")

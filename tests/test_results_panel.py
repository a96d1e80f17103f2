"""The Results panel's handlers on a real project with a finished run that saved two epoch files: the run and its
epochs listed, the weights spelled out, the grid's size and the problems field by field, a grid made as a job by a
painting stand-in generator, drawn with its cells, interrupted and resumed, a cell chosen into the card; and
everything read from files escaped."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image
from test_host import TEXT_ENCODERS, write_safetensors

from lib_lorakit import next_step
from lib_lorakit.errors import LorakitError
from lib_lorakit.evaluate import GenImage
from lib_lorakit.fsutil import atomic_write_json, read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Project, Workspace
from lib_lorakit.studio import Studio
from lib_lorakit.train.runner import Runs, RunSpec
from lib_lorakit.ui import render_results as draw
from lib_lorakit.ui.results_panel import ResultsPanel, epoch_word

FILES = ["zq-000001.safetensors", "zq-000002.safetensors"]
HOSTILE = '<img src=x onerror="alert(1)">'


def write_lora(path: Path) -> None:
    header = {"lora_unet_a.lora_up.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
              "__metadata__": {"ss_base_model_version": "sd_v1", "ss_output_name": "zq"}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))


def make_run(project: Project, files=FILES) -> str:
    """A finished run that saved `files` (real safetensors headers), as the trainer leaves it."""
    runs = Runs(project)
    run_dir = runs.new_dir("t")
    runs.create(run_dir, RunSpec(argv=(), cwd=str(run_dir), output_name="zq"), files={},
                meta={"trigger_words": ["zq"], "base_arch": "SD1"})
    for name in files:
        write_lora(run_dir / name)
    data = read_json(run_dir / "run.json")
    data.update(state="done", files=list(files))
    atomic_write_json(run_dir / "run.json", data)
    return run_dir.name


class Painter:
    name = "painter"

    def generate(self, requests, *, progress=None, cancel=None):
        out = []
        for i, req in enumerate(requests):
            weight = req.loras[0].weight
            image = Image.new("RGB", (req.width, req.height), (int(200 * weight) % 256, 40 * i % 256, 90))
            out.append(GenImage(image, f"{req.prompt}\nSteps: {req.steps}, Seed: {req.seed}, "
                                       f"Size: {req.width}x{req.height}", req.seed, req))
            if progress:
                progress(i + 1, len(requests), "painting")
        return out


@pytest.fixture
def panel(tmp_path):
    home = tmp_path / "home"
    project = Workspace(home).create("demo", trigger_words=("zq",), resolution=64)
    run = make_run(project)
    models = tmp_path / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    for name, arch in (("one.safetensors", "SD1"), ("two.safetensors", "SD1"), ("xl.safetensors", "SDXL")):
        write_safetensors(models / name, ["model.diffusion_model.out.0.weight", TEXT_ENCODERS[arch]])
    host = StandaloneHost(home=home, lora=tmp_path / "Lora", models=tmp_path / "models")
    host.generator = lambda: Painter()
    studio = Studio(host)
    with gr.Blocks():
        project_box = gr.Dropdown(choices=["demo"], value="demo")
        p = ResultsPanel(studio, project_box)
        p.render()
        p.register()
    return p, project, run, tmp_path / "Lora"


def form(run: str, **kw) -> list:
    """The form's values in `ResultsPanel.form` order."""
    v = {"run": f"{run} — done", "epochs": ["epoch 1", "epoch 2"], "weights": "0,1", "prompts": "a cat",
         "trigger": False, "captions": 0.0, "checkpoints": [], "seeds": "1", "negative": "", "steps": 20.0,
         "cfg": 7.0, "sampler": "Euler a", "width": 64.0, "height": 64.0, **kw}
    return list(v.values())


def finish(panel: ResultsPanel, name: str) -> None:
    job = panel._last_job(name)
    panel.studio.jobs.wait(job.id, timeout=60)


def views(panel: ResultsPanel, out: tuple) -> dict:
    names = ["run", "epochs", "checkpoints", "grids", "grid", "infotext", "cell", "job", "heading", "stamp"]
    return dict(zip(names, out, strict=True))


def test_the_run_and_its_epochs_are_listed_with_the_next_step(panel):
    p, project, run, _ = panel
    shown = views(p, p.draw_views("demo", None, None))
    assert shown["run"]["value"] == f"{run} — done" and shown["run"]["choices"] == [f"{run} — done"]
    assert shown["epochs"]["choices"] == ["epoch 1", "epoch 2"] == shown["epochs"]["value"]
    assert shown["checkpoints"]["choices"] == ["one.safetensors", "two.safetensors", "xl.safetensors"]
    assert f"Run {run} saved 2 files" in shown["heading"] and "Make grid" in shown["heading"]
    assert shown["grids"]["choices"] == [] and "No grid chosen" in shown["grid"]
    assert [u["value"] for u in p._size_of("demo")] == [64, 64]  # the project's training resolution


def test_weights_are_spelled_out_and_problems_named_by_field(panel):
    p, _, run = panel[:3]
    weights, size = p._check("demo", *form(run, weights="0-1.2 (+0.2)", trigger=True))
    assert "0, 0.2, 0.4, 0.6, 0.8, 1, 1.2" in weights
    assert "<b>28</b> images: 7 weights × 2 epochs × 2 prompts × 1 checkpoint × 1 seed" in size
    weights, size = p._check("demo", *form(run, weights="0-x", epochs=[], seeds="1,b"))
    assert "ts-error" in weights and "&#x27;0-x&#x27; is not a number" in weights
    assert "epochs: tick at least one" in size
    weights, size = p._check("demo", *form(run, seeds="1,b"))
    assert "seeds: expected whole numbers" in size
    weights, size = p._check("demo", *form(run, prompts=""))
    assert "prompts: none given" in size
    with pytest.raises(LorakitError, match="epochs: tick at least one"):
        p._make("demo", *form(run, epochs=[]))


def test_make_a_grid_see_it_and_choose_a_cell_into_the_card(panel):
    p, project, run, lora_dir = panel
    job, message, grids, grid, infotext, cells = p._make("demo", *form(run))
    assert 'data-state="queued"' in job or 'data-state="running"' in job or 'data-state="done"' in job
    assert "4 images" in message
    finish(p, "demo")
    shown = views(p, p.draw_views("demo", f"{run} — done", None))
    assert 'data-state="done"' in shown["job"]
    [choice] = shown["grids"]["choices"]
    gid = draw.grid_id_of(choice)
    assert choice == shown["grids"]["value"] and choice.endswith("done (4/4)")
    assert 'src="data:image/jpeg;base64,' in shown["grid"]
    assert f'href="/train-style/v1/projects/demo/eval/{gid}/grid.png"' in shown["grid"]
    assert shown["grid"].count("<tr>") == 1 + 4 and "epoch 2" in shown["grid"]
    assert "Script: X/Y/Z plot" in shown["infotext"] or "Train Style grid" in shown["infotext"]
    assert len(shown["cell"]["choices"]) == 4
    assert "is made" in shown["heading"] and "Use this cell" in shown["heading"]
    # the cell of epoch 2 at weight 1, and the other epoch out of the Lora folder (kept in the run)
    cell = next(c for c in shown["cell"]["choices"] if "epoch 2 · weight 1 ·" in c)
    p.studio.training(start="later").register("demo", run)  # both epochs in the Lora folder, as Register does
    assert (lora_dir / "train-style" / "demo" / "zq-000001.safetensors").is_file()
    out = p._use("demo", choice, cell, True)
    card = read_json(lora_dir / "train-style" / "demo" / "zq-000002.json")
    assert card["preferred weight"] == 1.0 and gid in card["notes"] and "epoch 2" in card["notes"]
    assert not (lora_dir / "train-style" / "demo" / "zq-000001.safetensors").exists()
    assert (project.root / "runs" / run / "zq-000001.safetensors").is_file()
    assert "Preferred weight <b>1</b>" in out and "zq-000001.safetensors" in out


def test_an_interrupted_grid_says_so_and_resumes(panel):
    p, project, run, _ = panel
    p._make("demo", *form(run))
    finish(p, "demo")
    gid = p.studio.evaluate.list("demo")[0]["id"]
    folder = project.root / "eval" / gid
    (folder / "cells" / "0003.png").unlink()
    (folder / "grid.png").unlink()
    report = read_json(folder / "report.json")
    atomic_write_json(folder / "report.json", {**report, "state": "running", "pid": 1})
    shown = views(p, p.draw_views("demo", None, None))
    assert shown["grids"]["value"].endswith("interrupted (3/4)")
    assert "Resume it to make the rest" in shown["grid"] and "was interrupted" in shown["heading"]
    assert len(shown["cell"]["choices"]) == 3
    p._resume("demo", shown["grids"]["value"])
    finish(p, "demo")
    again = views(p, p.draw_views("demo", None, shown["grids"]["value"]))
    assert again["grids"]["value"].endswith("done (4/4)") and (folder / "cells" / "0003.png").is_file()


def test_all_checkpoints_of_the_runs_sd_version(panel):
    p, _, run = panel[:3]
    update = p._same_version("demo", *form(run, prompts=""))
    assert update["value"] == ["one.safetensors", "two.safetensors"]
    _, size = p._check("demo", *form(run, checkpoints=update["value"]))
    assert "<b>8</b> images" in size and "2 checkpoints" in size


def test_text_from_files_is_escaped(panel):
    p, project, run, _ = panel
    p._make("demo", *form(run, prompts=HOSTILE, negative=HOSTILE))
    finish(p, "demo")
    gid = p.studio.evaluate.list("demo")[0]["id"]
    folder = project.root / "eval" / gid
    report = read_json(folder / "report.json")
    atomic_write_json(folder / "report.json", {**report, "error": HOSTILE, "generator": HOSTILE})
    shown = views(p, p.draw_views("demo", None, None))
    assert "<img src=x" not in shown["grid"] and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in shown["grid"]
    assert HOSTILE in shown["infotext"]  # a plain text box: shown as text, never markup
    assert "<img src=x" not in draw.size_html(problems=[HOSTILE])
    assert "<img src=x" not in draw.weights_html(error=HOSTILE)
    assert "<img src=x" not in draw.report_html("demo", {"id": "a", "run": HOSTILE, "state": HOSTILE, "cells": [
        {"index": 0, "epoch": HOSTILE, "weight": HOSTILE, "prompt": HOSTILE, "checkpoint": HOSTILE, "seed": 1,
         "image": None}], "axes": {"prompt": [HOSTILE]}})


def test_epoch_words_and_the_results_next_step():
    assert [epoch_word(x) for x in ("epoch 12", "step 500", "final")] == ["12", "step500", "final"]
    assert "Choose or create a project" in next_step.results_next(None).action
    status = next_step.ProjectStatus(project="p", concepts=(), trigger_words=())
    assert "train in the Train tab" in next_step.results_next(status, None, 0).action


class Waiter(Painter):
    """Paints nothing until the grid is cancelled (a long grid the user stops)."""

    def generate(self, requests, *, progress=None, cancel=None):
        if progress:
            progress(0, len(requests), "waiting")
        cancel.wait(30)
        return []


def test_cancel_stops_the_grid_and_keeps_a_consistent_folder(panel):
    p, project, run, _ = panel
    p.studio.host.generator = lambda: Waiter()
    p._make("demo", *form(run))
    job = p._cancel("demo")
    assert "data-job-id" in job
    finish(p, "demo")
    shown = views(p, p.draw_views("demo", None, None))
    assert 'data-state="cancelled"' in shown["job"]
    assert shown["grids"]["value"].endswith("cancelled (0/4)") and shown["cell"]["choices"] == []


def test_a_refresh_keeps_the_epochs_ticked_for_the_same_run(panel):
    p, _, run = panel[:3]
    kept = views(p, p.draw_views("demo", f"{run} — done", None, ["epoch 2"]))
    assert kept["epochs"]["value"] == ["epoch 2"]
    other = views(p, p.draw_views("demo", "another — done", None, ["epoch 2"]))
    assert other["epochs"]["value"] == ["epoch 1", "epoch 2"]


def test_inside_the_webui_the_grid_infotext_goes_to_txt2img_through_its_paste_mechanism(tmp_path):
    bound = []

    class WebuiLike(StandaloneHost):
        def bind_paste(self, *, button, tab, text, image=None):
            bound.append((button, tab, text, image))

    host = WebuiLike(home=tmp_path / "home", lora=tmp_path / "Lora", models=tmp_path / "models")
    with gr.Blocks():
        p = ResultsPanel(Studio(host), gr.Dropdown(choices=[]))
        p.render()
    [(button, tab, text, image)] = bound
    assert button is p.send and button.value == "Send X/Y/Z to txt2img" and tab == "txt2img"
    assert text is p.infotext and image is None
    with gr.Blocks():
        standalone = ResultsPanel(Studio(StandaloneHost(home=tmp_path / "h2", lora=tmp_path / "L",
                                                        models=tmp_path / "m")), gr.Dropdown(choices=[]))
        standalone.render()
    assert not hasattr(standalone, "send") and standalone.infotext.show_copy_button

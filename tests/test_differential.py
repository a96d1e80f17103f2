"""Two-stage (differential) training: the two runs' files, and the queue holding stage 2 until stage 1 succeeded
(real two-stage training: test_train_real)."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_cli import cli
from test_host import TEXT_ENCODERS, write_safetensors
from test_queue import GpuHost, drain
from test_runner import make_run

from lib_lorakit.errors import LorakitError
from lib_lorakit.fsutil import atomic_write_json, read_json
from lib_lorakit.tomlio import read_toml
from lib_lorakit.train import differential
from lib_lorakit.train.config import select_concepts
from lib_lorakit.train.environment import TrainerEnvironment
from lib_lorakit.train.queue import TrainQueue
from lib_lorakit.train.service import TrainingService


def make_project(home, tmp_path):
    cli(home, "project", "new", "art", "--trigger", "zkchar")
    for concept, n in (("renders", 3), ("poses", 2), ("hero", 2)):
        src = tmp_path / f"src-{concept}"
        src.mkdir()
        for i in range(n):
            Image.new("RGB", (96, 96), (60 * i, 100, 200)).save(src / f"{i}.png")
            (src / f"{i}.txt").write_text(f"zkchar, {concept} {i}")
        cli(home, "import", "art", str(src), "--concept", concept, "--repeats", "5")
    model = tmp_path / "models" / "base.safetensors"
    model.parent.mkdir()
    write_safetensors(model, ["model.diffusion_model.out.0.weight", TEXT_ENCODERS["SD1"]])
    return model


def flat(path) -> dict:
    return {k: v for section in read_toml(path).values() for k, v in section.items()}  # as sd-scripts flattens


def image_dirs(path) -> list[str]:
    return [s["image_dir"].rsplit("/", 1)[1] for d in read_toml(path)["datasets"] for s in d["subsets"]]


def test_dry_run_writes_two_runs_stage2_over_stage1s_final_lora(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    out = cli(home, "train-differential", "art", "--preset", "style-sd15-lora", "--base-model", str(model),
              "--target-concepts", "hero", "--set", "max_train_steps=40", "--stage1-set", "max_train_steps=80",
              "--dry-run", "--json")
    data = json.loads(out.stdout)
    runs = home / "art" / "runs"
    one, two = runs / data["stage1"], runs / data["stage2"]
    args1, args2 = flat(one / "args.toml"), flat(two / "args.toml")
    # stage 2 merges stage 1's final file first, and waits for that run
    assert args2["base_weights"] == [str(one / "art-base.safetensors")] and args2["base_weights_multiplier"] == [1.0]
    assert "base_weights" not in args1
    assert args1["output_name"] == "art-base" and args2["output_name"] == "art"
    assert args1["max_train_steps"] == 80 and args2["max_train_steps"] == 40  # --stage1-set: stage 1 only
    assert "trained over base weights merged first: art-base.safetensors x1" in args2["training_comment"]
    # each dataset TOML holds only its stage's concepts (default stage 1: every concept but the targets)
    assert image_dirs(one / "dataset.toml") == ["5_poses", "5_renders"]
    assert image_dirs(two / "dataset.toml") == ["5_hero"]
    meta2 = read_json(two / "run.json")["meta"]
    assert meta2["depends_on"] == data["stage1"] and meta2["concepts"] == ["hero"]
    assert any("time_emb_proj" in w for w in meta2["warnings"])  # sd-scripts' quirk, recorded with the run
    assert "stage 2 warning: With base weights" in out.stderr and "stage 1 warning: With base" not in out.stderr
    assert "stage 1: 5 images" in out.stderr and "stage 2: 2 images" in out.stderr
    listed = {r["id"]: r["state"] for r in json.loads(cli(home, "runs", "art", "--json").stdout)["runs"]}
    assert listed == {data["stage1"]: "draft", data["stage2"]: "draft"}


def test_stage_concepts_are_checked(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    base = ["train-differential", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--dry-run"]
    both = cli(home, *base, "--target-concepts", "hero", "--stage1-concepts", "renders,hero", check=False)
    assert both.returncode == 1 and "hero would be in both stages" in both.stderr
    unknown = cli(home, *base, "--target-concepts", "villain", check=False)
    assert unknown.returncode == 1 and "no concept named 'villain'" in unknown.stderr
    chosen = cli(home, *base, "--target-concepts", "hero", "--stage1-concepts", "renders", "--json")
    data = json.loads(chosen.stdout)
    assert image_dirs(home / "art" / "runs" / data["stage1"] / "dataset.toml") == ["5_renders"]
    assert len(list((home / "art" / "runs").glob("*/args.toml"))) == 2  # the refused ones left no runs behind


def test_select_concepts_by_name_or_folder_keeps_reg_sets(workspace):
    project = workspace.create("p")
    for name in ("a", "b"):
        project.add_concept(name, 2)
    project.add_concept("people", 1, kind="reg")
    assert [c.folder_name for c in select_concepts(project, ["2_b"])] == ["2_b", "1_people"]
    assert [c.name for c in select_concepts(project, None)] == ["a", "b", "people"]
    with pytest.raises(LorakitError, match="no concept named 'c'"):
        select_concepts(project, ["c"])


def test_create_leaves_nothing_when_blocked(workspace, tmp_path):
    project = workspace.create("p")
    for name in ("a", "b"):
        project.add_concept(name, 1)  # no images: both stages are blocked
    host = GpuHost(home=workspace.home, lora=tmp_path / "L", models=tmp_path / "M")
    svc = TrainingService(host, trainer=TrainerEnvironment(tmp_path / "venv", tmp_path / "sd"))
    req = differential.DifferentialRequest(project="p", preset="style-sd15-lora", base_model=str(tmp_path / "x"),
                                           target_concepts=("b",), dry_run=True)
    with pytest.raises(LorakitError, match="stage 1: .*no training images"):
        differential.create(svc, project, req)
    assert not (project.root / "runs").exists() or not list((project.root / "runs").iterdir())


# --- the queue: stage 2 waits for stage 1 ----------------------------------------------------------------------------
def chain(project, first_mode: str):
    """Two fake-trainer runs, the second depending on the first (as `differential.create` makes them)."""
    runs, one = make_run(project, first_mode, delay=0.002)
    _, two = make_run(project, "success", delay=0.002)
    data = read_json(two.dir / "run.json")
    data["meta"]["depends_on"] = one.id
    atomic_write_json(two.dir / "run.json", data)
    return runs, one, two


def queued_chain(workspace, first_mode: str):
    """A project "q" with a chain of two runs, both in a fresh queue (stage 1 first)."""
    project = workspace.create("q")
    queue = TrainQueue(GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M"))
    runs, one, two = chain(project, first_mode)
    queue.add("q", one.id)
    queue.add("q", two.id)
    return project, queue, runs, one, two


def test_stage2_starts_only_after_stage1_succeeded(workspace):
    project = workspace.create("q")
    host = GpuHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M")
    queue = TrainQueue(host)
    runs, one, two = chain(project, "success")
    queue.add("q", two.id)  # even first in line, stage 2 waits
    queue.add("q", one.id)
    assert queue.tick().id == one.id and runs.get(two.id).state == "queued"
    order = [one.id, *drain(queue)]
    assert list(dict.fromkeys(order)) == [one.id, two.id]
    first, second = runs.get(one.id), runs.get(two.id)
    assert first.state == second.state == "succeeded"
    launched = [read_json(r.dir / "run.json")["launched"] for r in (first, second)]
    assert read_json(first.dir / "run.json")["finished"] <= launched[1]


def test_stage2_fails_clearly_when_stage1_failed_and_can_be_queued_again(workspace):
    project, queue, runs, one, two = queued_chain(workspace, "crash")
    drain(queue)
    assert runs.get(one.id).state == "failed"
    second = runs.get(two.id)
    assert second.state == "failed" and f"needs run {one.id} to succeed first" in second.error
    assert "failed" in second.error and not (second.dir / "train.log").exists()  # it never started
    assert "Resume" in second.advice
    # stage 2 never ran, so Resume queues it again as it was (waiting for stage 1 once more)
    svc = TrainingService(queue.host, trainer=TrainerEnvironment(workspace.home / "venv", workspace.home / "sd"))
    assert svc.resume(project, two.id).state == "queued"
    assert [e.run for e in queue.entries()] == [two.id]


def test_a_stopped_stage1_fails_its_stage2(workspace):
    project, queue, runs, one, two = queued_chain(workspace, "success")
    runs.stop(one.id)  # removed before it started
    assert drain(queue) == []
    assert runs.get(two.id).state == "failed" and "stopped" in runs.get(two.id).error


# --- the API and the tab -----------------------------------------------------------------------------------------
def test_api_creates_both_stages(tmp_path):
    from test_api import make_client

    client, host = make_client(tmp_path)
    model = make_project(host.projects_home(), tmp_path)
    body = {"preset": "style-sd15-lora", "base_model": str(model), "target_concepts": ["hero"],
            "stage1_concepts": ["renders"], "stage1_overrides": {"max_train_steps": "30"}, "dry_run": True}
    res = client.post("/train-style/v1/projects/art/train/differential", json=body)
    assert res.status_code == 201, res.text
    data = res.json()
    one, two = data["stage1"], data["stage2"]
    assert one["state"] == two["state"] == "draft" and two["meta"]["depends_on"] == one["id"]
    final1 = tmp_path / "home" / "art" / "runs" / one["id"] / "art-base.safetensors"
    assert two["meta"]["base_weights"] == [[str(final1), 1.0]]
    assert flat(tmp_path / "home" / "art" / "runs" / one["id"] / "args.toml")["max_train_steps"] == 30
    bad = client.post("/train-style/v1/projects/art/train/differential", json={**body, "target_concepts": []})
    assert bad.status_code >= 400 and "target concepts" in bad.text


def test_the_run_box_says_stage2_waits_and_shows_the_quirk(workspace):
    from lib_lorakit.ui import render_train as render

    project = workspace.create("q")
    runs, one, two = chain(project, "success")
    data = read_json(two.dir / "run.json")
    data["meta"].update(concepts=["hero"], warnings=["sd-scripts also trains time_emb_proj <layers>"])
    atomic_write_json(two.dir / "run.json", data)
    html = render.run_html(runs.get(two.id))
    assert f"Starts when run {one.id} has succeeded" in html and "time_emb_proj &lt;layers&gt;" in html
    made = render.differential_html(runs.get(one.id), runs.get(two.id))
    assert one.id in made and "(hero)" in made and "&lt;layers&gt;" in made


def test_the_tab_builds_with_the_differential_accordion(tmp_path):
    import gradio as gr

    from lib_lorakit.host import StandaloneHost
    from lib_lorakit.project import Workspace
    from lib_lorakit.studio import Studio
    from lib_lorakit.ui.train_panel import TrainPanel

    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "L", models=tmp_path / "M")
    with gr.Blocks():
        project = gr.Dropdown(choices=[])
        panel = TrainPanel(Studio(host), project)
        panel.render()
        panel.register()
    assert panel.runs.train_differential.elem_id == "train_style_train_differential"
    Workspace(host.projects_home()).create("p").add_concept("hero", 1)
    lists = panel.runs.concept_choices("p", ["gone", "hero"], None)
    assert [(u["choices"], u["value"]) for u in lists] == [(["hero"], ["hero"]), (["hero"], [])]


def test_both_stages_train_on_the_same_gpus(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    data = json.loads(cli(home, "train-differential", "art", "--preset", "style-sd15-lora", "--base-model",
                          str(model), "--target-concepts", "hero", "--num-processes", "2", "--gpu-ids", "0,1",
                          "--dry-run", "--json").stdout)
    for argv in data["argv"]:
        launch = argv[argv.index("accelerate.commands.launch") + 1:argv.index("train_network.py")]
        assert launch == ["--num_cpu_threads_per_process", "2", "--multi_gpu", "--num_processes", "2",
                          "--gpu_ids", "0,1"]
    # two processes share each epoch's batches: half the steps of a single-GPU plan
    single = json.loads(cli(home, "train-differential", "art", "--preset", "style-sd15-lora", "--base-model",
                            str(model), "--target-concepts", "hero", "--dry-run", "--json").stdout)
    for one, two in zip(single["plans"], data["plans"], strict=True):
        assert two["steps"]["steps_per_epoch"] == -(-one["steps"]["steps_per_epoch"] // 2)


def test_a_stage1_taken_out_of_the_queue_unstarted_fails_its_stage2_instead_of_leaving_it_waiting(workspace):
    project, queue, runs, one, two = queued_chain(workspace, "success")
    queue.remove("q", one.id)  # still "queued" on disk, but nothing will ever start it
    assert drain(queue) == []
    second = runs.get(two.id)
    assert second.state == "failed" and "taken out of the queue" in second.error
    assert queue.entries() == []

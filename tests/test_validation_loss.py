"""Validation loss (issue 12 part 3): the option, the split sd-scripts makes, the parser on sd-scripts' validation
bar, the run's state and the run view with its memorising finding.

The runs here are real processes (the supervisor and tests/fake_trainer.py replaying sd-scripts' output, with the
epoch-validation bar added when the run's args.toml asks for a split); the CLI runs as a subprocess. Real training
with a split: tests/test_train_real.py -k validation (opt-in)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image
from test_cli import cli
from test_cli_train import make_project

from lib_lorakit.tomlio import read_toml
from lib_lorakit.train import options as opts
from lib_lorakit.train.config import build_run_files, write_run_files
from lib_lorakit.train.presets import resolve
from lib_lorakit.train.progress import LogReader
from lib_lorakit.train.runner import Runs, RunSpec
from lib_lorakit.train.validation import memorising_sign, split_concept, split_problems
from lib_lorakit.ui import render_train as render

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "data" / "sd_scripts_lora_run.log"


# Verbatim from sd-scripts v0.10.1 (train_network.py, a real run at 64 px on a CPU: tests/test_train_real.py -k
# validation): the end of epoch 1 of 3 with its validation check, a nested tqdm bar redrawn as "\n\r<bar>\x1b[A",
# update(1) drawing the postfix before and set_postfix the running average …
REAL_EPOCH_1 = (
    "\nepoch 1/3\n\rsteps:  33%|███▎      | 2/6 [01:06<02:12, 33.06s/it, avr_loss=1.21]"
    "\n\repoch validation steps:   0%|          | 0/4 [00:00<?, ?it/s]\x1b[A"
    "\n\repoch validation steps:  25%|██▌       | 1/4 [00:10<00:31, 10.54s/it]\x1b[A"
    "\n\repoch validation steps:  25%|██▌       | 1/4 [00:10<00:31, 10.54s/it, val_epoch_avg_loss=1.01, "
    "timestep=200]\x1b[A"
    "\n\repoch validation steps:  50%|█████     | 2/4 [00:29<00:29, 14.69s/it, val_epoch_avg_loss=1.01, "
    "timestep=200]\x1b[A"
    "\n\repoch validation steps:  50%|█████     | 2/4 [00:29<00:29, 14.69s/it, val_epoch_avg_loss=1.03, "
    "timestep=400]\x1b[A"
    "\n\repoch validation steps:  75%|███████▌  | 3/4 [00:39<00:13, 13.10s/it, val_epoch_avg_loss=1.03, "
    "timestep=400]\x1b[A"
    "\n\repoch validation steps:  75%|███████▌  | 3/4 [00:39<00:13, 13.10s/it, val_epoch_avg_loss=1.04, "
    "timestep=600]\x1b[A"
    "\n\repoch validation steps: 100%|██████████| 4/4 [00:55<00:00, 13.82s/it, val_epoch_avg_loss=1.04, "
    "timestep=600]\x1b[A"
    "\n\repoch validation steps: 100%|██████████| 4/4 [00:55<00:00, 13.83s/it, val_epoch_avg_loss=1.01, "
    "timestep=800]\x1b[A\n"
    "saving checkpoint: /tmp/run/demo-000001.safetensors\n")
# … and the next check's start: its empty bar, then epoch 1's bar closing (drawn full again) as it is replaced.
REAL_EPOCH_2_START = (
    "\nepoch 2/3\n\rsteps:  67%|██████▋   | 4/6 [02:30<01:15, 37.68s/it, avr_loss=1.08]\n"
    "\n\repoch validation steps:   0%|          | 0/4 [00:00<?, ?it/s]\x1b[A\x1b[A"
    "\repoch validation steps: 100%|██████████| 4/4 [02:20<00:00, 35.10s/it, val_epoch_avg_loss=1.01, "
    "timestep=800]\n\n")


def bar(desc: str, n: int, total: int, post: str = "") -> str:
    """One tqdm draw of the shape above (`{desc}: {pct:3.0f}%|{bar}| {n}/{total} [{elapsed}<{left}, {rate}{postfix}]`),
    after a carriage return."""
    fill = ("█" * (10 * n // total)).ljust(10) if total else " " * 10
    rate = "?it/s" if n == 0 else "1.32it/s"
    left = "?" if n == 0 else f"00:{total - n:02d}"
    return f"\r{desc}: {100 * n // total:3d}%|{fill}| {n}/{total} [00:{n:02d}<{left}, {rate}{post}]"


def check(averages: list[float], desc: str = "epoch validation steps", key: str = "val_epoch_avg_loss") -> str:
    """A validation check drawn as sd-scripts draws REAL_EPOCH_1's, with these running averages."""
    out = [bar(desc, 0, len(averages))]
    timesteps = (200, 400, 600, 800)
    for i, (avg, t) in enumerate(zip(averages, timesteps, strict=False), 1):
        before = f", {key}={averages[i - 2]:.3g}, timestep={timesteps[i - 2]}" if i > 1 else ""
        out.append(bar(desc, i, len(averages), before))
        out.append(bar(desc, i, len(averages), f", {key}={avg:.3g}, timestep={t}"))
    return "".join(f"\n{line}\x1b[A" for line in out) + "\n"


# --- the parser ----------------------------------------------------------------------------------------------------
def test_the_reader_takes_each_epochs_full_validation_bar_and_keeps_redraws_out_of_the_tail():
    text = (REAL_EPOCH_1 + REAL_EPOCH_2_START
            + check([0.08, 0.0811, 0.082, 0.0835])[:-60]  # stopped after update(1) drew the full bar
            + check([0.2, 0.21, 0.2, 0.19], desc="validation steps", key="val_avg_loss")  # per-step checks
            + "\nepoch 3/3\n" + bar("steps", 6, 6, ", avr_loss=0.12") + check([0.07, 0.071, 0.0712, 0.0701]))
    reader = LogReader()
    data = text.encode()
    for i in range(0, len(data), 7):  # the pipe hands over pieces that cut lines and characters anywhere
        reader.feed(data[i:i + 7])
    reader.flush()
    # epoch 2's check never completed: neither epoch 1's closing bar nor the stale full draw counts for it
    assert reader.val_losses == [(1, 2, 1.01), (3, 6, 0.0701)]
    assert reader.losses[-1] == (6, 0.12) and reader.progress.step == 6
    assert not any("validation steps" in line for line in reader.tail)
    assert "saving checkpoint: /tmp/run/demo-000001.safetensors" in reader.tail


def test_a_resumed_runs_check_replaces_the_same_epoch_and_those_after():
    reader = LogReader()
    for point in ((1, 3, 0.3), (2, 6, 0.28), (3, 9, 0.27)):
        reader.add_validation(*point)
    reader.feed("skipping 6 steps / 6ステップをスキップします\nepoch 2/3\n" + bar("steps", 0, 3) + bar("steps", 1, 3)
                + "\r" + check([0.25, 0.25, 0.25, 0.25]) + "\n")
    reader.flush()
    assert reader.val_losses == [(1, 3, 0.3), (2, 7, 0.25)]


# --- the finding ---------------------------------------------------------------------------------------------------
TRAIN_FALLING = [[s, 0.2 - 0.01 * s] for s in range(1, 11)]


def test_rising_validation_with_falling_training_loss_names_the_last_good_epoch():
    val = [[1, 2, 0.30], [2, 4, 0.25], [3, 6, 0.27], [4, 8, 0.29]]
    sign = memorising_sign(TRAIN_FALLING, val, files=["demo-000001.safetensors", "demo-000002.safetensors"])
    assert (sign.since_epoch, sign.rises, sign.file) == (2, 2, "demo-000002.safetensors")
    assert sign.message == ("Validation loss has risen since epoch 2 (0.25 → 0.29 over 2 checks) while training loss "
                            "kept falling (0.16 → 0.12): the model is starting to memorise; the epoch-2 file "
                            "(demo-000002.safetensors) is the last before it.")
    assert "none was saved at epoch 2" in memorising_sign(TRAIN_FALLING, val).message


def test_no_finding_for_one_rise_a_recovered_curve_or_training_loss_rising_too():
    assert memorising_sign(TRAIN_FALLING, [[1, 2, 0.3], [2, 4, 0.25], [3, 6, 0.27]]) is None  # one rise
    # rose twice, then fell below: the lowest point is the last, nothing is rising after it
    assert memorising_sign(TRAIN_FALLING, [[1, 2, 0.3], [2, 4, 0.31], [3, 6, 0.32], [4, 8, 0.2]]) is None
    train_rising = [[s, 0.1 + 0.01 * s] for s in range(1, 11)]
    assert memorising_sign(train_rising, [[1, 2, 0.30], [2, 4, 0.25], [3, 6, 0.27], [4, 8, 0.29]]) is None
    assert memorising_sign([], [[1, 2, 0.30], [2, 4, 0.25], [3, 6, 0.27], [4, 8, 0.29]]) is None


# --- the split -----------------------------------------------------------------------------------------------------
def test_the_split_counts_are_sd_scripts_arithmetic():
    # train_util.split_train_val: the first ceil(n × (1 − s)) train, the last round(n × s) validate
    assert [(c.train, c.validation, c.overlap) for c in (split_concept(10, 0.1), split_concept(3, 0.5),
                                                          split_concept(3, 0.25), split_concept(4, 0.25))] == \
        [(9, 1, 0), (2, 2, 1), (3, 1, 1), (3, 1, 0)]
    assert split_problems([("art", 4)], 0.25) == [] and split_problems([("art", 4)], 0.0) == []
    (overlap,) = split_problems([("art", 3), ("hero", 10)], 0.5)
    assert overlap.severity == "warning" and "art 1" in overlap.message


def test_the_option_is_declared_once_for_every_front_end():
    field = opts.OPTION_MAP["validation_split"]
    assert (field.default, field.minimum, field.maximum, field.where) == (0.0, 0, 1, "args")
    assert any(o.name == "validation_split" for _, _, fields in opts.form_groups() for o in fields)  # a tab field
    assert all(resolve(name).values["validation_split"] == 0.0 for name in ("style-sd15-lora", "character-sdxl-loha"))
    assert resolve("style-sd15-lora", {"validation_split": 0.2}).values["validation_split"] == 0.2
    assert opts.parse_set(["validation_split=0.2"]) == {"validation_split": 0.2}


def test_the_cli_plan_shows_the_split_and_the_args_carry_it_with_the_runs_seed(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)  # three images in 10_art
    Image.new("RGB", (96, 96), (10, 10, 10)).save(home / "art" / "dataset" / "10_art" / "3.png")
    (home / "art" / "dataset" / "10_art" / "3.txt").write_text("zkstyle, shape 3")
    out = cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model),
              "--validation-split", "0.25", "--set", "seed=7", "--dry-run", "--json")
    data = json.loads(out.stdout)
    shown = {r["name"]: r for r in data["plan"]["settings"]}
    assert shown["validation_split"]["value"] == 0.25 and shown["validation_split"]["source"] != "default"
    steps = data["plan"]["steps"]
    assert (steps["train_images"], steps["validation_images"], steps["epoch_images"]) == (3, 1, 30)
    assert not [f for f in data["plan"]["findings"] if f["code"].startswith("VALIDATION")]
    run_dir = home / "art" / "runs" / data["run"]
    args = {k: v for section in read_toml(run_dir / "args.toml").values() for k, v in section.items()}
    assert (args["validation_split"], args["validation_seed"]) == (0.25, 7)
    off = json.loads(cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model),
                         "--dry-run", "--json").stdout)
    args = {k: v for s in read_toml(home / "art" / "runs" / off["run"] / "args.toml").values() for k, v in s.items()}
    assert "validation_split" not in args and "validation_seed" not in args  # 0 is off: nothing written


def test_the_plan_refuses_a_split_that_leaves_nothing_in_words(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)  # three images
    train = ("train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--dry-run")
    none_out = cli(home, *train, "--validation-split", "0.1", check=False)
    assert none_out.returncode == 1
    assert "validation_split 0.1 leaves no validation image that is not also trained on" in none_out.stderr
    assert "Use validation_split 0.34" in none_out.stderr
    overlap = cli(home, *train, "--validation-split", "0.25", check=False)  # 3 trained, 1 validated: the same image
    assert overlap.returncode == 1 and "1 held out, 1 of them also trained on" in overlap.stderr
    everything = cli(home, *train, "--set", "validation_split=1", check=False)
    assert everything.returncode == 1
    assert "validation_split 1 holds out all 3 training images: sd-scripts would train on none" in everything.stderr
    bad = cli(home, *train, "--validation-split", "1.5", check=False)
    assert bad.returncode == 2 and "validation_split" in bad.stderr  # the declaration's range, at the flag


# --- a run with a split, end to end ---------------------------------------------------------------------------------
def five_epochs(path: Path) -> Path:
    """An sd-scripts-shaped log of 5 epochs × 2 steps whose training loss falls, saving every epoch."""
    out = ["running training / 学習開始\n  num batches per epoch / 1epochのバッチ数: 2\n", bar("steps", 0, 10)]
    step = 0
    for epoch in range(1, 6):
        out.append(f"\nepoch {epoch}/5\n")
        for _ in range(2):
            step += 1
            out.append(bar("steps", step, 10, f", avr_loss={0.2 - 0.01 * step:.3g}"))
        if epoch < 5:
            out.append(f"\nsaving checkpoint: /tmp/out/demo-{epoch:06d}.safetensors\n")
    out.append("\nsaving checkpoint: /tmp/out/demo.safetensors\nmodel saved.\n")
    path.write_text("".join(out), encoding="utf-8")
    return path


def run_with_split(project, log: Path, env: dict[str, str] | None = None, split: float = 0.34):
    runs = Runs(project)
    run_dir = runs.new_dir("validation")
    settings = resolve("style-sd15-lora", {"validation_split": split})
    files = build_run_files(project, settings, run_dir=run_dir, pretrained_model="base.safetensors", base_arch="SD1",
                            output_name="demo")
    write_run_files(files, run_dir)
    spec = RunSpec(argv=(sys.executable, str(HERE / "fake_trainer.py"), "success", str(log), str(run_dir), "demo",
                         "0.002"), cwd=str(run_dir), output_name="demo", env=env or {})
    snap = runs.create(run_dir, spec, files={}, meta={"preset": "style-sd15-lora"})
    runs.start(snap.id)
    return runs.wait(snap.id, timeout=60)


def test_a_run_with_a_split_stores_validation_points_and_the_view_draws_them(squares_project):
    final = run_with_split(squares_project, RECORDED)  # the recorded 2-epoch run (3 + 1 steps)
    assert final.state == "succeeded", final
    assert final.val_losses == [[1, 3, 0.19], [2, 4, 0.18]]  # the fake trainer's default curve
    assert json.loads((final.dir / "run.json").read_text())["val_losses"] == final.val_losses
    data = final.to_dict()
    assert data["val_losses"] == final.val_losses and data["memorising"] is None
    html = render.run_html(final)
    assert html.count('class="ts-loss-validation"') == 1 and html.count("<circle") == 2
    assert ">validation</text>" in html and ">training</text>" in html and "ts-memorising" not in html
    # without a split the same replay has no validation bar, and the chart no second curve
    plain = run_with_split(squares_project, RECORDED, split=0.0)
    assert plain.state == "succeeded" and plain.val_losses == []
    assert "ts-loss-validation" not in render.run_html(plain) and "validation steps" not in \
        (plain.dir / "train.log").read_text()


def test_a_rising_validation_curve_gives_the_memorising_finding_in_the_run_view(workspace, squares_project, tmp_path):
    log = five_epochs(tmp_path / "five.log")
    final = run_with_split(squares_project, log, env={"FAKE_TRAINER_VAL_LOSSES": "0.30,0.25,0.27,0.29,0.31"})
    assert final.state == "succeeded", final
    assert final.val_losses == [[1, 2, 0.3], [2, 4, 0.25], [3, 6, 0.27], [4, 8, 0.29], [5, 10, 0.31]]
    assert "demo-000002.safetensors" in final.files
    sign = final.to_dict()["memorising"]
    assert (sign["since_epoch"], sign["rises"], sign["file"]) == (2, 3, "demo-000002.safetensors")
    html = render.run_html(final)
    assert ('data-code="VALIDATION_LOSS_RISING">Validation loss has risen since epoch 2 (0.25 → 0.31 over 3 checks) '
            "while training loss kept falling (0.16 → 0.1): the model is starting to memorise; the epoch-2 file "
            "(demo-000002.safetensors) is the last before it.</p>") in html
    chart = html[html.index("<svg"):]
    assert chart.count("<circle") == 5 and "<script" not in chart
    # the CLI: the run's JSON (runs, run status) and its words
    listed = json.loads(cli(workspace.home, "runs", "demo", "--json").stdout)["runs"]
    assert [r["val_losses"] for r in listed] == [final.val_losses]
    status = cli(workspace.home, "run", "status", "demo", final.id)
    assert "validation loss: epoch 1 0.3, epoch 2 0.25, epoch 3 0.27, epoch 4 0.29, epoch 5 0.31" in status.stdout
    assert "Validation loss has risen since epoch 2" in status.stdout


def test_the_api_takes_the_split_as_an_override_and_returns_the_runs_validation_points(tmp_path):
    from test_api import make_client

    from lib_lorakit.project import Workspace

    client, host = make_client(tmp_path)
    project = Workspace(host.projects_home()).create("demo", trigger_words=("zkstyle",))
    folder = project.add_concept("demo", 1).folder
    for i in range(3):
        Image.new("RGB", (64, 64), (80 * i, 100, 200)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"zkstyle, shape {i}")
    api = "/train-style/v1/projects/demo"
    body = {"preset": "style-sd15-lora", "base_model": "base.safetensors", "overrides": {"validation_split": 0.1}}
    plan = client.post(f"{api}/train/plan", json=body)
    assert plan.status_code == 200, plan.text
    codes = {f["code"]: f for f in plan.json()["findings"]}
    assert plan.json()["blocked"] and codes["VALIDATION_SPLIT_NO_IMAGES"]["severity"] == "error"
    assert "Use validation_split 0.34" in codes["VALIDATION_SPLIT_NO_IMAGES"]["fix"]
    body["overrides"] = {"validation_split": 0.34}
    plan = client.post(f"{api}/train/plan", json=body).json()
    assert not [f for f in plan["findings"] if f["code"].startswith("VALIDATION")]
    assert (plan["steps"]["train_images"], plan["steps"]["validation_images"]) == (2, 1)
    bad = client.post(f"{api}/train/plan", json={**body, "overrides": {"validation_split": -0.1}})
    assert bad.status_code == 400 and "overrides.validation_split" in bad.text
    final = run_with_split(project, RECORDED)
    shown = client.get(f"{api}/runs/{final.id}").json()
    assert shown["val_losses"] == [[1, 3, 0.19], [2, 4, 0.18]] and shown["memorising"] is None


def test_a_resumed_run_keeps_its_earlier_checks_and_replaces_the_epochs_it_trains_again(squares_project, tmp_path):
    first = run_with_split(squares_project, five_epochs(tmp_path / "five.log"),
                           env={"FAKE_TRAINER_VAL_LOSSES": "0.30,0.25,0.27,0.29,0.31"})
    assert first.memorising is not None
    # resumed from the epoch-3 state: sd-scripts skips 6 steps, its bar counts the 4 left, epochs 4 and 5 again
    resumed = ["skipping 6 steps / 6ステップをスキップします\n", bar("steps", 0, 4)]
    for epoch, steps in ((4, (1, 2)), (5, (3, 4))):
        resumed.append(f"\nepoch {epoch}/5\n")
        resumed += [bar("steps", n, 4, f", avr_loss={0.14 - 0.01 * n:.3g}") for n in steps]
        resumed.append("\nsaving checkpoint: /tmp/out/demo-000004.safetensors\n" if epoch == 4 else "")
    resumed.append("\nsaving checkpoint: /tmp/out/demo.safetensors\nmodel saved.\n")
    (tmp_path / "resumed.log").write_text("".join(resumed), encoding="utf-8")
    runs = Runs(squares_project)
    launch = json.loads((first.dir / "launch.json").read_text())
    launch["argv"][3] = str(tmp_path / "resumed.log")
    launch["env"] = {"FAKE_TRAINER_VAL_LOSSES": "0.30,0.25,0.27,0.22,0.21"}
    (first.dir / "launch.json").write_text(json.dumps(launch))
    runs.mark(first.id, "stopped")
    runs.start(first.id)
    final = runs.wait(first.id, timeout=60)
    assert final.state == "succeeded", final
    assert final.val_losses == [[1, 2, 0.3], [2, 4, 0.25], [3, 6, 0.27], [4, 8, 0.22], [5, 10, 0.21]]
    assert final.memorising is None and "ts-memorising" not in render.run_html(final)


def test_the_plan_view_counts_the_held_out_images():
    from lib_lorakit.train.service import Finding, TrainPlan
    from lib_lorakit.train.steps import plan_steps

    split = split_problems([("art", 3)], 0.1)
    plan = TrainPlan(settings=resolve("style-sd15-lora", {"validation_split": 0.34, "max_train_epochs": 10}),
                     steps=plan_steps([(3, 10)], epochs=10, validation_split=0.34), base_arch="SD1",
                     findings=tuple(Finding(p.code, p.severity, p.message, p.fix) for p in split))
    html = render.plan_html(plan, {})
    assert '<th>validation images (held out)</th><td data-key="validation images (held out)">1</td>' in html
    assert '<td data-key="training images">2</td>' in html and '<td data-key="total steps">200</td>' in html
    assert 'data-code="VALIDATION_SPLIT_NO_IMAGES"' in html and "Training is blocked" in html
    off = TrainPlan(settings=resolve("style-sd15-lora"), steps=plan_steps([(3, 10)]), base_arch="SD1", findings=())
    assert "validation images" not in render.plan_html(off, {})

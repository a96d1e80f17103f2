"""Multi-GPU / multi-node options: validation, accelerate's argv, the step maths and the CLI flags."""

from __future__ import annotations

import json

import pytest
from test_cli import cli
from test_cli_train import make_project

from lib_lorakit.errors import LorakitError
from lib_lorakit.train.distributed import AccelerateOptions, accelerate_argv


def test_one_process_keeps_the_plain_command_line():
    assert accelerate_argv(AccelerateOptions()) == []
    assert accelerate_argv(AccelerateOptions(gpu_ids="1")) == ["--gpu_ids", "1"]
    assert accelerate_argv(AccelerateOptions(gpu_ids="all")) == []


def test_several_gpus_on_one_machine():
    argv = accelerate_argv(AccelerateOptions(num_processes=2, gpu_ids=" 0, 1 ", main_process_port=29501))
    assert argv == ["--multi_gpu", "--num_processes", "2", "--main_process_port", "29501", "--gpu_ids", "0,1"]


def test_several_machines_pass_the_total_and_the_rank():
    opts = AccelerateOptions(num_processes=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.5",
                             main_process_port=29500)
    assert opts.total_processes == 8
    assert accelerate_argv(opts) == ["--multi_gpu", "--num_processes", "8", "--num_machines", "2", "--machine_rank",
                                     "1", "--main_process_ip", "10.0.0.5", "--main_process_port", "29500"]
    # one GPU on each of two machines is still distributed (accelerate needs --multi_gpu for 2 processes)
    two = AccelerateOptions(num_machines=2, main_process_ip="main.lan")
    assert accelerate_argv(two)[:3] == ["--multi_gpu", "--num_processes", "2"]


@pytest.mark.parametrize("opts, message", [
    (AccelerateOptions(num_processes=0), "num_processes must be a whole number from 1"),
    (AccelerateOptions(num_machines=2, machine_rank=2, main_process_ip="h"), "machine_rank 2 must be less than "
                                                                             "num_machines 2"),
    (AccelerateOptions(machine_rank=-1), "machine_rank must be a whole number from 0"),
    (AccelerateOptions(num_machines=2), "main_process_ip is required with 2 machines"),
    (AccelerateOptions(main_process_port=0), "port number from 1 to 65535"),
    (AccelerateOptions(main_process_port=70000), "port number from 1 to 65535"),
    (AccelerateOptions(main_process_ip="bad host; rm"), "is not a host name or IP address"),
    (AccelerateOptions(num_processes=2, gpu_ids="0"), "gpu_ids lists 1 GPU(s) (0) but num_processes is 2"),
    (AccelerateOptions(num_processes=2, gpu_ids="0,0"), "names a GPU twice"),
    (AccelerateOptions(gpu_ids="cuda:0"), "list GPU numbers separated by commas"),
])
def test_invalid_options_are_refused_with_the_reason(opts, message):
    assert any(message in p for p in opts.problems())
    with pytest.raises(LorakitError, match="Multi-GPU settings") as e:
        accelerate_argv(opts)
    assert message in str(e.value)


def test_loose_values_from_forms_and_json():
    opts = AccelerateOptions.from_values(num_processes=2.0, gpu_ids="0,1", num_machines="1", machine_rank=None,
                                         main_process_ip=" ", main_process_port="")
    assert opts == AccelerateOptions(num_processes=2, gpu_ids="0,1")
    with pytest.raises(LorakitError, match="whole number"):
        AccelerateOptions.from_values(num_processes=1.5)
    with pytest.raises(LorakitError, match="Unknown multi-GPU option"):
        AccelerateOptions.from_dict({"mixed_precision": "fp16"})  # a training option, not accelerate's
    assert AccelerateOptions.from_dict(opts.to_dict()) == opts


def test_cli_flags_reach_the_command_and_the_step_plan(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    base = ["train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--set",
            "max_train_epochs=2", "--set", "max_train_steps=none", "--dry-run", "--json"]
    one = json.loads(cli(home, *base).stdout)
    two = json.loads(cli(home, *base, "--num-processes", "2", "--gpu-ids", "0,1", "--num-machines", "2",
                         "--machine-rank", "0", "--main-process-ip", "192.168.1.2", "--main-process-port",
                         "29555").stdout)
    assert "--multi_gpu" not in one["argv"]
    argv = two["argv"]
    launch = argv[argv.index("accelerate.commands.launch") + 1:argv.index("train_network.py")]
    assert launch == ["--num_cpu_threads_per_process", "2", "--multi_gpu", "--num_processes", "4",
                      "--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "192.168.1.2",
                      "--main_process_port", "29555", "--gpu_ids", "0,1"]
    # 30 images × repeats per epoch at batch 1: each of the 4 processes trains a quarter of the batches
    s1, s2 = one["plan"]["steps"], two["plan"]["steps"]
    assert s2["steps_per_epoch"] == -(-s1["steps_per_epoch"] // 4)
    run = json.loads(cli(home, "run", "status", "art", two["run"], "--json").stdout)
    assert run["meta"]["accelerate"]["num_machines"] == 2


def test_cli_refuses_a_rank_outside_the_machines(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    out = cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--num-machines", "2",
              "--machine-rank", "2", "--dry-run", check=False)
    assert out.returncode == 1
    assert "machine_rank 2 must be less than num_machines 2" in out.stderr
    assert "main_process_ip is required" in out.stderr


def test_the_train_tab_builds_the_request_from_its_multi_gpu_fields(tmp_path):
    from lib_lorakit.host import StandaloneHost
    from lib_lorakit.studio import Studio
    from lib_lorakit.ui.app import build_app
    from lib_lorakit.ui.train_panel import TrainPanel

    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    build_app(host)  # the tab, with its Multi-GPU accordion, renders
    studio = Studio(host)
    studio.create_project("art")
    panel = TrainPanel(studio, project=None)
    common = ("art", "style-sd15-lora", None, str(tmp_path / "m.safetensors"), "", "", "", True, False)
    req = panel.plan.request(*common, 2.0, "0,1", 1.0, 0.0, "", "")  # gr.Number gives floats; the port box is text
    assert req.accelerate == AccelerateOptions(num_processes=2, gpu_ids="0,1")
    with pytest.raises(LorakitError, match="machine_rank 1 must be less than num_machines 1"):
        panel.plan.request(*common, 1, "", 1, 1, "", None)

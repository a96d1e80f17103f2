"""A stand-in trainer environment for browser tests: `venv/bin/python` replays a recorded sd-scripts run.

    python = build_fake_trainer(tmp / "trainer", delay=0.03)   # then TRAIN_STYLE_TRAINER_PYTHON=python

The fake python takes the real command line (`-m accelerate.commands.launch … train_network.py --config_file
ARGS --dataset_config DS`), reads output_dir, output_name and sample_prompts from ARGS, and replays
tests/data/sd_scripts_lora_run.log with `delay` seconds per line (8 × on progress-bar lines). Where the log
saves a checkpoint it writes a real small LoRA (safetensors with sd-scripts' ss_* metadata) under the run's
output name; where it samples it writes one PNG per prompt into output_dir/sample/, named as sd-scripts names
them; where it saves state it writes `<name>-step…-state/train_state.json`. An output name ending in `-hang`
replays half the log and then waits to be stopped. The doctor's probe gets the facts of a working CPU trainer; any
other command line runs the real python (pip). `venv/lorakit-setup.json` records the required setup steps as done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lib_lorakit.train.environment import PROBE_MARK, REQUIRED_STEPS, STATE_FILE

LOG = Path(__file__).resolve().parent / "data" / "sd_scripts_lora_run.log"
RECORDED_NAME = "demo"  # the output name of the recorded run

_SCRIPT = r'''#!{python}
"""Fake trainer python (tests/fake_trainer_env.py)."""
import json, os, re, struct, sys, time, tomllib
from pathlib import Path

REAL, LOG, DELAY, RECORDED, PROBE_MARK = {python!r}, {log!r}, {delay!r}, {recorded!r}, {probe_mark!r}


def write_lora(path, name, step):
    meta = {{"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "1.0",
             "ss_base_model_version": "sd_v1", "ss_resolution": "(64, 64)", "ss_output_name": name,
             "ss_steps": str(step), "ss_epoch": "1", "ss_training_started_at": "1000.5",
             "ss_training_finished_at": "1060.5", "ss_tag_frequency": json.dumps({{"1_demo": {{"demo": 3}}}}),
             "ss_dataset_dirs": json.dumps({{"1_demo": {{"n_repeats": 1, "img_count": 3}}}})}}
    header = {{f"lora_unet_down_{{i}}.lora_up.weight": {{"dtype": "F16", "shape": [2, 2],
                                                       "data_offsets": [8 * i, 8 * i + 8]}} for i in range(3)}}
    header["__metadata__"] = meta
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(range(24)))


def write_samples(out, name, step, prompts):
    from PIL import Image

    (out / "sample").mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    for i, line in enumerate(prompts):
        seed = re.search(r" --d (\d+)", line)
        suffix = f"_{{seed.group(1)}}" if seed else ""
        Image.new("RGB", (64, 64), (40 * i % 256, 120, 200 - step)).save(
            out / "sample" / f"{{name}}_{{step:06d}}_{{i:02d}}_{{stamp}}{{suffix}}.png")


FACTS = {{"python": "3.11.7", "executable": sys.argv[0], "purelib": str(Path(sys.argv[0]).parent),
          "torch": "2.13.0+cpu", "cuda": False, "sdpa": True, "torchvision_ok": True, "bitsandbytes_ok": True,
          "accelerate_ok": True, "transformers_ok": True, "diffusers_ok": True, "safetensors_ok": True,
          "packages": {{"torch": "2.13.0", "torchvision": "0.28.0", "accelerate": "1.6.0", "transformers": "4.54.1",
                       "diffusers": "0.32.1", "safetensors": "0.4.5", "lycoris-lora": "3.4.0", "library": "0.0.0",
                       "bitsandbytes": "0.50.2"}}}}


def main(argv):
    if argv[:1] == ["-c"] and len(argv) > 1 and argv[1].startswith(PROBE_MARK):  # the doctor's probe
        print("LORAKIT_JSON " + json.dumps(FACTS))
        return 0
    if "accelerate.commands.launch" not in argv:
        os.execv(REAL, [REAL, *argv])
    with open(argv[argv.index("--config_file") + 1], "rb") as f:
        sections = tomllib.load(f).values()
    args = {{k: v for section in sections if isinstance(section, dict) for k, v in section.items()}}
    out, name = Path(args["output_dir"]), args["output_name"]
    prompts = Path(args["sample_prompts"]).read_text().splitlines() if args.get("sample_prompts") else []
    chunks = re.split(rb"(?<=[\r\n])", Path(LOG).read_bytes())
    hang = name.endswith("-hang")
    if hang:
        chunks = chunks[: len(chunks) // 2]
    for chunk in chunks:
        sys.stderr.buffer.write(chunk.replace(RECORDED.encode() + b".safetensors", name.encode() + b".safetensors"))
        sys.stderr.flush()
        text = chunk.decode("utf-8", "replace")
        saved = re.search(r"saving checkpoint: (\S+\.safetensors)", text)
        if saved:
            file = Path(saved.group(1)).name
            step = re.search(r"step(\d+)", file)
            write_lora(out / (name + file[len(RECORDED):]), name, int(step.group(1)) if step else 4)
        sampled = re.search(r"generating sample images at step[^:]*:\s*(\d+)", text)
        if sampled:
            write_samples(out, name, int(sampled.group(1)), prompts)
        state = re.search(r"save train state to \S*/(\S+-state)/train_state.json at epoch (\d+) step (\d+)", text)
        if state:
            folder = out / (name + state.group(1)[len(RECORDED):])
            folder.mkdir(exist_ok=True)
            (folder / "train_state.json").write_text(json.dumps({{"current_epoch": int(state.group(2)),
                                                                 "current_step": int(state.group(3))}}))
        time.sleep(DELAY * (8 if b"steps:" in chunk else 1))  # linger on progress lines so a poller sees them
    while hang:
        time.sleep(0.1)
    return 0


sys.exit(main(sys.argv[1:]))
'''


def build_fake_trainer(folder: Path, *, delay: float = 0.03) -> Path:
    """Create `<folder>/venv` with the fake python and a complete setup record; returns the python's path."""
    venv = Path(folder) / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    python.write_text(_SCRIPT.format(python=sys.executable, log=str(LOG), delay=delay, recorded=RECORDED_NAME,
                                     probe_mark=PROBE_MARK))
    python.chmod(0o755)
    steps = {name: {"status": "done", "fingerprint": "fake", "note": "", "at": ""} for name in REQUIRED_STEPS}
    (venv / STATE_FILE).write_text(json.dumps({"steps": steps}))
    # a stand-in sd-scripts folder (TRAIN_STYLE_SD_SCRIPTS), so tests need no submodule checkout (as in CI)
    sd_scripts = Path(folder) / "sd-scripts"
    sd_scripts.mkdir(exist_ok=True)
    (sd_scripts / "train_network.py").write_text("# replaced by the fake trainer\n")
    return python

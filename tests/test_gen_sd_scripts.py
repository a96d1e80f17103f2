"""Standalone generation through sd-scripts' gen_img.py (lib_lorakit/evaluate/sd_scripts_gen.py).

The plumbing runs against tests/fake_gen_img.py, a real process standing in for gen_img.py (it reads the prompts
file as gen_img.py does and writes one PNG per line): prompt lines, grouping into processes, sampler names, the
infotext read back by PNG Info's own reader, saving, cancel and failure. The opt-in test at the end runs the real
gen_img.py on the random full-size SD1.5 model at 64 px (TRAIN_STYLE_TRAINER_VENV, TRAIN_STYLE_SD15_DIR).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from lib_lorakit.errors import LorakitError, PathNotAllowed
from lib_lorakit.evaluate import Generator, GenRequest, LoraUse
from lib_lorakit.evaluate.infotext import save_png
from lib_lorakit.evaluate.pnginfo import lora_hashes, parse_infotext, read_image_info
from lib_lorakit.evaluate.sd_scripts_gen import (
    MAX_NETWORKS,
    MAX_SEED,
    Planned,
    SdScriptsGenerator,
    plan_groups,
    prompt_line,
    sampler_for,
)
from lib_lorakit.host import StandaloneHost
from lib_lorakit.procs import group_alive
from lib_lorakit.train.environment import TrainerEnvironment

HERE = Path(__file__).resolve().parent
SD1_KEYS = ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "model.diffusion_model.input_blocks.0.0.weight")


def write_safetensors(path: Path, keys, metadata=None, payload: bytes = b"") -> Path:
    """A small real safetensors file: F16 tensors of 2 values each, then `payload`."""
    header = {k: {"dtype": "F16", "shape": [2], "data_offsets": [4 * i, 4 * i + 4]} for i, k in enumerate(keys)}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(range(4 * len(keys))) + payload)
    return path


def lora_file(path: Path, metadata=None, payload=b"") -> Path:
    return write_safetensors(path, ["lora_unet_x.lora_down.weight", "lora_unet_x.lora_up.weight"],
                             metadata or {"ss_network_module": "networks.lora"}, payload)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A Host with one SD1 checkpoint and two LoRAs, and a trainer environment whose gen_img.py is the fake."""
    venv, sd_scripts = tmp_path / "venv", tmp_path / "sd-scripts"
    fake_python(venv)
    sd_scripts.mkdir()
    (sd_scripts / "gen_img.py").write_text((HERE / "fake_gen_img.py").read_text())
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "Lora", models=tmp_path / "models")
    ckpt = write_safetensors(tmp_path / "models" / "Stable-diffusion" / "base.safetensors", SD1_KEYS,
                             payload=b"checkpoint")
    style = lora_file(tmp_path / "Lora" / "style.safetensors", payload=b"style weights")
    other = lora_file(tmp_path / "Lora" / "sub" / "other.safetensors",
                      {"ss_network_module": "lycoris.kohya", "sshs_model_hash": "f" * 64})
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_GEN_RECORD", str(record))
    monkeypatch.delenv("FAKE_GEN_MODE", raising=False)
    trainer = TrainerEnvironment(venv, sd_scripts)
    gen = SdScriptsGenerator(host, trainer=trainer, device={"cuda": False, "sdpa": True})

    class Setup:
        pass

    s = Setup()
    s.host, s.gen, s.trainer, s.ckpt, s.style, s.other, s.tmp = host, gen, trainer, ckpt, style, other, tmp_path
    s.records = lambda: [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return s


def fake_python(venv: Path) -> Path:
    """`venv/bin/python`: this test's own interpreter (with its packages) behind a trainer venv's path."""
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- prompt lines and the process ---------------------------------------------------------------------------------

def test_each_image_gets_its_own_options_and_comes_back_in_order(setup):
    reqs = [GenRequest(prompt="a cat", negative="blurry", seed=5, steps=3, cfg=6.5, width=64, height=96),
            GenRequest(prompt="a dog", seed=-1, steps=4, cfg=7, width=128, height=64,
                       loras=(LoraUse("style", 0.8),))]
    images = setup.gen.generate(reqs)
    [run] = setup.records()
    first, second = run["items"]
    assert first == {"prompt": "a cat", "negative": "blurry", "seed": 5, "width": "64", "height": "96",
                     "steps": "3", "scale": "6.5", "muls": "0", "file": "00000.png"}
    assert second["prompt"] == "a dog" and second["negative"] == "" and second["muls"] == "0.8"
    assert 0 <= second["seed"] <= MAX_SEED
    assert [im.image.size for im in images] == [(64, 96), (128, 64)]
    assert [im.seed for im in images] == [5, second["seed"]]
    assert images[1].request.seed == second["seed"]  # the drawn seed, so the image can be made again
    args = run["args"]
    assert args["v1"] and args["sdpa"] and not args["fp16"] and not args["xformers"]
    assert args["sampler"] == "euler_a" and args["ckpt"] == str(setup.ckpt)
    assert args["network_module"] == ["networks.lora"] and args["network_weights"] == [str(setup.style)]
    assert run["cwd"] == str(setup.trainer.sd_scripts_dir)
    assert not list((setup.tmp / "home" / ".cache" / "generate").glob("gen-*"))  # the work folder is gone


def test_text_gen_img_would_misread_is_written_so_it_reads_it_back_as_given(setup):
    prompt = "#1 {masterpiece}, line one\nline two"
    images = setup.gen.generate([GenRequest(prompt=prompt, negative="{bad}|x", seed=1, width=64, height=64)])
    [item] = setup.records()[0]["items"]
    assert item["prompt"] == "#1 {masterpiece}, line one line two"  # not a comment, braces kept, one line
    assert item["negative"] == "{bad}|x"
    assert parse_infotext(images[0].infotext)["Prompt"] == prompt  # the infotext keeps the user's text


def test_an_option_marker_in_the_text_and_bad_numbers_are_refused_by_field_before_anything_runs(setup):
    reqs = [GenRequest(prompt="a cat --w 1024", seed=1), GenRequest(prompt=" ", width=100, steps=0, seed=-2)]
    with pytest.raises(LorakitError) as e:
        setup.gen.generate(reqs)
    text = str(e.value)
    for part in ("requests[0].prompt: gen_img.py reads \" --\"", "requests[1].prompt: gen_img.py needs a prompt",
                 "requests[1].width: expected a multiple of 8", "requests[1].steps: expected 1 to 1000",
                 "requests[1].seed: expected -1"):
        assert part in text
    assert setup.records() == []


# --- grouping -------------------------------------------------------------------------------------------------------

def _planned(i, ckpt="a.safetensors", sampler="Euler a", loras=(), clip_skip=None):
    req = GenRequest(prompt=f"p{i}", sampler=sampler, clip_skip=clip_skip,
                     loras=tuple(LoraUse(Path(p).stem, w) for p, w in loras))
    return Planned(index=i, request=req, seed=i, checkpoint=Path(ckpt), loras=tuple(Path(p) for p, _ in loras),
                   sampler=sampler_for(sampler))


def test_one_process_per_checkpoint_sampler_and_clip_skip_with_the_loras_it_needs():
    items = [_planned(0), _planned(1, loras=[("x.safetensors", 0.5)]), _planned(2, ckpt="b.safetensors"),
             _planned(3, sampler="DDIM"), _planned(4, loras=[("y.safetensors", 1), ("x.safetensors", 0.2)]),
             _planned(5, clip_skip=2)]
    groups = plan_groups(items)
    assert [[it.index for it in g.items] for g in groups] == [[0, 1, 4], [2], [3], [5]]
    first = groups[0]
    assert first.networks == [Path("x.safetensors"), Path("y.safetensors")]
    assert [first.weights(it) for it in first.items] == [[0, 0], [0.5, 0], [0.2, 1]]


def test_a_process_holds_at_most_max_networks_loras_and_a_file_named_twice_adds_up():
    items = [_planned(i, loras=[(f"l{i}.safetensors", 1)]) for i in range(MAX_NETWORKS + 1)]
    groups = plan_groups(items)
    assert [len(g.networks) for g in groups] == [MAX_NETWORKS, 1]
    twice = _planned(0, loras=[("x.safetensors", 0.25), ("x.safetensors", 0.5)])
    [group] = plan_groups([twice])
    assert group.weights(twice) == [0.75]
    assert prompt_line(twice, group) == "p0 --w 512 --h 512 --s 20 --l 7 --d 0 --am 0.75 --f 00000.png"


def test_separate_processes_run_for_two_checkpoints(setup):
    write_safetensors(setup.tmp / "models" / "Stable-diffusion" / "xl.safetensors",
                      ["conditioner.embedders.1.model.x"])
    reqs = [GenRequest(prompt="a", seed=1, width=64, height=64, checkpoint="base"),
            GenRequest(prompt="b", seed=2, width=64, height=64, checkpoint="xl.safetensors",
                       loras=(LoraUse("other", 1.0),)),
            GenRequest(prompt="c", seed=3, width=64, height=64, checkpoint=str(setup.ckpt))]
    images = setup.gen.generate(reqs)
    runs = setup.records()
    assert [[i["prompt"] for i in r["items"]] for r in runs] == [["a", "c"], ["b"]]
    assert runs[1]["args"]["sdxl"] and runs[1]["args"]["network_module"] == ["lycoris.kohya"]
    assert [im.request.prompt for im in images] == ["a", "b", "c"]


# --- samplers -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, webui, schedule, gen_img", [
    ("Euler a", "Euler a", None, "euler_a"), ("euler A", "Euler a", None, "euler_a"),
    ("k_euler_a", "Euler a", None, "euler_a"), ("DPM++ 2M Karras", "DPM++ 2M", "Karras", "dpmsolver++"),
    ("DDIM", "DDIM", None, "ddim"), ("PLMS", "PLMS", None, "pndm"), ("DPM2 a Karras", "DPM2 a", "Karras", "dpm_2_a"),
    ("Heun", "Heun", None, "heun"), ("LMS", "LMS", None, "lms"), ("Euler", "Euler", None, "euler")])
def test_webui_sampler_names_map_to_gen_img_samplers(name, webui, schedule, gen_img):
    choice = sampler_for(name)
    assert (choice.webui, choice.schedule, choice.gen_img) == (webui, schedule, gen_img)


@pytest.mark.parametrize("name", ["DPM++ SDE Karras", "UniPC", "Restart", ""])
def test_a_sampler_gen_img_lacks_is_refused_by_name(name):
    with pytest.raises(LorakitError) as e:
        sampler_for(name)
    assert repr(name) in str(e.value) and "Euler a" in str(e.value)


def test_the_request_names_the_bad_sampler(setup):
    with pytest.raises(LorakitError, match=r"requests\[1\]\.sampler: .*'DPM\+\+ SDE'"):
        setup.gen.generate([GenRequest(prompt="a"), GenRequest(prompt="b", sampler="DPM++ SDE")])


# --- infotext -------------------------------------------------------------------------------------------------------

def test_infotext_reads_back_through_png_info_with_model_and_lora_hashes(setup):
    req = GenRequest(prompt="a cat, smiling", negative="blurry, lowres", seed=42, steps=12, cfg=6.5, width=64,
                     height=128, sampler="DPM++ 2M Karras", clip_skip=2, checkpoint="base",
                     loras=(LoraUse("style", 0.8), LoraUse("other", 0.35, path=setup.other)))
    [image] = setup.gen.generate([req])
    path = save_png(image, setup.tmp / "out" / "cell.png")
    info = read_image_info(path)
    assert info.kind == "webui" and info.infotext == image.infotext
    p = info.parameters
    assert p["Prompt"] == "a cat, smiling <lora:style:0.8> <lora:other:0.35>"
    assert p["Negative prompt"] == "blurry, lowres"
    assert (p["Steps"], p["Sampler"], p["CFG scale"], p["Seed"], p["Size-1"], p["Size-2"]) == \
        ("12", "DPM++ 2M", "6.5", "42", "64", "128")
    assert "Schedule type" not in p and p["sd-scripts sampler"] == "dpmsolver++"
    assert p["Model"] == "base" and p["Model hash"] == sha256(setup.ckpt.read_bytes())[:10]
    assert p["Clip skip"] == "2"
    header_end = 8 + struct.unpack("<Q", setup.style.read_bytes()[:8])[0]
    assert lora_hashes(p["Lora hashes"]) == {"style": sha256(setup.style.read_bytes()[header_end:])[:12],
                                             "other": "f" * 12}  # sshs_model_hash from metadata wins
    with Image.open(path) as im:
        assert im.text["parameters"] == image.infotext and im.size == (64, 128)


def test_hashes_are_kept_while_the_file_is_unchanged(setup):
    req = GenRequest(prompt="a", seed=1, width=64, height=64, loras=(LoraUse("style", 1.0),))
    setup.gen.generate([req])
    cache = json.loads((setup.tmp / "home" / ".cache" / "file-hashes.json").read_text())
    assert {k.split(":", 1)[0] for k in cache} == {"checkpoint", "lora"}
    lora_file(setup.style, payload=b"retrained")  # the file changes: its hash is computed again
    [image] = setup.gen.generate([req])
    header_end = 8 + struct.unpack("<Q", setup.style.read_bytes()[:8])[0]
    assert sha256(setup.style.read_bytes()[header_end:])[:12] in image.infotext


# --- files the generator may open -----------------------------------------------------------------------------------

def test_checkpoints_and_loras_outside_the_allowed_folders_are_refused(setup, tmp_path):
    outside = write_safetensors(tmp_path / "elsewhere" / "evil.safetensors", SD1_KEYS)
    with pytest.raises(PathNotAllowed):
        setup.gen.generate([GenRequest(prompt="a", checkpoint=str(outside))])
    pickle = setup.tmp / "models" / "Stable-diffusion" / "old.ckpt"
    pickle.write_bytes(b"not opened")
    with pytest.raises(PathNotAllowed, match="pickles"):
        setup.gen.generate([GenRequest(prompt="a", checkpoint=str(pickle))])
    with pytest.raises(PathNotAllowed):
        setup.gen.generate([GenRequest(prompt="a", loras=(LoraUse("evil", 1, path=outside),))])
    with pytest.raises(LorakitError, match="no file named missing.safetensors"):
        setup.gen.generate([GenRequest(prompt="a", loras=(LoraUse("missing", 1),))])
    setup.gen.local_user = True  # the machine's own user may name any file, but never one sd-scripts would unpickle
    pickled = setup.tmp / "Lora" / "old.pt"
    pickled.write_bytes(b"not opened")
    with pytest.raises(PathNotAllowed, match="old.pt.*pickles"):
        setup.gen.generate([GenRequest(prompt="a", checkpoint="base", loras=(LoraUse("old", 1, path=pickled),))])
    assert setup.records() == []


def test_a_request_without_checkpoint_needs_one_when_the_host_lists_several(setup):
    write_safetensors(setup.tmp / "models" / "Stable-diffusion" / "second.safetensors", SD1_KEYS)
    with pytest.raises(LorakitError, match="name the checkpoint.*base.safetensors, second.safetensors"):
        setup.gen.generate([GenRequest(prompt="a")])
    setup.gen.default_checkpoint = "second"
    setup.gen.generate([GenRequest(prompt="a", width=64, height=64)])
    assert setup.records()[0]["args"]["ckpt"].endswith("second.safetensors")


# --- progress, cancel, failure --------------------------------------------------------------------------------------

def test_progress_counts_images_and_cancel_keeps_what_was_made(setup, monkeypatch):
    monkeypatch.setenv("FAKE_GEN_MODE", "hang")
    cancel, seen = threading.Event(), []

    def progress(done, total, message):
        seen.append((done, total, message))
        if done >= 1:
            cancel.set()

    reqs = [GenRequest(prompt=f"p{i}", seed=i, width=64, height=64) for i in range(3)]
    images = setup.gen.generate(reqs, progress=progress, cancel=cancel)
    assert [im.request.prompt for im in images] == ["p0"]
    assert seen[0][:2] == (0, 3) and "Loading base.safetensors" in seen[0][2]
    assert (1, 3, "Made image 1 of 3 with sd-scripts") in seen
    assert not group_alive(setup.records()[0]["pid"])  # the fake and its process group are gone


def test_after_a_cancel_images_pair_with_the_first_requests_by_position(setup, monkeypatch):
    write_safetensors(setup.tmp / "models" / "Stable-diffusion" / "second.safetensors", SD1_KEYS)
    monkeypatch.setenv("FAKE_GEN_MODE", "stall:second")  # the second checkpoint's process makes nothing
    cancel = threading.Event()
    reqs = [GenRequest(prompt=f"p{i}", seed=i, width=64, height=64, checkpoint=ckpt)
            for i, ckpt in enumerate(["base", "second", "base"])]
    images = setup.gen.generate(reqs, cancel=cancel,
                                progress=lambda done, total, message: "second" in message and cancel.set())
    assert cancel.is_set()
    # p0 and p2 were made by the first process, p1 never: p2 would pair with the request for p1, so it is left out
    assert [im.request.prompt for im in images] == ["p0"]


def test_a_failing_gen_img_is_an_error_with_its_log_tail(setup, monkeypatch):
    monkeypatch.setenv("FAKE_GEN_MODE", "fail")
    with pytest.raises(LorakitError) as e:
        setup.gen.generate([GenRequest(prompt=f"p{i}", seed=i, width=64, height=64) for i in range(2)])
    text = str(e.value)
    assert "failed (exit code 1)" in text and "mat1 and mat2 shapes cannot be multiplied" in text
    log = Path(text.split("Its log: ")[1].split(". Last lines")[0])
    assert log.is_file() and "mat1 and mat2" in log.read_text()  # the folder stays so the log can be read


def test_an_image_gen_img_did_not_make_is_an_error(setup, monkeypatch):
    monkeypatch.setenv("FAKE_GEN_MODE", "skip")
    with pytest.raises(LorakitError, match="ended without making 1 of its 2 images"):
        setup.gen.generate([GenRequest(prompt=f"p{i}", seed=i, width=64, height=64) for i in range(2)])


# --- the Host hands it out ------------------------------------------------------------------------------------------

def test_the_standalone_host_says_what_is_missing_before_it_hands_out_the_generator(tmp_path, monkeypatch):
    from lib_lorakit.evaluate.generators import host_generator

    monkeypatch.delenv("TRAIN_STYLE_TRAINER_PYTHON", raising=False)
    monkeypatch.setenv("TRAIN_STYLE_SD_SCRIPTS", str(tmp_path / "sd-scripts"))
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "Lora", models=tmp_path / "models")
    with pytest.raises(LorakitError, match="trainer environment.*does not exist.*trainer setup"):
        host_generator(host)
    fake_python(tmp_path / "home" / ".trainer" / "venv")
    with pytest.raises(LorakitError, match="gen_img.py.*does not exist.*submodule"):
        host_generator(host)
    (tmp_path / "sd-scripts").mkdir()
    (tmp_path / "sd-scripts" / "gen_img.py").write_text("")
    gen = host_generator(host)
    assert isinstance(gen, Generator) and gen.name == "sd-scripts"


# --- the real gen_img.py (opt-in) -----------------------------------------------------------------------------------

ROOT = HERE.parent
VENV = Path(os.environ.get("TRAIN_STYLE_TRAINER_VENV", "/nonexistent"))
MODELS = Path(os.environ.get("TRAIN_STYLE_SD15_DIR", "/nonexistent"))
REAL_TRAINER = TrainerEnvironment(VENV, ROOT / "sd-scripts")


def random_sd15_lora(path: Path) -> Path:
    """Random lora_unet_/lora_te_ weights for a few SD1.5 modules, in networks.lora's key names."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    sd = {}

    def add(name, width, dim=4):
        sd[f"{name}.lora_down.weight"] = torch.randn(dim, width, generator=g) * 0.5
        sd[f"{name}.lora_up.weight"] = torch.randn(width, dim, generator=g) * 0.5
        sd[f"{name}.alpha"] = torch.tensor(float(dim))

    for block, width in (("down_blocks_0_attentions_0", 320), ("mid_block_attentions_0", 1280)):
        for proj in ("attn1_to_q", "attn1_to_v", "attn2_to_q"):
            add(f"lora_unet_{block}_transformer_blocks_0_{proj}", width)
    for proj in ("q_proj", "v_proj"):
        add(f"lora_te_text_model_encoder_layers_0_self_attn_{proj}", 768)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"ss_network_module": "networks.lora", "ss_output_name": path.stem})
    return path


@pytest.mark.skipif(not (REAL_TRAINER.setup_complete() and (MODELS / "sd15-random.safetensors").is_file()
                         and (ROOT / "sd-scripts" / "gen_img.py").is_file()),
                    reason="the real gen_img.py needs TRAIN_STYLE_TRAINER_VENV (a complete trainer setup), "
                           "TRAIN_STYLE_SD15_DIR (tests/sd15_builder.py output) and the sd-scripts submodule")
def test_real_gen_img_makes_images_with_and_without_a_lora(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    lora = random_sd15_lora(tmp_path / "Lora" / "rnd.safetensors")
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "Lora", models=MODELS)
    gen = SdScriptsGenerator(host, trainer=REAL_TRAINER, tokenizer_cache_dir=MODELS / "tokenizers",
                             env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, keep_files=True,
                             local_user=True)
    base = dict(negative="blurry", seed=1234, steps=2, width=64, height=64, sampler="Euler a",
                checkpoint=str(MODELS / "sd15-random.safetensors"))
    reqs = [GenRequest(prompt="#1 {masterpiece} photo\nof a cat", **base),
            GenRequest(prompt="#1 {masterpiece} photo\nof a cat", loras=(LoraUse("rnd", 1.0),), **base)]
    started = time.monotonic()
    without, with_lora = gen.generate(reqs)
    print(f"real gen_img.py: 2 images at 64 px in {time.monotonic() - started:.0f} s")
    assert without.image.size == with_lora.image.size == (64, 64)
    assert without.image.tobytes() != with_lora.image.tobytes()  # the LoRA changes the picture
    assert (without.seed, with_lora.seed) == (1234, 1234)
    p0, p1 = parse_infotext(without.infotext), parse_infotext(with_lora.infotext)
    assert p0["Seed"] == p1["Seed"] == "1234" and "Lora hashes" not in p0
    assert p1["Prompt"].endswith("<lora:rnd:1>") and "rnd" in lora_hashes(p1["Lora hashes"])
    # gen_img.py's own PNGs say which prompt it read: the text as given, on one line
    made = sorted(gen.last_work_dir.glob("*/out/*.png"))
    assert len(made) == 2
    for file in made:
        with Image.open(file) as im:
            assert im.text["prompt"] == "#1 {masterpiece} photo of a cat"
            assert im.text["negative-prompt"] == "blurry" and im.text["seed"] == "1234"
    assert lora.is_file()


def test_standalone_images_hold_the_gpu_against_the_training_queue(setup, monkeypatch):
    """While gen_img.py runs, the training queue sees a generation and waits (gpu_use); while a run trains, the
    generator refuses before starting a process."""
    from lib_lorakit import gpu_use

    seen = []
    setup.gen.generate([GenRequest(prompt="a cat", seed=3, width=64, height=64, steps=2)],
                       progress=lambda done, total, message: seen.append(gpu_use.generating_now()))
    assert seen and all(s and "sd-scripts" in s for s in seen[:-1]), seen
    assert gpu_use.generating_now() is None

    class Training:
        def training_message(self):
            return "Train Style is training on this GPU (project p, run r, step 1/9)."

    monkeypatch.setattr("lib_lorakit.train.queue.TrainQueue", lambda host: Training())
    with pytest.raises(LorakitError, match="No images now: Train Style is training"):
        setup.gen.generate([GenRequest(prompt="a dog", seed=4, width=64, height=64, steps=2)])
    assert len(setup.records()) == 1, "no gen_img.py process may start while a run trains"


def test_only_whole_images_count_as_made(tmp_path):
    """gen_img.py writes each PNG in place: the progress (and so a cancel at "Made image N") counts a file only once
    it ends with PNG's last chunk, so image N is never read half-written."""
    from lib_lorakit.evaluate.sd_scripts_gen import _png_complete

    whole = tmp_path / "whole.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(whole)
    half = tmp_path / "half.png"
    half.write_bytes(whole.read_bytes()[:-20])
    (tmp_path / "empty.png").write_bytes(b"")
    assert _png_complete(whole)
    assert not _png_complete(half) and not _png_complete(tmp_path / "empty.png")

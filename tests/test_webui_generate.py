"""Generation inside a real AUTOMATIC1111 webui and against it by URL (opt-in, like tests/test_webui.py).

Set TRAIN_STYLE_WEBUI (a webui 1.10 checkout whose venv starts offline) and TRAIN_STYLE_SD15_DIR (the random
full-size SD1.5 of tests/sd15_builder.py); HF_HOME as /work/env/ENV.md says; TRAIN_STYLE_FORGE adds the grid in
Forge (tests/test_forge.py). One webui is started with --api, the
random SD1.5 as its only checkpoint and this repository as an extension. Random SD1.5 LoRAs (networks.lora key
names) are made by the tests; everything runs at 64 px with 2 steps.

(a) in the webui: a grid over a run's two saved files × weights 0 and 1 through our API, made by the webui's own
    X/Y/Z plot script in its process (WebuiHost.generator()), cells with the webui's `Lora hashes`;
(b) by URL: `remote_generator(url)` makes an image with a LoRA, and an X/Y/Z grid with a Prompt S/R axis over
    `<lora:NAME:0>`, `<lora:NAME:1>` whose infotext holds the X/Y/Z fields.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image
from test_forge import FORGE, _prepare
from test_forge import _launch as _launch_kind
from test_gen_sd_scripts import random_sd15_lora
from test_webui import WEBUI, _data_dir, _get, _launch

from lib_lorakit.errors import NotFound
from lib_lorakit.evaluate import GenRequest, LoraUse
from lib_lorakit.evaluate.pnginfo import lora_hashes, parse_infotext
from lib_lorakit.evaluate.remote import remote_generator

SD15_DIR = os.environ.get("TRAIN_STYLE_SD15_DIR")
needs_webui = pytest.mark.skipif(not WEBUI, reason="opt-in: set TRAIN_STYLE_WEBUI to a webui 1.10 checkout")
pytestmark = [pytest.mark.webui,
              pytest.mark.skipif(not (SD15_DIR and (Path(SD15_DIR) / "sd15-random.safetensors").is_file()),
                                 reason="needs TRAIN_STYLE_SD15_DIR with sd15-random.safetensors "
                                        "(tests/sd15_builder.py)")]
SMALL = dict(steps=2, width=64, height=64, sampler="Euler a", cfg=7.0)


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    data = _data_dir(tmp_path_factory)
    checkpoints = data / "checkpoints"
    checkpoints.mkdir()
    os.symlink(Path(SD15_DIR) / "sd15-random.safetensors", checkpoints / "sd15-random.safetensors")
    started = time.monotonic()
    for url in _launch(data, "--ckpt-dir", str(checkpoints)):  # the last --ckpt-dir wins
        print(f"\nwebui with the random SD1.5 up in {time.monotonic() - started:.0f} s")
        yield url, data


@needs_webui
def test_remote_generator_makes_an_image_and_a_prompt_sr_grid_with_a_lora(webui):
    url, data = webui
    random_sd15_lora(data / "models" / "Lora" / "rnd.safetensors")  # the generator asks the webui to look again
    gen = remote_generator(url)
    started = time.monotonic()
    [image] = gen.generate([GenRequest(prompt="a cat", seed=11, loras=(LoraUse("rnd", 1.0),), **SMALL)])
    params = parse_infotext(image.infotext)
    assert image.image.size == (64, 64) and image.seed == 11
    assert params["Prompt"] == "a cat <lora:rnd:1>" and "rnd" in lora_hashes(params["Lora hashes"])

    base = GenRequest(prompt="a cat", seed=11, loras=(LoraUse("rnd", 0.0),), **SMALL)
    grid = gen.xyz_grid(base, x=("Prompt S/R", ["<lora:rnd:0>", "<lora:rnd:1>"]))
    print(f"remote: 1 image and a 2-cell grid in {time.monotonic() - started:.0f} s")
    fields = parse_infotext(grid.infotext)
    assert fields["Script"] == "X/Y/Z plot" and fields["X Type"] == "Prompt S/R"
    assert fields["X Values"] == "<lora:rnd:0>,<lora:rnd:1>"
    assert [parse_infotext(c.infotext)["Prompt"] for c in grid.cells] == ["a cat <lora:rnd:0>", "a cat <lora:rnd:1>"]
    assert grid.cells[0].image.tobytes() != grid.cells[1].image.tobytes()  # the weight changes the picture
    assert grid.cells[1].image.tobytes() == image.image.tobytes()  # the same request, the same image
    assert grid.grid.width >= 128

    with pytest.raises(NotFound, match="no LoRA named 'not-there'"):
        gen.generate([GenRequest(prompt="a cat", loras=(LoraUse("not-there"),), **SMALL)])


def _make_run(home: Path, files: list[str]) -> str:
    """A finished run of project `gen` whose saved files are random SD1.5 LoRAs (written as the test's user)."""
    from lib_lorakit.fsutil import atomic_write_json, read_json
    from lib_lorakit.project import Workspace
    from lib_lorakit.train.runner import Runs, RunSpec

    project = Workspace(home).create("gen", trigger_words=("zkgen",))
    runs = Runs(project)
    run_dir = runs.new_dir("t")
    runs.create(run_dir, RunSpec(argv=(), cwd=str(run_dir), output_name="gen"), files={},
                meta={"trigger_words": ["zkgen"], "base_arch": "SD1"})
    for i, name in enumerate(files):
        random_sd15_lora(run_dir / name)
        if i:  # each file its own weights
            from safetensors.torch import load_file, save_file

            tensors = {k: v * (i + 1) for k, v in load_file(str(run_dir / name)).items()}
            save_file(tensors, str(run_dir / name), metadata={"ss_network_module": "networks.lora"})
    run = read_json(run_dir / "run.json")
    run.update(state="succeeded", files=files)
    atomic_write_json(run_dir / "run.json", run)
    return run_dir.name


@needs_webui
def test_a_grid_through_our_api_is_made_by_the_webuis_own_xyz_script_in_process(webui):
    url, data = webui
    _grid_through_our_api(url, data, version="v1.10")
    card = json.loads((data / "models" / "Lora" / "train-style" / "gen" / "gen.json").read_text())
    assert card["activation text"] == "zkgen"


@needs_webui
def test_regularisation_images_are_made_by_the_webui_in_process_one_by_one(webui):
    """The reg route asks the Host's generator for single images (WebuiGenerator.generate, not the X/Y/Z script)."""
    from lib_lorakit.project import Workspace

    url, data = webui
    Workspace(data / "train-style").create("regp")
    started = time.monotonic()
    status, body = _get(url + "/train-style/v1/projects/regp/reg/generate",
                        {"class_name": "cat", "prompt": "a cat", "count": 2, "seed": 3, "steps": 2, "resolution": 64})
    assert status == 200, body
    job = body["job"]
    deadline = time.monotonic() + 600
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(2)
        job = _get(url + f"/train-style/v1/jobs/{job['id']}")[1]
    print(f"in the webui: 2 regularisation images in {time.monotonic() - started:.0f} s")
    assert job["state"] == "done", job
    pictures = sorted((data / "train-style" / "regp" / "reg").glob("*_cat/*.png"))
    assert len(pictures) == 2
    for path, seed in zip(pictures, ("3", "4"), strict=True):
        with Image.open(path) as im:
            assert im.size == (64, 64)
            fields = parse_infotext(im.text["parameters"])
        assert fields["Prompt"] == "a cat" and fields["Seed"] == seed and fields["Version"].startswith("v1.10")


@pytest.mark.skipif(not FORGE, reason="opt-in: set TRAIN_STYLE_FORGE to a Forge checkout (tests/test_forge.py)")
def test_forge_makes_the_grid_in_process_with_its_own_axis_numbers(tmp_path_factory):
    """Forge numbers the X/Y/Z axes differently (Prompt S/R is 8) and manages models its own way."""
    data, checkpoints, _ = _prepare(tmp_path_factory.mktemp("forge-gen"))
    for url, _proc in _launch_kind("forge", data, checkpoints, {}):
        _grid_through_our_api(url, data, version="f2")


def _grid_through_our_api(url: str, data: Path, *, version: str) -> list[dict]:
    """A grid over a run's two files × weights 0 and 1 through our API; returns each cell's infotext fields."""
    run = _make_run(data / "train-style", ["gen-000001.safetensors", "gen.safetensors"])
    started = time.monotonic()
    status, body = _get(url + "/train-style/v1/projects/gen/eval",
                        {"run": run, "prompts": ["zkgen, a cat"], "weights": "0,1", "epochs": "all", "seeds": [7],
                         "steps": 2, "width": 64, "height": 64, "sampler": "Euler a"})
    assert status == 200, body
    assert body["cells"] == 4
    job = body["job"]
    deadline = time.monotonic() + 900
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(2)
        job = _get(url + f"/train-style/v1/jobs/{job['id']}")[1]
    print(f"in the webui ({version}): a 2 x 2 grid in {time.monotonic() - started:.0f} s")
    assert job["state"] == "done", job
    report = job["result"]
    assert report["generator"] == "webui" and report["state"] == "done", report
    folder = data / "train-style" / "gen" / "eval" / report["id"]
    with Image.open(folder / "grid.png") as im:
        grid_text = im.text["parameters"]
    fields = parse_infotext(grid_text)
    assert fields["Script"] == "X/Y/Z plot" and fields["X Type"] == "Prompt S/R", grid_text
    assert fields["Version"].startswith(version)  # written by the webui itself, not composed by us
    cells = sorted((folder / "cells").glob("*.png"))
    assert len(cells) == 4
    texts, pixels = [], []
    for path in cells:
        with Image.open(path) as im:
            texts.append(parse_infotext(im.text["parameters"]))
            pixels.append(im.tobytes())
    assert all(t["Seed"] == "7" and (t["Size-1"], t["Size-2"]) == ("64", "64") for t in texts)
    # each cell's infotext as the webui's own txt2img writes it: the prompt with its <lora:…> text
    assert sorted(t["Prompt"] for t in texts) == sorted(f"zkgen, a cat <lora:{name}:{w}>" for name in
                                                        ("gen-000001", "gen") for w in (0, 1))
    used = {name for t in texts for name in lora_hashes(t.get("Lora hashes", ""))}
    assert {"gen-000001", "gen"} <= used, texts  # the webui applied both registered files
    assert len(set(pixels)) > 1
    return texts

"""The extension inside a real Forge, and the GPU hand-off in Forge and in webui 1.10.1 (opt-in).

Set TRAIN_STYLE_FORGE to a Forge checkout (lllyasviel/stable-diffusion-webui-forge, main dfdcbab) whose venv can
start offline (FACTS.md), and TRAIN_STYLE_SD15_DIR to the folder of a full-size SD1.5 checkpoint
(`sd15-random.safetensors`: Forge refuses a tiny UNet). The hand-off test also runs against webui 1.10.1 when
TRAIN_STYLE_WEBUI is set (HF_HOME must then hold its offline CLIP tokenizer, as for tests/test_webui.py).
Optional: TRAIN_STYLE_FORGE_PYTHON / TRAIN_STYLE_WEBUI_PYTHON (default <checkout>/venv/bin/python).

Each webui runs with a temporary --data-dir whose extensions/ holds this repository and a temporary --ckpt-dir
holding only a link to the SD1.5 checkpoint; the trainer is the stand-in of tests/fake_trainer_env.py, so the
test measures what the webui's model holds, not what a training takes. Only one webui runs at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from fake_trainer_env import build_fake_trainer
from PIL import Image
from test_queue import drain
from test_runner import make_run

from lib_lorakit.host import MemoryUse, ModelUnload, StandaloneHost
from lib_lorakit.train.queue import TrainQueue

ROOT = Path(__file__).resolve().parents[1]
FORGE = os.environ.get("TRAIN_STYLE_FORGE")
WEBUI = os.environ.get("TRAIN_STYLE_WEBUI")
SD15_DIR = os.environ.get("TRAIN_STYLE_SD15_DIR")
needs_forge = pytest.mark.skipif(not (FORGE and SD15_DIR), reason="opt-in: set TRAIN_STYLE_FORGE to a Forge "
                                 "checkout (main dfdcbab) and TRAIN_STYLE_SD15_DIR to a full-size SD1.5 model")
needs_webui = pytest.mark.skipif(not (WEBUI and SD15_DIR), reason="opt-in: set TRAIN_STYLE_WEBUI to a webui 1.10 "
                                 "checkout and TRAIN_STYLE_SD15_DIR to a full-size SD1.5 model")
GB = 2 ** 30
CHROMIUM = os.environ.get("TRAIN_STYLE_CHROMIUM") or shutil.which("chromium")
KINDS = {  # how each webui starts on a CPU without downloads
    "forge": ("TRAIN_STYLE_FORGE", FORGE, ["--always-cpu"]),
    "webui": ("TRAIN_STYLE_WEBUI", WEBUI, ["--use-cpu", "all", "--no-half"]),
}


def _python(kind: str) -> str:
    var, root, _ = KINDS[kind]
    return os.environ.get(f"{var}_PYTHON") or str(Path(root) / "venv" / "bin" / "python")


def _get(url: str, data: dict | None = None, timeout: float = 600) -> tuple[int, dict]:
    """GET, or POST `data` as JSON; (status, JSON body) also for HTTP errors."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _rss(pid: int) -> int:
    """The webui process's resident memory in bytes, read from outside it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _pip_list(kind: str) -> dict[str, str]:
    out = subprocess.run([_python(kind), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                         check=True)
    return {p["name"].lower(): p["version"] for p in json.loads(out.stdout)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(tmp: Path) -> tuple[Path, Path, dict]:
    """A data dir with this extension, a checkpoint dir with only the SD1.5 model, the stand-in trainer's env."""
    data, ckpts = tmp / "data", tmp / "checkpoints"
    (data / "extensions").mkdir(parents=True)
    os.symlink(ROOT, data / "extensions" / "train-style")
    ckpts.mkdir()
    os.symlink(Path(SD15_DIR) / "sd15-random.safetensors", ckpts / "sd15-random.safetensors")
    python = build_fake_trainer(tmp / "trainer", delay=0.01)
    env = {"TRAIN_STYLE_TRAINER_PYTHON": str(python), "TRAIN_STYLE_SD_SCRIPTS": str(tmp / "trainer" / "sd-scripts")}
    return data, ckpts, env


def _launch(kind: str, data: Path, ckpts: Path, env: dict):
    """Start the webui; yields (url, process); stops it afterwards."""
    _, root, flags = KINDS[kind]
    port = _free_port()
    log = open(data / "webui.log", "w")
    proc = subprocess.Popen([_python(kind), "launch.py", "--skip-prepare-environment", "--skip-torch-cuda-test",
                             *flags, "--no-download-sd-model", "--api", "--port", str(port), "--data-dir", str(data),
                             "--ckpt-dir", str(ckpts)],
                            cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    try:
        # a request before the webui has added its API middleware crashes its start-up: wait for "Startup time"
        while "Startup time" not in (data / "webui.log").read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, "the webui exited:\n" + (data / "webui.log").read_text()[-4000:]
            time.sleep(1)
        while time.monotonic() < deadline:  # our routes answer a little after the webui's own API
            try:
                if _get(url + "/train-style/v1/projects", timeout=30)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, "the webui exited:\n" + (data / "webui.log").read_text()[-4000:]
            time.sleep(1)
        else:
            pytest.fail("the webui did not start:\n" + (data / "webui.log").read_text()[-4000:])
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.fixture(scope="module")
def forge(tmp_path_factory):
    if not (FORGE and SD15_DIR):
        pytest.skip("opt-in: set TRAIN_STYLE_FORGE and TRAIN_STYLE_SD15_DIR")
    tmp = tmp_path_factory.mktemp("forge")
    data, ckpts, env = _prepare(tmp)
    before = _pip_list("forge")  # install.py as the webui runs it: adds what is missing, changes nothing it has
    subprocess.run([_python("forge"), str(ROOT / "install.py")], cwd=FORGE, check=True, timeout=900,
                   env={**os.environ, "PYTHONPATH": FORGE})
    after = _pip_list("forge")
    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    for url, proc in _launch("forge", data, ckpts, env):
        yield {"url": url, "proc": proc, "data": data, "changed": changed, "after": after}


@pytest.mark.webui
@needs_forge
def test_install_py_changes_no_package_forge_has(forge):
    assert forge["changed"] == {}
    assert any(k in ("onnxruntime", "onnxruntime-gpu") for k in forge["after"])  # added for WD14 tagging


@pytest.mark.webui
@needs_forge
def test_the_tab_and_the_api_load_in_forge(forge):
    url = forge["url"]
    assert _get(url + "/train-style/v1/projects", {"name": "forge-demo"})[0] == 201
    status, body = _get(url + "/train-style/v1/projects")
    assert status == 200 and [p["name"] for p in body["projects"]] == ["forge-demo"]
    assert (forge["data"] / "train-style" / "forge-demo" / "project.toml").is_file()
    # the tab is part of the page gradio serves: its label and our components are in the page's config
    config = _get(url + "/config")[1]
    labels = {c.get("props", {}).get("label") for c in config["components"]}
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert "Train Style" in labels and "train_style_project" in ids
    assert "lib_lorakit" not in (forge["data"] / "webui.log").read_text()  # no traceback from our code


@pytest.mark.webui
@needs_forge
@pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed")
def test_the_tab_opens_in_forges_page(forge):
    from playwright.sync_api import sync_playwright

    _get(forge["url"] + "/train-style/v1/projects", {"name": "forge-demo"})  # 201, or 409 after the test above
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(forge["url"], timeout=180_000)
        page.locator("#tabs button", has_text="Train Style").first.click(timeout=180_000)
        page.wait_for_function("() => document.querySelector('#train_style_project input')?.value === 'forge-demo'",
                               timeout=60_000)
        labels = {t.strip() for t in page.locator("#train_style_tabs button").all_inner_texts()}
        browser.close()
    assert {"Dataset", "Captions", "Train"} <= labels


def _generate(url: str) -> list:
    status, body = _get(url + "/sdapi/v1/txt2img", {"prompt": "a cat", "steps": 1, "width": 64, "height": 64,
                                                     "sampler_name": "Euler", "cfg_scale": 1})
    assert status == 200, body
    return body["images"]


def _wait_run(url: str, run_id: str, states: tuple[str, ...], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _get(url + f"/train-style/v1/projects/handoff/runs/{run_id}")[1]
        if run["state"] in states:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} stayed {run['state']}, not {states}")


def _handoff(url: str, proc: subprocess.Popen, data: Path, ckpts: Path) -> dict:
    """Generate (the model loads), start a run (the queue unloads the model), measure, stop it, generate again."""
    from lib_lorakit.project import Workspace

    if not (data / "train-style" / "handoff").exists():
        project = Workspace(data / "train-style").create("handoff", trigger_words=("zkstyle",))
        concept = project.add_concept("handoff", 1)
        for name, colour in (("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220))):
            Image.new("RGB", (64, 64), colour).save(concept.folder / f"{name}.png")
            (concept.folder / f"{name}.txt").write_text(f"zkstyle, {name} square")
    assert _generate(url)
    loaded = _rss(proc.pid)
    status, run = _get(url + "/train-style/v1/projects/handoff/train",
                       {"preset": "style-sd15-lora", "base_model": str(ckpts / "sd15-random.safetensors"),
                        "overrides": {"max_train_steps": 4, "resolution": 64, "enable_bucket": False},
                        "output_name": "handoff-hang"})
    assert status == 201, run
    _wait_run(url, run["id"], ("running",))
    unloaded = _rss(proc.pid)  # the stand-in trainer hangs half-way: the model stays out until the run stops
    log_line = (data / "train-style" / "handoff" / "runs" / run["id"] / "train.log").read_text().splitlines()[0]
    assert _get(url + f"/train-style/v1/projects/handoff/runs/{run['id']}/stop", {})[0] == 200
    _wait_run(url, run["id"], ("stopped", "failed", "interrupted"))
    images = _generate(url)
    return {"loaded": loaded, "unloaded": unloaded, "again": _rss(proc.pid), "images": images, "log": log_line}


def _report(kind: str, figures: dict) -> None:
    print(f"\n{kind}: RSS with the model {figures['loaded'] / GB:.2f} GB, during the run "
          f"{figures['unloaded'] / GB:.2f} GB, after generating again {figures['again'] / GB:.2f} GB\n"
          f"{kind} run log: {figures['log']}")


@pytest.mark.webui
@needs_forge
def test_a_run_starts_with_forges_model_out_of_ram_and_forge_generates_afterwards(forge):
    figures = _handoff(forge["url"], forge["proc"], forge["data"], forge["data"].parent / "checkpoints")
    _report("forge", figures)
    assert figures["loaded"] - figures["unloaded"] > 2 * GB  # the SD1.5 model (~4 GB of weights) left the process
    assert figures["log"].startswith("Train Style unloaded the Forge webui's model (sd15-random")
    assert "RAM (process RSS)" in figures["log"] and "GB freed" in figures["log"]
    assert figures["images"]  # Forge loaded the model again by itself
    assert figures["again"] - figures["unloaded"] > 2 * GB


@pytest.mark.webui
@needs_webui
def test_a_run_starts_with_the_webuis_model_out_of_ram_and_it_generates_afterwards(tmp_path_factory):
    data, ckpts, env = _prepare(tmp_path_factory.mktemp("webui-handoff"))
    for url, proc in _launch("webui", data, ckpts, env):
        figures = _handoff(url, proc, data, ckpts)
    _report("webui 1.10.1", figures)
    assert figures["loaded"] - figures["unloaded"] > 2 * GB
    assert figures["log"].startswith("Train Style unloaded the AUTOMATIC1111 webui's model (sd15-random")
    assert figures["images"]  # the queue loaded the model back when the run ended
    assert figures["again"] - figures["unloaded"] > 2 * GB


class UnloadingHost(StandaloneHost):
    """A host whose webui had a model to free (figures as measured in Forge on the CPU, plus CUDA ones)."""

    def unload_model(self) -> ModelUnload:
        return ModelUnload(webui="Forge", model="sd15.safetensors [3ddc354c14]",
                           before=MemoryUse(rss=int(6.42 * GB), cuda_allocated=3 * GB, cuda_reserved=int(3.5 * GB)),
                           after=MemoryUse(rss=int(2.02 * GB), cuda_allocated=0, cuda_reserved=0))


def test_the_run_log_says_what_unloading_the_webuis_model_freed(workspace):
    project = workspace.create("q")
    queue = TrainQueue(UnloadingHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M"))
    runs, first = make_run(project, "success", delay=0.002)
    _, second = make_run(project, "success", delay=0.002)
    queue.add("q", first.id)
    queue.add("q", second.id)
    drain(queue)
    log = (first.dir / "train.log").read_text().splitlines()
    assert log[0] == ("Train Style unloaded the Forge webui's model (sd15.safetensors [3ddc354c14]) before training: "
                      "RAM (process RSS) 6.42 GB -> 2.02 GB (4.40 GB freed); CUDA allocated 3.00 GB -> 0.00 GB "
                      "(3.00 GB freed); CUDA reserved 3.50 GB -> 0.00 GB (3.50 GB freed).")
    assert len(log) > 10 and runs.get(first.id).state == "succeeded"  # the trainer's output follows it
    # the model stays out for the whole queue: the next run has nothing more to say about it
    assert not (second.dir / "train.log").read_text().startswith("Train Style unloaded")


def test_without_a_webui_model_nothing_is_said(workspace):
    project = workspace.create("q")
    queue = TrainQueue(StandaloneHost(home=workspace.home, lora=workspace.home / "L", models=workspace.home / "M"))
    runs, snap = make_run(project, "success", delay=0.002)
    queue.add("q", snap.id)
    drain(queue)
    assert runs.get(snap.id).state == "succeeded"
    assert "Train Style unloaded" not in (snap.dir / "train.log").read_text()
    assert ModelUnload(webui="AUTOMATIC1111", model="", before=MemoryUse(), after=MemoryUse()).message() == (
        "Train Style unloaded the AUTOMATIC1111 webui's model before training: memory could not be measured here.")

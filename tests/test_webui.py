"""The extension inside a real AUTOMATIC1111 webui (opt-in).

Set TRAIN_STYLE_WEBUI to a webui checkout whose venv can start offline (FACTS.md), e.g.
`TRAIN_STYLE_WEBUI=/path/to/stable-diffusion-webui python -m pytest tests/test_webui.py`. Optional:
TRAIN_STYLE_WEBUI_PYTHON (default <webui>/venv/bin/python). The webui runs with a temporary --data-dir whose
extensions/ holds this repository, so the checkout itself is not changed; install.py runs first, for real.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WEBUI = os.environ.get("TRAIN_STYLE_WEBUI")
pytestmark = [pytest.mark.webui,
              pytest.mark.skipif(not WEBUI, reason="opt-in: set TRAIN_STYLE_WEBUI to a webui 1.10 checkout")]
CHROMIUM = os.environ.get("TRAIN_STYLE_CHROMIUM") or shutil.which("chromium")


def _python() -> str:
    return os.environ.get("TRAIN_STYLE_WEBUI_PYTHON") or str(Path(WEBUI) / "venv" / "bin" / "python")


def _freeze() -> dict[str, str]:
    out = subprocess.run([_python(), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                         check=True)
    return {p["name"].lower(): p["version"] for p in json.loads(out.stdout)}


def _get(url: str, data: dict | None = None, opener=None) -> tuple[int, dict]:
    """GET, or POST `data` as JSON; (status, JSON body) also for HTTP errors."""
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _launch(data: Path, *extra: str, env: dict | None = None):
    """Start the webui with `data` as its data dir; yields its URL; stops it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(data / "webui.log", "w")
    proc = subprocess.Popen([_python(), "launch.py", "--skip-prepare-environment", "--skip-torch-cuda-test",
                             "--use-cpu", "all", "--no-half", "--no-download-sd-model", "--api", "--port", str(port),
                             "--data-dir", str(data), "--ckpt-dir", str(Path(WEBUI) / "models" / "Stable-diffusion"),
                             *extra],
                            cwd=WEBUI, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    # a request that arrives before the webui has added its API middleware crashes its start-up ("Cannot add
    # middleware after an application has started"): wait for its "Startup time" line before calling it
    while "Startup time" not in (data / "webui.log").read_text() and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("the webui exited:\n" + (data / "webui.log").read_text()[-4000:])
        time.sleep(1)
    while time.monotonic() < deadline:
        try:
            # our routes: the webui adds them in on_app_started, after its own API already answers
            if _get(url + "/train-style/v1/projects")[0] in (200, 401):
                break
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail("the webui exited:\n" + (data / "webui.log").read_text()[-4000:])
        time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the webui did not start:\n" + (data / "webui.log").read_text()[-4000:])
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("webui-data")
    (data / "extensions").mkdir()
    os.symlink(ROOT, data / "extensions" / "train-style")
    return data


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    data = _data_dir(tmp_path_factory)
    # 1. install.py, as the webui runs it: adds what is missing, changes nothing the webui has
    before = _freeze()
    subprocess.run([_python(), str(ROOT / "install.py")], cwd=WEBUI, check=True, timeout=600,
                   env={**os.environ, "PYTHONPATH": WEBUI})
    after = _freeze()
    pip = {"changed": {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}, "after": after}
    # 2. the webui itself, on a free port of this machine only
    yield from ((url, data, pip) for url in _launch(data))


@pytest.fixture(scope="module")
def exposed_webui(tmp_path_factory):
    """--listen (bound to loopback all the same) with a login: as on a shared network."""
    data = _data_dir(tmp_path_factory)
    yield from ((url, data) for url in _launch(data, "--listen", "--server-name", "127.0.0.1",
                                               "--gradio-auth", "artist:secret",
                                               "--train-style-home", str(data / "elsewhere")))


def test_install_py_changes_no_package_the_webui_has(webui):
    _, _, pip = webui
    assert pip["changed"] == {}
    # what it added is there: onnxruntime (at a release that accepts the webui's protobuf) for WD14 tagging
    assert any(k.lower() in ("onnxruntime", "onnxruntime-gpu") for k in pip["after"])


def test_api_is_mounted_and_imports_into_the_default_home(webui):
    url, data, _ = webui
    status, body = _get(url + "/train-style/v1/projects")
    assert status == 200 and body == {"projects": []}
    assert _get(url + "/train-style/v1/projects", {"name": "webui-demo"})[0] == 201
    home = data / "train-style"  # <data dir>/train-style is the default projects home
    assert (home / "webui-demo" / "project.toml").is_file()
    drop = home / "drop"
    drop.mkdir()
    Image.new("RGB", (80, 60), (200, 30, 30)).save(drop / "red.png")
    (drop / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    status, body = _get(url + "/train-style/v1/projects/webui-demo/import", {"paths": [str(drop)]})
    assert status == 200
    assert [i["image"] for i in body["imported"]] == ["dataset/1_webui-demo/red.png"]
    assert "broken.jpg" in body["skipped"][0]["source"]
    status, body = _get(url + "/train-style/v1/projects/webui-demo/import", {"paths": ["/etc"]})
    assert status == 403


@contextmanager
def _browser_at(url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(url, timeout=120_000)
        yield page
        browser.close()


def _open_train_style(page, project: str) -> None:
    page.locator("#tabs button", has_text="Train Style").first.click(timeout=180_000)
    page.wait_for_function(f"() => document.querySelector('#train_style_project input')?.value === '{project}'",
                           timeout=60_000)


@pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed")
def test_the_tab_appears_and_shows_the_project(webui):
    url, data, _ = webui
    with _browser_at(url) as page:
        _open_train_style(page, "webui-demo")
        page.locator("#train_style_report").last.get_by_role("cell", name="dataset/1_webui-demo").wait_for()
        # the Captions panel offers the webui's own interrogators beside WD14 and CLIP
        page.locator("#train_style_tabs button", has_text="Captions").first.click()
        labels = {t.strip() for t in page.locator("#train_style_tagger label").all_inner_texts()}
        assert {"wd14", "clip", "both", "deepbooru", "webui-clip"} <= labels
        page.locator("#train_style_tabs button", has_text="Dataset").first.click()
        if os.environ.get("TRAIN_STYLE_WEBUI_SCREENSHOT"):
            page.screenshot(path=os.environ["TRAIN_STYLE_WEBUI_SCREENSHOT"], full_page=True)


def test_listening_webui_asks_for_login_and_refuses_folder_import(exposed_webui):
    url, data = exposed_webui
    assert _get(url + "/train-style/v1/projects")[0] == 401
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(url + "/login", data=urllib.parse.urlencode({"username": "artist", "password": "secret"}).encode())

    def call(path: str, body: dict | None = None) -> tuple[int, dict]:
        return _get(url + path, body, opener)

    assert call("/train-style/v1/projects")[0] == 200
    assert call("/train-style/v1/projects", {"name": "shared"})[0] == 201
    assert (data / "elsewhere" / "shared" / "project.toml").is_file()  # --train-style-home from preload.py
    drop = data / "elsewhere" / "drop"
    drop.mkdir()
    Image.new("RGB", (64, 64), "blue").save(drop / "blue.png")
    status, body = call("/train-style/v1/projects/shared/import", {"paths": [str(drop)]})
    assert status == 403 and "Upload the images instead" in body["detail"]


@pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed")
def test_the_tab_and_api_survive_reload_ui(webui):
    url, data, _ = webui
    _get(url + "/train-style/v1/projects", {"name": "webui-demo"})  # 201, or 409 when an earlier test made it
    with _browser_at(url) as page:
        page.locator("#tabs button", has_text="Settings").first.click(timeout=120_000)
        page.locator("#settings .tab-nav button", has_text="Train Style").first.click()  # our settings section
        page.locator("#setting_train_style_allowed_roots").wait_for(timeout=20_000)
        with page.expect_navigation(timeout=180_000):  # the webui's script reloads once the new UI answers
            page.locator("#settings_restart_gradio").click()
        _open_train_style(page, "webui-demo")
    status, body = _get(url + "/train-style/v1/projects")
    assert status == 200 and [p["name"] for p in body["projects"]] == ["webui-demo"]
    routes = _get(url + "/openapi.json")[1]["paths"]
    assert {"/train-style/v1/projects/{name}/report", "/train-style/v1/projects/{name}/runs"} <= set(routes)
    log = (data / "webui.log").read_text()
    assert "Reloading" in log or "Restarting UI" in log or log.count("Running on local URL") >= 2
    assert "lib_lorakit" not in log, log[-3000:]  # no traceback from our code


_DEEPBOORU = """
import sys, torch
sys.path.insert(0, ".")
sys.argv = ["build", "--skip-torch-cuda-test", "--use-cpu", "all"]
from modules.deepbooru_model import DeepDanbooruModel
torch.manual_seed(0)
model = DeepDanbooruModel()
weight = -torch.ones_like(model.n_Conv_178.weight)  # the last layer: only the first three tags score above 0.5
weight[:3] = 1.0
model.n_Conv_178.weight.data = weight
state = model.state_dict()
state["tags"] = ["1girl", "smile", "long_hair"] + [f"unused_{i}" for i in range(weight.shape[0] - 3)]
torch.save(state, OUT, _use_new_zipfile_serialization=False)  # as old as the real file: webui 1.10.1's
# safety check refuses the `.format_version` entry that new torch writes into zip checkpoints
"""


def test_the_webuis_deepbooru_tags_a_project_through_the_host(webui):
    """The webui's own DeepBooru (its model class, its loader, its settings) as a Train Style tagger. Its real
    weights are a download; a random-weight file with the real architecture stands in, steered to three tags."""
    from lib_lorakit.project import Workspace

    url, data, _ = webui
    model = data / "models" / "torch_deepdanbooru" / "model-resnet_custom_v3.pt"
    model.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_python(), "-c", _DEEPBOORU.replace("OUT", repr(str(model)))], cwd=WEBUI, check=True,
                   capture_output=True, timeout=600)
    project = Workspace(data / "train-style").create("booru")
    folder = project.add_concept("booru", 1).folder
    for name in ("a", "b"):
        Image.new("RGB", (80, 60), (30, 120, 200) if name == "a" else (200, 60, 20)).save(folder / f"{name}.png")
    status, body = _get(url + "/train-style/v1/projects/booru/tag", {"tagger": "deepbooru", "wait": True})
    assert status == 200, body
    assert sorted(body["tagged"]) == ["dataset/1_booru/a.png", "dataset/1_booru/b.png"]
    for name in ("a", "b"):
        tags = (folder / f"{name}.txt").read_text(encoding="utf-8").strip().split(", ")
        assert sorted(tags) == ["1girl", "long hair", "smile"]  # the webui's "use spaces" setting applied
    # the webui's CLIP interrogator needs BLIP weights it downloads itself: offline that is a clear error, and
    # the captions DeepBooru wrote stay as they are
    status, body = _get(url + "/train-style/v1/projects/booru/tag", {"tagger": "webui-clip", "wait": True,
                                                                      "overwrite": True})
    assert status == 400 and "CLIP interrogator failed" in body["detail"], body
    assert sorted((folder / "a.txt").read_text(encoding="utf-8").strip().split(", ")) == ["1girl", "long hair",
                                                                                          "smile"]


TRAINER_VENV = os.environ.get("TRAIN_STYLE_TRAINER_VENV")
SD15_DIR = os.environ.get("TRAIN_STYLE_SD15_DIR")


@pytest.mark.skipif(not (TRAINER_VENV and SD15_DIR), reason="real training in the webui also needs "
                    "TRAIN_STYLE_TRAINER_VENV and TRAIN_STYLE_SD15_DIR (see tests/test_train_real.py)")
def test_training_inside_the_webui_registers_cards_and_guards_generation(tmp_path_factory):
    from lib_lorakit.project import Workspace

    data = _data_dir(tmp_path_factory)
    project = Workspace(data / "train-style").create("inweb", trigger_words=("zkstyle",))
    concept = project.add_concept("inweb", 1)
    for name, colour in (("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220))):
        Image.new("RGB", (64, 64), colour).save(concept.folder / f"{name}.png")
        (concept.folder / f"{name}.txt").write_text(f"zkstyle, {name} square")
    # the tab and the API take a base model only from the webui's checkpoints or the allowed folders
    (data / "config.json").write_text(json.dumps({"train_style_allowed_roots": str(SD15_DIR)}))
    env = {"TRAIN_STYLE_TRAINER_PYTHON": str(Path(TRAINER_VENV) / "bin" / "python"),
           "TRAIN_STYLE_TOKENIZER_CACHE": str(Path(SD15_DIR) / "tokenizers")}
    tiny = {"max_train_steps": 4, "resolution": 64, "enable_bucket": False, "network_dim": 4, "network_alpha": 2,
            "optimizer_type": "AdamW", "mixed_precision": "no", "save_precision": "float", "save_every_n_steps": 2,
            "sample_every_n_epochs": None, "cache_latents": False, "max_data_loader_n_workers": 0, "sdpa": False}
    for url in _launch(data, env=env):
        status, run = _get(url + "/train-style/v1/projects/inweb/train",
                           {"preset": "style-sd15-lora", "base_model": str(Path(SD15_DIR) / "sd15-random.safetensors"),
                            "overrides": tiny, "output_name": "inweb"})
        assert status == 201, run
        deadline, blocked = time.monotonic() + 900, None
        while time.monotonic() < deadline:
            run = _get(url + f"/train-style/v1/projects/inweb/runs/{run['id']}")[1]
            if run["state"] == "running" and blocked is None:
                blocked = _get(url + "/sdapi/v1/txt2img", {"prompt": "x", "steps": 2, "width": 64, "height": 64})
            if run["state"] not in ("queued", "starting", "running"):
                break
            time.sleep(2)
        assert run["state"] == "succeeded", run
        # generation was stopped before sampling; the tab shows the reason under the result (the API has no field)
        assert blocked and blocked[1]["images"] == [], blocked
        assert "[Train Style] Train Style is training on this GPU" in (data / "webui.log").read_text()
        deadline = time.monotonic() + 60  # the queue worker registers the files and refreshes the Lora list
        names = []
        while time.monotonic() < deadline and "inweb" not in names:
            names = [lora["name"] for lora in _get(url + "/sdapi/v1/loras")[1]]
            time.sleep(2)
        assert {"inweb", "inweb-step00000002"} <= set(names), names
        card = json.loads((data / "models" / "Lora" / "train-style" / "inweb" / "inweb.json").read_text())
        assert card["activation text"] == "zkstyle" and card["sd version"] == "SD1"
        status, image = _get(url + "/sdapi/v1/txt2img", {"prompt": "zkstyle <lora:inweb:0.8>", "steps": 2,
                                                         "width": 64, "height": 64})
        assert status == 200 and image["images"]  # the model is back and generating works again

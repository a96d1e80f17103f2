"""The generator for a webui elsewhere (`--webui-url`): the requests it sends, the X/Y/Z axes it looks up by label
in the webui's own answers, the grid it reads back, and the errors a user meets.

The webui's answers are recordings (tests/data/webui_api/README.md) served over real HTTP by a small server that
also records what it was sent; the real webui is tests/test_webui_generate.py (opt-in).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from lib_lorakit.errors import Cancelled, LorakitError, NotFound
from lib_lorakit.evaluate import GenRequest, LoraUse
from lib_lorakit.evaluate import xyz as xyz_mod
from lib_lorakit.evaluate.remote import parse_auth, remote_generator

DATA = Path(__file__).parent / "data" / "webui_api"


def _recorded(name: str):
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def _png_b64(colour: str = "red") -> str:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _single_answer(prompt: str, seed: int) -> dict:
    info = {"infotexts": [f"{prompt}\nSteps: 2, Sampler: Euler a, CFG scale: 7.0, Seed: {seed}, Size: 64x64"]}
    return {"images": [_png_b64()], "parameters": {}, "info": json.dumps(info)}


class FakeWebui:
    """A webui API over real HTTP: recorded answers per path, every request kept (method, path, headers, body)."""

    def __init__(self, kind: str = "a1111", *, status: dict | None = None, login: tuple[str, str] | None = None):
        self.kind = kind
        self.calls: list[dict] = []
        self.status = status or {}  # path → (HTTP status, raw body)
        self.login = login
        self.loras: list[dict] = []
        self.loras_after_refresh: list[dict] | None = None
        self.txt2img = None  # callable(body) → answer; default: a grid or a single image
        self.progress = {"state": {"job_count": 0, "job_no": 0}}
        self.interrupted = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                fake._answer(self, None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                fake._answer(self, json.loads(self.rfile.read(length) or b"null"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def posts(self, path: str) -> list[dict]:
        return [c["body"] for c in self.calls if c["method"] == "POST" and c["path"] == path]

    def _send(self, handler, status: int, body: bytes, content_type="application/json", extra=None):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(body)

    def _answer(self, handler, body):
        path = handler.path.split("?")[0]
        self.calls.append({"method": handler.command, "path": path, "headers": dict(handler.headers), "body": body})
        if self.login is not None:
            expected = "Basic " + base64.b64encode(":".join(self.login).encode()).decode()
            if handler.headers.get("Authorization") != expected:
                return self._send(handler, 401, b'{"detail":"Incorrect username or password"}',
                                  extra={"WWW-Authenticate": "Basic"})
        if path in self.status:
            code, raw = self.status[path]
            return self._send(handler, code, raw)
        answers = {"/sdapi/v1/script-info": lambda: _recorded(f"{self.kind}_script-info"),
                   "/sdapi/v1/samplers": lambda: _recorded(f"{self.kind}_samplers"),
                   "/sdapi/v1/schedulers": lambda: _recorded(f"{self.kind}_schedulers"),
                   "/sdapi/v1/sd-models": lambda: _recorded(f"{self.kind}_sd-models"),
                   "/sdapi/v1/loras": lambda: self.loras,
                   "/sdapi/v1/progress": lambda: self.progress}
        if path in answers:
            return self._send(handler, 200, json.dumps(answers[path]()).encode())
        if path == "/sdapi/v1/refresh-loras":
            if self.loras_after_refresh is not None:
                self.loras = self.loras_after_refresh
            return self._send(handler, 200, b"null")
        if path == "/sdapi/v1/interrupt":
            self.interrupted.set()
            return self._send(handler, 200, b"{}")
        if path == "/sdapi/v1/txt2img":
            if self.txt2img is not None:
                return self._send(handler, 200, json.dumps(self.txt2img(body)).encode())
            if body.get("script_name"):
                answer = _recorded(f"{self.kind}_txt2img_xyz")
            else:
                answer = _single_answer(body["prompt"], 7)
            return self._send(handler, 200, json.dumps(answer).encode())
        self._send(handler, 404, b'{"detail":"Not Found"}')


@pytest.fixture
def webui():
    servers = []

    def make(*args, **kwargs) -> FakeWebui:
        servers.append(FakeWebui(*args, **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


LORA = {"name": "zk-000002", "alias": "zk-000002", "path": "/x/zk-000002.safetensors", "metadata": {}}


def _webui_csv(text: str) -> list[str]:
    """How the X/Y/Z script reads a values box: CSV, spaces after commas skipped, each value stripped."""
    return [v.strip() for row in csv.reader(io.StringIO(text), skipinitialspace=True) for v in row]


# --- the grid request ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, prompt_sr, seed_axis", [("a1111", 7, 1), ("forge", 8, 1)])
def test_a_weight_grid_asks_the_webuis_xyz_script_for_prompt_sr_by_its_own_index(webui, kind, prompt_sr, seed_axis):
    server = webui(kind)
    server.loras = [LORA]
    gen = remote_generator(server.url)
    base = GenRequest(prompt="zkstyle, a cat", negative="blurry", seed=1234, steps=3, sampler="Euler a", cfg=6.5,
                      width=64, height=64, loras=(LoraUse("zk-000002", 0.0),))
    weights = ["<lora:zk-000002:0>", "<lora:zk-000002:0.5>", "<lora:zk-000002:1>"]
    result = gen.xyz_grid(base, x=("Prompt S/R", weights), y=("Seed", ["5", "6"]))

    [body] = server.posts("/sdapi/v1/txt2img")
    assert body["script_name"] == "x/y/z plot"
    args = body["script_args"]
    assert len(args) == 18
    assert args[0] == prompt_sr and _webui_csv(args[1]) == weights
    assert args[3] == seed_axis and _webui_csv(args[4]) == ["5", "6"]
    assert args[6] == 0 and args[7] == ""  # no Z axis
    assert args[9:12] == [True, True, False]  # legend, the cells too, no sub-grids
    assert args[17] is True  # values read from the text boxes (checkpoint and sampler axes too)
    assert body["prompt"] == "zkstyle, a cat <lora:zk-000002:0>"  # Prompt S/R's first value is in the prompt
    assert {k: body[k] for k in ("negative_prompt", "seed", "steps", "sampler_name", "cfg_scale", "width",
                                 "height", "batch_size", "n_iter", "send_images")} == {
        "negative_prompt": "blurry", "seed": 1234, "steps": 3, "sampler_name": "Euler a", "cfg_scale": 6.5,
        "width": 64, "height": 64, "batch_size": 1, "n_iter": 1, "send_images": True}
    assert result.grid.size[0] > 64  # the recorded answer: the grid first, then its four cells


def test_values_with_commas_reach_the_webui_as_single_values(webui):
    server = webui()
    gen = remote_generator(server.url)
    prompts = ["a cat, sitting", 'a "quoted" dog', "plain"]
    gen.xyz_grid(GenRequest(prompt="a cat, sitting"), x=("Prompt S/R", prompts))
    [body] = server.posts("/sdapi/v1/txt2img")
    assert _webui_csv(body["script_args"][1]) == prompts


def test_axis_labels_come_from_each_webuis_own_script_info():
    a1111 = xyz_mod.axis_labels_from_script_info(_recorded("a1111_script-info"))
    forge = xyz_mod.axis_labels_from_script_info(_recorded("forge_script-info"))
    assert a1111.index("Prompt S/R") == 7 and forge.index("Prompt S/R") == 8  # FACTS.md
    assert a1111[0] == forge[0] == "Nothing"
    assert xyz_mod.axis_index(forge, "Checkpoint name") == forge.index("Checkpoint name") != a1111.index(
        "Checkpoint name")
    # gradio 4 may list choices as [label, value] pairs: the labels are read the same
    paired = [{"name": "x/y/z plot", "is_img2img": False, "args": [{"label": "X type",
                                                                   "choices": [[c, c] for c in forge]}]}]
    assert xyz_mod.axis_labels_from_script_info(paired) == forge
    with pytest.raises(LorakitError, match="no X/Y/Z plot script"):
        xyz_mod.axis_labels_from_script_info([s for s in _recorded("a1111_script-info") if s["name"] != "x/y/z plot"])


def test_an_axis_the_webui_lacks_is_named_with_what_is_near(webui):
    server = webui()
    gen = remote_generator(server.url)
    with pytest.raises(LorakitError, match=r"no axis 'Prompt SR'.*'Prompt S/R'"):
        gen.xyz_grid(GenRequest(prompt="a"), x=("Prompt SR", ["a", "b"]))
    assert server.posts("/sdapi/v1/txt2img") == []


def test_prompt_sr_whose_first_value_is_not_in_the_prompt_is_refused_before_generating(webui):
    server = webui()
    server.loras = [LORA]
    gen = remote_generator(server.url)
    base = GenRequest(prompt="zkstyle", loras=(LoraUse("zk-000002", 1.0),))
    with pytest.raises(LorakitError, match=r"first value '<lora:zk-000002:0>'.*not in the prompt"):
        gen.xyz_grid(base, x=("Prompt S/R", ["<lora:zk-000002:0>", "<lora:zk-000002:1>"]))
    assert server.posts("/sdapi/v1/txt2img") == []


@pytest.mark.parametrize("kind", ["a1111", "forge"])
def test_the_recorded_grid_answer_becomes_a_grid_with_its_infotext_and_cells(webui, kind):
    server = webui(kind)
    gen = remote_generator(server.url)
    result = gen.xyz_grid(GenRequest(prompt="a photo of a cat, red"), x=("Prompt S/R", ["red", "blue"]),
                          y=("Seed", ["5", "6"]))
    assert "Script: X/Y/Z plot, X Type: Prompt S/R, X Values: \"red,blue\", Y Type: Seed" in result.infotext
    assert [c.seed for c in result.cells] == [5, 5, 6, 6]  # x counts fastest
    assert [c.infotext.split("\n")[0] for c in result.cells] == ["a photo of a cat, red", "a photo of a cat, blue"] * 2
    assert all(c.image.size == (64, 64) for c in result.cells)
    assert result.grid.size[0] >= 128 and result.grid.size[1] >= 128


# --- single images --------------------------------------------------------------------------------------------

def test_images_carry_the_infotext_from_info_and_the_lora_as_prompt_text(webui):
    server = webui()
    server.loras = [LORA]
    gen = remote_generator(server.url)
    made = gen.generate([GenRequest(prompt="zkstyle", seed=7, loras=(LoraUse("zk-000002", 0.8),),
                                    checkpoint="tiny-sd1", clip_skip=2, sampler="DPM++ 2M Karras")])
    [body] = server.posts("/sdapi/v1/txt2img")
    assert body["prompt"] == "zkstyle <lora:zk-000002:0.8>"
    assert body["sampler_name"] == "DPM++ 2M Karras"
    title = _recorded("a1111_sd-models")[0]["title"]
    assert body["override_settings"] == {"sd_model_checkpoint": title, "CLIP_stop_at_last_layers": 2}
    assert "script_name" not in body
    assert made[0].infotext.startswith("zkstyle <lora:zk-000002:0.8>\nSteps: 2") and made[0].seed == 7
    assert made[0].image.size == (64, 64)


def test_weights_are_written_as_a_person_writes_them():
    assert [xyz_mod.weight_text(w) for w in (1, 0.8, 0.6000000001, 0.25, 0.0, -0.0, 1.2, -0.5)] == [
        "1", "0.8", "0.6", "0.25", "0", "0", "1.2", "-0.5"]
    with pytest.raises(LorakitError, match="cannot be written in a webui prompt"):
        xyz_mod.lora_tag(LoraUse("bad:name>"))


@pytest.mark.parametrize("kind", ["a1111", "forge"])
def test_an_unknown_sampler_is_refused_by_name_a_known_one_with_its_schedule_passes(webui, kind):
    server = webui(kind)
    gen = remote_generator(server.url)
    with pytest.raises(LorakitError, match=r"no sampler 'Euler b'.*Euler a"):
        gen.generate([GenRequest(prompt="x", sampler="Euler b")])
    assert len(gen.generate([GenRequest(prompt="x", sampler="DPM++ 2M Karras")])) == 1
    assert server.posts("/sdapi/v1/txt2img")[0]["sampler_name"] == "DPM++ 2M Karras"


def test_an_unknown_checkpoint_is_refused_with_what_the_webui_has(webui):
    server = webui()
    gen = remote_generator(server.url)
    with pytest.raises(NotFound, match=r"no checkpoint 'sdxl-base'.*tiny-sd1"):
        gen.generate([GenRequest(prompt="x", checkpoint="sdxl-base")])
    assert server.posts("/sdapi/v1/txt2img") == []


def test_a_lora_the_webui_lacks_is_looked_for_again_then_refused(webui):
    server = webui()
    gen = remote_generator(server.url)
    with pytest.raises(NotFound, match=r"no LoRA named 'zk-000002'"):
        gen.generate([GenRequest(prompt="x", loras=(LoraUse("zk-000002"),))])
    assert len(server.posts("/sdapi/v1/refresh-loras")) == 1 and server.posts("/sdapi/v1/txt2img") == []
    server.loras_after_refresh = [LORA]  # registered meanwhile: the refresh finds it
    assert len(gen.generate([GenRequest(prompt="x", loras=(LoraUse("zk-000002"),))])) == 1


# --- errors a user meets --------------------------------------------------------------------------------------

def test_an_address_where_nothing_listens_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(LorakitError, match=rf"Cannot reach the webui at http://127.0.0.1:{port}.*running"):
        remote_generator(f"http://127.0.0.1:{port}").generate([GenRequest(prompt="x")])


def test_a_webui_without_api_says_to_start_it_with_api(webui):
    server = webui(status={p: (404, b'{"detail":"Not Found"}') for p in
                           ("/sdapi/v1/samplers", "/sdapi/v1/script-info", "/sdapi/v1/txt2img")})
    with pytest.raises(LorakitError, match="has no API.*start the webui with --api"):
        remote_generator(server.url).generate([GenRequest(prompt="x")])


def test_a_login_is_sent_as_http_basic_and_a_missing_or_wrong_one_is_named(webui):
    server = webui(login=("artist", "pa:ss"))
    with pytest.raises(LorakitError, match=r"asks for a login \(HTTP 401\).*USER:PASS"):
        remote_generator(server.url).generate([GenRequest(prompt="x")])
    with pytest.raises(LorakitError, match=r"refused the login of user 'artist'"):
        remote_generator(server.url, "artist:wrong").generate([GenRequest(prompt="x")])
    assert len(remote_generator(server.url, "artist:pa:ss").generate([GenRequest(prompt="x")])) == 1
    assert parse_auth("artist:pa:ss") == ("artist", "pa:ss")
    with pytest.raises(LorakitError, match="USER:PASS"):
        parse_auth("artist")


def test_a_server_that_is_not_a_webui_or_fails_is_named(webui):
    server = webui(status={"/sdapi/v1/samplers": (200, b"<html>hello</html>")})
    with pytest.raises(LorakitError, match="not JSON; is that address a webui"):
        remote_generator(server.url).generate([GenRequest(prompt="x")])
    server = webui(status={"/sdapi/v1/txt2img": (500, b'{"error":"OutOfMemoryError","detail":"CUDA out of memory"}')})
    with pytest.raises(LorakitError, match=r"failed on /sdapi/v1/txt2img \(HTTP 500: CUDA out of memory"):
        remote_generator(server.url).generate([GenRequest(prompt="x")])
    with pytest.raises(LorakitError, match="not an http:// or https:// URL"):
        remote_generator("file:///etc/passwd")


# --- progress and cancel --------------------------------------------------------------------------------------

def test_cancel_interrupts_the_webui_and_keeps_only_finished_images(webui):
    server = webui()
    release = threading.Event()
    cancel = threading.Event()
    prompts = []

    def txt2img(body):
        prompts.append(body["prompt"])
        if len(prompts) == 2:  # the second image: the user cancels while the webui works on it
            cancel.set()
            assert server.interrupted.wait(30), "the generator did not interrupt the webui"
        release.set()
        return _single_answer(body["prompt"], len(prompts))

    server.txt2img = txt2img
    gen = remote_generator(server.url)
    gen.poll_every = 0.02
    made = gen.generate([GenRequest(prompt=f"p{i}") for i in range(4)], cancel=cancel)
    assert [m.request.prompt for m in made] == ["p0"]  # the interrupted one is not a finished image
    assert prompts == ["p0", "p1"]  # nothing after the cancel


def test_grid_progress_follows_the_webuis_job_count_and_a_cancel_before_any_cell_is_cancelled(webui):
    server = webui()
    seen = []
    polled = threading.Event()

    def progress(done, total, message):
        seen.append((done, total, message))
        polled.set()

    def txt2img(body):
        server.progress = {"state": {"job_count": 4, "job_no": 2}}
        assert polled.wait(30)
        return _recorded("a1111_txt2img_xyz")

    server.txt2img = txt2img
    gen = remote_generator(server.url)
    gen.poll_every = 0.02
    gen.xyz_grid(GenRequest(prompt="red"), x=("Prompt S/R", ["red", "blue"]), progress=progress)
    assert (2, 4, "cell 3 of 4") in seen
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        gen.xyz_grid(GenRequest(prompt="red"), x=("Prompt S/R", ["red", "blue"]), cancel=cancel)

"""Issue 8, items 1, 8–11 over real HTTP: the standalone app started as its own process, called as an attacker would.

Other origins, a rebound Host name, oversized bodies (sent slowly over a raw socket), gradio's /file= route,
the login, and bodies that are not what the schema says. Runs under gradio 3.41 and 4.40 alike.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import types
from importlib.metadata import version
from urllib.parse import urlsplit

import httpx
import pytest
from appserver import ROOT, free_port, running_app
from PIL import Image

from lib_lorakit.errors import LorakitError
from lib_lorakit.host import StandaloneHost
from lib_lorakit.studio import MAX_SERVER_PATHS, Studio

V1 = "/train-style/v1"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app, started in a folder that holds its projects home (as when started from the folder it lives in)."""
    tmp = tmp_path_factory.mktemp("web")
    drop = tmp / "drop"
    drop.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(drop / "a.png")
    (tmp / "beside.txt").write_text("not a project file\n")
    os.symlink(tmp / "home", tmp / "link")
    with running_app(tmp / "home", tmp, "--allow-root", str(drop), cwd=tmp) as url:
        client = httpx.Client(base_url=url, timeout=30)
        assert client.post(f"{V1}/projects", json={"name": "demo"}).status_code == 201
        r = client.post(f"{V1}/projects/demo/import", json={"paths": [str(drop)], "concept": "art"})
        assert r.status_code == 200, r.text
        yield url, client, tmp


def project_names(client: httpx.Client) -> set[str]:
    return {p["name"] for p in client.get(f"{V1}/projects").json()["projects"]}


def put_json(client: httpx.Client, path: str, body: object) -> httpx.Response:
    """JSON as a browser's JSON.stringify sends it: lone surrogates as \\u escapes (httpx would refuse them)."""
    return client.put(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def cors_headers(r: httpx.Response) -> dict:
    return {k: v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


# --- 1. other origins ----------------------------------------------------------------------------------------------
def test_preflights_from_another_origin_are_refused_without_cors_headers(app):
    _, client, _ = app
    for path in (f"{V1}/projects", f"{V1}/projects/demo/import", "/upload", "/run/predict", "/config"):
        r = client.options(path, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "content-type"})
        assert r.status_code == 403, (path, r.status_code)
        assert cors_headers(r) == {}, path
        assert "evil.example" in r.json()["detail"]


def test_another_origin_can_neither_read_nor_create(app):
    url, client, _ = app
    r = client.get(f"{V1}/projects", headers={"Origin": EVIL})
    assert r.status_code == 403 and cors_headers(r) == {} and "demo" not in r.text
    r = client.get(f"{V1}/projects/demo/captions", headers={"Origin": "http://127.0.0.1:1"})  # another port
    assert r.status_code == 403 and "art" not in r.text
    # a text/plain POST (no preflight), a JSON POST, a POST with only a Referer, a "null" origin (sandboxed frame)
    attempts = [{"Origin": EVIL, "Content-Type": "text/plain"}, {"Origin": EVIL, "Content-Type": "application/json"},
                {"Referer": EVIL + "/page.html", "Content-Type": "application/json"},
                {"Origin": "null", "Content-Type": "application/json"},
                {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Content-Type": "text/plain"}]
    for i, headers in enumerate(attempts):
        r = client.post(f"{V1}/projects", content=json.dumps({"name": f"evil{i}"}), headers=headers)
        assert r.status_code == 403, headers
    r = client.post(f"{V1}/projects/demo/captions/undo", headers={"Origin": EVIL, "Content-Type": "text/plain"})
    assert r.status_code == 403
    assert project_names(client) == {"demo"}
    # the app's own page and header-less scripts keep working
    own = client.post(f"{V1}/projects", json={"name": "tabmade"}, headers={"Origin": url, "Referer": url + "/"})
    assert own.status_code == 201 and cors_headers(own) == {}
    assert client.post(f"{V1}/projects", json={"name": "scripted"}).status_code == 201
    assert {"tabmade", "scripted"} <= project_names(client)


def test_gradios_own_routes_refuse_another_origin(app):
    url, client, tmp = app
    files = {"files": ("evil.png", (tmp / "drop" / "a.png").read_bytes(), "image/png")}
    assert client.post("/upload", files=files, headers={"Origin": EVIL}).status_code == 403
    assert client.post("/upload", files=files, headers={"Origin": url}).status_code == 200
    for path in ("/run/predict", "/api/predict", "/queue/join", "/reset"):
        r = client.post(path, json={"fn_index": 0, "data": []}, headers={"Origin": EVIL})
        assert r.status_code == 403, path
    assert client.get("/config", headers={"Origin": EVIL}).status_code == 403
    assert client.get("/config", headers={"Origin": url}).status_code == 200


def raw_request(url: str, head: str, body: bytes = b"", *, read: int = 4096) -> bytes:
    """Send `head` (+ `body`) over a plain socket and return what the server answers first."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(head.encode("latin-1") + body)
        return s.recv(read)


def upgrade(url: str, origin: str | None) -> bytes:
    host = urlsplit(url).netloc
    head = (f"GET /queue/join HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    head += f"Origin: {origin}\r\n" if origin else ""
    return raw_request(url, head + "\r\n").split(b"\r\n")[0]


def test_a_websocket_from_another_origin_is_refused(app):
    url, _, _ = app
    assert b" 403 " in upgrade(url, EVIL)
    if version("gradio").startswith("3."):  # gradio 3's queue is a websocket (4.x has none): it opens for the tab
        assert b" 101 " in upgrade(url, url)


def test_a_rebound_host_name_is_refused(app):
    url, client, _ = app
    port = urlsplit(url).port
    for path in ("/", f"{V1}/projects", "/config"):
        r = client.get(path, headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 403, path
        assert "--allowed-host" in r.json()["detail"]
    r = client.post(f"{V1}/projects", json={"name": "rebound"}, headers={"Host": f"evil.example:{port}",
                                                                         "Origin": f"http://evil.example:{port}"})
    assert r.status_code == 403 and "rebound" not in project_names(client)
    assert client.get(f"{V1}/projects", headers={"Host": f"localhost:{port}"}).status_code == 200


# --- 8. oversized bodies ---------------------------------------------------------------------------------------------
def status_line(answer: bytes) -> bytes:
    return answer.split(b"\r\n")[0]


def test_a_20_mb_body_is_refused_before_it_is_read(app):
    url, client, _ = app
    host = urlsplit(url).netloc
    body = json.dumps({"paths": ["/tmp/x"] * 2_000_000}).encode()
    assert len(body) > 20_000_000
    head = (f"POST {V1}/projects/demo/import HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    # only the first 64 KiB are sent: the answer comes from the declared length alone
    assert b" 413 " in status_line(raw_request(url, head, body[:65536]))


def test_a_chunked_body_is_cut_off_once_past_the_limit(app):
    url, client, _ = app
    host = urlsplit(url).netloc
    parts = urlsplit(url)
    chunk = b"x" * 65536
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(f"POST {V1}/projects HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                  f"Transfer-Encoding: chunked\r\n\r\n".encode())
        sent, answer = 0, b""
        s.settimeout(0.05)
        while not answer and sent < 20_000_000:  # 20 MB at most, if the server kept reading
            try:
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                pass
            try:
                answer = s.recv(4096)
            except TimeoutError:
                continue
    assert b" 413 " in status_line(answer), answer[:200]
    assert sent < 4 * 1024 * 1024  # it answered after about 1 MiB, not after taking everything
    assert client.get(f"{V1}/projects").status_code == 200  # and it still serves


def test_server_path_lists_are_capped_and_deduplicated(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    studio = Studio(StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models",
                                   extra_roots=[folder]))
    spellings = [str(folder), str(folder), str(folder / "." / ""), str(folder / "sub" / "..")]
    (folder / "sub").mkdir()
    assert studio.check_server_paths(spellings) == [folder.resolve()]
    with pytest.raises(LorakitError, match="at most 10,000"):
        studio.check_server_paths([str(folder / f"{i}.png") for i in range(MAX_SERVER_PATHS + 1)])
    with pytest.raises(LorakitError, match="at most 4,096 characters"):
        studio.check_server_paths([str(folder) + "/" + "a" * 5000])


def test_too_many_paths_over_the_api_is_a_400_that_says_what_to_do(app):
    _, client, tmp = app
    paths = [str(tmp / "drop" / f"{i}.png") for i in range(MAX_SERVER_PATHS + 1)]
    r = client.post(f"{V1}/projects/demo/import", json={"paths": paths})
    assert r.status_code == 400 and "Give their folder instead" in r.json()["detail"]


# --- 9. gradio's /file= ----------------------------------------------------------------------------------------------
def test_the_file_route_serves_no_project_file(app):
    url, client, tmp = app
    home = tmp / "home"
    original = next((home / "demo" / "originals").iterdir())
    for spelled in (str(home / "demo" / "project.toml"), str(original), "home/demo/project.toml",
                    "link/demo/project.toml", str(tmp / "link" / "demo" / "project.toml"),
                    str(tmp / "drop" / ".." / "home" / "demo" / "project.toml"), str(home)):
        r = client.get(f"/file={spelled}")
        assert r.status_code in (403, 404), spelled
        assert "name =" not in r.text and "PNG" not in r.text, spelled
    if version("gradio").startswith("3."):  # gradio 3 serves the folder it was started in: the route itself works
        assert client.get(f"/file={tmp / 'beside.txt'}").text == "not a project file\n"


# --- 10. login -------------------------------------------------------------------------------------------------------
def test_a_host_beyond_this_machine_needs_a_login(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(tmp_path / "none.toml")}
    env.pop("TRAIN_STYLE_AUTH", None)
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(tmp_path / "home"), "ui", "--host",
                           "0.0.0.0", "--port", str(port)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "--auth" in done.stderr and "Refusing" in done.stderr
    with socket.socket() as s:  # nothing was left listening
        assert s.connect_ex(("127.0.0.1", port)) != 0
    bad = subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(tmp_path / "home"), "ui", "--auth",
                          "secretwithoutcolon"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "USER:PASS" in bad.stderr and "secret" not in bad.stderr


def test_with_a_login_the_api_wants_the_cookie_or_basic(tmp_path):
    (tmp_path / "auth.txt").write_text("# who may use it\nann:s3cret\n")
    with running_app(tmp_path / "home", tmp_path, "--auth-file", str(tmp_path / "auth.txt")) as url:
        client = httpx.Client(base_url=url, timeout=30)
        r = client.post(f"{V1}/projects", json={"name": "anon"})
        assert r.status_code == 401 and "Log in first" in r.json()["detail"]
        assert client.get(f"{V1}/projects").status_code == 401
        assert client.get(f"{V1}/projects", auth=("ann", "wrong")).status_code == 401
        assert client.get(f"{V1}/jobs/abc", auth=("bob", "s3cret")).status_code == 401
        assert client.post("/upload", files={"files": ("x.png", b"\x89PNG", "image/png")}).status_code == 401
        # a script: HTTP Basic with the same user and password
        assert client.post(f"{V1}/projects", json={"name": "scripted"}, auth=("ann", "s3cret")).status_code == 201
        # the tab: gradio's login sets the cookie our routes accept
        login = client.post("/login", data={"username": "ann", "password": "s3cret"}, headers={"Origin": url})
        assert login.status_code == 200, login.text
        assert client.post(f"{V1}/projects", json={"name": "tabmade"}, headers={"Origin": url}).status_code == 201
        assert {p["name"] for p in client.get(f"{V1}/projects").json()["projects"]} == {"scripted", "tabmade"}
        client.cookies.clear()
        assert client.get(f"{V1}/projects").status_code == 401
    assert not (tmp_path / "home" / "anon").exists()


# --- 11. bodies that are not what the schema says --------------------------------------------------------------------
@pytest.mark.parametrize("route,body,word", [
    ("projects", {"name": "x", "trigger": "oops"}, "trigger"),
    ("projects", [["name", "listed"]], "object"),
    ("projects/demo/import", {"paths": [], "recursive": False}, "recursive"),
    ("projects/demo/tag", [], "expected an object"),
    ("projects/demo/tag", {"wait": "yes"}, "wait"),
    ("projects/demo/captions/ops", [], "op"),
    ("projects/demo/captions/ops", {"op": "add", "tags": ["x"], "preview": 1}, "preview"),
])
def test_bad_bodies_are_a_400_naming_the_field_and_start_nothing(app, route, body, word):
    _, client, _ = app
    jobs = client.get(f"{V1}/jobs").json()["jobs"]
    r = client.post(f"{V1}/{route}", json=body)
    assert r.status_code == 400, r.text
    assert word in r.json()["detail"]
    assert client.get(f"{V1}/jobs").json()["jobs"] == jobs
    assert "listed" not in project_names(client)


def test_caption_edits_that_are_not_text_or_carry_unknown_fields_are_400(app):
    _, client, _ = app
    image = client.get(f"{V1}/projects/demo/captions").json()["captions"][0]["image"]
    for body, word in (({"image": image, "text": 5}, "text"), ({"image": image, "text": "a", "tags": []}, "tags"),
                       ({"image": image}, "text"), ({"image": [image], "text": "a"}, "image")):
        r = put_json(client, f"{V1}/projects/demo/captions", body)
        assert r.status_code == 400 and word in r.json()["detail"], (body, r.text)
    for text in ("a\ud800b", "nul\x00here", "x" * 20_000):
        r = put_json(client, f"{V1}/projects/demo/captions", {"image": image, "text": text})
        assert r.status_code in (200, 400), (text[:10], r.status_code, r.text[:200])
    for image_path in (image + "\ud800", image + "\x00"):
        r = put_json(client, f"{V1}/projects/demo/captions", {"image": image_path, "text": "x"})
        assert 400 <= r.status_code < 500, r.text


def test_odd_job_ids_and_query_values_are_4xx(app):
    _, client, _ = app
    for job in ("a" * 300, "%C3%A9t%C3%A9", "abc%00def", "..%2F..%2Fetc", "abc.json"):
        assert client.get(f"{V1}/jobs/{job}").status_code == 404, job
        assert client.post(f"{V1}/jobs/{job}/cancel").status_code == 404, job
    for path in (f"projects/demo/runs/{'a' * 300}", f"projects/{'a' * 300}/report", f"projects/{'a' * 300}/runs"):
        assert client.get(f"{V1}/{path}").status_code in (400, 404), path
    r = client.get(f"{V1}/projects/demo/captions/history", params={"limit": "many"})
    assert r.status_code == 400 and "limit" in r.json()["detail"]
    r = client.post(f"{V1}/projects", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]



# --- inside the webui: our router alone carries the checks; the webui's middleware is left as it is -----------------
@pytest.fixture
def webui_like(tmp_path, monkeypatch):
    """gradio launched as webui.py launches it (login, --gradio-allowed-path = the data dir, its CORS swap), with
    our routes mounted by webui_host's pieces. The data dir holds the projects home, as by default."""
    import gradio as gr
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware

    from lib_lorakit import api, webui_host

    data = tmp_path / "webui-data"
    home = data / "train-style"
    shared = types.SimpleNamespace(cmd_opts=types.SimpleNamespace(listen=False, server_name=None, share=False,
                                                                  ngrok=None, cors_allow_origins=None))
    monkeypatch.setitem(sys.modules, "modules", types.SimpleNamespace(shared=shared))
    monkeypatch.chdir(data.parent)
    with gr.Blocks() as demo:
        gr.Markdown("webui")
    app, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                              quiet=True, auth=[("ann", "pw")], allowed_paths=[str(data)])
    try:
        app.user_middleware = [x for x in app.user_middleware if x.cls.__name__ != "CORSMiddleware"]
        app.middleware_stack = None
        app.add_middleware(GZipMiddleware, minimum_size=1000)
        app.add_middleware(CORSMiddleware, allow_methods=["*"], allow_headers=["*"], allow_credentials=True)
        host = StandaloneHost(home=home, lora=tmp_path / "lora", models=tmp_path / "models")
        Studio(host).create_project("demo")
        webui_host._block_home_files(app, home)
        api.mount(app, host, authorize=webui_host.login_check(app), policy=webui_host.web_policy())
        yield url.rstrip("/"), home, shared
    finally:
        demo.close()


def test_inside_the_webui_our_routes_refuse_other_sites_and_want_its_login(webui_like):
    url, home, _ = webui_like
    client = httpx.Client(base_url=url, timeout=30)
    assert client.get(f"{V1}/projects").status_code == 401  # --gradio-auth covers our routes
    assert client.get(f"{V1}/projects", auth=("ann", "pw")).status_code == 200
    login = client.post("/login", data={"username": "ann", "password": "pw"})
    assert login.status_code == 200
    assert client.get(f"{V1}/projects").json()["projects"][0]["name"] == "demo"  # the tab's cookie
    r = client.post(f"{V1}/projects", content=json.dumps({"name": "evil"}),
                    headers={"Origin": EVIL, "Content-Type": "text/plain"})
    assert r.status_code == 403
    assert client.get(f"{V1}/projects", headers={"Origin": "http://localhost:1"}).status_code == 403
    port = urlsplit(url).port
    assert client.get(f"{V1}/projects", headers={"Host": f"evil.example:{port}"}).status_code == 403
    head = (f"POST {V1}/projects HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 20000000\r\n\r\n")
    assert b" 413 " in status_line(raw_request(url, head, b"[" * 65536))
    assert client.post(f"{V1}/projects", json={"name": "tabmade"}, headers={"Origin": url}).status_code == 201
    assert not (home / "evil").exists()


def test_inside_the_webui_the_file_route_serves_nothing_of_the_home(webui_like):
    url, home, _ = webui_like
    client = httpx.Client(base_url=url, timeout=30)
    client.post("/login", data={"username": "ann", "password": "pw"})
    (home.parent / "outputs.txt").write_text("the webui's own file\n")
    assert client.get(f"/file={home.parent / 'outputs.txt'}").status_code == 200  # its data dir is served
    dotted = home.parent / "x" / ".." / "train-style" / "demo" / "project.toml"
    for spelled in (home / "demo" / "project.toml", dotted):
        r = client.get(f"/file={spelled}")
        assert r.status_code == 403 and "name =" not in r.text, spelled


def test_the_webuis_listen_share_and_cors_flags_shape_the_policy(webui_like):
    from lib_lorakit import webui_host

    _, _, shared = webui_like
    assert webui_host.web_policy().hosts == {"127.0.0.1", "localhost", "::1"}
    shared.cmd_opts.listen = True
    assert webui_host.web_policy().hosts is None  # any name; --gradio-auth is the user's guard there
    shared.cmd_opts.listen, shared.cmd_opts.server_name = False, "192.168.1.5"
    assert webui_host.web_policy().hosts == {"192.168.1.5"}
    shared.cmd_opts.cors_allow_origins = "https://tools.example,http://localhost:3000"
    policy = webui_host.web_policy()
    lan = {"host": "192.168.1.5:7860"}
    assert policy.refusal(method="POST", headers={**lan, "origin": "https://tools.example"}) is None
    assert policy.refusal(method="POST", headers={**lan, "origin": EVIL}) is not None

"""Issue 8, item 1 in a real browser: a page of another origin, open in the user's Chromium, against the app.

The hostile page is served by the test from another port (another origin, as any website is). Its script tries
to read the projects, create one with a JSON fetch (preflighted), create one with a text/plain fetch (no
preflight), and undo a caption edit with a text/plain form post. Nothing may be read or changed; the app's own
tab keeps working. A name pointed at 127.0.0.1 (DNS rebinding) is refused as well.
"""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import pytest
from appserver import running_app
from PIL import Image
from test_browser import CHROMIUM, playwright_api

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed")]
V1 = "/train-style/v1"

EVIL_PAGE = """<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" target="sink" enctype="text/plain"
      action="APP_URL/train-style/v1/projects/demo/captions/undo">
<input name='{"x":"' value='"}'></form>
<script>
const APP = "APP_URL";
window.results = {};
async function attempt(key, run) {
  try { results[key] = await run(); } catch (e) { results[key] = "blocked"; }
}
(async () => {
  await attempt("read", async () => "read: " + await (await fetch(APP + "/train-style/v1/projects")).text());
  await attempt("read_credentials", async () =>
      "read: " + await (await fetch(APP + "/train-style/v1/projects", {credentials: "include"})).text());
  await attempt("json", async () => "status " + (await fetch(APP + "/train-style/v1/projects", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "evil_json"})})).status);
  await attempt("text", async () => "sent " + (await fetch(APP + "/train-style/v1/projects", {method: "POST",
      mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: JSON.stringify({name: "evil_text"})})).type);
  document.querySelector("iframe").addEventListener("load", () => { results.form = "posted"; });
  document.getElementById("f").submit();
})();
</script></body></html>"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app with one project whose caption was edited once (so there is an edit to undo)."""
    tmp = tmp_path_factory.mktemp("browser-sec")
    drop = tmp / "drop"
    drop.mkdir()
    Image.new("RGB", (64, 64), (20, 90, 200)).save(drop / "a.png")
    with running_app(tmp / "home", tmp, "--allow-root", str(drop)) as url:
        client = httpx.Client(base_url=url, timeout=30)
        assert client.post(f"{V1}/projects", json={"name": "demo"}).status_code == 201
        assert client.post(f"{V1}/projects/demo/import", json={"paths": [str(drop)]}).status_code == 200
        image = client.get(f"{V1}/projects/demo/captions").json()["captions"][0]["image"]
        r = client.put(f"{V1}/projects/demo/captions", json={"image": image, "text": "blue square"})
        assert r.status_code == 200, r.text
        yield url, client


@pytest.fixture(scope="module")
def evil_site(app, tmp_path_factory):
    """Another origin: a plain HTTP server on another port with the hostile page."""
    url, _ = app
    root = tmp_path_factory.mktemp("evil-site")
    (root / "index.html").write_text(EVIL_PAGE.replace("APP_URL", url))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        # evil.example resolves to this machine, as a DNS-rebinding attacker would arrange
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--host-resolver-rules=MAP evil.example 127.0.0.1"])
        try:
            yield b
        finally:
            b.close()


def captions(client: httpx.Client) -> list[str]:
    return [c["text"] for c in client.get(f"{V1}/projects/demo/captions").json()["captions"]]


def test_a_page_of_another_origin_can_neither_read_nor_change_anything(app, evil_site, browser):
    url, client = app
    page = browser.new_page()
    page.goto(evil_site)
    page.wait_for_function("() => ['read', 'read_credentials', 'json', 'text', 'form'].every(k => k in results)",
                           timeout=30_000)
    results = page.evaluate("() => results")
    assert results["read"] == "blocked" and results["read_credentials"] == "blocked", results
    assert results["json"] == "blocked", results  # its preflight is refused, so the POST is never sent
    names = {p["name"] for p in client.get(f"{V1}/projects").json()["projects"]}
    assert names == {"demo"}  # neither the JSON nor the text/plain POST created anything
    assert captions(client) == ["blue square"]  # the form post did not undo the edit
    page.close()


def test_the_apps_own_page_still_reads_and_changes(app, browser):
    url, client = app
    page = browser.new_page()
    page.goto(url)
    made = page.evaluate("""async (url) => {
        const r = await fetch(url + "/train-style/v1/projects", {method: "POST",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify({name: "from_tab"})});
        const list = await (await fetch(url + "/train-style/v1/projects")).json();
        return [r.status, list.projects.map(p => p.name)];
    }""", url)
    assert made[0] == 201 and "from_tab" in made[1]
    page.close()


def test_a_rebound_name_gets_nothing(app, browser):
    url, client = app
    port = urlsplit(url).port
    page = browser.new_page()
    for path in ("/", f"{V1}/projects"):
        response = page.goto(f"http://evil.example:{port}{path}")
        assert response.status == 403, path
        assert "demo" not in page.content()
        assert "--allowed-host" in json.loads(page.inner_text("body"))["detail"]
    page.close()

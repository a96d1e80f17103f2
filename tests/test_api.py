"""The HTTP API on a real FastAPI app: confinement to allowed roots, imports, reports, background jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from awkward import build_awkward_folder
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from PIL import Image

from lib_lorakit import api
from lib_lorakit.host import StandaloneHost


def make_client(tmp_path: Path, *, roots=(), exposed=False, authorize=None) -> tuple[TestClient, StandaloneHost]:
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models",
                          extra_roots=[Path(r) for r in roots], exposed=exposed)
    app = FastAPI()
    api.mount(app, host, authorize=authorize)
    return TestClient(app), host


@pytest.fixture
def awk(tmp_path):
    return build_awkward_folder(tmp_path / "user")


def test_import_inside_an_allowed_root_and_report(tmp_path, awk):
    client, _ = make_client(tmp_path, roots=[awk.root])
    assert client.post("/train-style/v1/projects", json={"name": "demo"}).status_code == 201
    assert client.get("/train-style/v1/projects").json()["projects"][0]["name"] == "demo"
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": [str(awk.root)], "concept": "art"})
    assert r.status_code == 200
    data = r.json()
    assert {i["source"] for i in data["imported"]} == {awk.display(rel) for rel in awk.good}
    skipped = {s["source"]: s["reason"] for s in data["skipped"]}
    assert "outside the allowed folders" in skipped[awk.display("links/outside.png")]
    report = client.get("/train-style/v1/projects/demo/report").json()
    assert report["concepts"][0]["images"] == len(awk.good)


def test_a_path_outside_the_roots_is_refused_with_403(tmp_path, awk):
    client, _ = make_client(tmp_path, roots=[awk.root])
    client.post("/train-style/v1/projects", json={"name": "demo"})
    for path in (str(awk.outside), str(awk.root / ".." / "elsewhere"), "/etc", str(awk.root) + "\x00x"):
        r = client.post("/train-style/v1/projects/demo/import", json={"paths": [path]})
        assert r.status_code == 403, path
        assert "outside the allowed folders" in r.json()["detail"] or "NUL" in r.json()["detail"]
    # a symlink inside the root whose target is outside counts as outside
    os.symlink(awk.outside, awk.root / "sneaky")
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": [str(awk.root / "sneaky")]})
    assert r.status_code == 403
    assert not any((tmp_path / "home" / "demo" / "dataset").rglob("*.png"))


def test_exposed_server_without_roots_refuses_folder_import(tmp_path, awk):
    client, host = make_client(tmp_path, exposed=True)
    client.post("/train-style/v1/projects", json={"name": "demo"})
    inside_home = host.projects_home() / "drop"
    inside_home.mkdir()
    Image.new("RGB", (64, 64), "red").save(inside_home / "a.png")
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": [str(inside_home)]})
    assert r.status_code == 403 and "Upload the images instead" in r.json()["detail"]
    # with a configured root the same server imports from it
    client2, _ = make_client(tmp_path, roots=[awk.root], exposed=True)
    r = client2.post("/train-style/v1/projects/demo/import", json={"paths": [str(awk.root / "photos")]})
    assert r.status_code == 200 and r.json()["imported"]


def test_unknown_project_and_bad_names(tmp_path):
    client, _ = make_client(tmp_path)
    assert client.get("/train-style/v1/projects/nope/report").status_code == 404
    assert client.post("/train-style/v1/projects", json={"name": "../up"}).status_code == 400
    client.post("/train-style/v1/projects", json={"name": "p"})
    assert client.post("/train-style/v1/projects", json={"name": "p"}).status_code == 409


def test_background_import_runs_as_a_job_that_can_be_polled(tmp_path, awk):
    client, _ = make_client(tmp_path, roots=[awk.root])
    client.post("/train-style/v1/projects", json={"name": "demo"})
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": [str(awk.root)], "background": True})
    job = r.json()["job"]
    deadline = time.monotonic() + 60
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/train-style/v1/jobs/{job['id']}").json()
    assert job["state"] == "done", job
    assert len(job["result"]["imported"]) == len(awk.good)
    assert job["done"] == job["total"] > 0
    listed = client.get("/train-style/v1/jobs", params={"project": "demo"}).json()["jobs"]
    assert listed[0]["id"] == job["id"]
    assert client.get("/train-style/v1/jobs/..%2Fx").status_code == 404


def test_authorize_hook_guards_every_route(tmp_path):
    def deny(request: Request) -> None:
        if request.headers.get("x-ok") != "1":
            raise HTTPException(status_code=401, detail="Log in first.")

    client, _ = make_client(tmp_path, authorize=deny)
    assert client.get("/train-style/v1/projects").status_code == 401
    assert client.get("/train-style/v1/projects", headers={"x-ok": "1"}).status_code == 200


def test_mounting_twice_keeps_one_set_of_routes(tmp_path):
    host = StandaloneHost(home=tmp_path / "h", lora=tmp_path / "l", models=tmp_path / "m")
    app = FastAPI()
    api.mount(app, host)
    api.mount(app, host)
    routes = [(r.path, tuple(sorted(r.methods))) for r in app.router.routes if r.path.startswith(api.PREFIX)]
    assert len(routes) == len(set(routes)) > 3

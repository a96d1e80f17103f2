"""The front ends (CLI, HTTP API, panels) go through the one door, and the API maps errors in one place.

- Statically: no module of `cli/`, `api/` or `ui/` imports a core service or store (a project, the caption store,
  the dataset index, the importer, the job manager…) or reaches for the raw ones the Studio keeps (`.workspace`,
  `.store(...)`): they call `Studio` and what it hands out.
- Over HTTP: every route, ours and any a later module adds to the router, answers the exception family with one
  status table (400, 403, 404, 409) and the error's own words; a fault of ours stays a 500.
"""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from lib_lorakit import api, websec
from lib_lorakit.errors import AlreadyExists, InvalidName, LorakitError, NotFound, PathNotAllowed
from lib_lorakit.host import StandaloneHost

ROOT = Path(__file__).resolve().parents[1] / "lib_lorakit"
FRONT_ENDS = ("cli", "api", "ui")
# Core services and stores (and the functions that open a project's files themselves). A front end gets these
# through the Studio; request/result types, schemas and pure formatting helpers are fine to import.
SERVICES = frozenset({
    "Workspace", "Project", "CaptionStore", "CaptionService", "DatasetIndex", "import_paths", "import_sources",
    "sources_from_uploads", "build_report", "thumbnail", "remove_copies", "fix_finding", "job_manager", "JobManager",
    "filter_records", "frequency", "execute", "audit", "TrainingService", "TrainQueue", "Runs",
})
RAW_ATTRIBUTES = frozenset({"workspace", "store"})  # the Studio's own Workspace, the caption service's stores


def front_end_files() -> list[Path]:
    return sorted(p for sub in FRONT_ENDS for p in (ROOT / sub).rglob("*.py"))


def violations(source: str, module: str) -> list[str]:
    """What in `source` (a module of lib_lorakit/<module>) reaches past the door."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("lib_lorakit")):
            found += [f"imports {a.name} from {'.' * node.level}{node.module or ''}" for a in node.names
                      if a.name in SERVICES]
        elif isinstance(node, ast.Attribute) and node.attr in RAW_ATTRIBUTES:
            found.append(f"uses .{node.attr} (line {node.lineno})")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "project"
              and isinstance(node.func.value, (ast.Name, ast.Attribute))):  # studio.project(name) → the raw Project
            found.append(f"opens the raw Project with .project(...) (line {node.lineno})")
    return [f"{module}: {v}" for v in found]


def test_no_front_end_builds_a_core_service_itself():
    offenders = [v for path in front_end_files()
                 for v in violations(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())]
    assert offenders == [], "front ends go through Studio: " + "; ".join(offenders)


def test_the_static_check_sees_what_it_must_refuse():
    # guards the test above against passing because it looked at nothing or recognises nothing
    names = {p.relative_to(ROOT).as_posix() for p in front_end_files()}
    assert {"cli/__init__.py", "cli/captions.py", "api/__init__.py", "api/captions.py", "ui/captions_panel.py",
            "ui/dataset_panel.py"} <= names
    assert violations("from ..dataset.index import DatasetIndex\n", "x")
    assert violations("from lib_lorakit.captions.store import CaptionStore\n", "x")
    assert violations("rows = studio.workspace.listing()\n", "x")
    assert violations("texts = studio.captions.store(name).records()\n", "x")
    assert violations("words = self.studio.project(name).settings.trigger_words\n", "x")
    assert violations("from ..captions.ops import CaptionOp, filter_records\n", "x") == [
        "x: imports filter_records from ..captions.ops"]
    assert violations("from ..captions.service import TAG_SCHEMA, TagRequest\nfrom ..studio import Studio\n",
                      "x") == []


# --- one error map --------------------------------------------------------------------------------------------------
@pytest.fixture
def client(tmp_path):
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    return TestClient(app, raise_server_exceptions=False)


V1 = websec.API_PREFIX


def test_the_real_routes_answer_the_family_with_its_status_and_words(client):
    assert client.post(f"{V1}/projects", json={"name": "art"}).status_code == 201
    taken = client.post(f"{V1}/projects", json={"name": "art"})
    assert taken.status_code == 409 and "art" in taken.json()["detail"]
    bad = client.post(f"{V1}/projects", json={"name": "../art"})
    assert bad.status_code == 400 and bad.json()["detail"]
    for path in (f"{V1}/projects/nope/report", f"{V1}/projects/nope/captions", f"{V1}/projects/nope/runs"):
        missing = client.get(path)
        assert missing.status_code == 404 and "nope" in missing.json()["detail"], path
    outside = client.get(f"{V1}/lora-info", params={"path": "/etc/passwd"})
    assert outside.status_code == 403 and outside.json()["detail"]
    long_name = client.get(f"{V1}/projects/{'a' * 5000}/report")
    assert long_name.status_code == 400 and "the limit is 100" in long_name.json()["detail"]
    op = client.post(f"{V1}/projects/art/captions/ops", json={"op": "add", "tags": ["x"], "preview": "yes"})
    assert op.status_code == 400 and op.json() == {"detail": "preview: expected true or false, got str"}


def _raising(error: Exception):
    def route() -> dict:
        raise error
    return route


def _router_with(errors: dict[str, Exception]) -> TestClient:
    """A router like the API's with routes a later module might add: plain functions that raise, no wrapper."""
    r = APIRouter(prefix=V1, route_class=websec.guarded_route_class(websec.WebPolicy()),
                  default_response_class=websec.SafeJSONResponse)
    for name, error in errors.items():
        r.add_api_route(f"/{name}", _raising(error), methods=["GET"])
    app = FastAPI()
    app.include_router(r)
    return TestClient(app, raise_server_exceptions=False)


def test_a_route_added_later_gets_the_same_map_without_wrapping_anything():
    errors = {
        "lorakit": LorakitError("Say what happened and what to do."), "name": InvalidName("bad name"),
        "outside": PathNotAllowed("outside the allowed folders"), "missing": NotFound("no such project"),
        "taken": AlreadyExists("the name is taken"), "value": ValueError("not a number"),
        "type": TypeError("expected a list"), "surrogate": LorakitError("file \udcff.png is odd"),
        "too-long": OSError(errno.ENAMETOOLONG, "File name too long", "/srv/secret/" + "a" * 300),
        "ours": RuntimeError("a bug of ours"), "disk": OSError(errno.EIO, "I/O error", "/srv/secret/x"),
    }
    client = _router_with(errors)
    answers = {name: client.get(f"{V1}/{name}") for name in errors}
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {"lorakit": 400, "name": 400, "outside": 403, "missing": 404, "taken": 409, "value": 400,
                        "type": 400, "surrogate": 400, "too-long": 400, "ours": 500, "disk": 500}
    for name in ("lorakit", "name", "outside", "missing", "taken", "value", "type"):
        assert answers[name].json() == {"detail": str(errors[name])}, name
    assert answers["surrogate"].json() == {"detail": "file \udcff.png is odd"}  # escaped, not a 500
    assert answers["too-long"].json() == {"detail": websec.NAME_TOO_LONG}  # the server's path is not shown
    for name in ("ours", "disk"):
        assert "secret" not in answers[name].text and "bug" not in answers[name].text

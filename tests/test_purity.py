"""The core stays free of the webui and gradio, and importing it has no side effects."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "lib_lorakit"
MAY_IMPORT_UI = ("ui/", "webui_host.py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_ui_and_webui_host_import_gradio_or_modules():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).as_posix()
        if rel.startswith(MAY_IMPORT_UI):
            continue
        bad = _imports(path) & {"gradio", "modules"}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == [], "core modules must not import the webui or gradio: " + "; ".join(offenders)


def test_the_walk_sees_the_ui_modules_it_exempts():
    # guards the test above against passing because it looked at nothing
    assert "gradio" in _imports(CORE / "ui" / "dataset_panel.py")
    assert len(list(CORE.rglob("*.py"))) > 10


PROBE = r"""
import json, os, socket, sys
def refuse(*a, **k):
    raise AssertionError("a socket was opened while importing")
socket.socket.connect = refuse
socket.socket.bind = refuse
import pkgutil, importlib, lib_lorakit
skip = ("lib_lorakit.ui", "lib_lorakit.webui_host", "lib_lorakit.__main__")
names = [m.name for m in pkgutil.walk_packages(lib_lorakit.__path__, "lib_lorakit.")
         if not m.name.startswith(skip)]
for n in names:
    importlib.import_module(n)
heavy = [m for m in ("torch", "onnxruntime", "open_clip", "gradio", "modules", "transformers") if m in sys.modules]
print(json.dumps({"modules": names, "heavy": heavy}))
"""


def test_importing_the_core_creates_nothing_loads_no_model_opens_no_socket(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "lib_lorakit.dataset.importer" in result["modules"]
    assert result["heavy"] == []
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []

"""Which of our requirements a Python environment lacks, without ever touching what it already has.

Used by `install.py` inside the webui: a package the webui pins (gradio, torch, Pillow, numpy, …) is never
upgraded or downgraded; only packages that are absent get installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional

# The webui 1.10.1 pins (requirements_versions.txt) and Forge's gradio: requirements must admit all of them.
WEBUI_PINS = {"gradio": "3.41.2", "fastapi": "0.94.0", "transformers": "4.30.2", "accelerate": "0.21.0",
              "pillow": "9.5.0", "numpy": "1.26.2", "safetensors": "0.4.2", "httpx": "0.24.1"}
FORGE_PINS = {"gradio": "4.40.0"}
# Distributions that provide the same import as a requirement: a user's onnxruntime-gpu must not be joined by the
# CPU onnxruntime (the two overwrite each other's files and the GPU build is lost).
ALTERNATIVES = {"onnxruntime": ("onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                                "onnxruntime-silicon", "ort-nightly-gpu")}


@dataclass(frozen=True)
class Requirement:
    line: str
    name: str
    specifier: str
    marker: str

    @property
    def key(self) -> str:
        return canonical(self.name)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(text: str) -> list[Requirement]:
    reqs = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        spec, _, marker = line.partition(";")
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", spec.strip())
        if not m:
            raise ValueError(f"cannot read requirement {raw!r}")
        reqs.append(Requirement(line=line, name=m.group(1), specifier=m.group(2).strip(), marker=marker.strip()))
    return reqs


def applies(req: Requirement) -> bool:
    if not req.marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - packaging ships with pip's vendored copy in every webui venv
        return True
    return Marker(req.marker).evaluate()


def admits(req: Requirement, version: str) -> bool:
    if not req.specifier:
        return True
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(req.specifier).contains(version, prereleases=True)


def installed_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Plan:
    install: list[str]
    mismatched: list[str]  # present at a version we would not choose: left alone, with a warning


def plan_install(requirements_file: Path,
                 version_of: Callable[[str], Optional[str]] = installed_version) -> Plan:
    install, mismatched = [], []
    for req in parse_requirements(requirements_file.read_text(encoding="utf-8")):
        if not applies(req):
            continue
        have = version_of(req.name)
        if have is None and any(version_of(alt) for alt in ALTERNATIVES.get(req.key, ())):
            continue
        if have is None:
            install.append(req.line)
        elif not admits(req, have):
            mismatched.append(f"{req.name} {have} is installed; Train Style asks for {req.specifier} but leaves "
                              "it alone so the webui keeps working")
    return Plan(install=install, mismatched=mismatched)


def pinned_environment() -> list[str]:
    """`name==version` for every distribution installed in this environment: given to pip as constraints, it lets
    pip add what is missing but never upgrade or downgrade a package the webui has (e.g. a newer onnxruntime that
    would pull protobuf 4 over the webui's 3.20); pip picks an older release or fails instead."""
    pins: dict[str, str] = {}
    for dist in metadata.distributions():
        name, version = dist.metadata["Name"], dist.version
        if name and version:
            pins[canonical(name)] = f"{name}=={version}"
    return sorted(pins.values(), key=str.lower)

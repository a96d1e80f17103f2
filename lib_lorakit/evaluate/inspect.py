"""Inspect: an image's generation parameters with the LoRAs it names resolved to local files, ours to their run.

A LoRA is named by `Lora hashes` (alias and short hash, the webui's infotext) and/or `<lora:NAME:W>` in the prompt.
It is found in the Host's Lora folder by short hash (the webui's: `sshs_model_hash` from the metadata, else the
sha256 of the file after its header; results.lora_info), else by name; a file whose hash is one of our runs' saved
files is ours: its project, run and epoch (or step) are given. Hashes are cached by path, mtime and size in
`<projects home>/.cache/lora-hashes.json`, so a folder of large LoRAs is hashed once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError
from ..fsutil import atomic_write_json, read_json
from ..results.lora_info import read_header, webui_hash
from .pnginfo import ImageInfo, LoraRef, read_image_bytes, read_image_info

log = logging.getLogger(__name__)
MAX_LORA_FILES = 5000  # files of the Lora folder looked at for one inspection
RE_EPOCH = re.compile(r"-(\d{6})$")  # sd-scripts: <name>-<epoch:06d>.safetensors
RE_STEP = re.compile(r"-step(\d{8})$")  # sd-scripts: <name>-step<step:08d>.safetensors


@dataclass(frozen=True)
class LoraFile:
    """What a LoRA file's header and bytes say, as far as finding it goes."""

    path: Path
    sha256: str
    output_name: str
    epoch: Optional[int]

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


@dataclass(frozen=True)
class RunFile:
    """One of our runs' saved LoRAs: which project, run, epoch or step made it."""

    project: str
    run: str
    path: Path
    epoch: Optional[int] = None
    step: Optional[int] = None


@dataclass(frozen=True)
class LoraMatch:
    """A LoRA the image names, resolved: `file` the local file ("" when none matched), `project`/`run`/`epoch`/
    `step` where it is one of ours; `found_by`: "hash", "name" or "" (not found)."""

    name: str
    hash: str = ""
    weight: Optional[float] = None
    file: str = ""
    project: str = ""
    run: str = ""
    epoch: Optional[int] = None
    step: Optional[int] = None
    found_by: str = ""

    @property
    def ours(self) -> bool:
        return bool(self.project)

    def to_dict(self) -> dict:
        return {"name": self.name, "hash": self.hash, "weight": self.weight, "file": self.file,
                "project": self.project, "run": self.run, "epoch": self.epoch, "step": self.step,
                "ours": self.ours, "found_by": self.found_by}


@dataclass(frozen=True)
class InspectResult:
    """What `inspect FILE` shows: the kind of metadata, the parameters by the webui's field names, the LoRAs."""

    name: str
    info: ImageInfo
    loras: list[LoraMatch] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.info.kind

    def to_dict(self) -> dict:
        info = self.info
        return {"kind": info.kind, "file": self.name, "format": info.format, "width": info.width,
                "height": info.height, "parameters": info.parameters, "infotext": info.infotext,
                "loras": [m.to_dict() for m in self.loras], "notes": info.notes, "raw": info.raw}


class HashCache:
    """LoRA hashes by path, mtime and size, kept in one JSON file (a changed file is hashed again)."""

    def __init__(self, file: Path):
        self.file = Path(file)
        self.entries: dict[str, dict] = {}
        self.changed = False
        try:
            data = read_json(self.file, {})
        except (ValueError, OSError, LorakitError):
            data = {}  # a damaged cache is rebuilt
        if isinstance(data, dict):
            self.entries = {k: v for k, v in data.items() if isinstance(v, dict)}

    def lora(self, path: Path) -> Optional[LoraFile]:
        """The file's hash and names (None when it is not a readable safetensors file)."""
        try:
            st = path.stat()
        except OSError:
            return None
        key = str(path)
        entry = self.entries.get(key)
        if not (entry and entry.get("mtime_ns") == st.st_mtime_ns and entry.get("size") == st.st_size):
            entry = _hash_entry(path)
            if entry is None:
                return None
            entry.update(mtime_ns=st.st_mtime_ns, size=st.st_size)
            self.entries[key] = entry
            self.changed = True
        return LoraFile(path=path, sha256=str(entry.get("sha256", "")), output_name=str(entry.get("output_name", "")),
                        epoch=entry.get("epoch") if isinstance(entry.get("epoch"), int) else None)

    def save(self) -> None:
        if self.changed:
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.file, self.entries)
            except OSError as e:  # a read-only home still inspects, only slower next time
                log.warning("Could not keep LoRA hashes in %s: %s", self.file, e)
            self.changed = False


def _hash_entry(path: Path) -> Optional[dict]:
    try:
        header, n = read_header(path)
        meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else {}
        sha = meta.get("sshs_model_hash") if isinstance(meta.get("sshs_model_hash"), str) else ""
        sha = sha or webui_hash(path, n)
    except (LorakitError, OSError):
        return None
    epoch = meta.get("ss_epoch")
    return {"sha256": sha.lower(), "output_name": str(meta.get("ss_output_name") or path.stem),
            "epoch": int(epoch) if isinstance(epoch, str) and epoch.isdigit() else None}


# --- where LoRAs are -------------------------------------------------------------------------------------------------
def lora_folder_files(lora_dir: Path, limit: int = MAX_LORA_FILES) -> list[Path]:
    """The Lora folder's .safetensors files (recursively, as the webui scans it), at most `limit`."""
    root = Path(lora_dir)
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.rglob("*.safetensors")):
        if p.is_file():
            found.append(p)
            if len(found) >= limit:
                break
    return found


def run_files(projects_home: Path) -> list[RunFile]:
    """Every LoRA our runs saved, with the project, run and epoch/step its name says."""
    from ..project import Workspace
    from ..train.runner import Runs

    out = []
    for project in Workspace(Path(projects_home)).list():
        try:
            runs = Runs(project).list()
        except LorakitError:
            continue
        for snap in runs:
            for name in snap.files:
                path = snap.dir / name
                stem = Path(name).stem
                epoch, step = RE_EPOCH.search(stem), RE_STEP.search(stem)
                out.append(RunFile(project=project.name, run=snap.id, path=path,
                                   epoch=int(epoch.group(1)) if epoch else None,
                                   step=int(step.group(1)) if step else None))
    return out


# --- resolving -------------------------------------------------------------------------------------------------------
def resolve_loras(refs: Sequence[LoraRef], *, lora_dir: Path, projects_home: Path,
                  cache: Optional[HashCache] = None) -> list[LoraMatch]:
    """Each named LoRA matched to a file of the Lora folder (by short hash, else by name) and, through its hash,
    to the run of ours that saved it."""
    if not refs:
        return []
    cache = cache or HashCache(Path(projects_home) / ".cache" / "lora-hashes.json")
    ours = _ours_by_hash(run_files(projects_home), cache)
    folder = lora_folder_files(lora_dir)
    matches = [_resolve(ref, folder, ours, cache) for ref in refs]
    cache.save()
    return matches


def _ours_by_hash(files: Iterable[RunFile], cache: HashCache) -> dict[str, tuple[RunFile, LoraFile]]:
    out = {}
    for rf in files:
        lf = cache.lora(rf.path)
        if lf is not None:
            out.setdefault(lf.short_hash, (rf, lf))
    return out


def _resolve(ref: LoraRef, folder: list[Path], ours: dict[str, tuple[RunFile, LoraFile]],
             cache: HashCache) -> LoraMatch:
    short = ref.hash.lower()[:12]
    found, how = None, ""
    if short:  # by hash: files named like the LoRA first (cheap), then the rest
        named = [p for p in folder if p.stem == ref.name]
        for p in named + [p for p in folder if p.stem != ref.name]:
            lf = cache.lora(p)
            if lf is not None and lf.short_hash == short:
                found, how = lf, "hash"
                break
    if found is None and not short:  # no hash given: the webui finds it by alias or file name
        for p in folder:
            lf = cache.lora(p) if p.stem == ref.name else None
            if lf is not None:
                found, how = lf, "name"
                break
    mine = ours.get(found.short_hash if found else short)
    if found is None and mine is not None:
        found, how = mine[1], "hash"
    run = mine[0] if mine else None
    epoch = run.epoch if run and run.epoch is not None else (mine[1].epoch if mine and run.step is None else None)
    return LoraMatch(name=ref.name, hash=ref.hash or (found.short_hash if found else ""), weight=ref.weight,
                     file=str(found.path) if found else "", project=run.project if run else "",
                     run=run.run if run else "", epoch=epoch, step=run.step if run else None, found_by=how)


def inspect_image(path: Path, *, lora_dir: Path, projects_home: Path, name: Optional[str] = None) -> InspectResult:
    """How the image at `path` was made, with its LoRAs resolved (`name`: the file's own name for an upload)."""
    return _resolved(read_image_info(Path(path), name=name), name or Path(path).name, lora_dir, projects_home)


def inspect_bytes(data: bytes, *, name: str, lora_dir: Path, projects_home: Path) -> InspectResult:
    """As `inspect_image`, from an uploaded file's bytes."""
    return _resolved(read_image_bytes(data, name=name), name, lora_dir, projects_home)


def _resolved(info: ImageInfo, name: str, lora_dir: Path, projects_home: Path) -> InspectResult:
    loras = resolve_loras(info.loras, lora_dir=lora_dir, projects_home=projects_home)
    return InspectResult(name=name, info=info, loras=loras)


def inspect_summary(result: InspectResult) -> str:
    """The few lines the CLI prints."""
    p = result.info.parameters
    lines = [f"{result.name}: {result.kind} ({result.info.format} {result.info.width}x{result.info.height})"]
    for key in ("Prompt", "Negative prompt", "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size",
                "Model", "Model hash", "VAE", "Script", "X Type", "X Values", "Y Type", "Y Values", "Z Type",
                "Z Values"):
        if p.get(key) not in (None, ""):
            lines.append(f"{key}: {p[key]}")
    for m in result.loras:
        where = [f"ours: {m.project}/{m.run}" + (f"/epoch {m.epoch}" if m.epoch is not None else "")
                 + (f"/step {m.step}" if m.step is not None else "")] if m.ours else []
        where.append(m.file or "not found in the Lora folder")
        lines.append(f"LoRA {m.name} (weight {_shown(m.weight)}, hash {m.hash or '?'}): {' '.join(where)}")
    lines += result.info.notes
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return "?" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

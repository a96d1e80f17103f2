"""`doctor`: is this machine ready to tag and train, offline included? One report for the whole app.

Each check looks at one thing a run depends on (the folders, the trainer, sd-scripts, the GPU, the tokenizers
sd-scripts loads, the tagger models, the disk, the webui's own packages) and says what it found; each problem
comes with one sentence that fixes it. The trainer is judged by the checks `trainer doctor` runs
(`train.environment.doctor`), called, not copied. What differs inside the webui comes from the Host.

Nothing here downloads, loads a model or makes a folder: a write test leaves no file behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from .errors import LorakitError
from .host import Host, default_config_path
from .requirements import Requirement, admits, canonical, installed_version, parse_requirements

Severity = Literal["warning", "error"]
Status = Literal["ok", "warning", "error", "skipped"]
GIB = 2**30
DISK_ERROR_GIB, DISK_WARNING_GIB = 1, 10  # a run's LoRAs and states, a tagger model, the trainer's torch
_TRUE = {"1", "on", "yes", "true"}  # how huggingface_hub and transformers read their switches
# The tokenizers sd-scripts loads (strategy_sd.py, strategy_sdxl.py): Hugging Face id → the families that need it
TOKENIZERS: dict[str, tuple[str, ...]] = {
    "openai/clip-vit-large-patch14": ("SD1", "SDXL"),
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": ("SDXL",),
    "stabilityai/stable-diffusion-2": ("SD2",),  # its tokenizer/ subfolder
}
DEFAULT_CLIP_SOURCE = "https://huggingface.co/timm/vit_large_patch14_clip_224.openai"  # ViT-L-14, openai
WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")


# --- the report ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Issue:
    """One problem and the sentence that fixes it."""

    severity: Severity
    what: str
    fix: str

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "what": self.what, "fix": self.fix}


@dataclass(frozen=True)
class Check:
    """What one check found: a one-line summary, its problems, and facts for scripts (paths, versions)."""

    name: str
    title: str
    summary: str
    issues: tuple[Issue, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    skipped: str = ""  # why the check does not apply here (then it has no issues)

    @property
    def status(self) -> Status:
        if self.skipped:
            return "skipped"
        if any(i.severity == "error" for i in self.issues):
            return "error"
        return "warning" if self.issues else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "status": self.status, "summary": self.summary,
                "issues": [i.to_dict() for i in self.issues], "facts": dict(self.facts)}


@dataclass(frozen=True)
class DoctorReport:
    host: str
    checks: tuple[Check, ...]

    def count(self, status: Status) -> int:
        return sum(c.status == status for c in self.checks)

    @property
    def ok(self) -> bool:
        """No check found an error (warnings allowed)."""
        return self.count("error") == 0

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "host": self.host, "errors": self.count("error"), "warnings": self.count("warning"),
                "checks": [c.to_dict() for c in self.checks]}

    def text(self) -> str:
        lines = []
        for c in self.checks:
            lines.append(f"{c.status:<8} {c.title}: {c.skipped or c.summary}")
            for i in c.issues:
                lines += [f"         {i.severity}: {i.what}", f"           fix: {i.fix}"]
        verdict = "ready" if self.ok else "not ready"
        lines.append(f"{verdict}: {self.count('error')} error(s), {self.count('warning')} warning(s).")
        return "\n".join(lines)


# --- the checks ---------------------------------------------------------------------------------------------------

def run_doctor(host: Host, *, trainer_python: Optional[str] = None, tokenizer_cache_dir: Optional[Path] = None,
               config_file: Optional[Path] = None) -> DoctorReport:
    """Every check, for `host`. `trainer_python` and `tokenizer_cache_dir` are the command line's flags (else the
    environment variables and settings a run would use); `config_file` the standalone config the CLI read."""
    from .train.environment import doctor
    from .train.service import REPO_ROOT, default_trainer

    env = default_trainer(host, trainer_python)
    trainer = doctor(env, repo_root=REPO_ROOT)
    cache = tokenizer_cache_dir or os.environ.get("TRAIN_STYLE_TOKENIZER_CACHE")
    checks = (
        folders_check(host, config_file=config_file),
        offline_check(),
        home_check(host.projects_home()),
        disk_check({"home": host.projects_home(), "models folder": host.models_dir()}),
        trainer_check(env, trainer, source=_trainer_source(host, trainer_python)),
        sd_scripts_check(env, trainer),
        gpu_check(host, trainer),
        tokenizers_check(Path(cache) if cache else None),
        wd14_check(host),
        clip_check(host),
        detectors_check(host),
        webui_venv_check(host),
    )
    return DoctorReport(host=host.name, checks=checks)


def folders_check(host: Host, *, config_file: Optional[Path] = None) -> Check:
    """Where everything lives (facts for scripts); a config file named but absent is a warning."""
    from .captions.service import CaptionFolders

    folders = CaptionFolders(host)
    facts: dict[str, Any] = {"home": str(host.projects_home()), "models": str(host.models_dir()),
                             "lora": str(host.lora_dir()), "allowed_roots": [str(r) for r in host.allowed_roots()],
                             "wd14_models": str(folders.taggers), "clip_weights": str(folders.clip_cache)}
    issues = []
    if host.name == "standalone":
        config = Path(config_file) if config_file else default_config_path()
        facts["config_file"] = str(config)
        facts["config_read"] = config.is_file()
        if not config.is_file() and (config_file or os.environ.get("TRAIN_STYLE_CONFIG")):
            named = "--config" if config_file else "TRAIN_STYLE_CONFIG"
            issues.append(Issue("warning", f"{named} names {config}, which does not exist: the default folders are "
                                           "used.", f"Create {config} (keys home, models_dir, lora_dir, "
                                                    "allowed_roots, trainer_python) or correct the path."))
    summary = f"home {facts['home']}, models {facts['models']}, Lora {facts['lora']}"
    return Check("folders", "Folders", summary, tuple(issues), facts)


def offline_mode() -> dict[str, bool]:
    """Which Hugging Face offline switches are on (the trainer inherits them)."""
    return {var: os.environ.get(var, "").strip().lower() in _TRUE
            for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}


def hf_hub_cache() -> Path:
    """The Hugging Face cache huggingface_hub and transformers read (HF_HUB_CACHE, HF_HOME, the default)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline_check() -> Check:
    on = offline_mode()
    facts = {**on, "hf_hub_cache": str(hf_hub_cache())}
    if on["HF_HUB_OFFLINE"]:
        summary = ("on (HF_HUB_OFFLINE): nothing is downloaded; tagger models, CLIP weights and tokenizers must "
                   "already be in place")
    else:
        summary = ("off: a missing tagger model, CLIP weights or tokenizer is downloaded on first use (set "
                   "HF_HUB_OFFLINE=1 on a machine without internet so a missing one fails at once)")
    return Check("offline", "Hugging Face offline mode", summary, (), facts)


def home_check(home: Path) -> Check:
    """The projects home can be written (tested by creating and removing a file; a missing home is not made)."""
    home = Path(home)
    fix = (f"Make {home} writable for this user, or choose another projects folder (--home, the config file's "
           "`home`, --train-style-home or the webui setting).")
    if home.exists() and not home.is_dir():
        return Check("home", "Projects home", f"{home} is not a folder",
                     (Issue("error", f"The projects home {home} is a file, not a folder.", fix),))
    if not home.exists():
        parent = _existing_ancestor(home)
        if parent is not None and os.access(parent, os.W_OK | os.X_OK):
            return Check("home", "Projects home", f"{home} does not exist yet; it is made on first use "
                                                  f"({parent} is writable)", facts={"exists": False})
        return Check("home", "Projects home", f"{home} does not exist and cannot be made",
                     (Issue("error", f"The projects home {home} does not exist and {parent} is not writable.", fix),),
                     {"exists": False})
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=home)
    except OSError as e:
        return Check("home", "Projects home", f"{home} is read-only",
                     (Issue("error", f"Cannot write in the projects home {home}: {e.strerror or e}.", fix),),
                     {"exists": True, "writable": False})
    os.close(fd)
    os.unlink(probe)
    return Check("home", "Projects home", f"{home} is writable", facts={"exists": True, "writable": True})


def _existing_ancestor(path: Path) -> Optional[Path]:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return None


def disk_check(paths: Mapping[str, Path]) -> Check:
    """Free space on the disks of the home and the models folder (one line for a disk they share)."""
    by_disk: dict[Any, list[tuple[str, Path]]] = {}
    for label, path in paths.items():
        at = _existing_ancestor(Path(path).absolute())
        if at is None:
            continue
        by_disk.setdefault(at.stat().st_dev, []).append((label, at))
    issues, parts, facts = [], [], {}
    for entries in by_disk.values():
        usage = shutil.disk_usage(entries[0][1])
        labels = " and ".join(label for label, _ in entries)
        free_gib = usage.free / GIB
        parts.append(f"{labels}: {free_gib:.1f} GiB free of {usage.total / GIB:.0f} GiB")
        facts.update({label: {"path": str(paths[label]), "free_bytes": usage.free, "total_bytes": usage.total}
                      for label, _ in entries})
        if free_gib < DISK_WARNING_GIB:
            severity: Severity = "error" if free_gib < DISK_ERROR_GIB else "warning"
            issues.append(Issue(severity, f"Only {free_gib:.1f} GiB are free for the {labels} ({entries[0][1]}): a "
                                          "run's LoRAs and saved states, a tagger model or the trainer's torch need "
                                          "several GiB.",
                                f"Free space there, or move the {labels} to a larger disk."))
    return Check("disk", "Disk space", "; ".join(parts) or "no folder found", tuple(issues), facts)


# --- trainer, sd-scripts, GPU -------------------------------------------------------------------------------------

def _trainer_source(host: Host, trainer_python: Optional[str]) -> str:
    """Which setting chose the trainer (the order `train.service.default_trainer` follows)."""
    if trainer_python:
        return "--trainer-python"
    if os.environ.get("TRAIN_STYLE_TRAINER_PYTHON"):
        return "TRAIN_STYLE_TRAINER_PYTHON"
    if host.trainer_python():
        return "the webui setting 'Trainer python'" if host.name == "webui" else "the config file's trainer_python"
    return "Train Style's own environment"


def _is_sd_scripts(problem: Any) -> bool:
    from .train.environment import SUBMODULE_FIX

    return getattr(problem, "code", "") == "SD_SCRIPTS" or SUBMODULE_FIX in problem.fix


def _issues(problems: Any) -> tuple[Issue, ...]:
    return tuple(Issue("error" if p.severity == "error" else "warning", p.what, p.fix) for p in problems)


def trainer_check(env: Any, report: Any, *, source: str) -> Check:
    """The trainer doctor's verdict on the environment a run would use (its sd-scripts problems go to their own
    check)."""
    issues = _issues(p for p in report.problems if not _is_sd_scripts(p))
    facts = {"python": str(env.python), "source": source, "python_version": report.python_version,
             "torch": report.torch_version, "cuda": report.cuda_available, "attention": report.attention,
             "lycoris": report.lycoris_version, "packages": dict(report.packages)}
    if report.python_version:
        summary = (f"{env.python} ({source}): python {report.python_version}, torch {report.torch_version or 'none'}, "
                   f"attention {report.attention}, lycoris {report.lycoris_version or 'none'}")
    else:
        summary = f"{env.python} ({source}) cannot be used"
    return Check("trainer", "Trainer environment", summary, issues, facts)


def sd_scripts_check(env: Any, report: Any) -> Check:
    issues = _issues(p for p in report.problems if _is_sd_scripts(p))
    commit = report.sd_scripts_commit
    source = "TRAIN_STYLE_SD_SCRIPTS" if os.environ.get("TRAIN_STYLE_SD_SCRIPTS") else "the submodule"
    summary = (f"{env.sd_scripts_dir} ({source}): {'commit ' + commit[:12] if commit else 'no git commit'}, "
               f"pinned {report.sd_scripts_pinned[:12]}")
    facts = {"folder": str(env.sd_scripts_dir), "source": source, "commit": commit,
             "pinned": report.sd_scripts_pinned}
    return Check("sd-scripts", "sd-scripts checkout", summary, issues, facts)


def gpu_check(host: Host, report: Any) -> Check:
    """The GPU as the trainer's torch sees it, and as nvidia-smi (or the webui's torch) sees it."""
    try:
        seen = host.gpu_memory()
    except Exception:  # noqa: BLE001 - a driver or torch failure here means "no GPU to report", not a crash
        seen = None
    by = "the webui's torch" if host.name == "webui" else "nvidia-smi"
    facts = {"trainer_cuda": report.cuda_available, "device": report.device_name,
             "vram_total_mb": report.vram_total_mb, "vram_free_mb": report.vram_free_mb,
             "host_free_total_mb": list(seen) if seen else None}
    if report.cuda_available:
        summary = (f"{report.device_name}: {report.vram_free_mb} of {report.vram_total_mb} MB free (seen by the "
                   "trainer's torch)")
        return Check("gpu", "GPU", summary, (), facts)
    if seen and report.torch_version:
        what = (f"{by} sees a GPU ({seen[1]} MB), but the trainer's torch {report.torch_version} has no CUDA: "
                "training would run on the CPU.")
        fix = ("Install a CUDA build of torch in the trainer (`python -m lib_lorakit trainer setup "
               "--torch-index-url https://download.pytorch.org/whl/cu121` for our own environment).")
        return Check("gpu", "GPU", f"a GPU with {seen[1]} MB, unused by the trainer", (Issue("warning", what, fix),),
                     facts)
    if seen:
        return Check("gpu", "GPU", f"{by} sees a GPU with {seen[1]} MB ({seen[0]} MB free); the trainer cannot be "
                                   "asked yet (see the trainer check)", (), facts)
    return Check("gpu", "GPU", "none: CPU only", (), facts)


# --- tokenizers and models ----------------------------------------------------------------------------------------

def _tokenizer_in_folder(folder: Path, repo_id: str) -> bool:
    """sd-scripts' --tokenizer_cache_dir layout: `<dir>/<org>_<name>/` as save_pretrained writes it."""
    return (folder / repo_id.replace("/", "_") / "vocab.json").is_file()


def _in_hub_cache(cache: Path, repo_id: str, inner: str = "vocab.json") -> bool:
    snapshots = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any((s / inner).is_file() or (s / "tokenizer" / inner).is_file()
                                      for s in snapshots.iterdir())


def tokenizers_check(cache_dir: Optional[Path]) -> Check:
    """The CLIP tokenizers sd-scripts loads at the start of a run: in the tokenizer cache folder when one is set,
    else in the Hugging Face cache. Offline, a missing one stops training."""
    hub = hf_hub_cache()
    caches = [Path(p) for p in (os.environ.get("TRANSFORMERS_CACHE"),) if p] + [hub]
    found = {rid: (_tokenizer_in_folder(cache_dir, rid) if cache_dir else False)
             or any(_in_hub_cache(c, rid) for c in caches) for rid in TOKENIZERS}
    offline = any(offline_mode().values())
    families = sorted({f for fams in TOKENIZERS.values() for f in fams})
    ready = [f for f in families if all(found[rid] for rid, fams in TOKENIZERS.items() if f in fams)]
    missing = [rid for rid, ok in found.items() if not ok]
    where = f"the tokenizer cache {cache_dir}" if cache_dir else f"the Hugging Face cache {hub}"
    facts = {"tokenizer_cache_dir": str(cache_dir) if cache_dir else None, "hf_hub_cache": str(hub),
             "found": found, "ready_for": ready}
    summary = f"ready for {', '.join(ready) or 'none of ' + ', '.join(families)} ({where})"
    if not missing:
        return Check("tokenizers", "Tokenizers for sd-scripts", summary, (), facts)
    severity: Severity = "error" if offline and not ready else "warning"
    consequence = ("offline mode is on, so training those families fails" if offline
                   else "sd-scripts downloads them at the start of a run")
    folder = cache_dir or Path("DIR")
    fix = (f"On a machine with internet save each with transformers, e.g. `CLIPTokenizer.from_pretrained("
           f"'{missing[0]}').save_pretrained('{folder / missing[0].replace('/', '_')}')` (for "
           "stabilityai/stable-diffusion-2 add subfolder='tokenizer'), copy the folder here and pass it as "
           "--tokenizer-cache-dir or TRAIN_STYLE_TOKENIZER_CACHE; or copy that machine's Hugging Face cache to "
           f"{hub}.")
    what = f"Not in {where}: {', '.join(missing)}; {consequence}."
    return Check("tokenizers", "Tokenizers for sd-scripts", summary, (Issue(severity, what, fix),), facts)


def wd14_check(host: Host) -> Check:
    """The WD14 models in the model store (known names and the user's own folders), each with its tag list read."""
    from .captions.service import CaptionFolders
    from .taggers.models import DEFAULT_WD14, KNOWN_WD14, MODEL_FILES, wd14_model_folder

    store = CaptionFolders(host).taggers
    folders = [wd14_model_folder(n, store) for n in KNOWN_WD14]
    if store.is_dir():
        folders += sorted(p for p in store.iterdir() if p.name not in KNOWN_WD14 and (p / "model.onnx").exists())
    usable, issues = {}, []
    for folder in folders:
        present = [f for f in MODEL_FILES if (folder / f).is_file()]
        if not present and folder.name in KNOWN_WD14:
            continue
        problem = _wd14_problem(folder, present)
        if problem:
            issues.append(Issue("warning", problem, f"Delete {folder} and place {' and '.join(MODEL_FILES)} from "
                                                    f"{_wd14_page(folder.name)} there again."))
        else:
            usable[folder.name] = _tag_count(folder)
    facts = {"store": str(store), "models": usable, "onnxruntime": _importable("onnxruntime")}
    if not usable:
        offline = " and offline mode is on, so tagging with it fails" if offline_mode()["HF_HUB_OFFLINE"] else \
            " (it downloads there on first use)"
        default = wd14_model_folder(DEFAULT_WD14, store)
        issues.append(Issue("warning", f"No WD14 tagger model is in {store}{offline}.",
                            f"Download {' and '.join(MODEL_FILES)} from {_wd14_page(DEFAULT_WD14)} and place them in "
                            f"{default}, or put any WD14-format model folder in {store}."))
    if not facts["onnxruntime"]:
        issues.append(Issue("warning", "onnxruntime is not installed in this Python: WD14 tagging cannot run.",
                            f"\"{sys.executable}\" -m pip install onnxruntime (or onnxruntime-gpu); inside the "
                            "webui, restarting it lets install.py add it."))
    summary = ", ".join(f"{n} ({t} tags)" for n, t in usable.items()) or "no model"
    return Check("wd14", "WD14 tagger models", f"{summary} in {store}", tuple(issues), facts)


def _wd14_page(name: str) -> str:
    from .taggers.models import DEFAULT_WD14, KNOWN_WD14

    return f"https://huggingface.co/{KNOWN_WD14.get(name, KNOWN_WD14[DEFAULT_WD14])}"


def _wd14_problem(folder: Path, present: list[str]) -> Optional[str]:
    from .taggers.models import MODEL_FILES
    from .taggers.wd14 import load_labels

    missing = [f for f in MODEL_FILES if f not in present]
    if missing:
        return f"The WD14 model folder {folder} lacks {' and '.join(missing)}."
    if (folder / "model.onnx").stat().st_size == 0:
        return f"{folder / 'model.onnx'} is empty (an interrupted copy?)."
    try:
        load_labels(folder / "selected_tags.csv")
    except LorakitError as e:
        return str(e)
    return None


def _tag_count(folder: Path) -> int:
    from .taggers.wd14 import load_labels

    return len(load_labels(folder / "selected_tags.csv").names)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def clip_weights_in(cache: Path) -> list[str]:
    """Weight sets open_clip left in its cache folder: Hugging Face repos (`org/name`) and downloaded files."""
    found = []
    if not cache.is_dir():
        return found
    for entry in sorted(cache.iterdir()):
        if entry.is_dir() and entry.name.startswith("models--"):
            files = [f for f in (entry / "snapshots").glob("*/*") if f.suffix in WEIGHT_SUFFIXES and f.is_file()]
            if files:
                found.append(entry.name[len("models--"):].replace("--", "/"))
        elif entry.suffix in WEIGHT_SUFFIXES and entry.is_file():
            found.append(entry.name)
    return found


def clip_check(host: Host) -> Check:
    from .captions.service import CaptionFolders

    cache = CaptionFolders(host).clip_cache
    found = clip_weights_in(cache)
    facts = {"cache": str(cache), "weights": found, "open_clip": _importable("open_clip")}
    issues = []
    if not found:
        offline = (", and offline mode is on, so the CLIP tagger fails" if offline_mode()["HF_HUB_OFFLINE"]
                   else "; the CLIP tagger downloads ViT-L-14 (openai) there on first use")
        issues.append(Issue("warning", f"No CLIP weights are in {cache}{offline}.",
                            f"Download open_clip_pytorch_model.bin from {DEFAULT_CLIP_SOURCE}, save it in {cache} "
                            "and give its path as the CLIP weights with the CLIP model ViT-L-14-quickgelu; or tag "
                            "with CLIP once on a machine with internet and copy that folder here."))
    if not facts["open_clip"]:
        issues.append(Issue("warning", "open_clip is not installed in this Python: the CLIP tagger cannot run.",
                            f"\"{sys.executable}\" -m pip install open_clip_torch (the webui has its own)."))
    return Check("clip", "CLIP tagger weights", f"{', '.join(found) or 'none'} in {cache}", tuple(issues), facts)


def detectors_check(host: Host) -> Check:
    """The face/head detector models in the store (smart crop, SUBJECT_CUT) and the fallbacks that run without."""
    from .detect.models import detectors_folder, store_report

    report = store_report(detectors_folder(host.models_dir()))
    issues = tuple(Issue("warning", what, fix) for what, fix in report.problems)
    return Check("detectors", "Face/head detectors", report.summary, issues, report.facts)


# --- the webui's own packages -------------------------------------------------------------------------------------

def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file (the webui's requirements_versions.txt) as {name: version}."""
    try:
        reqs = parse_requirements(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return {r.name: r.specifier[2:].strip() for r in reqs
            if r.specifier.startswith("==") and "," not in r.specifier and not r.marker}


def webui_venv_check(host: Host) -> Check:
    """Inside the webui: every package it pins still at its pinned version (nothing we installed moved one)."""
    pins = host.webui_pins()
    if pins is None:
        reason = f"outside the webui: there is no webui venv to protect here (this is {sys.executable})"
        return Check("webui-venv", "webui venv untouched", reason, skipped=reason)
    if not pins:
        return Check("webui-venv", "webui venv untouched", "no pins found", (Issue(
            "warning", "The webui's requirements_versions.txt was not found or pins nothing, so its packages "
                       "cannot be checked.", "Check that the webui's folder is complete (git status there)."),))
    issues, differ = [], {}
    for name, version in sorted(pins.items(), key=lambda kv: canonical(kv[0])):
        have = installed_version(name)
        if have is not None and admits(Requirement(line="", name=name, specifier=f"=={version}", marker=""), have):
            continue
        differ[name] = {"pinned": version, "installed": have}
        state = f"is at {have}" if have else "is not installed"
        issues.append(Issue("warning", f"{name} {state}; the webui pins {version}.",
                            f"\"{sys.executable}\" -m pip install \"{name}=={version}\""))
    summary = f"{len(pins) - len(differ)} of {len(pins)} pinned packages at the webui's versions"
    return Check("webui-venv", "webui venv untouched", summary, tuple(issues),
                 {"python": sys.executable, "pinned": len(pins), "differ": differ})

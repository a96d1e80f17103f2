"""sd-scripts' own Python environment: a visible, logged, resumable setup, and a doctor that checks it.

sd-scripts pins packages (transformers, diffusers, accelerate, safetensors) that clash with the webui's, so it
gets a venv of its own; the webui's venv is never touched. Setup runs in steps (venv, torch, sd-scripts'
requirements, extras, optional packages, the CPU torchvision workaround); each finished step is recorded in
`<venv>/lorakit-setup.json`, so a rerun after a failure or a cancel skips what is done. Every subprocess runs
without a shell and its output goes line by line to `<venv>/lorakit-setup.log` and to `log(line)`.

Nothing here imports torch: facts about the trainer come from one probe script run with the trainer's python.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import clock, procs, torchvision_shim
from ..errors import Cancelled, LorakitError
from ..fsutil import atomic_write_json, atomic_write_text, read_json
from ..progress import CancelFlag, ProgressFn

logger = logging.getLogger(__name__)

PINNED_SD_SCRIPTS = "ae72efb92babe89ff8e70f057e42db68440e8d61"
PINNED_SD_SCRIPTS_TAG = "v0.10.1"
DEFAULT_EXTRAS = ("lycoris-lora==3.4.0",)
DEFAULT_OPTIONAL = ("dadaptation", "bitsandbytes")
STATE_FILE = "lorakit-setup.json"
LOG_FILE = "lorakit-setup.log"
CONSTRAINTS_FILE = "lorakit-constraints.txt"
SHIM_NAME = "_lorakit_torchvision_cpu"
SUBMODULE_FIX = "git submodule update --init --recursive"
# Environment variables that would make the trainer's python see another environment's packages.
_FOREIGN_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIP_REQUIRE_VIRTUALENV", "PYTHONNOUSERSITE")

LogFn = Callable[[str], None]
SETUP_CANCELLED = "Setup was cancelled; run it again to continue where it stopped."

class SetupFailed(LorakitError):
    """A required setup step failed; the message names the step, the command and the log's tail."""


@dataclass(frozen=True)
class TrainerEnvironment:
    """Where the trainer lives: its venv, that venv's python, and the sd-scripts checkout it runs."""

    venv_dir: Path
    sd_scripts_dir: Path

    @property
    def python(self) -> Path:
        if os.name == "nt":
            return self.venv_dir / "Scripts" / "python.exe"
        return self.venv_dir / "bin" / "python"

    @property
    def state_file(self) -> Path:
        return self.venv_dir / STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.venv_dir / LOG_FILE

    def exists(self) -> bool:
        return self.python.exists()

    def setup_complete(self) -> bool:
        """True when every required setup step is recorded as done."""
        steps = (read_json(self.state_file, {}) or {}).get("steps", {})
        return all(steps.get(name, {}).get("status") == "done" for name in REQUIRED_STEPS)

    def subprocess_env(self, base: Optional[dict[str, str]] = None) -> dict[str, str]:
        """The environment for a subprocess of the trainer: this venv first, nothing leaking in from the webui's."""
        env = dict(os.environ if base is None else base)
        for key in _FOREIGN_ENV:
            env.pop(key, None)
        env["VIRTUAL_ENV"] = str(self.venv_dir)
        env["PATH"] = os.pathsep.join([str(self.python.parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        return env


REQUIRED_STEPS = ("venv", "torch", "sd-scripts", "extras", "torchvision")


def torchvision_for(torch_version: str) -> Optional[str]:
    """The torchvision release built against a torch release (2.x.y → 0.(x+15).y); None when unknown."""
    base = torch_version.split("+", 1)[0]
    parts = base.split(".")
    if len(parts) < 2 or parts[0] != "2" or not all(p.isdigit() for p in parts[:3]):
        return None
    patch = parts[2] if len(parts) > 2 else "0"
    return f"0.{int(parts[1]) + 15}.{patch}"


# --- running commands ---------------------------------------------------------------------------------------

def run_logged(argv: Sequence[str], *, cwd: Optional[Path] = None, env: Optional[dict[str, str]] = None,
               log: LogFn, log_file: Optional[Path] = None, cancel: Optional[CancelFlag] = None) -> int:
    """Run a setup command (`procs.run_logged`: no shell, its own process group, output line by line to `log` and
    to `log_file`); return its exit code. A set `cancel` stops its process group and raises Cancelled."""
    return procs.run_logged(argv, env=os.environ if env is None else env, on_line=log, log_file=log_file, cwd=cwd,
                            cancel=cancel, cancel_message=SETUP_CANCELLED)


# --- setup ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetupStep:
    name: str
    title: str
    fingerprint: str  # a finished step whose fingerprint changed (another torch version, new requirements) reruns
    run: Callable[[], Optional[str]]  # returns an optional note for the state file
    optional: bool = False


@dataclass(frozen=True)
class SetupReport:
    env: TrainerEnvironment
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    warnings: tuple[str, ...]


def setup_trainer(venv_dir: Path, sd_scripts_dir: Path, *, torch_version: str, log: LogFn,
                  progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None,
                  extras: Sequence[str] = DEFAULT_EXTRAS, optional: Sequence[str] = DEFAULT_OPTIONAL,
                  torch_index_url: Optional[str] = None, base_python: Optional[str] = None,
                  pip_command: Optional[Sequence[str]] = None, venv_args: Sequence[str] = ()) -> SetupReport:
    """Create or complete sd-scripts' venv; a rerun skips the steps already recorded as done.

    `torch_version` is the webui's torch when known, so pip can reuse the wheel it already has.
    `pip_command` replaces `<venv python> -m pip` and `venv_args` are added to `python -m venv` (tests use a fake pip
    and `--without-pip`).
    """
    env = TrainerEnvironment(Path(venv_dir), Path(sd_scripts_dir))
    requirements = env.sd_scripts_dir / "requirements.txt"
    if not requirements.is_file():
        raise LorakitError(f"sd-scripts is missing: {requirements} does not exist. Run `{SUBMODULE_FIX}` in the "
                           "extension's folder.")
    env.venv_dir.mkdir(parents=True, exist_ok=True)
    sub_env = env.subprocess_env()
    pip = list(pip_command) if pip_command else [str(env.python), "-m", "pip"]
    pip_install = pip + ["install", "--disable-pip-version-check", "--progress-bar=off"]
    constraints = _write_constraints(env, torch_version)
    index = ["--extra-index-url", torch_index_url] if torch_index_url else []

    def run(argv: Sequence[str], cwd: Optional[Path] = None) -> int:
        return run_logged(argv, cwd=cwd, env=sub_env, log=log, log_file=env.log_file, cancel=cancel)

    def must(argv: Sequence[str], what: str, cwd: Optional[Path] = None) -> None:
        code = run(argv, cwd)
        if code != 0:
            raise SetupFailed(f"Trainer setup failed while {what} (exit code {code}). Details: {env.log_file}\n"
                              + "\n".join(_tail(env.log_file, 15)))

    # 1. the venv; 2. torch before anything else can pull another one; 3. sd-scripts' requirements (`-e .` needs
    # its folder as cwd); 4. extras; 5. optional packages; 6. the CPU torchvision workaround
    tv = torchvision_for(torch_version)
    torch_specs = [f"torch=={torch_version}"] + ([f"torchvision=={tv}"] if tv else [])
    steps = [
        SetupStep("venv", "Creating the trainer's Python environment", str(env.venv_dir),
                  lambda: must([base_python or sys.executable, "-m", "venv", *venv_args, str(env.venv_dir)],
                               "creating the venv")),
        SetupStep("torch", f"Installing {' '.join(torch_specs)}", " ".join(torch_specs + index),
                  lambda: must(pip_install + torch_specs + index + ["-c", constraints], "installing torch")),
        SetupStep("sd-scripts", "Installing sd-scripts' requirements",
                  _digest(requirements.read_bytes() + constraints.read_bytes()),
                  lambda: must(pip_install + ["-r", "requirements.txt", "-c", str(constraints)] + index,
                               "installing sd-scripts' requirements", cwd=env.sd_scripts_dir)),
        SetupStep("extras", f"Installing {' '.join(extras)}", " ".join(extras),
                  lambda: must(pip_install + list(extras) + ["-c", str(constraints)], "installing extras")
                  if extras else None),
    ]
    for name in optional:
        steps.append(SetupStep(f"optional:{name}", f"Installing {name} (optional)", name,
                               lambda name=name: _optional(run, pip_install + [name, "-c", str(constraints)], name),
                               optional=True))
    shim = f"{SHIM_NAME}:{hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:12]}"  # a new shim reruns the step
    steps.append(SetupStep("torchvision", "Checking torchvision", f"{shim} {' '.join(torch_specs)}",
                           lambda: _ensure_torchvision(env, sub_env, log)))
    return _run_steps(env, steps, log=log, progress=progress, cancel=cancel)


def _run_steps(env: TrainerEnvironment, steps: list[SetupStep], *, log: LogFn, progress: Optional[ProgressFn],
               cancel: Optional[CancelFlag]) -> SetupReport:
    state = (read_json(env.state_file, {}) or {}) if env.exists() else {}  # a deleted venv starts over
    done: dict[str, Any] = state.setdefault("steps", {})
    ran, skipped, warnings = [], [], []
    for i, step in enumerate(steps):
        if cancel is not None and cancel.is_set():
            raise Cancelled(SETUP_CANCELLED)
        if progress:
            progress(i, len(steps), step.title)
        record = done.get(step.name, {})
        if record.get("status") == "done" and record.get("fingerprint") == step.fingerprint:
            log(f"[setup] {step.title}: already done, skipped")
            skipped.append(step.name)
            continue
        log(f"[setup] {step.title}")
        try:
            note = step.run()
        except SetupFailed as e:
            if not step.optional:
                _record(env, state, step, "failed", str(e).splitlines()[0])
                raise
            note = str(e)
        status = "done"
        if step.optional and note:
            status = "failed"
            warnings.append(note)
            log(f"[setup] warning: {note}")
        _record(env, state, step, status, note)
        ran.append(step.name)
    if progress:
        progress(len(steps), len(steps), "Trainer ready")
    log(f"[setup] trainer ready: {env.python}")
    return SetupReport(env=env, ran=tuple(ran), skipped=tuple(skipped), warnings=tuple(warnings))


def _record(env: TrainerEnvironment, state: dict, step: SetupStep, status: str, note: Optional[str]) -> None:
    state["steps"][step.name] = {"status": status, "fingerprint": step.fingerprint, "note": note or "",
                                 "at": clock.now_iso()}
    atomic_write_json(env.state_file, state)


def _optional(run: Callable[[Sequence[str]], int], argv: list[str], name: str) -> Optional[str]:
    code = run(argv)
    return None if code == 0 else f"optional package {name} could not be installed (exit code {code})"


def _write_constraints(env: TrainerEnvironment, torch_version: str) -> Path:
    path = env.venv_dir / CONSTRAINTS_FILE
    lines = [f"torch=={torch_version}"]
    tv = torchvision_for(torch_version)
    if tv:
        lines.append(f"torchvision=={tv}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


# --- the CPU torchvision workaround --------------------------------------------------------------------------

_TV_CHECK = r"""
import json, sysconfig
out = {"purelib": sysconfig.get_paths()["purelib"]}
try:
    import torchvision
    out["status"] = "ok"
except ModuleNotFoundError as e:
    out["status"] = "missing"; out["error"] = str(e)
except Exception as e:
    out["status"] = "broken"; out["error"] = f"{type(e).__name__}: {e}"
print("LORAKIT_JSON " + json.dumps(out))
"""

# The module written into the trainer's venv: lib_lorakit's own workaround (self-contained by design), switched on
# at every start of that venv's python by a `.pth` line that imports it.
SHIM_SOURCE = ("# Written by Train Style's trainer setup from lib_lorakit/torchvision_shim.py.\n"
               + inspect.getsource(torchvision_shim) + "\n\ninstall_import_hook()\n")


def install_torchvision_shim(site_packages: Path) -> list[Path]:
    """Write the workaround module and the `.pth` line that imports it at every start of the venv's python."""
    module = Path(site_packages) / f"{SHIM_NAME}.py"
    pth = Path(site_packages) / f"{SHIM_NAME}.pth"
    atomic_write_text(module, SHIM_SOURCE)
    atomic_write_text(pth, f"import {SHIM_NAME}\n")
    return [module, pth]


def _check_torchvision(env: TrainerEnvironment, sub_env: dict[str, str]) -> dict[str, Any]:
    proc = procs.run_captured([env.python, "-c", _TV_CHECK], env=sub_env, timeout_s=300)
    found = last_json(proc.stdout)
    if found is None:
        raise SetupFailed(f"Cannot run the trainer's python ({env.python}): {proc.stderr.strip()[-500:]}")
    return found


def _ensure_torchvision(env: TrainerEnvironment, sub_env: dict[str, str], log: LogFn) -> Optional[str]:
    found = _check_torchvision(env, sub_env)
    if found["status"] in ("ok", "missing"):
        log(f"[setup] torchvision: {found['status']}")
        return found["status"]
    log(f"[setup] torchvision does not import ({found['error']}); installing the CPU workaround")
    for path in install_torchvision_shim(Path(found["purelib"])):
        log(f"[setup] wrote {path}")
    again = _check_torchvision(env, sub_env)
    if again["status"] != "ok":
        raise SetupFailed(f"torchvision still does not import in the trainer: {again.get('error')}")
    return "workaround installed"


def last_json(stdout: str) -> Optional[dict]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("LORAKIT_JSON "):
            return json.loads(line[len("LORAKIT_JSON "):])
    return None


# --- sd-scripts checkout ------------------------------------------------------------------------------------

def check_submodule(repo_root: Path, *, pinned: Optional[str] = None) -> Optional[str]:
    """None when `<repo_root>/sd-scripts` is checked out at the pinned commit; otherwise what is wrong and the fix."""
    repo_root = Path(repo_root)
    folder = repo_root / "sd-scripts"
    fix = f"Run in a terminal: cd \"{repo_root}\" && {SUBMODULE_FIX}"
    pinned = pinned or pinned_commit(repo_root)
    if not folder.is_dir() or not (folder / ".git").exists():
        return f"sd-scripts is missing (the git submodule {folder} was not initialised). {fix}"
    commit = _head_commit(folder)
    if commit is None:
        return f"sd-scripts at {folder} is not a readable git checkout. {fix}"
    if commit != pinned:
        return (f"sd-scripts is at commit {commit[:12]}, but this version of Train Style needs {pinned[:12]}"
                f"{' (' + PINNED_SD_SCRIPTS_TAG + ')' if pinned == PINNED_SD_SCRIPTS else ''}. {fix}")
    return None


def pinned_commit(repo_root: Path) -> str:
    """The commit the repository pins sd-scripts to (its gitlink), or PINNED_SD_SCRIPTS outside a git checkout."""
    out = _git(["ls-tree", "HEAD", "sd-scripts"], Path(repo_root))
    if out:
        parts = out.split()
        if len(parts) >= 3 and parts[1] == "commit":
            return parts[2]
    return PINNED_SD_SCRIPTS


def _head_commit(folder: Path) -> Optional[str]:
    # `git -C folder` would answer for the enclosing repository when `folder` has no repository of its own
    top = _git(["rev-parse", "--show-toplevel"], folder)
    if top is not None and Path(top).resolve() == folder.resolve():
        return _git(["rev-parse", "HEAD"], folder)
    if top is None and (folder / ".git" / "HEAD").is_file():  # git not installed: a detached HEAD is enough
        head = (folder / ".git" / "HEAD").read_text().strip()
        return head if len(head) == 40 else None
    return None


def _git(args: list[str], cwd: Path) -> Optional[str]:
    try:
        proc = procs.run_captured(["git", *args], env=os.environ, cwd=cwd, timeout_s=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


# --- doctor -----------------------------------------------------------------------------------------------------

PROBE_MARK = "# lorakit trainer probe"  # a stand-in trainer (tests/fake_trainer_env.py) answers this script
_PROBE = PROBE_MARK + r"""
import contextlib, importlib, importlib.metadata as md, importlib.util, json, platform, sys, sysconfig
out = {"python": platform.python_version(), "executable": sys.executable, "packages": {},
       "purelib": sysconfig.get_paths()["purelib"]}
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
for name in ("torch", "torchvision", "accelerate", "transformers", "diffusers", "safetensors", "xformers",
             "bitsandbytes", "lycoris-lora", "dadaptation", "library"):
    out["packages"][name] = version(name)
with contextlib.redirect_stdout(sys.stderr):
    try:
        import torch
        out["torch"] = torch.__version__
        out["cuda"] = bool(torch.cuda.is_available())
        out["sdpa"] = hasattr(torch.nn.functional, "scaled_dot_product_attention")
        if out["cuda"]:
            out["device"] = torch.cuda.get_device_name(0)
            free, total = torch.cuda.mem_get_info(0)
            out["vram_total_mb"], out["vram_free_mb"] = total // 2**20, free // 2**20
    except Exception as e:
        out["torch_error"] = f"{type(e).__name__}: {e}"
    for mod in ("torchvision", "bitsandbytes", "accelerate", "transformers", "diffusers", "safetensors"):
        try:
            importlib.import_module(mod)
            out[mod + "_ok"] = True
        except Exception as e:
            out[mod + "_ok"] = False
            out[mod + "_error"] = f"{type(e).__name__}: {e}"[:500]
print("LORAKIT_JSON " + json.dumps(out))
"""


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str
    severity: str = "error"  # error: training cannot run | warning: it runs, with less
    code: str = "TRAINER"  # SD_SCRIPTS, TRAINER_MISSING, … (the preflight's finding code)


@dataclass(frozen=True)
class DoctorReport:
    python: str
    python_version: Optional[str] = None
    torch_version: Optional[str] = None
    cuda_available: bool = False
    device_name: Optional[str] = None
    vram_total_mb: Optional[int] = None
    vram_free_mb: Optional[int] = None
    sdpa_available: bool = False
    xformers_version: Optional[str] = None
    torchvision_ok: bool = False
    bitsandbytes_ok: bool = False
    lycoris_version: Optional[str] = None
    packages: dict[str, Optional[str]] = field(default_factory=dict)
    sd_scripts_commit: Optional[str] = None
    sd_scripts_pinned: str = PINNED_SD_SCRIPTS
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """Training can start (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def attention(self) -> str:
        return "xformers" if self.xformers_version else ("sdpa" if self.sdpa_available else "none")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"], data["attention"] = self.ok, self.attention
        return data


def doctor(env: TrainerEnvironment, *, repo_root: Optional[Path] = None, timeout_s: float = 300,
           cache: Optional[ProbeCache] = None, refresh: bool = False) -> DoctorReport:
    """Check the trainer environment by running one probe with its python; each problem comes with its fix.

    Any working sd-scripts environment passes, ours or one made elsewhere (kohya_ss, by hand): readiness is what
    the probe finds, never our setup's record. With `cache`, the probe's facts are reused while the interpreter
    and its site-packages are unchanged (`refresh` probes again)."""
    repo_root = Path(repo_root) if repo_root else env.sd_scripts_dir.parent
    commit, problems = _sd_scripts_problems(env, repo_root)
    base = dict(python=str(env.python), sd_scripts_commit=commit, sd_scripts_pinned=pinned_commit(repo_root))
    if not env.exists():
        problems.insert(0, Problem(f"The trainer environment is not set up: {env.python} does not exist.",
                                   "Run the trainer setup (Train tab → Set up trainer, or `python -m lib_lorakit "
                                   "trainer setup`), or name an existing sd-scripts environment's python "
                                   "(--trainer-python, TRAIN_STYLE_TRAINER_PYTHON).", code="TRAINER_MISSING"))
        return DoctorReport(**base, problems=tuple(problems))
    facts = None if (cache is None or refresh) else cache.get(env)
    if facts is None:
        facts, failure = probe(env, timeout_s=timeout_s)
        if failure is not None:
            return DoctorReport(**base, problems=(failure, *problems))
        if cache is not None:
            cache.put(env, facts)
    return report_from_probe(facts, env=env, problems=problems, **base)


def cached_report(env: TrainerEnvironment, cache: ProbeCache, *, repo_root: Optional[Path] = None
                  ) -> Optional[DoctorReport]:
    """The doctor's report from the cached probe alone (no process starts); None when it has not probed this
    interpreter as it is now."""
    if env.exists() and cache.get(env) is None:
        return None
    return doctor(env, repo_root=repo_root, cache=cache)


def probe(env: TrainerEnvironment, *, timeout_s: float = 300) -> tuple[Optional[dict], Optional[Problem]]:
    """The facts the trainer's python reports about itself (versions, CUDA, imports), or why it could not run."""
    fix = ("Repair that environment (or delete our venv and run setup again), or name another one with "
           "--trainer-python / TRAIN_STYLE_TRAINER_PYTHON.")
    try:
        proc = procs.run_captured([env.python, "-c", _PROBE], env=env.subprocess_env(), timeout_s=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, Problem(f"The trainer's python cannot run: {e}", fix, code="TRAINER_BROKEN")
    facts = last_json(proc.stdout)
    if facts is None:
        return None, Problem(f"The trainer's python failed: {proc.stderr.strip()[-500:]}", fix, code="TRAINER_BROKEN")
    return facts, None


def _sd_scripts_problems(env: TrainerEnvironment, repo_root: Path) -> tuple[Optional[str], list[Problem]]:
    """The sd-scripts checkout's commit and what is wrong with it: ours must be at the pinned commit; one the user
    keeps elsewhere (TRAIN_STYLE_SD_SCRIPTS) must hold train_network.py, and another commit is only a warning."""
    folder = env.sd_scripts_dir
    commit = _head_commit(folder) if (folder / ".git").exists() else None
    pinned = pinned_commit(repo_root)
    fix = f"cd \"{repo_root}\" && {SUBMODULE_FIX}"
    if _same_folder(folder, repo_root / "sd-scripts"):
        if commit != pinned:
            return commit, [Problem(check_submodule(repo_root, pinned=pinned) or "sd-scripts is not at the pinned "
                                    "commit", fix, code="SD_SCRIPTS")]
        return commit, []
    if not (folder / "train_network.py").is_file():
        return commit, [Problem(f"{folder} (TRAIN_STYLE_SD_SCRIPTS) holds no sd-scripts checkout (no "
                                "train_network.py).", "Point it at an sd-scripts folder.", code="SD_SCRIPTS")]
    if commit != pinned:
        return commit, [Problem(f"sd-scripts in {folder} is at {commit[:12] if commit else 'an unknown commit'}; "
                                f"Train Style is tested with {pinned[:12]} ({PINNED_SD_SCRIPTS_TAG}).",
                                "If training fails on an argument or a file format, use that release.", "warning",
                                code="SD_SCRIPTS")]
    return commit, []


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


class ProbeCache:
    """The probe's facts per interpreter, kept on disk (`<projects home>/.cache/trainer-probe.json`) and reused
    while the interpreter (its path and mtime), its site-packages folder (whose mtime changes when pip installs or
    removes a package) and our setup's record are unchanged."""

    def __init__(self, file: Path):
        self.file = Path(file)

    @classmethod
    def under(cls, home: Path) -> ProbeCache:
        return cls(Path(home) / ".cache" / "trainer-probe.json")

    def get(self, env: TrainerEnvironment) -> Optional[dict]:
        entry = self._entries().get(_python_key(env))
        if not isinstance(entry, dict) or not isinstance(entry.get("facts"), dict):
            return None
        facts = entry["facts"]
        return facts if entry.get("stamp") == _stamp(env, facts.get("purelib")) else None

    def put(self, env: TrainerEnvironment, facts: dict) -> None:
        entries = self._entries()
        entries[_python_key(env)] = {"stamp": _stamp(env, facts.get("purelib")), "facts": facts,
                                     "at": clock.now_iso()}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.file, entries)
        except OSError as e:  # a read-only home only costs a probe next time
            logger.warning("Train Style: cannot keep the trainer probe in %s: %s", self.file, e)

    def _entries(self) -> dict:
        try:
            data = read_json(self.file, {})
        except (OSError, ValueError) as e:
            logger.warning("Train Style: ignoring the damaged trainer probe cache %s: %s", self.file, e)
            return {}
        return data if isinstance(data, dict) else {}


def _python_key(env: TrainerEnvironment) -> str:
    return os.path.abspath(env.python)


def _stamp(env: TrainerEnvironment, purelib: Any) -> list:
    """What must stay the same for a probe to hold: the interpreter (the venv's link and what it points to), its
    site-packages and our setup record."""
    def mtime(path: Any, follow: bool = True) -> Optional[int]:
        try:
            return os.stat(path, follow_symlinks=follow).st_mtime_ns if path else None
        except (OSError, ValueError, TypeError):
            return None

    return [mtime(env.python), mtime(env.python, follow=False), str(purelib), mtime(purelib), mtime(env.state_file)]


def report_from_probe(facts: dict[str, Any], *, env: TrainerEnvironment, problems: list[Problem],
                      **base: Any) -> DoctorReport:
    """Turn the probe's JSON into a report, adding a problem (with its fix) for each thing that is wrong."""
    pkgs = facts.get("packages", {})
    pip = f"\"{env.python}\" -m pip install"
    torch_v = facts.get("torch")
    if torch_v is None:
        problems.append(Problem(f"torch does not import in the trainer ({facts.get('torch_error', 'not installed')}).",
                                f"Run the trainer setup again, or: {pip} torch", code="TRAINER_TORCH"))
    elif not facts.get("cuda"):
        problems.append(Problem("No CUDA GPU is visible to the trainer: training runs on the CPU, very slowly.",
                                "Install a CUDA build of torch in the trainer, or check the GPU driver "
                                "(nvidia-smi).", "warning"))
    elif (facts.get("vram_total_mb") or 0) < 6 * 1024:
        problems.append(Problem(f"The GPU has {facts.get('vram_total_mb')} MB: SD1.5 LoRA training needs about 6 GB.",
                                "Use gradient checkpointing, batch size 1 and a lower resolution.", "warning"))
    if torch_v and not facts.get("torchvision_ok"):
        problems.append(Problem(f"torchvision does not import: {facts.get('torchvision_error')}",
                                "Run the trainer setup again (it installs the CPU workaround when needed).",
                                code="TRAINER_TORCHVISION"))
    broken = [m for m in ("accelerate", "transformers", "diffusers", "safetensors") if facts.get(m + "_ok") is False]
    if torch_v and broken:
        problems.append(Problem(f"{', '.join(broken)} do{'es' if len(broken) == 1 else ''} not import in the trainer: "
                                + "; ".join(str(facts.get(m + "_error")) for m in broken),
                                "Install sd-scripts' requirements in it: cd into sd-scripts and run "
                                f"{pip} -r requirements.txt", code="TRAINER_PACKAGES"))
    if torch_v and not facts.get("sdpa") and not pkgs.get("xformers"):
        problems.append(Problem("Neither PyTorch SDPA nor xformers is available: attention is slow and large.",
                                f"Use torch ≥ 2.0, or: {pip} xformers", "warning"))
    if not pkgs.get("lycoris-lora"):
        problems.append(Problem("lycoris-lora is not installed: LoCon/LoHa presets cannot run.",
                                f"{pip} lycoris-lora==3.4.0", "warning"))
    elif pkgs["lycoris-lora"] != "3.4.0":
        problems.append(Problem(f"lycoris-lora {pkgs['lycoris-lora']} is installed; 3.4.0 is the tested version "
                                "(4.x fails on SD1.5: \"duplicated lora name\").",
                                f"{pip} lycoris-lora==3.4.0", "warning"))
    if not facts.get("bitsandbytes_ok"):
        problems.append(Problem("bitsandbytes does not import: 8-bit optimizers (AdamW8bit) are unavailable.",
                                f"Choose AdamW, or: {pip} bitsandbytes", "warning"))
    if torch_v and not pkgs.get("library"):
        problems.append(Problem("sd-scripts' own package is not installed in the trainer (`-e .`); its scripts "
                                "still find it when they run from their folder, as Train Style runs them.",
                                f"In sd-scripts' folder: {pip} -e .", "warning", code="TRAINER_PACKAGES"))
    return DoctorReport(python_version=facts.get("python"), torch_version=torch_v,
                        cuda_available=bool(facts.get("cuda")), device_name=facts.get("device"),
                        vram_total_mb=facts.get("vram_total_mb"), vram_free_mb=facts.get("vram_free_mb"),
                        sdpa_available=bool(facts.get("sdpa")), xformers_version=pkgs.get("xformers"),
                        torchvision_ok=bool(facts.get("torchvision_ok")),
                        bitsandbytes_ok=bool(facts.get("bitsandbytes_ok")), lycoris_version=pkgs.get("lycoris-lora"),
                        packages=dict(pkgs), problems=tuple(problems), **base)

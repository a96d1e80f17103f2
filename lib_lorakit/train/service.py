"""Training as the user sees it: plan (settings, steps, preflight), create a run, queue it, register results.

The tab, the CLI and the API call this; it composes presets, config, the trainer environment, the runner and
the queue, and holds no state of its own.
"""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..dataset.report import build_report
from ..errors import LorakitError, PathNotAllowed
from ..fsutil import atomic_write_json, read_json
from ..host import ArchReading, Host, read_checkpoint_arch
from ..paths import check_name
from ..project import Project
from ..results.registry import Registered
from ..schema import InvalidSettings
from ..tomlio import read_toml, write_toml
from . import extra_args as _extra
from . import presets as _presets
from .config import (
    RunFiles,
    SampleSettings,
    base_family,
    build_run_files,
    script_for,
    select_concepts,
    write_run_files,
)
from .distributed import ACCELERATE_SCHEMA, AccelerateOptions, accelerate_argv
from .environment import DoctorReport, ProbeCache, TrainerEnvironment, doctor
from .model_path import confine_model_path
from .options import SCHEMA as OPTIONS_SCHEMA
from .queue import TrainQueue
from .registration import register_run
from .runner import Runs, RunSnapshot, RunSpec
from .states import StateChoice, choose_state
from .steps import StepPlan, plan_project, project_counts
from .validation import split_problems
from .vram import estimate_vram

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Finding:
    """One preflight check that failed (`error` blocks the run; `warning` asks for attention)."""

    code: str
    severity: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class TrainRequest:
    project: str
    preset: str
    base_model: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    output_name: Optional[str] = None
    samples: Optional[SampleSettings] = None
    accept_missing_captions: bool = False
    accelerate: AccelerateOptions = field(default_factory=AccelerateOptions)  # multi-GPU / multi-node
    dry_run: bool = False  # write the files and show the command; a missing trainer is then only a warning
    concepts: Optional[tuple[str, ...]] = None  # the concepts to train (config.select_concepts); None: all
    base_weights: tuple[tuple[str, float], ...] = ()  # LoRAs merged into the model first: (file, multiplier)
    depends_on: Optional[str] = None  # a run of the same project that must succeed before this one starts
    meta: Mapping[str, Any] = field(default_factory=dict)  # extra facts stored in the run's meta
    # sd-scripts arguments beyond the declared options, by sd-scripts' name (extra_args.py): text from the CLI and
    # the tab, JSON values from the API
    extra_args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, project: str) -> TrainRequest:
        """The request from plain data (the CLI's arguments, the API's JSON body, the panel's fields), every field
        checked: all problems at once as InvalidSettings, each naming its field (`overrides.network_dim: …`);
        an unknown key is refused by name. Keys: REQUEST_KEYS."""
        values, problems = read_request(data)
        if problems:
            raise InvalidSettings(problems)
        return cls(project=project, **values)


# the keys of a training request as plain data; the multi-GPU settings sit at the top level, by their names
REQUEST_KEYS = ("preset", "base_model", "overrides", "extra_args", "output_name", "samples", "without_trigger",
                "accept_missing_captions", "dry_run", *(f.name for f in ACCELERATE_SCHEMA.fields))


def read_request(data: Any, *, more_keys: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """The fields of REQUEST_KEYS as TrainRequest's keyword arguments, and every problem found (each naming its
    field); keys outside REQUEST_KEYS and `more_keys` (read by the caller) are problems too."""
    if not isinstance(data, Mapping):
        return {}, [f"request: expected an object of fields, got {type(data).__name__}"]
    known = (*REQUEST_KEYS, *more_keys)
    problems = [_unknown_key(k, known) for k in data if k not in known]
    out: dict[str, Any] = {}
    for key in ("preset", "base_model"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: required, a non-empty string (got {value!r})")
        out[key] = value.strip() if isinstance(value, str) else ""
    out["output_name"] = _output_name(data.get("output_name"), problems)
    out["overrides"] = read_overrides(data.get("overrides"), "overrides", problems)
    out["extra_args"] = _extra_args(data.get("extra_args"), problems)
    flags = {k: _flag(data, k, default, problems) for k, default in (("without_trigger", True),
                                                                     ("accept_missing_captions", False),
                                                                     ("dry_run", False))}
    prompts = _prompts(data.get("samples"), problems)
    out["samples"] = SampleSettings(prompts=prompts, without_trigger=flags["without_trigger"])
    out["accept_missing_captions"], out["dry_run"] = flags["accept_missing_captions"], flags["dry_run"]
    out["accelerate"] = _accelerate(data, problems)
    return out, problems


def set_items(items: Iterable[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """`NAME=VALUE` items (the CLI's `--set`, the panel's text box) as plain data: (the declared options as text,
    for `overrides`; every other NAME as an sd-scripts argument for `extra_args`, a NAME given twice collecting a
    list). The text is typed and checked by the request's `from_dict`."""
    overrides: dict[str, str] = {}
    extra: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        name, sep, text = str(item).partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name:
            problems.append(f"{item!r}: expected NAME=VALUE, e.g. max_train_epochs=10")
        elif name in OPTIONS_SCHEMA or name in OPTIONS_SCHEMA.aliases:
            overrides[name] = text
        elif name in extra:
            extra[name] = [*(extra[name] if isinstance(extra[name], list) else [extra[name]]), text]
        else:
            extra[name] = text
    if problems:
        raise InvalidSettings(problems)
    return overrides, extra


def _unknown_key(key: Any, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"{key}: not a field of a training request{hint}"


def _output_name(value: Any, problems: list[str]) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(f"output_name: expected a string, got {value!r}")
        return None
    try:
        return check_name(value.strip(), what="output name")
    except LorakitError as e:
        problems.append(f"output_name: {e}")
        return None


def read_overrides(values: Any, path: str, problems: list[str]) -> dict[str, Any]:
    """Training options by name, checked by the declaration (train.options.SCHEMA); a value given as text is
    typed as `--set` types it. Problems name `<path>.<option>`."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        problems.append(f"{path}: expected an object of option: value, got {type(values).__name__}")
        return {}
    typed: dict[str, Any] = {}
    found: list[str] = []
    for name, value in values.items():
        try:
            typed.update(OPTIONS_SCHEMA.parse_set([f"{name}={value}"]) if isinstance(value, str) else {name: value})
        except InvalidSettings as e:
            found += [OPTIONS_SCHEMA.at(path, p) for p in e.problems]
    try:
        checked = OPTIONS_SCHEMA.validate(typed, path=path)
    except InvalidSettings as e:
        found += [p for p in e.problems if p not in found]
        checked = {}
    problems += found
    return checked


def _extra_args(values: Any, problems: list[str]) -> dict[str, Any]:
    """sd-scripts arguments by name: text, numbers, true/false or a list of them (their own parser checks them)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping) or not all(isinstance(k, str) and k.strip() for k in values):
        problems.append("extra_args: expected an object of NAME: value")
        return {}
    scalar = (str, int, float, bool)
    for name, value in values.items():
        if not (isinstance(value, scalar) or isinstance(value, list) and all(isinstance(v, scalar) for v in value)):
            problems.append(f"extra_args.{name}: expected text, a number, true/false or a list of them, got {value!r}")
    return dict(values)


def _flag(data: Mapping[str, Any], key: str, default: bool, problems: list[str]) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        problems.append(f"{key}: expected true or false, got {value!r}")
        return default
    return value


def _prompts(values: Any, problems: list[str]) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        problems.append(f"samples: expected a list of prompts (strings), got {values!r}")
        return ()
    return tuple(v.strip() for v in values if v.strip())


def _accelerate(data: Mapping[str, Any], problems: list[str]) -> AccelerateOptions:
    """The multi-GPU settings, each checked by ACCELERATE_SCHEMA, then together (GPU ids against processes, …)."""
    given = {f.name: data[f.name] for f in ACCELERATE_SCHEMA.fields if data.get(f.name) is not None}
    try:
        options = AccelerateOptions(**ACCELERATE_SCHEMA.from_dict(given))
    except InvalidSettings as e:
        problems += e.problems
        return AccelerateOptions()
    problems += options.problems()
    return options


@dataclass(frozen=True)
class TrainPlan:
    settings: _presets.ResolvedSettings
    steps: StepPlan
    findings: tuple[Finding, ...]
    base_arch: str
    # the model files as the run will name them, once allowed (model_path.confine_model_path); None: refused
    base_model: Optional[Path] = None
    base_weights: tuple[tuple[Path, float], ...] = ()
    extra_args: Mapping[str, Any] = field(default_factory=dict)  # checked and typed by sd-scripts' parser

    @property
    def blocked(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict:
        return {"preset": self.settings.preset, "base_arch": self.base_arch, "settings": self.settings.explain(),
                "steps": asdict(self.steps),
                "findings": [f.to_dict() for f in self.findings], "blocked": self.blocked,
                "extra_args": dict(self.extra_args)}


class TrainingService:
    """`local_user`: the caller is the machine's own user (the CLI), who may train from any file; the tab and the
    HTTP API leave it False, so a run takes only the Host's checkpoints and .safetensors files inside the models
    and allowed folders (see model_path)."""

    def __init__(self, host: Host, *, trainer: TrainerEnvironment, tokenizer_cache_dir: Optional[Path] = None,
                 env: Optional[Mapping[str, str]] = None, local_user: bool = False):
        self.host = host
        self.trainer = trainer
        self.local_user = local_user
        # offline machines keep sd-scripts' tokenizers in a folder (FACTS: --tokenizer_cache_dir)
        cache = tokenizer_cache_dir or os.environ.get("TRAIN_STYLE_TOKENIZER_CACHE")
        self.tokenizer_cache_dir = Path(cache) if cache else None
        self.extra_env = dict(env or {})

    def trainer_report(self, *, refresh: bool = False) -> DoctorReport:
        """What the doctor finds in the trainer environment, ours or adopted (its probe cached per interpreter)."""
        return doctor(self.trainer, repo_root=REPO_ROOT, cache=ProbeCache.under(self.host.projects_home()),
                      refresh=refresh)

    def presets_dir(self) -> Path:
        return Path(self.host.projects_home()) / "presets"

    # 1. the plan: settings with their sources, the step maths and the preflight findings; writes nothing
    def plan(self, project: Project, req: TrainRequest) -> TrainPlan:
        if req.output_name is not None:
            check_name(req.output_name, what="output name")  # it names files sd-scripts writes in the run folder
        settings = _presets.resolve(req.preset, req.overrides, user_dir=self.presets_dir())
        # the model files first: nothing about a path is looked at before it is known to be allowed
        base, findings = self._model(req.base_model, code="BASE_MODEL", what="base model",
                                     fix="Pick a checkpoint from the list.")
        weights: list[tuple[Path, float]] = []
        for path, multiplier in req.base_weights:
            merged, found = self._model(path, code="BASE_WEIGHTS", what="LoRA to merge first",
                                        fix="Use a LoRA of this project's runs.", extra_roots=(project.root,))
            findings += found
            if merged is not None:
                weights.append((merged, float(multiplier)))
        reading = read_checkpoint_arch(base) if base is not None and base.is_file() else ArchReading("Unknown")
        arch = reading.arch
        steps = plan_project(project, settings.values, num_processes=_processes(req), concepts=req.concepts)
        report = self.trainer_report()
        findings += preflight(project, req, settings=settings, base=base, trainer_report=report,
                              lora_dir=Path(self.host.lora_dir()), base_weights=weights, arch=reading)
        findings += [Finding("MULTI_GPU", "error", p, "Fix the Multi-GPU settings.")
                     for p in req.accelerate.problems()]
        findings += vram_findings(settings, getattr(self.host, "gpu_memory", lambda: None)())
        extra, found = self._extra_args(project, req, settings=settings, report=report)
        return TrainPlan(settings=settings, steps=steps, findings=tuple(findings + found), base_arch=arch,
                         base_model=base, base_weights=tuple(weights), extra_args=extra)

    def _extra_args(self, project: Project, req: TrainRequest, *, settings: _presets.ResolvedSettings,
                    report: DoctorReport) -> tuple[dict[str, Any], list[Finding]]:
        """The request's extra sd-scripts arguments: screened for this front end's user, then typed and checked by
        sd-scripts' own parser in the trainer (a dry run without a working trainer writes them unchecked)."""
        if not req.extra_args:
            return {}, []
        taken = ("base_weights", "base_weights_multiplier") if req.base_weights else ()
        screened = _extra.screen(req.extra_args, host=self.host, project_root=project.root,
                                 local_user=self.local_user, taken=taken)
        found = [Finding("EXTRA_ARG_REFUSED", "error", r, "Leave it out, or set it as the message says.")
                 for r in screened.refused]
        found += [Finding("EXTRA_ARG_PICKLE", "warning", w, "Convert it to .safetensors.") for w in screened.warnings]
        if screened.refused:
            return {}, found
        if not report.ok:
            found.append(Finding("EXTRA_ARGS_UNCHECKED", "warning" if req.dry_run else "error",
                                 "sd-scripts could not check the extra arguments: the trainer is not ready.",
                                 "Fix the trainer (see above); a dry run writes them as given."))
            return _extra.typed_without_sd_scripts(screened.values), found
        script = script_for(settings.base)
        try:
            checked = _extra.check_with_sd_scripts(self.trainer, script, screened.values,
                                                   cache_file=Path(self.host.projects_home()) / ".cache" /
                                                   "extra-args.json")
        except LorakitError as e:
            return {}, [*found, Finding("EXTRA_ARGS_CHECK", "error", str(e), "Check the trainer (trainer doctor).")]
        found += [Finding("EXTRA_ARG_UNKNOWN", "error", u, f"Leave it out, or use a name {script} of this "
                          "sd-scripts accepts (its --help lists them).") for u in checked.unknown]
        found += [Finding("EXTRA_ARG_INVALID", "error", i, "Give a value sd-scripts accepts.")
                  for i in checked.invalid]
        return checked.values, found

    def _model(self, path: str | Path, *, code: str, what: str, fix: str,
               extra_roots: tuple[Path, ...] = ()) -> tuple[Optional[Path], list[Finding]]:
        """A model file of the run, as `confine_model_path` allows it for this front end's user: (the path the run
        names, []) or (None, [the refusal as an error finding]); a local user's pickle adds a warning."""
        try:
            allowed = confine_model_path(self.host, path, local_user=self.local_user, what=what,
                                         extra_roots=extra_roots)
        except PathNotAllowed as e:
            return None, [Finding(f"{code}_NOT_ALLOWED", "error", str(e), fix)]
        found = [Finding(f"{code}_PICKLE", "warning", allowed.warning, "Convert it to .safetensors.")]
        return allowed.path, found if allowed.warning else []

    # 2. a run folder with its TOMLs and launch description, queued
    def create_run(self, project: Project, req: TrainRequest, *, queue: bool = True,
                   plan: Optional[TrainPlan] = None) -> RunSnapshot:
        """`plan`: this request's plan when the caller has just made it (else it is made here)."""
        plan = plan or self.plan(project, req)
        if plan.blocked:
            errors = [f for f in plan.findings if f.severity == "error"]
            raise LorakitError("Cannot train yet:\n" + "\n".join(
                f"- {f.message}" + (f" Fix: {f.fix}" if f.fix else "") for f in errors))
        assert plan.base_model is not None  # a refused model is an error finding: the plan was blocked
        runs = Runs(project)
        run_dir = runs.new_dir(req.output_name or plan.settings.preset)
        files = build_run_files(project, plan.settings, run_dir=run_dir, pretrained_model=plan.base_model,
                                base_arch=plan.base_arch if plan.base_arch != "Unknown" else plan.settings.base,
                                output_name=req.output_name, tokenizer_cache_dir=self.tokenizer_cache_dir,
                                samples=req.samples, concepts=req.concepts, base_weights=plan.base_weights,
                                extra_args=plan.extra_args)
        paths = write_run_files(files, run_dir)
        # only what differs from the supervisor's own environment is stored (no secrets copied into the run)
        wanted = {**self.trainer.subprocess_env(dict(os.environ)), **self.extra_env}
        spec = RunSpec(argv=tuple(self.launch_argv(files, paths.args_toml, paths.dataset_toml, req)),
                       cwd=str(self.trainer.sd_scripts_dir), output_name=files.output_name,
                       env={k: v for k, v in wanted.items() if os.environ.get(k) != v},
                       unset=tuple(sorted(set(os.environ) - set(wanted)) + ["PYTHONPATH"]))
        meta = {"preset": plan.settings.preset, "base_model": str(plan.base_model), "base_arch": plan.base_arch,
                "trigger_words": list(project.settings.trigger_words), "steps": asdict(plan.steps),
                "settings": dict(plan.settings.values), **dict(req.meta)}
        if req.concepts is not None:
            meta["concepts"] = list(req.concepts)
        meta["accelerate"] = req.accelerate.to_dict()
        if plan.base_weights:
            meta["base_weights"] = [[str(p), float(m)] for p, m in plan.base_weights]
        if plan.extra_args:
            meta["extra_args"] = dict(plan.extra_args)
        if req.depends_on:
            meta["depends_on"] = req.depends_on  # the queue holds this run until that one has succeeded
        warnings = [f.message for f in plan.findings if f.code in (BASE_WEIGHTS_QUIRK, "BASE_MODEL_PICKLE",
                                                                 "BASE_WEIGHTS_PICKLE")]
        if warnings:
            meta["warnings"] = [*meta.get("warnings", []), *warnings]
        snap = runs.create(run_dir, spec, files={}, meta=meta)
        if queue:
            TrainQueue(self.host).add(project.name, snap.id)
        return snap

    def launch_argv(self, files: RunFiles, args_toml: Path, dataset_toml: Path, req: TrainRequest) -> list[str]:
        """accelerate launch … <script> --config_file … --dataset_config …, as an argument list (no shell)."""
        argv = [str(self.trainer.python), "-m", "accelerate.commands.launch", "--num_cpu_threads_per_process", "2"]
        argv += [*accelerate_argv(req.accelerate), files.script, "--config_file", str(args_toml),
                 "--dataset_config", str(dataset_toml)]
        return argv

    # 3. resume a stopped, failed or interrupted run from its last saved state, in the same folder
    def resume(self, project: Project, run_id: str, *, queue: bool = True) -> RunSnapshot:
        runs = Runs(project)
        snap = runs.get(run_id)
        if snap.meta.get("imported"):
            raise LorakitError(f"Run {run_id} was trained elsewhere and imported from a bundle; it cannot be resumed "
                               "here. Train it again, or resume it where it was trained and import it again.")
        if snap.active or snap.state in ("succeeded", "draft"):
            raise LorakitError(f"Run {run_id} is {snap.state}; only a stopped, failed or interrupted run can be "
                               "resumed.")
        choice = choose_state(snap.dir)
        if choice.state is None and not choice.skipped and snap.meta.get("depends_on") \
                and "launched" not in read_json(snap.dir / "run.json"):
            # a later stage failed because the run it depends on had not succeeded; it never ran, so it is queued
            # again as it was and waits for that run (resume that one first)
            requeue(snap.dir)
            if queue:
                TrainQueue(self.host).add(project.name, run_id)
            return runs.get(run_id)
        if choice.state is None:
            raise LorakitError(no_state_message(run_id, choice))
        state = choice.state.path
        point_args_at_state(snap.dir / "args.toml", state)
        requeue(snap.dir, resumed_from=state.name, resume_note=choice.explain())
        if queue:
            TrainQueue(self.host).add(project.name, run_id)
        return runs.get(run_id)

    # 4. registration of what a run saved
    def register(self, project: Project, run_id: str, *, weight: float = 0.8) -> list[Registered]:
        return register_run(self.host, project, run_id, weight=weight)


def default_trainer(host: Host, python: Optional[str] = None) -> TrainerEnvironment:
    """The trainer environment: an existing one's python (argument or TRAIN_STYLE_TRAINER_PYTHON), else ours
    under `<projects home>/.trainer/venv`."""
    python = python or os.environ.get("TRAIN_STYLE_TRAINER_PYTHON") or getattr(host, "trainer_python", lambda: None)()
    # absolute, not resolved: a venv's bin/python is a symlink to the interpreter it was made from
    venv = Path(python).absolute().parent.parent if python else Path(host.projects_home()) / ".trainer" / "venv"
    # TRAIN_STYLE_SD_SCRIPTS: a checkout of sd-scripts the user keeps elsewhere (else our pinned submodule)
    sd_scripts = os.environ.get("TRAIN_STYLE_SD_SCRIPTS")
    return TrainerEnvironment(venv, Path(sd_scripts) if sd_scripts else REPO_ROOT / "sd-scripts")


def _processes(req: TrainRequest) -> int:
    """Processes over all machines for the step maths (1 while the multi-GPU settings are invalid: the plan then
    shows their problems as findings)."""
    return 1 if req.accelerate.problems() else req.accelerate.total_processes


def no_state_message(run_id: str, choice: StateChoice) -> str:
    if not choice.skipped:
        return (f"Run {run_id} saved no training state to resume from (save_state was off, or it stopped before "
                "the first save). Start a new run instead.")
    why = "; ".join(f"{s.name}: {s.problem}" for s in choice.skipped)
    return (f"Run {run_id} has no complete saved state to resume from ({why}): every save was interrupted. Start "
            "a new run instead.")


def point_args_at_state(args_path: Path, state: Path) -> None:
    """`resume = <state>` and `skip_until_initial_step = true` in the run's arguments, once (sd-scripts flattens the
    sections, so an older value in a section would win)."""
    args = read_toml(args_path)
    for section in args.values():
        if isinstance(section, dict):
            section.pop("resume", None)
            section.pop("skip_until_initial_step", None)
    args.update(resume=str(state), skip_until_initial_step=True)
    write_toml(args_path, args)


def requeue(run_dir: Path, **meta: Any) -> None:
    data = read_json(run_dir / "run.json")
    data.update(state="queued", error="", advice="")
    data.setdefault("meta", {}).update(meta)
    atomic_write_json(run_dir / "run.json", data)


BUCKET_STEP_MULTIPLE = {"SD1": 64, "SDXL": 32}  # sd-scripts v0.10.1: train_network.py / sdxl_train_network.py


def _bucket_steps(settings: _presets.ResolvedSettings) -> list[Finding]:
    """sd-scripts refuses bucket sides that are not multiples of 64 (SD1) or 32 (SDXL) after loading everything."""
    values = settings.values
    step, family = values.get("bucket_reso_steps"), base_family(settings.base)
    multiple = BUCKET_STEP_MULTIPLE[family]
    if not values.get("enable_bucket") or not isinstance(step, int) or step % multiple == 0:
        return []
    return [Finding("BUCKET_STEPS", "error", f"bucket_reso_steps {step}: sd-scripts trains {family} buckets only in "
                    f"steps that are a multiple of {multiple}, and would stop after loading the model.",
                    f"Set bucket_reso_steps to {multiple} or a multiple of it.")]


def preflight(project: Project, req: TrainRequest, *, settings: _presets.ResolvedSettings, base: Optional[Path],
              arch: ArchReading, trainer_report: DoctorReport, lora_dir: Path,
              base_weights: Sequence[tuple[Path, float]] = ()) -> list[Finding]:
    """Every reason the run would fail or disappoint, each with the fix. `base` and `base_weights` are the model
    files already allowed (None / left out: refused, which the caller reported)."""
    # a. base model: present, and of the preset's family
    found = _base_model(base, arch, settings) if base is not None else []
    # b. captions and trigger words (of the concepts this run trains)
    report = build_report(project)
    chosen = {(c.kind, c.name) for c in select_concepts(project, req.concepts)}
    report_concepts = [c for c in report.concepts if (c.kind, c.name) in chosen]
    missing = [m for c in report_concepts if c.kind == "dataset" for m in c.missing_captions]
    if missing and not req.accept_missing_captions:
        found.append(Finding("MISSING_CAPTIONS", "error", f"{len(missing)} training images have no caption "
                             f"(e.g. {missing[0]}); sd-scripts would train them on the folder name alone.",
                             "Tag them in Captions, or accept training without captions."))
    if sum(c.images for c in report_concepts if c.kind == "dataset") == 0:
        found.append(Finding("NO_IMAGES", "error", "The project has no training images.", "Import images first."))
    if not project.settings.trigger_words:
        found.append(Finding("NO_TRIGGER", "warning", "The project has no trigger word: the LoRA's card will have "
                             "no activation text and the style will be tied to no word.",
                             "Set trigger words in the project settings."))
    found += _bucket_steps(settings)
    found += [Finding(p.code, p.severity, p.message, p.fix) for p in split_problems(
        [(c.name, c.images) for c in project_counts(project, req.concepts) if not c.is_reg],
        settings.values["validation_split"])]
    # c. the trainer and sd-scripts, as the doctor finds them (a dry run only warns)
    found += trainer_findings(trainer_report, dry_run=req.dry_run)
    # d. disk and name collisions
    found += _disk_and_names(project, req, settings, lora_dir)
    # e. LoRAs merged in first: present (or made by the run this one waits for), and sd-scripts' module quirk
    found += _base_weights(req, settings, base_weights)
    return found


def trainer_findings(report: DoctorReport, *, dry_run: bool = False) -> list[Finding]:
    """The doctor's errors as preflight findings (its warnings — no GPU, no LyCORIS — are the doctor's to show):
    an error blocks a run, and only warns for a dry run, which starts nothing."""
    level = "warning" if dry_run else "error"
    return [Finding(p.code, level, p.what, p.fix) for p in report.problems if p.severity == "error"]


def _base_model(base: Path, reading: ArchReading, settings: _presets.ResolvedSettings) -> list[Finding]:
    if not base.is_file():
        return [Finding("BASE_MODEL_MISSING", "error", f"The base model {base} does not exist.",
                        "Pick a checkpoint from the list or give its full path.")]
    arch = reading.arch
    if reading.damaged:
        return [Finding("BASE_MODEL_DAMAGED", "error", reading.problem, "Download or copy the model again.")]
    if arch == "Unknown":
        why = reading.problem or "only .safetensors checkpoints can be read safely"
        return [Finding("BASE_MODEL_UNKNOWN", "warning", f"Could not tell whether {base.name} is SD1, SD2 or SDXL: "
                        f"{why}", f"Make sure it is a {settings.base} model.")]
    if (arch == "SDXL") != (settings.base == "SDXL"):
        return [Finding("BASE_MODEL_MISMATCH", "error", f"{base.name} is an {arch} model but preset "
                        f"{settings.preset} is for {settings.base}.", f"Pick a {arch} preset.")]
    return []


BASE_WEIGHTS_QUIRK = "BASE_WEIGHTS_EXTRA_MODULES"


def _base_weights(req: TrainRequest, settings: _presets.ResolvedSettings,
                  allowed: Sequence[tuple[Path, float]]) -> list[Finding]:
    found = []
    for path, _ in allowed:
        if not Path(path).is_file() and not req.depends_on:
            found.append(Finding("BASE_WEIGHTS_MISSING", "error", f"The LoRA to merge first, {path}, does not "
                                 "exist.", "Train that LoRA first, or give the path of an existing one."))
    # sd-scripts v0.10.1 networks/lora.py, LoRANetwork.__init__: `target_modules = LoRANetwork.UNET_TARGET_
    # REPLACE_MODULE; target_modules += LoRANetwork.UNET_TARGET_REPLACE_MODULE_CONV2D_3X3` extends the *class*
    # list in place whenever a network is built from weights (modules_dim given). --base_weights does exactly that
    # (create_network_from_weights, to merge the LoRA), so the network trained afterwards in the same process
    # also targets ResnetBlock2D/Downsample2D/Upsample2D. Without conv_dim their 3x3 convs are still skipped, but
    # their Linear and 1x1 layers get LoRA modules: each ResNet block's time_emb_proj and the 1x1 conv_shortcut
    # where channels change (SD1.5: 22 + 14 = 36 more U-Net modules than the same run without base weights).
    # networks.lora v0.10.1 has no argument that names the module set (no include/exclude patterns), and
    # patching sd-scripts or swapping in our own network module would change what `ss_network_module` and the
    # trained file say. So the run keeps sd-scripts' behaviour and says so: this warning, stored in the run's
    # meta and shown in the plan. The extra modules are ordinary LoRA keys; the webui loads them.
    if req.base_weights and settings.values.get("network_module") == "networks.lora":
        found.append(Finding(BASE_WEIGHTS_QUIRK, "warning", "With base weights, sd-scripts' networks.lora also "
                             "trains the U-Net ResNet blocks' time_emb_proj and 1x1 conv_shortcut layers (SD1.5: 36 "
                             "more modules than the same run without base weights; a class-list mutation in "
                             "sd-scripts' networks/lora.py). The LoRA works as usual; it is slightly larger.",
                             "Nothing to do: this records what sd-scripts does."))
    return found


def vram_findings(settings: _presets.ResolvedSettings, gpu: Optional[tuple[int, int]]) -> list[Finding]:
    """The run's VRAM estimate against the GPU (free is measured before the webui's model is unloaded, so only a
    run larger than the whole card is an error)."""
    if gpu is None:
        return []
    free_mb, total_mb = gpu
    est = estimate_vram(settings.base, settings.values)
    fix = ("Turn on gradient_checkpointing and cache_latents, use mixed_precision fp16/bf16, or lower "
           "train_batch_size or resolution.")
    if est.gb * 1024 > total_mb:
        return [Finding("VRAM", "error", f"This run needs about {est.gb} GB of VRAM ({est.detail}); the GPU has "
                        f"{total_mb / 1024:.1f} GB.", fix)]
    if est.gb * 1024 > free_mb:
        return [Finding("VRAM", "warning", f"This run needs about {est.gb} GB of VRAM ({est.detail}); "
                        f"{free_mb / 1024:.1f} GB is free now. Unloading the webui's model may free enough.", fix)]
    return []


def _disk_and_names(project: Project, req: TrainRequest, settings: _presets.ResolvedSettings,
                    lora_dir: Path) -> list[Finding]:
    found = []
    values = settings.values
    lora_mb = 10 + (values.get("network_dim") or 16) * (8 if settings.base == "SDXL" else 4)
    saves = 12
    need = lora_mb * saves * (3 if values.get("save_state") else 1) * 1024 * 1024
    free = shutil.disk_usage(project.root).free
    if free < need:
        found.append(Finding("DISK", "error", f"Only {free / 2**30:.1f} GiB free; this run may write about "
                             f"{need / 2**30:.1f} GiB.", "Free disk space or save less often."))
    name = req.output_name or project.name
    taken = Path(lora_dir) / "train-style" / project.name / f"{name}.safetensors"
    if taken.exists():
        found.append(Finding("NAME_TAKEN", "warning", f"A registered LoRA named {name} exists; registering this "
                             "run will replace it.", "Choose another output name to keep both."))
    return found

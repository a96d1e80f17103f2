"""Regularisation images made by the Host's generator (issue 11 item 4; seeds/003: they matter more than most
hyperparameters).

From a class prompt (`1girl, solo`), N square images at the training resolution, with the project's base model,
land in `reg/<repeats>_<class>/` with the prompt as each image's caption. They are imported like any other image
(the importer, from a staging folder), so originals/, the import records and the index are right and crop/derive
work on them; each PNG carries its infotext.

Image i always gets seed `seed + i`, so the set is the same whoever makes it. The work goes in chunks, each imported
as soon as it is made: a cancelled or interrupted batch keeps what it made, and a rerun makes only the indexes still
missing (it continues to N, it does not add N more). Which index made which file is kept in
`.lorakit/reg_generated.json` (read against the files present, so a deleted image is made again).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..dataset.captions_io import MAX_CAPTION_CHARS
from ..dataset.importer import ImportReport, ImportSource, import_sources
from ..errors import InvalidName, LorakitError
from ..fsutil import atomic_write_json, atomic_write_text, pid_alive, read_json
from ..host import Host
from ..jobs import JobState, job_manager
from ..paths import check_name, safe_file_stem
from ..progress import CancelFlag, ProgressFn
from ..project import MAX_REPEATS, Project, Workspace
from ..schema import Field, InvalidSettings, Schema
from . import Generator, GenImage, GenRequest
from .generators import host_generator
from .infotext import save_picture

MAX_COUNT = 10_000
MAX_SEED = 2**31 - 1 - MAX_COUNT  # seed + index stays a 31-bit integer, which every generator takes
CHUNK = 16  # images per generator call, imported together: what a cancel or a crash can lose at most
MANIFEST = "reg_generated.json"  # in .lorakit/: class -> {seed, prompt, …, images: {index: file name}}
STAGING = "reg_staging"  # in .lorakit/: <pid>-<token>/ folders of made images waiting to be imported

REG_SCHEMA = Schema(noun="regularisation option", groups=(("reg", "Regularisation images"),), fields=(
    Field(name="prompt", type=str, default="", group="reg", label="Class prompt",
          reason="What every image shows, e.g. '1girl, solo'; also each image's caption."),
    Field(name="negative", type=str, default="", group="reg", label="Negative prompt",
          reason="What the images should not show."),
    Field(name="count", type=int, default=100, minimum=1, maximum=MAX_COUNT, group="reg", label="Images",
          reason="How many images the set holds when done; a rerun makes only the missing ones."),
    Field(name="repeats", type=int, default=None, minimum=1, maximum=MAX_REPEATS, group="reg", label="Repeats",
          reason="The set's repeats (its folder's number); none: keep an existing set's, 1 for a new one."),
    Field(name="seed", type=int, default=None, minimum=0, maximum=MAX_SEED, group="reg", label="Seed",
          reason="Image i gets seed + i; none: the seed the set was started with, or one from the class name."),
    Field(name="steps", type=int, default=20, minimum=1, maximum=150, group="reg", label="Sampling steps",
          reason="Sampling steps per image."),
    Field(name="cfg", type=float, default=7.0, minimum=1.0, maximum=30.0, group="reg", label="CFG scale",
          reason="How closely the images follow the prompt."),
    Field(name="sampler", type=str, default="Euler a", group="reg", label="Sampler",
          reason="The sampler by the webui's name (Euler a, DPM++ 2M Karras, DDIM, …)."),
    Field(name="resolution", type=int, default=None, minimum=64, maximum=4096, group="reg", label="Size (px)",
          reason="The images' side; none: the last run's training resolution, else the project's."),
    Field(name="webui_url", type=str, default="", group="reg", label="Webui URL",
          reason="A webui started with --api elsewhere (command line only); empty: the Host's own generator."),
))

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class RegRequest:
    """A regularisation set to make: `class_name` names the folder (`reg/<repeats>_<class_name>/`)."""

    class_name: str
    prompt: str
    negative: str = ""
    count: int = 100
    repeats: Optional[int] = None
    seed: Optional[int] = None
    steps: int = 20
    cfg: float = 7.0
    sampler: str = "Euler a"
    resolution: Optional[int] = None
    webui_url: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegRequest:
        """The request from plain data (the CLI's arguments, the API's body, the panel's fields): every problem at
        once as InvalidSettings, each naming its field."""
        if not isinstance(data, Mapping):
            raise InvalidSettings([f"request: expected an object of fields, got {type(data).__name__}"])
        options = dict(data)
        problems: list[str] = []
        class_name = options.pop("class_name", None)
        try:
            check_name(class_name, what="class name")
        except InvalidName as e:
            problems.append(f"class_name: {e}")
        try:
            values = REG_SCHEMA.from_dict(options)
        except InvalidSettings as e:
            problems += e.problems
            values = {**REG_SCHEMA.defaults(), **{k: v for k, v in options.items() if _checks(k, v)}}
        problems += _text_problems(values)
        if problems:
            raise InvalidSettings(problems)
        return cls(class_name=class_name, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _checks(name: str, value: Any) -> bool:
    """Whether `value` is a valid `name` (read to list the other problems of a request the schema refused)."""
    try:
        REG_SCHEMA.validate({name: value})
    except InvalidSettings:
        return False
    return True


def _text_problems(values: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in ("prompt", "negative"):
        text = values[key]
        if key == "prompt" and not text.strip():
            problems.append("prompt: required: the class prompt every image is made from, such as '1girl, solo'")
        elif len(text) > MAX_CAPTION_CHARS:
            problems.append(f"{key}: {len(text):,} characters long; the limit is {MAX_CAPTION_CHARS:,}")
        elif any(ord(c) < 32 or ord(c) == 127 for c in text):
            problems.append(f"{key}: one line of text without control characters (it becomes a caption)")
    if values["resolution"] is not None and values["resolution"] % 8:
        problems.append(f"resolution: expected a multiple of 8 (64 for sd-scripts' buckets), got "
                        f"{values['resolution']}")
    url = values["webui_url"]
    if url and not re.match(r"https?://[^\s/]+", url):
        problems.append(f"webui_url: expected http://HOST:PORT or https://…, got {url!r}")
    return problems


@dataclass(frozen=True)
class RegPlan:
    """What a request will do in a project: the size and model, where from, and which indexes are still missing."""

    class_name: str
    folder: str  # project-relative, as it will be named
    width: int
    height: int
    resolution_from: str  # "request", "last run" or "project"
    checkpoint: Optional[str]
    checkpoint_from: str  # "project", "last run" or "generator" (its current model)
    seed: int
    present: int
    missing: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["missing"] = len(self.missing)
        return d


@dataclass
class RegReport:
    project: str
    class_name: str
    folder: str
    prompt: str
    width: int
    height: int
    checkpoint: Optional[str]
    generator: str
    count: int
    present_before: int
    present: int = 0
    made: list[dict[str, Any]] = field(default_factory=list)  # {"index", "seed", "image"}
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cancelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (f"{self.folder}: {len(self.made)} image(s) made at {self.width}×{self.height}, {self.present} of "
                f"{self.count} present")
        if self.present_before:
            text += f" ({self.present_before} were there before)"
        if self.skipped:
            text += f"; {len(self.skipped)} could not be imported"
        if self.cancelled:
            text += "; cancelled: run it again to make the rest"
        return text + "."


class RegService:
    """Regularisation sets of the projects of one Host."""

    def __init__(self, host: Host):
        self.host = host

    def project(self, name: str) -> Project:
        return Workspace(self.host.projects_home()).open(name)

    def plan(self, name: str, req: RegRequest) -> RegPlan:
        """What `generate` would do now; writes nothing."""
        return _plan(self.project(name), req)

    def generate(self, name: str, req: RegRequest, *, local_user: bool = False,
                 progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None,
                 generator: Optional[Generator] = None) -> RegReport:
        """Make the set's missing images and import them. `local_user`: the machine's own user (the CLI), who may
        name a webui by URL; `generator` replaces the Host's (tests)."""
        _check_caller(req, local_user=local_user)
        project = self.project(name)
        with _busy(project, req.class_name):
            plan = _plan(project, req)
            gen = generator or (self._generator(req, local_user=local_user) if plan.missing else None)
            return _generate(project, req, plan, gen, progress=progress, cancel=cancel)

    def start(self, name: str, req: RegRequest, *, local_user: bool = False,
              generator: Optional[Generator] = None) -> JobState:
        """The same as a background job with progress and cancel."""
        _check_caller(req, local_user=local_user)
        plan = self.plan(name, req)
        if plan.missing and generator is None:
            self._generator(req, local_user=local_user)  # a missing generator is said now, not in the job

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.generate(name, req, local_user=local_user, progress=progress, cancel=cancel,
                                 generator=generator).to_dict()

        return job_manager(self.host.projects_home()).start(
            kind="reg", project=name, title=f"Regularisation images {plan.folder} ({req.count})", work=work)

    def _generator(self, req: RegRequest, *, local_user: bool) -> Generator:
        if req.webui_url:
            _check_caller(req, local_user=local_user)
            try:
                from .remote import remote_generator
            except ImportError as e:
                raise LorakitError(f"webui_url: generating through a webui by URL is not available in this "
                                   f"version ({e}).") from e
            return remote_generator(req.webui_url)
        return host_generator(self.host)


def _check_caller(req: RegRequest, *, local_user: bool) -> None:
    if req.webui_url and not local_user:
        raise LorakitError("webui_url: a webui by URL is chosen on the command line; the server does not connect to "
                           "addresses sent to it. Leave it empty to use this Host's generator.")


# --- the plan ---------------------------------------------------------------------------------------------------

def _plan(project: Project, req: RegRequest) -> RegPlan:
    res, res_from, checkpoint, ckpt_from = _training_defaults(project)
    if req.resolution is not None:
        res, res_from = req.resolution, "request"
    entry = _manifest(project).get(req.class_name, {})
    seed = req.seed if req.seed is not None else entry.get("seed", _class_seed(req.class_name))
    done = _present(project, req.class_name)
    repeats = req.repeats or _current_repeats(project, req.class_name) or 1
    return RegPlan(class_name=req.class_name, folder=f"reg/{repeats}_{req.class_name}", width=res, height=res,
                   resolution_from=res_from, checkpoint=checkpoint, checkpoint_from=ckpt_from, seed=int(seed),
                   present=sum(1 for i in done if i < req.count),
                   missing=tuple(i for i in range(req.count) if i not in done))


def _training_defaults(project: Project) -> tuple[int, str, Optional[str], str]:
    """(resolution, where from, checkpoint, where from): the project's base model when set, else the last run's;
    the last run's training resolution, else the project's."""
    from ..train.runner import Runs

    settings = project.settings
    last = next((r.meta for r in Runs(project).list() if isinstance(r.meta.get("settings"), dict)), {})
    run_res = last.get("settings", {}).get("resolution")
    if isinstance(run_res, int) and not isinstance(run_res, bool) and 64 <= run_res <= 4096:
        res, res_from = run_res - run_res % 8, "last run"
    else:
        res, res_from = settings.resolution - settings.resolution % 8, "project"
    if settings.base_model:
        return res, res_from, settings.base_model, "project"
    if isinstance(last.get("base_model"), str) and last["base_model"]:
        return res, res_from, last["base_model"], "last run"
    return res, res_from, None, "generator"


def _class_seed(class_name: str) -> int:
    return zlib.crc32(class_name.encode("utf-8")) % MAX_SEED


def _current_repeats(project: Project, class_name: str) -> Optional[int]:
    return next((c.repeats for c in project.concepts("reg") if c.name == class_name), None)


def _folder(project: Project, class_name: str) -> Optional[Path]:
    return next((c.folder for c in project.concepts("reg") if c.name == class_name), None)


def _manifest(project: Project) -> dict[str, Any]:
    data = read_json(project.state_dir / MANIFEST, default={})
    return data if isinstance(data, dict) else {}


def _present(project: Project, class_name: str) -> set[int]:
    """The indexes whose image is in the set's folder now."""
    folder = _folder(project, class_name)
    images = _manifest(project).get(class_name, {}).get("images", {})
    if folder is None or not isinstance(images, dict):
        return set()
    return {int(i) for i, file in images.items()
            if str(i).isdigit() and isinstance(file, str) and (folder / Path(file).name).is_file()}


def _record(project: Project, req: RegRequest, plan: RegPlan, made: Mapping[int, str]) -> None:
    """Add the files made for these indexes to the manifest (under the project's lock: read, change, write)."""
    with project.lock():
        data = _manifest(project)
        entry = data.get(req.class_name) if isinstance(data.get(req.class_name), dict) else {}
        images = entry.get("images") if isinstance(entry.get("images"), dict) else {}
        images.update({str(i): Path(image).name for i, image in made.items()})
        data[req.class_name] = {"seed": plan.seed, "prompt": req.prompt, "negative": req.negative,
                                "width": plan.width, "height": plan.height, "checkpoint": plan.checkpoint,
                                "images": images}
        atomic_write_json(project.state_dir / MANIFEST, data)


class _busy:
    """One generation per project and class at a time in this process: two would make the same indexes."""

    def __init__(self, project: Project, class_name: str):
        key = (str(project.root.resolve()), class_name)
        with _locks_guard:
            self.lock = _locks.setdefault(key, threading.Lock())
        self.what = f"{project.name!r} reg set {class_name!r}"

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=False):
            raise LorakitError(f"Images for {self.what} are being made already; wait for that job to finish or "
                               "cancel it.")

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


# --- making and importing ----------------------------------------------------------------------------------------

def _generate(project: Project, req: RegRequest, plan: RegPlan, gen: Optional[Generator], *,
              progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> RegReport:
    report = RegReport(project=project.name, class_name=req.class_name, folder=plan.folder, prompt=req.prompt,
                       width=plan.width, height=plan.height, checkpoint=plan.checkpoint,
                       generator=getattr(gen, "name", ""), count=req.count, present_before=plan.present)
    previous = _manifest(project).get(req.class_name, {})
    if plan.present and previous.get("prompt") not in (None, req.prompt):
        report.notes.append(f"The {plan.present} image(s) already there were made from the prompt "
                            f"{previous['prompt']!r}; the new ones from {req.prompt!r}.")
    # 1. the set's folder, with the repeats asked for (a new set gets 1)
    project.ensure_concept(req.class_name, req.repeats, "reg")
    staging = _staging(project)
    try:
        for start in range(0, len(plan.missing), CHUNK):
            if cancel is not None and cancel.is_set():
                report.cancelled = True
                break
            # 2. a chunk made, saved into staging, imported and recorded at once
            indexes = plan.missing[start:start + CHUNK]
            images = _make(gen, req, plan, indexes, base=plan.present + len(report.made), progress=progress,
                           cancel=cancel)
            _import_chunk(project, req, plan, list(zip(indexes, images, strict=False)), staging, report)
            if len(images) < len(indexes):
                if cancel is not None and cancel.is_set():
                    report.cancelled = True
                    break
                raise LorakitError(f"The {report.generator} generator made {len(images)} of {len(indexes)} images "
                                   f"and stopped; the {len(report.made)} made are kept: run it again to continue.")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.present = len([i for i in _present(project, req.class_name) if i < req.count])
    report.folder = next((f"reg/{c.folder_name}" for c in project.concepts("reg") if c.name == req.class_name),
                         plan.folder)
    if progress:
        progress(report.present, req.count, "cancelled" if report.cancelled else "done")
    return report


def _make(gen: Optional[Generator], req: RegRequest, plan: RegPlan, indexes: Sequence[int], *, base: int,
          progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> list[GenImage]:
    if gen is None:
        raise LorakitError("No generator to make the missing images with.")
    requests = [GenRequest(prompt=req.prompt, negative=req.negative, seed=plan.seed + i, steps=req.steps,
                           sampler=req.sampler, cfg=req.cfg, width=plan.width, height=plan.height,
                           checkpoint=plan.checkpoint) for i in indexes]

    def step(done: int, total: int, message: str) -> None:
        if progress:
            progress(base + done, req.count, message or f"image {base + done + 1} of {req.count}")

    if progress:
        progress(base, req.count, f"making images {base + 1}–{base + len(indexes)} of {req.count}")
    return list(gen.generate(requests, progress=step, cancel=cancel))[:len(indexes)]


def _import_chunk(project: Project, req: RegRequest, plan: RegPlan, made: Sequence[tuple[int, GenImage]],
                  staging: Path, report: RegReport) -> None:
    """Save each image (with its infotext) and the prompt as its caption into staging; import them into the set."""
    if not made:
        return
    stem = safe_file_stem(req.class_name, fallback="reg")
    sources, names = [], {}
    for index, image in made:
        png = staging / f"{stem}_{index:05d}.png"
        save_picture(image.image.convert("RGB"), image.infotext, png)
        caption = png.with_suffix(".txt")
        atomic_write_text(caption, req.prompt + "\n")
        sources.append(ImportSource(path=png, display=png.name, captions=(caption,)))
        names[png.name] = (index, image.seed)
    imported: ImportReport = import_sources(project, sources, concept=req.class_name, kind="reg")
    placed = {i.source: i.image for i in [*imported.imported, *imported.already]}
    _record(project, req, plan, {names[s][0]: image for s, image in placed.items() if s in names})
    report.made += [{"index": names[s][0], "seed": names[s][1], "image": image} for s, image in placed.items()
                    if s in names]
    report.skipped += [{"image": v.source, "reason": v.text} for v in imported.skipped]
    for source in sources:
        for f in (source.path, *source.captions):
            f.unlink(missing_ok=True)


def _staging(project: Project) -> Path:
    """A folder of this process's own for made images; folders left by processes that died are removed."""
    base = project.state_dir / STAGING
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        pid = old.name.split("-", 1)[0]
        if old.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = base / f"{os.getpid()}-{secrets.token_hex(6)}"
    folder.mkdir()
    return folder

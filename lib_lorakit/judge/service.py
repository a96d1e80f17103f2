"""The judge over a grid: copying, style strength and adherence per cell, the recommended epoch × weight, the card.

`run` makes the judge's grid (off-dataset prompts and a few training captions, every chosen epoch × weight, weight 0
included as the base model) through `EvalService`, then `judge` scores it; `judge` also scores a grid made before.
The result is `eval/<grid id>/judge.json` (layout and units: `judge/__init__.py`), written atomically after each
stage, so a cancel or a crash leaves a report that says so. `apply` writes the recommendation into the card.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from .. import clock
from ..embed import Embedder
from ..embed.models import DEFAULT_EMBEDDER
from ..errors import Cancelled, LorakitError, NotFound
from ..evaluate.service import GRID_SCHEMA, MAX_PROMPTS, CardChoice, EvalService, GridRequest, caption_prompts
from ..fsutil import atomic_write_json, read_json
from ..host import Host
from ..jobs import JobState, job_manager
from ..progress import CancelFlag, ProgressFn
from ..project import Project, Workspace
from ..schema import Field, InvalidSettings, Schema
from . import DEFAULT_DESCRIPTOR, DESCRIPTORS, Descriptor, OverfitReport
from .scores import Criteria, Sample, Vectors, score

GOALS = ("style", "character")
GENERATION_FIELDS = ("negative", "steps", "cfg", "sampler", "width", "height")

JUDGE_SCHEMA = Schema(noun="judge setting", fields=(
    Field("descriptor", str, DEFAULT_DESCRIPTOR, choices=DESCRIPTORS, group="copying",
          reason="the copy-detection descriptor: sscd (downloaded once), clip, or perceptual (no download)"),
    Field("copy_threshold", float, 0.0, minimum=0.0, maximum=1.0, group="copying",
          reason="the similarity at or above which a sample counts as a copy; 0: the descriptor's own"),
    Field("max_copy_rate", float, 0.1, minimum=0.0, maximum=1.0, group="copying",
          reason="the share of a cell's samples that may copy a training image for it to be recommended"),
    Field("embedder", str, DEFAULT_EMBEDDER, group="scores",
          reason="the CLIP model for style strength and adherence (MODEL:PRETRAINED)"),
    Field("goal", str, "style", choices=GOALS, group="scores",
          reason="style: the strongest cell that still follows prompts; character: consistency first"),
    Field("min_adherence", float, 0.8, minimum=0.0, maximum=2.0, group="scores",
          reason="how well a cell must follow the off-dataset prompts, as a share of the base model's (1.0)"),
    Field("caption_samples", int, 4, minimum=0, maximum=16, group="axes",
          reason="how many training captions (with the trigger) to sample, beside the off-dataset prompts"),
    Field("weights", str, "0,0.4,0.6,0.8,1,1.2", group="axes",
          reason="LoRA weights to compare; 0 (the base model) is always added"),
    Field("epochs", str, "all", group="axes", reason="which saved files: all, last, or a list like 2,4,final"),
    Field("seeds", str, "1,2", group="axes", reason="the seeds of every prompt, separated by commas"),
    *(GRID_SCHEMA[name] for name in GENERATION_FIELDS),
), groups=(("copying", "Copying"), ("scores", "Scores"), ("axes", "Axes"), ("generation", "Generation")))

DEFAULT_OFF_PROMPTS = (
    "a cat riding a bicycle",
    "a lighthouse on a cliff at sunset",
    "a bowl of fruit on a wooden table",
    "a city street at night",
)


@dataclass(frozen=True)
class JudgeRequest:
    """What to judge and how: the settings (JUDGE_SCHEMA) and the off-dataset prompts (none: DEFAULT_OFF_PROMPTS).
    `from_dict` names every bad field."""

    prompts: tuple[str, ...] = DEFAULT_OFF_PROMPTS
    settings: Mapping[str, Any] = field(default_factory=JUDGE_SCHEMA.defaults)

    @classmethod
    def from_dict(cls, data: Any) -> JudgeRequest:
        from ..evaluate.grid import parse_weights
        from ..evaluate.service import _seeds, _texts

        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InvalidSettings([f"judge: expected an object, got {type(data).__name__}"])
        problems: list[str] = []
        prompts = _texts(data.get("prompts") or list(DEFAULT_OFF_PROMPTS), "prompts", MAX_PROMPTS, problems)
        try:
            settings = JUDGE_SCHEMA.from_dict({k: v for k, v in data.items() if k != "prompts"})
        except InvalidSettings as e:
            problems += e.problems
            settings = {}
        seeds, weights = settings.get("seeds", data.get("seeds")), settings.get("weights", data.get("weights"))
        if isinstance(seeds, str):  # (not a string: the schema named it already)
            _seeds(seeds, problems)
        if isinstance(weights, str):
            try:
                parse_weights(weights)
            except LorakitError as e:
                problems.append(str(e))
        if problems:
            raise InvalidSettings(problems)
        return cls(prompts=prompts, settings=settings)

    def to_dict(self) -> dict:
        return {"prompts": list(self.prompts), **dict(self.settings)}

    @property
    def seeds(self) -> tuple[int, ...]:
        from ..evaluate.service import _seeds

        return _seeds(self.settings["seeds"], [])


JUDGE_FILE = "judge.json"
SAMPLE_BATCH = 16  # cell images embedded per call
_RUNNING_HERE: set[str] = set()  # "project/grid" this process is judging (a "running" judge.json of another is not)
_LOCK = threading.Lock()
_GRID_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")


class JudgeService:
    """Judge the grids of one Host's projects."""

    def __init__(self, host: Host):
        self.host = host
        self.evals = EvalService(host)

    def _project(self, name: str) -> Project:
        return Workspace(self.host.projects_home()).open(name)

    # --- the grid ---------------------------------------------------------------------------------------------------
    def grid_request(self, name: str, run: str, request: JudgeRequest) -> GridRequest:
        """The judge's grid: the off-dataset prompts and `caption_samples` training captions, each with the run's
        trigger words, over the chosen epochs × weights (0 added: the base model) × seeds."""
        from ..evaluate.grid import parse_weights
        from ..train.config import with_trigger

        project = self._project(name)
        triggers = _triggers(project, run)
        s = request.settings
        try:
            captions = caption_prompts(project, s["caption_samples"])
        except NotFound:  # no captions yet: the off-dataset prompts alone
            captions = []
        prompts = list(dict.fromkeys(with_trigger(p, triggers) for p in [*request.prompts, *captions]))
        weights = parse_weights(s["weights"])
        if not any(Decimal(w) == 0 for w in weights):
            weights = ("0", *weights)
        return GridRequest.from_dict({
            "run": run, "prompts": prompts[:MAX_PROMPTS], "seeds": list(request.seeds), "epochs": s["epochs"],
            "weights": ",".join(weights), "caption_prompts": 0, **{k: s[k] for k in GENERATION_FIELDS}})

    def run(self, name: str, run: str, request: JudgeRequest, *, generator=None,
            descriptor: Optional[Descriptor] = None, embedder: Optional[Embedder] = None,
            progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> dict:
        """The judge's grid made (EvalService.run), then judged; the judge.json dict."""
        grid = self.evals.run(name, self.grid_request(name, run, request), generator=generator, progress=progress,
                              cancel=cancel)
        if cancel is not None and cancel.is_set():
            doc = self._new_doc(name, grid["id"], run, request)
            doc.update(state="cancelled", error="Cancelled while the grid was being made; resume the grid, then "
                                                "judge it (judge PROJECT grid GRID_ID).")
            self._write(name, grid["id"], doc)
            return doc
        return self.judge(name, grid["id"], request, descriptor=descriptor, embedder=embedder, progress=progress,
                          cancel=cancel)

    def start_run(self, name: str, run: str, request: JudgeRequest, *, generator=None) -> JobState:
        """`run` as a job (the grid is planned first, so a bad request fails here, not in the job)."""
        grid = self.grid_request(name, run, request)
        plan = self.evals.plan(name, grid)
        clip = _clip_embedder(self.host, request.settings["embedder"])  # a path outside the allowed folders: now

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.run(name, run, request, generator=generator, embedder=clip, progress=progress, cancel=cancel)

        return job_manager(self.host.projects_home()).start(
            kind="judge", project=name, work=work, title=f"Judge {run}: a grid of {plan.size} images, then scores")

    # --- judging ----------------------------------------------------------------------------------------------------
    def judge(self, name: str, grid_id: str, request: JudgeRequest, *, descriptor: Optional[Descriptor] = None,
              embedder: Optional[Embedder] = None, progress: Optional[ProgressFn] = None,
              cancel: Optional[CancelFlag] = None) -> dict:
        """Score a grid on disk; writes judge.json after each stage and returns it."""
        report = self.evals.show(name, grid_id)
        if report["state"] in ("queued", "running"):
            raise LorakitError(f"Grid {grid_id} is still {report['state']}; judge it when it has finished.")
        key = f"{name}/{grid_id}"
        with _LOCK:
            if key in _RUNNING_HERE:
                raise LorakitError(f"Grid {grid_id} is being judged already; wait for it to finish.")
            _RUNNING_HERE.add(key)
        doc = self._new_doc(name, grid_id, report.get("run") or "", request)
        started = clock.monotonic()
        try:
            self._write(name, grid_id, doc)
            self._judge(name, grid_id, report, request, doc, descriptor=descriptor, embedder=embedder,
                        progress=progress, cancel=cancel)
            doc["state"] = "done"
        except Cancelled:
            doc.update(state="cancelled", error="Cancelled before the scores were made; judge the grid again.")
        except LorakitError as e:
            doc.update(state="failed", error=str(e))
            raise
        except Exception as e:  # a bug: judge.json must not stay "running"
            doc.update(state="failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            _RUNNING_HERE.discard(key)
            doc["elapsed_s"] = round(clock.monotonic() - started, 2)
            doc["finished"] = clock.now_iso()
            self._write(name, grid_id, doc)
        return doc

    def _judge(self, name: str, grid_id: str, report: dict, request: JudgeRequest, doc: dict, *,
               descriptor: Optional[Descriptor], embedder: Optional[Embedder], progress: Optional[ProgressFn],
               cancel: Optional[CancelFlag]) -> None:
        from ..embed.store import fill

        project = self._project(name)
        s = request.settings
        clip = embedder if embedder is not None else _clip_embedder(self.host, s["embedder"])
        desc, fallback = (descriptor, "") if descriptor is not None else self._descriptor(s["descriptor"], clip)
        threshold = s["copy_threshold"] or float(desc.threshold)
        doc["descriptor"] = {"name": desc.name, "id": desc.id, "threshold": threshold, "unit": desc.unit,
                             "fallback": fallback}
        doc["embedder"] = clip.id
        self._write(name, grid_id, doc)
        _step(progress, cancel, 0, 4, "the training images' copy descriptors")
        train_desc, _ = fill(project, desc, progress=progress, cancel=cancel)
        _step(progress, cancel, 1, 4, "the training images' CLIP embeddings")
        train_clip, _ = fill(project, clip, progress=progress, cancel=cancel)
        _check_cancel(cancel)
        if not train_desc.images or not train_clip.images:
            raise NotFound(f"Project {name!r} has no training images that could be read to compare with; import "
                           "images into its dataset first.")
        doc.update(training_images=len(train_desc.images), skipped=[[i, r] for i, r in train_desc.skipped])
        self._write(name, grid_id, doc)
        triggers = _triggers(project, report.get("run") or "")
        samples = _samples(project, report, triggers)
        if not samples:
            raise LorakitError(f"Grid {grid_id} has no images yet; resume it, then judge it.")
        _step(progress, cancel, 2, 4, f"{len(samples)} samples")
        samples, vectors, skipped = _embed_samples(project.root, samples, desc, clip, triggers=triggers,
                                                   progress=progress, cancel=cancel)
        doc["skipped"] += skipped
        if not samples:
            raise LorakitError(f"None of grid {grid_id}'s images could be read; make the grid again.")
        _step(progress, cancel, 3, 4, "scores")
        result = score(samples, Vectors(descriptor=vectors[0], clip=vectors[1], text=vectors[2],
                                        training_descriptor=train_desc.vectors, training_images=train_desc.images,
                                        training_clip=train_clip.vectors),
                       Criteria(threshold=threshold, max_copy_rate=s["max_copy_rate"],
                                min_adherence=s["min_adherence"], goal=s["goal"]))
        doc.update(result)
        if progress is not None:
            progress(4, 4, "judged")

    def _descriptor(self, spec: str, clip: Embedder) -> tuple[Descriptor, str]:
        from .descriptors import resolve_descriptor

        return resolve_descriptor(spec, models_root=self.host.models_dir() / "train-style", download=True,
                                  clip_embedder=clip)

    def start_judge(self, name: str, grid_id: str, request: JudgeRequest) -> JobState:
        """`judge` as a job."""
        report = self.evals.show(name, grid_id)  # NotFound now, not in the job
        clip = _clip_embedder(self.host, request.settings["embedder"])  # a path outside the allowed folders: now

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.judge(name, grid_id, request, embedder=clip, progress=progress, cancel=cancel)

        return job_manager(self.host.projects_home()).start(
            kind="judge", project=name, work=work, title=f"Judge grid {grid_id} ({report['made']} images)")

    # --- reading ----------------------------------------------------------------------------------------------------
    def _path(self, name: str, grid_id: str) -> Path:
        if not isinstance(grid_id, str) or not _GRID_ID.fullmatch(grid_id):
            raise NotFound(f"No grid {str(grid_id)[:80]!r} in project {name!r}.")
        return self._project(name).root / "eval" / grid_id / JUDGE_FILE

    def _new_doc(self, name: str, grid_id: str, run: str, request: JudgeRequest) -> dict:
        return {"grid": grid_id, "run": run, "project": name, "state": "running", "error": "",
                "request": request.to_dict(), "descriptor": None, "embedder": None, "training_images": 0,
                "skipped": [], "baseline": None, "cells": [], "epochs": [], "first_copying_epoch": None,
                "recommendation": None, "why_none": "", "elapsed_s": None, "created": clock.now_iso(),
                "finished": "", "pid": os.getpid()}

    def _write(self, name: str, grid_id: str, doc: dict) -> None:
        atomic_write_json(self._path(name, grid_id), doc)

    def show(self, name: str, grid_id: str) -> dict:
        """judge.json as it stands (NotFound when the grid has none); a "running" report of a process that is gone
        reads "interrupted"."""
        path = self._path(name, grid_id)
        if not (path.parent / "report.json").is_file():
            raise NotFound(f"No grid {grid_id!r} in project {name!r}.")
        if not path.is_file():
            raise NotFound(f"Grid {grid_id!r} of project {name!r} has not been judged; judge it first "
                           f"(judge {name} grid {grid_id}).")
        try:
            doc = read_json(path)
        except (OSError, ValueError) as e:
            raise LorakitError(f"Grid {grid_id}'s judge.json cannot be read ({type(e).__name__}); judge the grid "
                               "again.") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
            raise LorakitError(f"Grid {grid_id}'s judge.json is damaged; judge the grid again.")
        if doc.get("state") == "running" and f"{name}/{grid_id}" not in _RUNNING_HERE:
            doc["state"] = "interrupted"
            doc["error"] = "The process judging this grid stopped before it finished; judge the grid again."
        return doc

    def list(self, name: str) -> list[dict]:
        """The grids that have a judge.json, newest first (a short summary each)."""
        root = self._project(name).root / "eval"
        if not root.is_dir():
            return []
        out = []
        for p in sorted(root.iterdir(), reverse=True):
            if not (_GRID_ID.fullmatch(p.name) and (p / JUDGE_FILE).is_file()):
                continue
            try:
                doc = self.show(name, p.name)
            except LorakitError as e:
                out.append({"grid": p.name, "state": "damaged", "error": str(e)})
                continue
            out.append({k: doc.get(k) for k in ("grid", "run", "state", "error", "created", "first_copying_epoch",
                                                "recommendation", "why_none")}
                       | {"goal": (doc.get("request") or {}).get("goal"), "cells": len(doc["cells"])})
        return out

    # --- the card ---------------------------------------------------------------------------------------------------
    def apply(self, name: str, grid_id: str) -> CardChoice:
        """The recommendation into the card: its weight as the preferred weight, the reasons in the note."""
        doc = self.show(name, grid_id)
        if doc.get("state") != "done":
            raise LorakitError(f"Grid {grid_id}'s judging is {doc.get('state')}, not done; judge it again first.")
        rec = doc.get("recommendation")
        if not rec:
            raise LorakitError(f"Grid {grid_id}'s judge recommends nothing: {doc.get('why_none') or 'no cell passed'}")
        choice = self.evals.choose(name, doc["run"], weight=float(rec["weight"]), epoch=_epoch_word(rec["epoch"]),
                                   grid=grid_id)
        reasons = f"Judge ({rec.get('goal', 'style')}): " + " ".join(rec.get("reasons") or [])
        card = read_json(choice.card, default=None)
        if isinstance(card, dict):
            card["notes"] = (str(card.get("notes") or "").rstrip() + "\n" + reasons).strip()
            atomic_write_json(choice.card, card)
        return dataclasses.replace(choice, note=choice.note + "\n" + reasons)

    # --- samples the user made --------------------------------------------------------------------------------------
    def overfit(self, name: str, request: Any, *, descriptor: Optional[Descriptor] = None, local_user: bool = False,
                progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> OverfitReport:
        """`overfit PROJECT --samples DIR`: judge.memorise.overfit with this Host's folders."""
        from .memorise import overfit

        return overfit(self.host, name, request, descriptor=descriptor, local_user=local_user, progress=progress,
                       cancel=cancel)

    def start_overfit(self, name: str, request: Any, *, descriptor: Optional[Descriptor] = None) -> JobState:
        """`overfit` as a job; the samples are checked against the allowed folders before it starts."""
        from .memorise import start_overfit

        return start_overfit(self.host, name, request, descriptor=descriptor)


# --- helpers --------------------------------------------------------------------------------------------------------
def _triggers(project: Project, run: str) -> list[str]:
    from ..train.runner import Runs

    try:
        meta = Runs(project).get(run).meta if run else {}
    except LorakitError:  # the run was deleted since: the project's trigger words
        meta = {}
    return list(meta.get("trigger_words") or project.settings.trigger_words)


def _clip_embedder(host: Host, spec: str) -> Embedder:
    from ..embed.service import EmbedService

    return EmbedService(host).embedder(spec)


def _check_cancel(cancel: Optional[CancelFlag]) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Cancelled.")


def _step(progress: Optional[ProgressFn], cancel: Optional[CancelFlag], done: int, total: int, what: str) -> None:
    _check_cancel(cancel)
    if progress is not None:
        progress(done, total, f"Judging: {what}")


def _norm(text: str) -> str:
    return " ".join(str(text).split()).lower()


def _caption_texts(project: Project, triggers: Sequence[str]) -> set[str]:
    """The dataset's captions without the trigger words, as a prompt made from them is compared."""
    from ..train.config import without_trigger

    ext = project.settings.caption_extension
    out = set()
    for concept in project.concepts("dataset"):
        for p in concept.folder.glob(f"*{ext}"):
            if p.is_file() and not p.is_symlink():
                text = " ".join(p.read_text(encoding="utf-8", errors="replace").split())[:2000]
                out.add(_norm(without_trigger(text, triggers)))
    return out


def _samples(project: Project, report: dict, triggers: Sequence[str]) -> list[Sample]:
    """The grid's made cells as samples; a prompt that is one of the dataset's captions is a "caption" sample."""
    from ..train.config import without_trigger

    captions = _caption_texts(project, triggers)
    out = []
    for c in report["cells"]:
        if not c.get("image"):
            continue
        kind = "caption" if _norm(without_trigger(c["prompt"], triggers)) in captions else "off"
        out.append(Sample(cell=c["index"], image=c["image"], epoch=str(c["epoch"]), weight=str(c["weight"]),
                          prompt=c["prompt"], kind=kind, seed=int(c["seed"])))
    return out


def _open_cell(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def _embed_samples(root: Path, samples: list[Sample], desc: Descriptor, clip: Embedder, *, triggers: Sequence[str],
                   progress: Optional[ProgressFn], cancel: Optional[CancelFlag]):
    """(the samples that could be read, (descriptor rows, CLIP rows, prompt rows or None), skipped)."""
    kept: list[Sample] = []
    skipped: list[list[str]] = []
    d_rows, c_rows = [], []
    for start in range(0, len(samples), SAMPLE_BATCH):
        _check_cancel(cancel)
        batch, images = [], []
        for s in samples[start:start + SAMPLE_BATCH]:
            try:
                images.append(_open_cell(root / s.image))
                batch.append(s)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                skipped.append([s.image, f"cannot be read ({type(e).__name__})"])
        if images:
            d_rows.append(np.asarray(desc.embed_images(images), dtype=np.float32))
            c_rows.append(np.asarray(clip.embed_images(images), dtype=np.float32))
            kept += batch
        if progress is not None:
            progress(min(start + SAMPLE_BATCH, len(samples)), len(samples), "Judging: embedded samples")
    if not kept:
        return [], (None, None, None), skipped
    text = _prompt_vectors(kept, clip, triggers)
    return kept, (np.concatenate(d_rows), np.concatenate(c_rows), text), skipped


def _prompt_vectors(samples: list[Sample], clip: Embedder, triggers: Sequence[str]) -> Optional[np.ndarray]:
    """Each off-dataset sample's prompt through CLIP's text tower, the trigger words taken out (CLIP does not know
    them: they would only blur the prompt); zero rows for caption samples."""
    from ..train.config import without_trigger

    texts = list(dict.fromkeys(s.prompt for s in samples if s.kind == "off"))
    if not texts:
        return None
    found = clip.embed_texts([without_trigger(t, triggers) or t for t in texts])
    if found is None:
        return None
    found = np.asarray(found, dtype=np.float32)
    rows = {t: found[i] for i, t in enumerate(texts)}
    zero = np.zeros(found.shape[1], dtype=np.float32)
    return np.stack([rows.get(s.prompt, zero) for s in samples])


def _epoch_word(label: str) -> str:
    """"epoch 4" → "4", "step 500" → "step500", "final" → "final" (what EvalService.choose selects by)."""
    label = str(label)
    if label.startswith("epoch "):
        return label.split()[-1]
    if label.startswith("step "):
        return "step" + label.split()[-1]
    return label

"""Evaluate a run: a grid over its epochs × weights × prompts (× checkpoints × seeds) made by the Host's generator,
kept in `<project>/eval/<id>/`, and the LoRA's card set from the cell the user picks.

    eval/<id>/report.json   the request, the generator, the axes, every cell (its image once made), state, timing
             /cells/NNNN.png each cell with its own infotext (PNG `parameters`)
             /grid.png       the grid, with the X/Y/Z plot script's grid infotext so PNG Info restores the axes

A generator that can make the whole grid through the webui's X/Y/Z script (an XYZGenerator) does so in one go;
otherwise the cells are made in groups that share a LoRA, weight and checkpoint (one sd-scripts process each) and the
grid is composed here. Every file is written atomically and report.json after each group, so a cancelled or crashed
grid leaves a folder whose report lists exactly the cells on disk; `resume` makes the rest.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

from PIL import Image, ImageDraw, ImageFont

from .. import clock
from ..errors import Cancelled, LorakitError, NotFound
from ..fsutil import atomic_write_json, read_json
from ..host import Host
from ..jobs import JobState, job_manager
from ..paths import is_inside
from ..progress import CancelFlag, ProgressFn
from ..project import Project, Workspace
from ..schema import Field, InvalidSettings, Schema
from . import Generator, GenRequest, LoraUse, XYZGenerator
from .generators import host_generator
from .grid import (
    KINDS,
    Cell,
    GridPlan,
    XYZPlan,
    csv_values,
    epoch_files,
    parse_weights,
    prompt_axis,
    same_version,
    select_epochs,
)
from .infotext import quote, save_picture

SAME_VERSION = "same-version"  # the checkpoints preset: every checkpoint of the run's SD version
MAX_PROMPTS = 32
MAX_CAPTION_PROMPTS = 16

GRID_SCHEMA = Schema(noun="grid setting", fields=(
    Field("epochs", str, "all", reason="which saved files: all, last, or a list like 2,4,final", group="axes"),
    Field("weights", str, "0-1.2 (+0.4)", reason="LoRA weights: '0-1.2 (+0.2)', '0,0.4,0.8,1' or '0.2-1 [5]'",
          group="axes"),
    Field("with_and_without_trigger", bool, False, group="axes",
          reason="each prompt with the trigger words and without them (what the trigger holds vs what leaks)"),
    Field("caption_prompts", int, 0, minimum=0, maximum=MAX_CAPTION_PROMPTS, group="axes",
          reason="also use this many of the dataset's captions as prompts"),
    Field("negative", str, "", reason="the negative prompt of every cell", group="generation"),
    Field("steps", int, 20, minimum=1, maximum=150, reason="sampling steps", group="generation"),
    Field("cfg", float, 7.0, minimum=1.0, maximum=30.0, reason="CFG scale", group="generation"),
    Field("sampler", str, "Euler a", reason="the sampler, as the webui names it", group="generation"),
    Field("width", int, 512, minimum=64, maximum=2048, reason="image width in pixels", group="generation"),
    Field("height", int, 512, minimum=64, maximum=2048, reason="image height in pixels", group="generation"),
), groups=(("axes", "Axes"), ("generation", "Generation")))

LIST_KEYS = ("prompts", "checkpoints", "seeds")


@dataclass(frozen=True)
class GridRequest:
    """What to compare: a run, its axes and the generation settings. `from_dict` names every bad field."""

    run: str
    prompts: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1,)
    settings: Mapping[str, Any] = field(default_factory=GRID_SCHEMA.defaults)

    @classmethod
    def from_dict(cls, data: Any) -> GridRequest:
        if not isinstance(data, Mapping):
            raise InvalidSettings([f"grid: expected an object, got {type(data).__name__}"])
        problems: list[str] = []
        run = data.get("run")
        if not isinstance(run, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", run):
            problems.append(f"run: expected a run id, got {run!r}")
        prompts = _texts(data.get("prompts", []), "prompts", MAX_PROMPTS, problems)
        checkpoints = _texts(data.get("checkpoints", []), "checkpoints", 64, problems)
        seeds = _seeds(data.get("seeds", [1]), problems)
        scalars = {k: v for k, v in data.items() if k not in ("run", *LIST_KEYS)}
        try:
            settings = GRID_SCHEMA.from_dict(scalars)
        except InvalidSettings as e:
            problems += e.problems
            settings = {}
        if not problems:
            try:
                parse_weights(settings["weights"])
            except LorakitError as e:
                problems.append(str(e))
        if problems:
            raise InvalidSettings(problems)
        return cls(run=run, prompts=prompts, checkpoints=checkpoints, seeds=seeds, settings=settings)

    def to_dict(self) -> dict:
        return {"run": self.run, "prompts": list(self.prompts), "checkpoints": list(self.checkpoints),
                "seeds": list(self.seeds), **dict(self.settings)}


def _texts(value: Any, name: str, limit: int, problems: list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > limit:
        problems.append(f"{name}: expected a list of at most {limit} texts, got {type(value).__name__}"
                        + (f" of {len(value)}" if isinstance(value, list) else ""))
        return ()
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip() or len(v) > 2000 or "\n" in v or "\r" in v:
            problems.append(f"{name}[{i}]: expected one line of text (at most 2,000 characters), got {v!r:.60}")
        else:
            out.append(v.strip())
    return tuple(out)


def _seeds(value: Any, problems: list[str]) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            value = [int(s) for s in value.split(",") if s.strip()]
        except ValueError:
            problems.append(f"seeds: expected whole numbers separated by commas, got {value!r:.60}")
            return ()
    if not isinstance(value, list) or not value or len(value) > 64 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 32 for s in value):
        problems.append(f"seeds: expected 1 to 64 whole numbers from 0 to 4294967295, got {value!r:.60}")
        return ()
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class CardChoice:
    """What choosing a cell changed: the card, the weight, the note added, the files unregistered."""

    card: Path
    lora: Path
    weight: float
    note: str
    unregistered: list[str]

    def to_dict(self) -> dict:
        return {"card": str(self.card), "lora": str(self.lora), "weight": self.weight, "note": self.note,
                "unregistered": self.unregistered}


_RUNNING_HERE: set[str] = set()  # grids this process is making (a "running" report of another is interrupted)
_GRID_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")


class EvalService:
    chunk = 16  # cells a generator call makes at most (saved, and report.json written, after each)

    def __init__(self, host: Host):
        self.host = host

    def _project(self, name: str) -> Project:
        return Workspace(self.host.projects_home()).open(name)

    # --- planning ---------------------------------------------------------------------------------------------------
    def plan(self, name: str, request: GridRequest) -> GridPlan:
        """The grid's cells, from the run's saved files and the request (nothing is generated)."""
        from ..train.runner import Runs

        project = self._project(name)
        snap = Runs(project).get(request.run)
        s = request.settings
        epochs = select_epochs(epoch_files(snap.dir, snap.files), s["epochs"])
        triggers = list(snap.meta.get("trigger_words") or project.settings.trigger_words)
        texts = list(request.prompts) + caption_prompts(project, s["caption_prompts"])
        if not texts:
            raise LorakitError("prompts: none given; give at least one prompt (--prompt TEXT) or prompts from "
                               "captions (caption_prompts).")
        prompts = prompt_axis(texts, triggers, with_and_without=s["with_and_without_trigger"])
        return GridPlan(epochs=tuple(epochs), weights=parse_weights(s["weights"]), prompts=tuple(prompts),
                        checkpoints=self._checkpoints(request.checkpoints, snap.meta, epochs),
                        seeds=request.seeds, negative=s["negative"])

    def _checkpoints(self, names: Sequence[str], meta: dict, epochs: Sequence) -> tuple[Optional[str], ...]:
        if not names:
            return (None,)
        out: list[str] = []
        known = self.host.checkpoints()
        for n in names:
            if n == SAME_VERSION:
                arch = meta.get("base_arch") or _lora_arch(epochs[0].path)
                found = same_version(known, arch)
                if not found:
                    raise NotFound(f"checkpoints: no {arch} checkpoint in the models folder for the "
                                   f"'{SAME_VERSION}' preset.")
                out += found
            else:
                out.append(n)
        return tuple(dict.fromkeys(out))

    # --- running ----------------------------------------------------------------------------------------------------
    def _generator(self, name: str, run: str) -> Generator:
        """The Host's generator; standalone, with the run's base model for cells that name no checkpoint."""
        from ..train.runner import Runs

        try:
            base = Runs(self._project(name)).get(run).meta.get("base_model") or None
        except NotFound:
            base = None
        return host_generator(self.host, default_checkpoint=base)

    def start(self, name: str, request: GridRequest, *, generator: Optional[Generator] = None) -> JobState:
        """The grid as a job (progress, cancel); its result is the report."""
        plan = self.plan(name, request)
        gen = generator or self._generator(name, request.run)
        folder = self._new_folder(name, request)
        self._write_report(folder, name, request, plan, gen, state="queued")

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self._make(folder, name, request, plan, gen, progress=progress, cancel=cancel)

        return job_manager(self.host.projects_home()).start(kind="grid", project=name, work=work,
                                                            title=f"Grid of {request.run}: {plan.size} images")

    def start_resume(self, name: str, grid_id: str, *, generator: Optional[Generator] = None) -> JobState:
        """`resume` as a job."""
        report = self.show(name, grid_id)
        gen = generator or self._generator(name, report["run"])

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.resume(name, grid_id, generator=gen, progress=progress, cancel=cancel)

        missing = len(report["cells"]) - report["made"]
        return job_manager(self.host.projects_home()).start(kind="grid", project=name, work=work,
                                                            title=f"Grid {grid_id}: the {missing} images it lacks")

    def image(self, name: str, grid_id: str, file: str) -> Path:
        """A grid's picture (`grid.png`) or a cell's (`cells/0003.png`), for the page to show."""
        if not re.fullmatch(r"grid\.png|cells/\d{4,6}\.png", file or ""):
            raise NotFound(f"No image {str(file)[:80]!r} in a grid (grid.png or cells/NNNN.png).")
        path = self._folder(name, grid_id) / file
        if not path.is_file() or path.is_symlink():
            raise NotFound(f"Grid {grid_id} has no {file} (yet).")
        return path

    def run(self, name: str, request: GridRequest, *, generator: Optional[Generator] = None,
            progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> dict:
        """The grid made here and now (the command line); the report."""
        plan = self.plan(name, request)
        gen = generator or self._generator(name, request.run)
        folder = self._new_folder(name, request)
        self._write_report(folder, name, request, plan, gen, state="queued")
        return self._make(folder, name, request, plan, gen, progress=progress, cancel=cancel)

    def resume(self, name: str, grid_id: str, *, generator: Optional[Generator] = None,
               progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> dict:
        """Make the cells a cancelled or interrupted grid lacks, then the grid."""
        folder = self._folder(name, grid_id)
        report = self.show(name, grid_id)
        if report["state"] in ("queued", "running"):
            raise LorakitError(f"Grid {grid_id} is still {report['state']}; wait for it or cancel it first.")
        request = GridRequest.from_dict(report["request"])
        plan = self.plan(name, request)
        if [c.to_dict() for c in plan.cells()] != [_plain_cell(c) for c in report["cells"]]:
            raise LorakitError(f"Grid {grid_id}'s run has changed since (its saved files differ); start a new grid.")
        gen = generator or self._generator(name, request.run)
        return self._make(folder, name, request, plan, gen, progress=progress, cancel=cancel, force_cells=True)

    def _make(self, folder: Path, name: str, request: GridRequest, plan: GridPlan, gen: Generator, *,
              progress: Optional[ProgressFn], cancel: Optional[CancelFlag], force_cells: bool = False) -> dict:
        started = clock.monotonic()
        if getattr(gen, "name", "") == "webui":  # the webui finds LoRAs in its Lora folder only
            self._register(name, request.run, plan)
        _RUNNING_HERE.add(folder.name)
        state, error = "running", ""
        self._write_report(folder, name, request, plan, gen, state=state)
        try:
            xyz = plan.xyz()
            composed = False  # our cells: the grid is composed here
            if xyz is not None and isinstance(gen, XYZGenerator) and not force_cells and not _made(folder, plan):
                composed = self._xyz(folder, plan, xyz, gen, request, progress=progress, cancel=cancel)
            else:
                self._cells(folder, name, request, plan, gen, started, progress=progress, cancel=cancel)
            missing = [c for c in plan.cells() if not _cell_path(folder, c).is_file()]
            if not composed or missing:
                self._compose(folder, plan, request, gen)
            state = "cancelled" if (cancel is not None and cancel.is_set()) or missing else "done"
        except Cancelled:  # the generator stopped at the cancel: what it made is kept, the grid shows it
            state = "cancelled"
            self._compose(folder, plan, request, gen)
        except LorakitError as e:
            state, error = "failed", str(e)
            raise
        finally:
            _RUNNING_HERE.discard(folder.name)
            self._write_report(folder, name, request, plan, gen, state=state, error=error,
                               elapsed=clock.monotonic() - started)
        return self.show(name, folder.name)

    def _cells(self, folder: Path, name: str, request: GridRequest, plan: GridPlan, gen: Generator, started: float,
               *, progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> None:
        cells = plan.cells()
        todo = [c for c in cells if not _cell_path(folder, c).is_file()]
        done = len(cells) - len(todo)
        for group in _groups(todo, self.chunk):
            if cancel is not None and cancel.is_set():
                return
            made = gen.generate([cell_request(c, request) for c in group], cancel=cancel,
                                progress=_offset(progress, done, len(group), len(cells)))
            for cell, image in zip(group, made, strict=False):
                save_picture(image.image, image.infotext, _cell_path(folder, cell))
            done += len(made)
            if progress:
                progress(done, len(cells), f"{done} of {len(cells)} images")
            self._write_report(folder, name, request, plan, gen, state="running",
                               elapsed=clock.monotonic() - started)

    def _xyz(self, folder: Path, plan: GridPlan, xyz: XYZPlan, gen: XYZGenerator, request: GridRequest, *,
             progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> bool:
        """The grid by the webui's X/Y/Z script; True when its grid picture (with the webui's own infotext) is
        kept, False when cells are missing and the grid must be composed here."""
        first = plan.cells()[0]
        base = GenRequest(**{**_gen_fields(request), "prompt": xyz.base_prompt, "negative": xyz.negative,
                             "seed": first.seed, "checkpoint": first.checkpoint})
        axes = [(label, list(values)) for label, values in xyz.axes]
        result = gen.xyz_grid(base, x=axes[0], y=axes[1] if len(axes) > 1 else None,
                              z=axes[2] if len(axes) > 2 else None, progress=progress, cancel=cancel)
        cells = plan.cells()
        made = 0
        for order, image in zip(xyz.cells, result.cells, strict=False):
            if image.infotext:  # a cell the webui did not make (a cancel) comes back blank, without infotext
                save_picture(image.image, image.infotext, _cell_path(folder, cells[order]))
                made += 1
        if made == len(xyz.cells):
            save_picture(result.grid, result.infotext, folder / "grid.png")
            return True
        return False

    def _compose(self, folder: Path, plan: GridPlan, request: GridRequest, gen: Generator) -> None:
        images = []
        for cell in plan.cells():
            path = _cell_path(folder, cell)
            images.append(Image.open(path) if path.is_file() else None)
        cols, rows = plan.layout()
        grid = compose_grid(images, cols, rows, size=(request.settings["width"], request.settings["height"]))
        save_picture(grid, grid_infotext(plan, request, plan.xyz()), folder / "grid.png")

    def _register(self, name: str, run: str, plan: GridPlan) -> None:
        """The plan's LoRA files that are not in the Lora folder yet, registered with their cards."""
        from ..results.registry import register_files
        from ..train.runner import Runs

        project = self._project(name)
        target = Path(self.host.lora_dir()) / "train-style" / project.name
        missing = [e.path for e in plan.epochs if not (target / e.path.name).is_file()]
        if missing:
            meta = Runs(project).get(run).meta
            register_files(missing, lora_dir=Path(self.host.lora_dir()), project=project.name,
                           trigger_words=list(meta.get("trigger_words") or project.settings.trigger_words),
                           description=f"Train Style run {run}", host=self.host)

    # --- the store --------------------------------------------------------------------------------------------------
    def _new_folder(self, name: str, request: GridRequest) -> Path:
        root = self._project(name).root / "eval"
        base = f"{clock.stamp()}-{request.run}"[:80]
        folder, n = root / base, 1
        while folder.exists():
            n += 1
            folder = root / f"{base}-{n}"
        (folder / "cells").mkdir(parents=True)
        return folder

    def _folder(self, name: str, grid_id: str) -> Path:
        if not isinstance(grid_id, str) or not _GRID_ID.fullmatch(grid_id):
            raise NotFound(f"No grid {str(grid_id)[:80]!r} in project {name!r}.")
        folder = self._project(name).root / "eval" / grid_id
        if not (folder / "report.json").is_file():
            raise NotFound(f"No grid {grid_id!r} in project {name!r}.")
        return folder

    def _write_report(self, folder: Path, name: str, request: GridRequest, plan: GridPlan, gen: Generator, *,
                      state: str, error: str = "", elapsed: Optional[float] = None) -> None:
        old = read_json(folder / "report.json", default={}) or {}
        xyz = plan.xyz()
        atomic_write_json(folder / "report.json", {
            "id": folder.name, "project": name, "run": request.run, "state": state, "error": error,
            "request": request.to_dict(), "generator": getattr(gen, "name", type(gen).__name__),
            "created": old.get("created") or clock.now_iso(),
            "finished": clock.now_iso() if state in ("done", "cancelled", "failed") else "",
            "elapsed_s": round(elapsed, 2) if elapsed is not None else old.get("elapsed_s"),
            "pid": os.getpid(), "axes": plan.axes_summary(), "layout": list(plan.layout()),
            "xyz": None if xyz is None else {"base_prompt": xyz.base_prompt, "axes": [
                {"type": label, "values": csv_values(values)} for label, values in xyz.axes]},
            "cells": [c.to_dict() for c in plan.cells()], "grid": "grid.png",
        })

    def show(self, name: str, grid_id: str) -> dict:
        """The grid's report as it stands on disk: each cell's image only when its file is there."""
        folder = self._folder(name, grid_id)
        try:
            report = read_json(folder / "report.json")
        except (OSError, ValueError) as e:
            raise LorakitError(f"Grid {grid_id}'s report.json cannot be read ({type(e).__name__}); delete the "
                               "folder or repair the file.") from e
        if not isinstance(report, dict) or not isinstance(report.get("cells"), list) or not all(
                isinstance(c, dict) and isinstance(c.get("index"), int) for c in report["cells"]):
            raise LorakitError(f"Grid {grid_id}'s report.json is damaged; delete the folder or repair the file.")
        rel = f"eval/{folder.name}/"
        for cell in report["cells"]:
            path = folder / "cells" / f"{cell['index']:04d}.png"
            cell["image"] = rel + "cells/" + path.name if path.is_file() else None
        report["made"] = sum(1 for c in report["cells"] if c["image"])
        report["grid"] = rel + "grid.png" if (folder / "grid.png").is_file() else None
        report["infotext"] = _png_parameters(folder / "grid.png")
        if report.get("state") in ("queued", "running") and folder.name not in _RUNNING_HERE:
            report["state"] = "interrupted"
            report["error"] = ("The process making this grid stopped before it finished; the images it made are "
                               "kept. Resume it to make the rest.")
        return report

    def list(self, name: str) -> list[dict]:
        root = self._project(name).root / "eval"
        if not root.is_dir():
            return []
        out = []
        for p in sorted(root.iterdir(), reverse=True):
            if (p / "report.json").is_file() and _GRID_ID.fullmatch(p.name):
                try:
                    r = self.show(name, p.name)
                except LorakitError as e:
                    out.append({"id": p.name, "state": "damaged", "error": str(e)})
                    continue
                out.append({k: r.get(k) for k in ("id", "run", "state", "made", "grid", "generator", "created",
                                                  "axes", "error")} | {"cells": len(r["cells"])})
        return out

    # --- cards ------------------------------------------------------------------------------------------------------
    def choose(self, name: str, run: str, *, weight: float, epoch: Optional[str] = None,
               grid: Optional[str] = None, unregister_others: bool = False) -> CardChoice:
        """The chosen epoch's card gets `weight` as its preferred weight and a note naming the grid and what it
        compared; with `unregister_others`, the run's other files leave the Lora folder (they stay in the run)."""
        from ..results.registry import card_for, register_files
        from ..train.runner import Runs

        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 2:
            raise InvalidSettings([f"weight: expected a number from 0 to 2 (the card's preferred weight), "
                                   f"got {weight!r}"])
        project = self._project(name)
        snap = Runs(project).get(run)
        files = epoch_files(snap.dir, snap.files)
        chosen = select_epochs(files, epoch or "last")
        if len(chosen) != 1:
            raise LorakitError("epoch: name one epoch (a number, stepN or final).")
        src = chosen[0]
        target = Path(self.host.lora_dir()) / "train-style" / project.name
        lora = target / src.path.name
        triggers = list(snap.meta.get("trigger_words") or project.settings.trigger_words)
        if not lora.is_file():
            register_files([src.path], lora_dir=Path(self.host.lora_dir()), project=project.name,
                           trigger_words=triggers, description=f"Train Style run {run}", weight=float(weight))
        card_path = lora.with_suffix(".json")
        card = read_json(card_path, default=None) if card_path.is_file() else None
        if not isinstance(card, dict):
            card = card_for(lora, trigger_words=triggers, weight=float(weight), description=f"Train Style run {run}")
        note = self._note(name, grid, src.label, weight)
        card["preferred weight"] = float(weight)
        card["notes"] = (str(card.get("notes") or "").rstrip() + "\n" + note).strip()
        atomic_write_json(card_path, card)
        gone = []
        if unregister_others:
            for f in files:
                if f.name != src.name:
                    gone += _unregister(target, f.path.name, snap.dir)
        self.host.refresh_loras()
        return CardChoice(card=card_path, lora=lora, weight=float(weight), note=note, unregistered=gone)

    def _note(self, name: str, grid: Optional[str], label: str, weight: float) -> str:
        text = f"{clock.now_iso()}: preferred weight {weight:g} ({label})"
        if not grid:
            return text + " set by hand."
        report = self.show(name, grid)
        axes = report.get("axes") or {}
        compared = "; ".join(f"{k}s {', '.join(map(str, axes.get(k, [])))}" for k in KINDS
                             if len(axes.get(k, [])) > 1) or "one image"
        where = self._project(name).root / "eval" / grid / "grid.png"
        return f"{text} chosen from the grid {where} comparing {compared}."


def _unregister(target: Path, file_name: str, run_dir: Path) -> list[str]:
    """The registered copy of one of the run's files, its card and preview, out of the Lora folder (only when the
    run still holds the file)."""
    lora = target / file_name
    if not lora.is_file() or not (run_dir / file_name).is_file() or not is_inside(lora, target):
        return []
    gone = []
    for p in (lora, lora.with_suffix(".json"), lora.with_name(lora.stem + ".preview.png")):
        if p.is_file() and not p.is_symlink():
            p.unlink()
            gone.append(str(p))
    return gone


# --- helpers shared with the front ends -----------------------------------------------------------------------------
def cell_request(cell: Cell, request: GridRequest) -> GenRequest:
    return GenRequest(**{**_gen_fields(request), "prompt": cell.prompt.text, "seed": cell.seed,
                         "checkpoint": cell.checkpoint,
                         "loras": (LoraUse(name=cell.epoch.name, weight=float(cell.weight), path=cell.epoch.path),)})


def _gen_fields(request: GridRequest) -> dict:
    s = request.settings
    return {"negative": s["negative"], "steps": s["steps"], "sampler": s["sampler"], "cfg": s["cfg"],
            "width": s["width"], "height": s["height"]}


def _groups(cells: Sequence[Cell], chunk: int) -> list[list[Cell]]:
    """Cells of one checkpoint together, LoRA by LoRA, at most `chunk` a call: sd-scripts makes each call in one
    process (one model load, its LoRAs loaded once), and what a call made is saved before the next starts."""
    def key(c: Cell) -> tuple[str, str, Decimal, int]:
        return c.checkpoint or "", c.epoch.name, Decimal(c.weight), c.index

    out: list[list[Cell]] = []
    for _, same in itertools.groupby(sorted(cells, key=key), key=lambda c: c.checkpoint or ""):
        same = list(same)
        out += [same[i:i + chunk] for i in range(0, len(same), chunk)]
    return out


def _offset(progress: Optional[ProgressFn], base: int, size: int, total: int) -> Optional[ProgressFn]:
    """A generator's progress over one group, as progress over the whole grid."""
    if progress is None:
        return None

    def step(done: int, _total: int, message: str) -> None:
        progress(base + min(done, size), total, message)

    return step


def _cell_path(folder: Path, cell: Cell) -> Path:
    return folder / "cells" / f"{cell.index:04d}.png"


def _made(folder: Path, plan: GridPlan) -> bool:
    return any(_cell_path(folder, c).is_file() for c in plan.cells())


def _plain_cell(cell: dict) -> dict:
    return {k: v for k, v in cell.items() if k != "image"}


def _png_parameters(path: Path) -> str:
    if not path.is_file():
        return ""
    try:
        with Image.open(path) as im:
            return str(im.info.get("parameters", ""))
    except OSError:
        return ""


def _lora_arch(path: Path) -> str:
    from ..results.lora_info import read_lora_info
    from ..results.registry import sd_version

    return sd_version(read_lora_info(path).base_model)


def caption_prompts(project: Project, count: int) -> list[str]:
    """`count` of the training captions, spread evenly over the dataset (prompts close to what it was taught)."""
    if count <= 0:
        return []
    ext = project.settings.caption_extension
    files = sorted(p for c in project.concepts("dataset") for p in c.folder.glob(f"*{ext}") if p.is_file())
    if not files:
        raise NotFound("caption_prompts: the dataset has no captions yet; caption it, or give prompts.")
    picked = [files[round(i * (len(files) - 1) / max(1, count - 1))] for i in range(min(count, len(files)))]
    texts = [" ".join(p.read_text(encoding="utf-8", errors="replace").split())[:2000] for p in picked]
    return list(dict.fromkeys(t for t in texts if t))


# --- the grid picture and its infotext ------------------------------------------------------------------------------
def grid_infotext(plan: GridPlan, request: GridRequest, xyz: Optional[XYZPlan]) -> str:
    """The grid's infotext in the webui's format: the base prompt, `Negative prompt:`, the settings and the X/Y/Z
    plot script's fields (`Script: X/Y/Z plot, X Type: Prompt S/R, X Values: …`), so PNG Info restores the axes."""
    s = request.settings
    first = plan.cells()[0]
    params: dict[str, str] = {"Steps": str(s["steps"]), "Sampler": s["sampler"], "CFG scale": f"{s['cfg']:g}",
                              "Seed": str(first.seed), "Size": f"{s['width']}x{s['height']}"}
    if first.checkpoint:
        params["Model"] = first.checkpoint
    if xyz is not None:
        params["Script"] = "X/Y/Z plot"
        for letter, (label, values) in zip("XYZ", xyz.axes, strict=False):
            params[f"{letter} Type"] = label
            params[f"{letter} Values"] = csv_values(values)
            if label == "Seed":
                params[f"Fixed {letter} Values"] = ", ".join(values)
    else:
        params["Train Style grid"] = json.dumps(plan.axes_summary(), ensure_ascii=False)
    lines = [xyz.base_prompt if xyz is not None else first.full_prompt]
    if plan.negative:
        lines.append(f"Negative prompt: {plan.negative}")
    lines.append(", ".join(f"{k}: {quote(v)}" for k, v in params.items()))
    return "\n".join(lines)


LABEL_PAD = 6
LINE_H = 12  # the default bitmap font's line height


def compose_grid(images: Sequence[Optional[Image.Image]], cols: Sequence[str], rows: Sequence[str], *,
                 size: tuple[int, int]) -> Image.Image:
    """Cells in rows × columns (row-major, as `GridPlan.cells` orders them), column labels above, row labels to the
    left; a cell not made is grey with "not made"."""
    font = ImageFont.load_default()
    w, h = size
    col_lines = [_wrap(c, w) for c in cols]
    row_w = min(260, max(80, max(len(r) for r in rows) * 6 + 2 * LABEL_PAD)) if any(rows) else 0
    row_lines = [_wrap(r, row_w) for r in rows]
    top = (max(len(lines) for lines in col_lines) * LINE_H + 2 * LABEL_PAD) if any(cols) else 0
    grid = Image.new("RGB", (row_w + w * len(cols), top + h * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for i, lines in enumerate(col_lines):
        for j, line in enumerate(lines):
            draw.text((row_w + i * w + LABEL_PAD, LABEL_PAD + j * LINE_H), line, fill="black", font=font)
    for r, lines in enumerate(row_lines):
        for j, line in enumerate(lines[: max(1, h // LINE_H)]):
            draw.text((LABEL_PAD, top + r * h + LABEL_PAD + j * LINE_H), line, fill="black", font=font)
    for i, image in enumerate(images):
        x, y = row_w + (i % len(cols)) * w, top + (i // len(cols)) * h
        if image is None:
            draw.rectangle([x, y, x + w - 1, y + h - 1], fill=(200, 200, 200))
            draw.text((x + LABEL_PAD, y + LABEL_PAD), "not made", fill="black", font=font)
        else:
            grid.paste(image.convert("RGB").resize((w, h)) if image.size != (w, h) else image.convert("RGB"), (x, y))
    return grid


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, max(8, (width - 2 * LABEL_PAD) // 6)) or [""]

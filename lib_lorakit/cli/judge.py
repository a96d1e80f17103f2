"""`judge`: copying, style strength and adherence over a grid; the recommended epoch × weight; the card.

    judge PROJECT RUN [--goal style|character] [--descriptor NAME] [--copy-threshold F] [--max-copy-rate F]
          [--min-adherence F] [--prompt TEXT]... [--caption-samples N] [--weights SPEC] [--epochs SPEC]
          [--seeds LIST] [--embedder SPEC] [--steps N] [--cfg F] [--sampler NAME] [--size WxH] [--negative TEXT]
          [--webui-url URL [--webui-auth USER:PASS]] [--apply] --json     makes the grid, judges it
    judge PROJECT grid GRID_ID [same options]                             judges a grid made before
    judge PROJECT show GRID_ID | apply GRID_ID | list
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import LorakitError
from ..judge import DESCRIPTORS
from ..judge.service import GOALS, JUDGE_SCHEMA, JudgeRequest
from ..studio import Studio

Result = tuple[int, Any, str]
ACTIONS = ("grid", "show", "apply", "list")
OPTIONS = ("goal", "descriptor", "copy_threshold", "max_copy_rate", "min_adherence", "caption_samples", "weights",
           "epochs", "seeds", "embedder", "negative", "steps", "cfg", "sampler")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    j = sub.add_parser("judge", parents=[common], help="judge a run over a grid of epochs × weights: which cells copy "
                                                       "training images, style strength, prompt adherence, the "
                                                       "recommended epoch and weight (and write it to the card)")
    j.add_argument("project")
    j.add_argument("target", metavar="RUN|grid|show|apply|list",
                   help="the run to judge (a grid is made first), or what to do with a judged grid")
    j.add_argument("grid_id", nargs="?", metavar="GRID_ID", help="the grid (grid, show, apply)")
    j.add_argument("--goal", choices=GOALS, help=JUDGE_SCHEMA["goal"].reason)
    j.add_argument("--descriptor", choices=DESCRIPTORS, help=JUDGE_SCHEMA["descriptor"].reason)
    for name, kind, metavar in (("copy_threshold", float, "F"), ("max_copy_rate", float, "F"),
                                ("min_adherence", float, "F"), ("caption_samples", int, "N"),
                                ("weights", str, "SPEC"), ("epochs", str, "SPEC"), ("seeds", str, "LIST"),
                                ("embedder", str, "SPEC"), ("negative", str, "TEXT"), ("steps", int, "N"),
                                ("cfg", float, "F"), ("sampler", str, "NAME")):
        j.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, metavar=metavar,
                       help=JUDGE_SCHEMA[name].reason)
    j.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="an off-dataset prompt (repeatable; default: a handful like 'a cat riding a bicycle')")
    j.add_argument("--size", metavar="WxH", help="image size, e.g. 512x768 (default 512x512)")
    j.add_argument("--webui-url", metavar="URL", help="generate through a webui started with --api at this address")
    j.add_argument("--webui-auth", metavar="USER:PASS", help="its --api-auth login")
    j.add_argument("--apply", action="store_true", help="write the recommendation into the LoRA's card")


def request_data(args: argparse.Namespace) -> dict:
    """The command line as the request's plain data (what the API's body holds)."""
    data: dict[str, Any] = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    if args.prompt:
        data["prompts"] = list(args.prompt)
    if args.size:
        from .grid import parse_size

        data["width"], data["height"] = parse_size(args.size)
    return data


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    if args.target == "list":
        return _list(studio, args)
    if args.target in ("show", "apply"):
        grid = _need_id(args)
        if args.target == "apply":
            return _apply(studio, args.project, grid)
        doc = studio.judge.show(args.project, grid)
        return (0 if doc["state"] == "done" else 1), doc, summary(doc)
    request = JudgeRequest.from_dict(request_data(args))
    if args.target == "grid":
        doc = studio.judge.judge(args.project, _need_id(args), request, progress=_progress())
    else:
        if args.grid_id:
            raise LorakitError(f"judge: unexpected {args.grid_id!r} after the run; GRID_ID goes with grid, show or "
                               "apply.")
        from .grid import _generator

        doc = studio.judge.run(args.project, args.target, request, generator=_generator(args), progress=_progress())
    code, text = (0 if doc["state"] == "done" else 1), summary(doc)
    if args.apply and doc["state"] == "done":
        if doc.get("recommendation"):
            choice = studio.judge.apply(args.project, doc["grid"])
            doc = {**doc, "applied": choice.to_dict()}
            text += f"\n  written to {choice.card}: preferred weight {choice.weight:g}"
        else:
            doc, code = {**doc, "applied": None}, 1
            text += "\n  nothing written to the card: no recommendation."
    return code, doc, text


def _need_id(args: argparse.Namespace) -> str:
    if not args.grid_id:
        raise LorakitError(f"judge {args.target}: give the grid's ID (judge {args.project} list shows the judged "
                           f"ones, grid {args.project} list every grid).")
    return args.grid_id


def _progress():
    from .output import progress_printer

    return progress_printer() if sys.stderr.isatty() else None


def _apply(studio: Studio, project: str, grid: str) -> Result:
    choice = studio.judge.apply(project, grid)
    return 0, choice.to_dict(), f"{choice.card}: preferred weight {choice.weight:g}\n  note: {choice.note}"


def _list(studio: Studio, args: argparse.Namespace) -> Result:
    judged = studio.judge.list(args.project)
    lines = []
    for g in judged:
        rec = g.get("recommendation")
        what = f"{rec['epoch']} at {rec['weight']:g}" if rec else "no recommendation"
        lines.append(f"{g['grid']}  {g.get('state')}  run {g.get('run')}  {g.get('goal')}: {what}")
    empty = f"No judged grids yet in {args.project}: judge {args.project} RUN"
    return 0, {"judged": judged}, "\n".join(lines) or empty


def summary(doc: dict) -> str:
    """The recommendation and its reasons (or why none), then copying epoch by epoch."""
    lines = [f"Judged grid {doc['grid']} of run {doc.get('run')}: {doc['state']}."]
    if doc.get("error"):
        lines.append(f"  {doc['error']}")
    d = doc.get("descriptor") or {}
    if d.get("fallback"):
        lines.append(f"  note: {d['fallback']}")
    rec = doc.get("recommendation")
    if rec:
        lines.append(f"Recommended ({rec['goal']}): {rec['epoch']} at weight {rec['weight']:g}")
        lines += [f"  {r}" for r in rec["reasons"]]
    elif doc["state"] == "done":
        lines.append(f"No recommendation: {doc.get('why_none')}")
    if doc.get("epochs"):
        lines.append(f"Copying per epoch ({d.get('name')}, threshold {d.get('threshold')}, {d.get('unit')}):")
        lines += [f"  {e['epoch']} at {e['weight']}: {e['copies']} of {e['samples']} samples copy"
                  + (f", diversity {e['diversity']:.2f}" if e.get("diversity") is not None else "")
                  for e in doc["epochs"]]
        first = doc.get("first_copying_epoch")
        lines.append(f"  copying starts at {first}" if first else "  no epoch copies above the limit")
    return "\n".join(lines)

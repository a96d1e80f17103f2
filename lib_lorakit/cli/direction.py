"""`direction PROJECT estimate|label|labels|normalise|settings`: which way subjects face, and turning them one way."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..direction.service import LABELS, EstimateRequest, LabelRequest, NormaliseRequest
from ..direction.settings import DIRECTION_SCHEMA
from ..errors import LorakitError
from ..studio import Studio

Result = tuple[int, Any, str]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    d = sub.add_parser("direction", parents=[common], help="which way each subject faces; flip them one way")
    d.add_argument("project")
    dsub = d.add_subparsers(dest="action", required=True)
    est = dsub.add_parser("estimate", parents=[common], help="estimate left/right/front/away per image")
    _embedder(est, "open_clip MODEL[:PRETRAINED] or path/to/config.json:path/to/weights (default: the default "
                   "model, fetched on first use); 'none': labels, tags and detectors only")
    est.add_argument("--image", dest="images", action="append", default=[], metavar="PATH",
                     help="only this image (project-relative, repeatable)")
    est.add_argument("--concept", default="", help="only this concept")
    est.add_argument("--detector", action="store_true", help="also use face/head boxes (models in the models folder)")
    lab = dsub.add_parser("label", parents=[common], help="label images: IMAGE... " + "|".join(LABELS))
    lab.add_argument("values", nargs="+", metavar="IMAGE... LABEL")
    dsub.add_parser("labels", parents=[common], help="the labels and never-flip marks")
    norm = dsub.add_parser("normalise", aliases=["normalize"], parents=[common],
                           help="flip the minority so all face one way, swapping direction words in their captions")
    norm.add_argument("--to", choices=("left", "right"), help="the side to face (default: the one most face now)")
    norm.add_argument("--image", dest="images", action="append", default=[], metavar="PATH",
                      help="flip exactly this image instead of the minority (repeatable)")
    _embedder(norm, "as for estimate (default: the one the last estimate used)")
    norm.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    st = dsub.add_parser("settings", parents=[common], help="show or change the swap table, flip-unsafe tags, …")
    st.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                    help="; ".join(f"{f.name}: {f.reason}" for f in DIRECTION_SCHEMA.fields).replace("%", "%%"))


def _embedder(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--embedder", metavar="SPEC", default=None, help=text)


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    action = "normalise" if args.action == "normalize" else args.action
    return {"estimate": _estimate, "label": _label, "labels": _labels, "normalise": _normalise,
            "settings": _settings}[action](studio, args)


def _estimate(studio: Studio, args: argparse.Namespace) -> Result:
    from .output import progress_printer, say

    req = EstimateRequest.from_dict({"embedder": args.embedder or "", "images": args.images,
                                     "concept": args.concept, "detector": args.detector})
    report = studio.direction.estimate(args.project, req, progress=progress_printer() if sys.stderr.isatty()
                                       else None)
    for s in report.skipped:
        say(f"skipped {s['image']}: {s['reason']}", file=sys.stderr)
    lines = [f"{e.direction:<8} {e.confidence:4.2f}  {e.image}  ({e.reason})" for e in report.images]
    return 0, report.to_dict(), "\n".join([*lines, report.summary()])


def _label(studio: Studio, args: argparse.Namespace) -> Result:
    values = list(args.values)
    if len(values) >= 2 and values[-1] in LABELS:
        images, label = values[:-1], values[-1]
    elif len(values) >= 2 and values[0] in LABELS:
        label, images = values[0], values[1:]
    else:
        raise LorakitError(f"direction PROJECT label IMAGE... LABEL, with LABEL one of {', '.join(LABELS)} "
                           f"(got {' '.join(values)!r})")
    held = studio.direction.label(args.project, LabelRequest.from_dict({"images": images, "label": label}))
    text = f"{label}: {', '.join(images)}. Run `direction {args.project} estimate` to re-fit the others."
    return 0, held, text


def _labels(studio: Studio, args: argparse.Namespace) -> Result:
    held = studio.direction.labels(args.project)
    lines = [f"{v:<8} {k}" for k, v in held["labels"].items()] + [f"never-flip {i}" for i in held["never_flip"]]
    return 0, held, "\n".join(lines) or "No labels yet."


def _normalise(studio: Studio, args: argparse.Namespace) -> Result:
    from .output import say

    req = NormaliseRequest.from_dict({"to": args.to or "", "images": args.images, "embedder": args.embedder,
                                      "dry_run": args.dry_run})
    report = studio.direction.normalise(args.project, req)
    for u in report.unsafe:
        say(f"left alone {u['image']}: {u['reason']}", file=sys.stderr)
    lines = [f"flip {i}" for i in report.flipped]
    lines += [f"  caption {c['image']}: {c['before']!r} → {c['after']!r}" for c in report.captions]
    if report.suggestions:
        lines.append(f"Gaze not captioned in {len(report.suggestions)} image(s); consider e.g. "
                     f"{', '.join(report.suggestions[0]['tags'])} (seeds/002: caption which way the eyes look)")
    return 0, report.to_dict(), "\n".join([*lines, report.summary()])


def _settings(studio: Studio, args: argparse.Namespace) -> Result:
    service = studio.direction
    if args.assignments:
        settings = service.update_settings(args.project, DIRECTION_SCHEMA.parse_set(args.assignments))
    else:
        settings = service.settings(args.project)
    values = settings.to_dict()
    return 0, values, "\n".join(f"{k} = {v!r}" for k, v in values.items())

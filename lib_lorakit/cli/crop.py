"""`crop PROJECT smart|letterbox|center|manual|reset [IMAGE...]`, `crop PROJECT undo|redo|history`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..crop.service import CROP_MODES, CropRequest
from ..errors import LorakitError
from ..studio import Studio

Result = tuple[int, Any, str]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("crop", parents=[common], help="crop, letterbox or reset training images (from their "
                       "originals; one undo step each)")
    p.add_argument("project")
    p.add_argument("action", choices=(*CROP_MODES, "undo", "redo", "history"))
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="project-relative image paths (default: the concept's, or every dataset image)")
    p.add_argument("--concept", default="", help="only this concept's images")
    p.add_argument("--aspect", default="square", metavar="W:H|square|bucket",
                   help="the aspect to crop or pad to: square, W:H such as 2:3, or bucket (each image's sd-scripts "
                        "bucket at the project's resolution); default square")
    p.add_argument("--fill", default="white", metavar="white|edge|blur|#rrggbb",
                   help="letterbox: what the padding shows under its transparent alpha (default white)")
    p.add_argument("--fraction", type=float, default=1.0, metavar="F",
                   help="letterbox: pad only this share of the images and crop the rest (fewer borders in "
                        "generations, seeds/002); default 1")
    p.add_argument("--tag", default="", metavar="TAG",
                   help="letterbox: add this caption tag to padded images (e.g. letterboxed), one caption undo step")
    p.add_argument("--box", metavar="L,T,R,B", help="manual: the box in the original's pixels")
    p.add_argument("--dry-run", action="store_true", help="show the boxes, change nothing")


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    crop = studio.crop
    if args.action in ("undo", "redo"):
        report = (crop.undo if args.action == "undo" else crop.redo)(args.project)
        text = f"{'Undid' if args.action == 'undo' else 'Redid'}: {report.label} ({len(report.derived)} image(s))"
        for s in report.skipped:
            text += f"\nleft alone {s.image}: {s.reason}"
        return 0, report.to_dict(), text
    if args.action == "history":
        steps = crop.history(args.project)
        lines = [f"{s.id}  {s.time[:19]}  {s.label} ({len(s.changes)} image(s)){'  [undone]' if s.undone else ''}"
                 for s in steps]
        return 0, {"history": [s.to_dict() for s in steps]}, "\n".join(lines) or "No crop or flip recorded yet."
    request = CropRequest.from_dict({
        "mode": args.action, "images": args.images, "concept": args.concept, "aspect": args.aspect,
        "fill": args.fill, "fraction": args.fraction, "tag": args.tag, "box": _box(args.box),
        "dry_run": args.dry_run})
    from .output import progress_printer, say

    report = crop.crop(args.project, request, progress=progress_printer() if sys.stderr.isatty() else None)
    for s in report.skipped:
        say(f"skipped {s.image}: {s.reason}", file=sys.stderr)
    data = report.to_dict()
    lines = [f"{c.image}: {c.mode} {list(c.box) if c.box else 'whole picture'} → {c.size[0]}×{c.size[1]}"
             f"{' (padded, masked)' if c.masked else ''}{'; ' + c.note if c.note else ''}" for c in report.changed]
    return 0, data, "\n".join([*lines[:50], report.summary()])


def _box(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise LorakitError(f"--box: expected four whole numbers L,T,R,B such as 0,0,512,512, got {text!r}") from None

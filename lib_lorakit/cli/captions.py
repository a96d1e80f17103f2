"""The caption commands of `python -m lib_lorakit`: tag, caption (operations, edit, undo), tags, check."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..captions.audit import AUDIT_SCHEMA
from ..captions.ops import CaptionOp
from ..captions.service import TAG_SCHEMA, TagRequest
from ..errors import LorakitError
from ..studio import Studio
from ..taggers.models import DEFAULT_WD14, KNOWN_WD14

Result = tuple[int, Any, str]
OPS = ("trigger", "prune", "add", "remove", "replace", "rename", "reorder", "dedupe")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tag = sub.add_parser("tag", parents=[common], help="caption a project's images with WD14, CLIP or both")
    tag.add_argument("project")
    TAG_SCHEMA.add_arguments(tag, names=("tagger",))
    tag.add_argument("--model", default="", metavar="NAME_OR_DIR",
                     help=f"WD14 model: one of {', '.join(KNOWN_WD14)} (default {DEFAULT_WD14}), or a folder "
                          "holding model.onnx and selected_tags.csv")
    TAG_SCHEMA.add_arguments(tag, names=("general_threshold", "character_threshold"))
    tag.add_argument("--include-rating", action="store_true", help=_reason("include_rating"))
    tag.add_argument("--exclude", action="append", default=[], metavar="TAG", help="never write this tag")
    tag.add_argument("--keep-underscores", action="store_true", help="write long_hair, not long hair")
    tag.add_argument("--escape-parentheses", action="store_true", help=_reason("escape_parentheses"))
    TAG_SCHEMA.add_arguments(tag, names=("clip_model", "clip_pretrained", "clip_top_k", "batch", "concept"))
    tag.add_argument("--overwrite", action="store_true", help=_reason("overwrite"))

    cap = sub.add_parser("caption", parents=[common], help="caption operations, edits, undo and redo")
    cap.add_argument("project")
    cap.add_argument("action", choices=(*OPS, "edit", "undo", "redo", "history"))
    cap.add_argument("values", nargs="*", metavar="TAG",
                     help="trigger/prune/add/remove: tags; replace: TARGET NEW...; rename: OLD NEW; "
                          "reorder --order front: tags; edit: IMAGE TEXT")
    cap.add_argument("--start", action="store_true", help="add: after the trigger words instead of at the end")
    cap.add_argument("--order", choices=("frequency", "alphabetical", "front"), default="frequency")
    cap.add_argument("--force", action="store_true", help="undo/redo: also captions edited since")
    cap.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    _scope(cap)

    tags = sub.add_parser("tags", parents=[common], help="tag frequencies, per concept")
    tags.add_argument("project")
    tags.add_argument("--limit", type=int, default=50)
    _scope(tags, images=False)

    check = sub.add_parser("check", parents=[common], help="the caption audit")
    check.add_argument("project")
    AUDIT_SCHEMA.add_arguments(check, names=("dominant_threshold", "low_variety_threshold", "max_tokens"))


def _reason(name: str) -> str:
    return TAG_SCHEMA[name].reason.replace("%", "%%")


def _scope(p: argparse.ArgumentParser, images: bool = True) -> None:
    p.add_argument("--concept", help="only this concept")
    p.add_argument("--with", dest="with_all", action="append", default=[], metavar="TAG",
                   help="only images with this tag (repeatable: all of them)")
    p.add_argument("--without", action="append", default=[], metavar="TAG", help="only images without this tag")
    p.add_argument("--with-any", action="append", default=[], metavar="TAG", help="only images with any of these")
    if images:
        p.add_argument("--image", dest="images", action="append", default=[], metavar="PATH",
                       help="only this image (project-relative, repeatable)")


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    return {"tag": _tag, "caption": _caption, "tags": _tags, "check": _check}[args.command](studio, args)


def _tag(studio: Studio, args: argparse.Namespace) -> Result:
    from .output import progress_printer as _progress_printer
    from .output import say

    req = TagRequest.from_dict({
        "tagger": args.tagger, "model": args.model, "general_threshold": args.general_threshold,
        "character_threshold": args.character_threshold, "include_rating": args.include_rating,
        "exclude": args.exclude, "underscores_to_spaces": not args.keep_underscores,
        "escape_parentheses": args.escape_parentheses, "clip_model": args.clip_model,
        "clip_pretrained": args.clip_pretrained, "clip_top_k": args.clip_top_k, "batch": args.batch,
        "overwrite": args.overwrite, "concept": args.concept})
    report = studio.captions.tag(args.project, req, progress=_progress_printer() if sys.stderr.isatty() else None)
    for f in report.failed:
        say(f"skipped {f['image']}: {f['reason']}", file=sys.stderr)
    return 0, report.to_dict(), report.summary()


def _caption(studio: Studio, args: argparse.Namespace) -> Result:
    captions, name = studio.captions, args.project
    if args.action in ("undo", "redo"):
        step = (captions.undo if args.action == "undo" else captions.redo)(name, force=args.force)
        text = f"{'Undid' if args.action == 'undo' else 'Redid'}: {step.label} ({step.written} caption(s))"
        if step.conflicts:
            text += (f"\n{len(step.conflicts)} caption(s) edited since were left as they are (--force to "
                     f"{args.action} them too): " + ", ".join(step.conflicts[:10]))
        return 0, step.to_dict(), text
    if args.action == "history":
        steps = captions.history(name)
        lines = [f"{s.id}  {s.time[:19]}  {s.label} ({s.files} file(s)){'  [undone]' if s.undone else ''}"
                 for s in steps]
        return 0, {"history": [s.to_dict() for s in steps]}, "\n".join(lines) or "No caption changes recorded yet."
    if args.action == "edit":
        if len(args.values) != 2:
            raise LorakitError("caption PROJECT edit IMAGE 'tag, tag, …'")
        step = captions.edit(name, args.values[0], args.values[1])
        return 0, step.to_dict(), f"{step.label}" if step.id else "The caption was already like that."
    op = CaptionOp.from_dict(_op_dict(args))
    if args.dry_run:
        changes = captions.preview(name, op)
        lines = [f"{d.image}: {d.before!r} → {d.after!r}" for d in changes]
        return 0, {"changes": [d.to_dict() for d in changes]}, "\n".join(lines) or "Nothing would change."
    step = captions.apply(name, op)
    text = f"{step.label}: {step.written} caption(s) changed" + ("; `caption undo` takes it back" if step.id else "")
    return 0, step.to_dict(), text


def _op_dict(args: argparse.Namespace) -> dict[str, Any]:
    d: dict[str, Any] = {"op": args.action, "concept": args.concept, "images": args.images,
                         "with_all": args.with_all, "without": args.without, "with_any": args.with_any}
    values = list(args.values)
    if args.action in ("replace", "rename"):
        if len(values) < 2:
            more = "..." if args.action == "replace" else ""
            raise LorakitError(f"caption PROJECT {args.action} TARGET NEW{more}")
        d["target"], d["replacement"] = values[0], values[1:]
    else:
        d["tags"] = values
    if args.action == "add":
        d["position"] = "start" if args.start else "end"
    if args.action == "reorder":
        d["order"] = args.order
    return d


def _tags(studio: Studio, args: argparse.Namespace) -> Result:
    rows = studio.captions.frequency(args.project, concept=args.concept, with_all=args.with_all,
                                     without=args.without, with_any=args.with_any)
    concepts = sorted({c for r in rows for c in r.per_concept})
    lines = [f"{'count':>6}  {'tag':<32} " + "  ".join(concepts)]
    for r in rows[: args.limit]:
        lines.append(f"{r.total:>6}  {r.tag:<32} " + "  ".join(f"{r.per_concept.get(c, 0):>{len(c)}}"
                                                               for c in concepts))
    if len(rows) > args.limit:
        lines.append(f"… {len(rows) - args.limit} more (--limit)")
    return 0, {"tags": [r.to_dict() for r in rows]}, "\n".join(lines)


def _check(studio: Studio, args: argparse.Namespace) -> Result:
    report = studio.captions.audit(args.project, **AUDIT_SCHEMA.from_namespace(args, complete=False))
    lines = []
    for f in report.findings:
        lines.append(f"{f.severity.upper():<7} {f.code}: {f.detail}")
        lines.append(f"        why: {f.why}")
        lines.append(f"        fix: {f.fix}")
        lines += [f"        - {img}" for img in f.images[:20]]
        if len(f.images) > 20:
            lines.append(f"        … and {len(f.images) - 20} more")
    return 0, report.to_dict(), "\n".join(lines) or "No findings: the captions look ready to train."

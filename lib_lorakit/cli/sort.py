"""The `sort` command: the sorter's classes, labels, training, predictions and Apply (and a Teachable Machine
model in place of the trained classifier)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..direction.sorter import SORT_SCHEMA, ApplyRequest
from ..embed.service import EMBED_SCHEMA
from ..studio import Studio

Result = tuple[int, Any, str]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    srt = sub.add_parser("sort", parents=[common], help="teach a small classifier with a few labelled images and "
                                                        "sort the rest into concepts, a discard set or tags")
    srt.add_argument("project")
    ssub = srt.add_subparsers(dest="action", required=True, metavar="ACTION")
    cls = ssub.add_parser("classes", parents=[common], help="list, add or remove classes")
    cls.add_argument("change", nargs="?", choices=("add", "remove"))
    cls.add_argument("names", nargs="*", metavar="CLASS")
    lab = ssub.add_parser("label", parents=[common], help="label images with a class")
    lab.add_argument("cls", metavar="CLASS")
    lab.add_argument("images", nargs="+", metavar="IMAGE", help="project-relative, e.g. dataset/1_x/a.png")
    unl = ssub.add_parser("unlabel", parents=[common], help="remove images' labels")
    unl.add_argument("images", nargs="+", metavar="IMAGE")
    trn = ssub.add_parser("train", parents=[common], help="train on the labelled images (cross-validated)")
    trn.add_argument("--embedder", default="", metavar="SPEC", help=EMBED_SCHEMA["embedder"].reason)
    prd = ssub.add_parser("predict", parents=[common], help="every image's class and confidence, least certain first")
    prd.add_argument("--limit", type=int, default=0, help="show only this many (0: all)")
    app = ssub.add_parser("apply", parents=[common], help="file images by their label or confident prediction")
    SORT_SCHEMA.add_arguments(app, names=("into", "min_confidence", "repeats"))
    app.add_argument("--class", dest="classes", action="append", default=None, metavar="CLASS",
                     help="only images of this class (repeatable)")
    app.add_argument("--move", action="store_true", help=SORT_SCHEMA["move"].reason)
    app.add_argument("--dry-run", action="store_true", help=SORT_SCHEMA["dry_run"].reason)
    ssub.add_parser("undo", parents=[common], help="take back the last Apply into concepts, reg or discard")
    tm = ssub.add_parser("teachable", parents=[common], help="use a Teachable Machine export as the classifier")
    tm.add_argument("model", metavar="MODEL_TFLITE", help="model_unquant.tflite")
    tm.add_argument("labels", metavar="LABELS_TXT", help="labels.txt")


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    return _ACTIONS[args.action](studio, args)


def _classes(studio: Studio, args: argparse.Namespace) -> Result:
    sorter = studio.sorter
    if args.change == "add":
        classes = sorter.add_classes(args.project, args.names)
    elif args.change == "remove":
        classes = sorter.remove_classes(args.project, args.names)
    else:
        classes = sorter.classes(args.project)
    return 0, {"classes": classes}, "\n".join(classes) or "No classes yet: sort PROJECT classes add NAME..."


def _label(studio: Studio, args: argparse.Namespace) -> Result:
    labels = studio.sorter.label(args.project, args.cls, args.images)
    return 0, {"labels": labels}, f"Labelled {len(labels)} image(s) {args.cls!r}."


def _unlabel(studio: Studio, args: argparse.Namespace) -> Result:
    studio.sorter.label(args.project, None, args.images)
    return 0, {"unlabelled": list(args.images)}, f"Removed the labels of {len(args.images)} image(s)."


def _train(studio: Studio, args: argparse.Namespace) -> Result:
    from .output import progress_printer

    report = studio.sorter.train(args.project, embedder=args.embedder,
                                 progress=progress_printer() if sys.stderr.isatty() else None)
    return 0, report.to_dict(), report.summary()


def _predict(studio: Studio, args: argparse.Namespace) -> Result:
    from .output import progress_printer

    found = studio.sorter.predict(args.project, progress=progress_printer() if sys.stderr.isatty() else None)
    shown = found[:args.limit] if args.limit > 0 else found
    lines = [f"{p.confidence:6.1%}  {p.cls:<20} {p.image}" + (f"  (labelled {p.label})" if p.label else "")
             for p in shown]
    return 0, {"images": [p.to_dict() for p in shown]}, "\n".join(lines) or "No images to sort."


def _apply(studio: Studio, args: argparse.Namespace) -> Result:
    given = {"into": args.into, "min_confidence": args.min_confidence, "repeats": args.repeats, "move": args.move,
             "dry_run": args.dry_run, "classes": args.classes}
    req = ApplyRequest.from_dict({k: v for k, v in given.items() if v is not None})
    report = studio.sorter.apply(args.project, req)
    verb = "Would file" if req.dry_run else "Filed"
    lines = [f"{verb} {a['image']} ({a['class']}, {a['confidence']:.0%}) → {a['to']}" for a in report.applied]
    lines += [f"left {s['image']}: {s['reason']}" for s in report.skipped]
    if report.step:
        lines.append(f"`sort {args.project} undo` takes it back.")
    elif req.into == "tags" and report.applied and not req.dry_run:
        lines.append(f"`caption {args.project} undo` takes it back.")
    return 0, report.to_dict(), "\n".join(lines) or "Nothing to apply."


def _undo(studio: Studio, args: argparse.Namespace) -> Result:
    done = studio.sorter.undo(args.project)
    return 0, done, f"Undid Apply {done['step']}: {len(done['removed'])} copy(ies) removed, " \
                    f"{len(done['restored'])} image(s) restored."


def _teachable(studio: Studio, args: argparse.Namespace) -> Result:
    classes = studio.sorter.import_teachable(args.project, args.model, args.labels)
    return 0, {"classes": classes}, f"The Teachable Machine model sorts into: {', '.join(classes)}."


_ACTIONS = {"classes": _classes, "label": _label, "unlabel": _unlabel, "train": _train, "predict": _predict,
            "apply": _apply, "undo": _undo, "teachable": _teachable}

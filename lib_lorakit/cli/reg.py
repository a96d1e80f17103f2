"""`reg PROJECT generate CLASS --prompt TEXT --count N [--negative TEXT] [--repeats N] [--webui-url URL]`: a
regularisation set made by the Host's generator (or a webui by URL) into `reg/<repeats>_<CLASS>/`; a rerun
continues to N."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..evaluate.reg import REG_SCHEMA, RegRequest
from ..studio import Studio

Result = tuple[int, Any, str]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    reg = sub.add_parser("reg", parents=[common], help="regularisation images made by the generator (resumable)")
    reg.add_argument("project")
    rsub = reg.add_subparsers(dest="action", required=True)
    gen = rsub.add_parser("generate", parents=[common], help="make the missing images of a regularisation set")
    gen.add_argument("class_name", metavar="CLASS", help="the set's name: its folder is reg/<repeats>_<CLASS>")
    gen.add_argument("--prompt", required=True, help=REG_SCHEMA["prompt"].reason)
    gen.add_argument("--count", type=int, required=True, metavar="N", help=REG_SCHEMA["count"].reason)
    for name, metavar in (("negative", "TEXT"), ("repeats", "N"), ("seed", "N"), ("steps", "N"), ("cfg", "F"),
                          ("sampler", "NAME"), ("resolution", "PX"), ("webui_url", "URL")):
        f = REG_SCHEMA[name]
        gen.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar=metavar, help=f.help())


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    from .output import progress_printer, say

    data: dict[str, Any] = {"class_name": args.class_name, "prompt": args.prompt, "count": args.count}
    for name in ("negative", "repeats", "seed", "steps", "cfg", "sampler", "resolution", "webui_url"):
        text = getattr(args, name)
        if text is not None:
            data[name] = REG_SCHEMA[name].parse(text)
    request = RegRequest.from_dict(data)
    report = studio.reg.generate(args.project, request, local_user=True,
                                 progress=progress_printer() if sys.stderr.isatty() else None)
    for note in report.notes:
        say(f"note: {note}", file=sys.stderr)
    for s in report.skipped:
        say(f"skipped {s['image']}: {s['reason']}", file=sys.stderr)
    return (1 if report.skipped and not report.made else 0), report.to_dict(), report.summary()

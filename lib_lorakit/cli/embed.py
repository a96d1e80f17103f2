"""The `embed` command: fill a project's embedding store (what Direction, Sort and the audit's semantic
near-duplicates read)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..embed.service import EMBED_SCHEMA, EmbedRequest
from ..studio import Studio

Result = tuple[int, Any, str]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    emb = sub.add_parser("embed", parents=[common], help="compute image embeddings (kept in the project; only new "
                                                         "or changed images are computed)")
    emb.add_argument("project")
    emb.add_argument("--embedder", default="", metavar="SPEC", help=EMBED_SCHEMA["embedder"].reason)
    emb.add_argument("--flipped", action="store_true", help=EMBED_SCHEMA["flipped"].reason)
    emb.add_argument("--image", dest="images", action="append", default=None, metavar="PATH",
                     help="only this image (project-relative, repeatable); default: every training image")


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    from .output import progress_printer, say

    req = EmbedRequest.from_dict({"embedder": args.embedder, "flipped": args.flipped, "images": args.images})
    report = studio.embeddings.embed(args.project, req, progress=progress_printer() if sys.stderr.isatty() else None)
    for s in report.skipped:
        say(f"skipped {s['image']}: {s['reason']}", file=sys.stderr)
    return 0, report.to_dict(), report.summary()

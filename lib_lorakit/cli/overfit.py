"""`overfit`: do generated images copy the training images?

    overfit PROJECT --samples DIR|FILE [--samples …] [--threshold F] [--descriptor sscd|clip|perceptual]
            [--embedder SPEC] --json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..judge import DEFAULT_DESCRIPTOR, DESCRIPTORS, OverfitReport
from ..judge.memorise import MAX_SAMPLES, OverfitRequest
from ..studio import Studio

Result = tuple[int, Any, str]
SHOWN = 20  # sample lines the human summary lists beyond the copies


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    o = sub.add_parser("overfit", parents=[common], help="compare generated images with the training images: each "
                                                         "one's nearest training image, which are copies")
    o.add_argument("project")
    o.add_argument("--samples", action="append", required=True, metavar="DIR|FILE",
                   help=f"a folder of images (and its subfolders) or an image file (repeatable; at most "
                        f"{MAX_SAMPLES:,} images)")
    o.add_argument("--threshold", type=float, metavar="F",
                   help="the similarity at or above which a sample is a copy (default: the descriptor's own)")
    o.add_argument("--descriptor", default=DEFAULT_DESCRIPTOR, metavar="NAME",
                   help=f"{', '.join(DESCRIPTORS)} or sscd:/path/to/model.pt (default {DEFAULT_DESCRIPTOR}; "
                        "perceptual when SSCD cannot be downloaded)")
    o.add_argument("--embedder", metavar="SPEC", help="the CLIP model for --descriptor clip (MODEL:PRETRAINED)")


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    data: dict[str, Any] = {"samples": args.samples[0] if len(args.samples) == 1 else list(args.samples),
                            "threshold": args.threshold, "descriptor": args.descriptor}
    if args.embedder:
        data["embedder"] = args.embedder
    request = OverfitRequest.from_dict(data)
    report = studio.judge.overfit(args.project, request, local_user=True, progress=_progress())
    return 0, report.to_dict(), summary(report)


def _progress():
    from .output import progress_printer

    return progress_printer() if sys.stderr.isatty() else None


def summary(report: OverfitReport) -> str:
    """The copies first, each with its nearest training image; then the closest of the rest."""
    copies = [m for m in report.samples if m.copy]
    rest = sorted((m for m in report.samples if not m.copy), key=lambda m: -m.similarity)
    lines = [f"{len(copies)} of {len(report.samples)} sample(s) copy a training image ({report.copy_rate:.0%}); "
             f"descriptor {report.descriptor}, threshold {report.threshold:g} ({report.unit}), "
             f"{report.training_images} training image(s)."]
    if report.fallback:
        lines.append(f"  note: {report.fallback}")
    lines += [f"  COPY  {m.image}  ≈ {m.nearest}  ({m.similarity:.3f})" for m in copies]
    lines += [f"        {m.image}  nearest {m.nearest}  ({m.similarity:.3f})" for m in rest[:SHOWN]]
    if len(rest) > SHOWN:
        lines.append(f"        … and {len(rest) - SHOWN} more below the threshold (--json lists every one)")
    if report.diversity is not None:
        lines.append(f"  diversity among the samples: {report.diversity:.3f} (mean cosine distance)")
    lines += [f"  skipped {image}: {reason}" for image, reason in report.skipped]
    return "\n".join(lines)

"""`buckets PROJECT`: the aspect-ratio bucket of every training image as sd-scripts will make it, a histogram, and
with `--detect` the faces and heads its centre crop cuts."""

from __future__ import annotations

import argparse
from typing import Any

from ..crop.bucket_preview import BUCKET_SCHEMA, BucketRequest
from ..studio import Studio

Result = tuple[int, Any, str]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("buckets", parents=[common],
                       help="each image's sd-scripts bucket, resized size and the part its centre crop keeps; unset "
                            "settings come from the latest run, else the project's resolution and sd-scripts' "
                            "defaults")
    p.add_argument("project")
    BUCKET_SCHEMA.add_arguments(p, names=("resolution", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps"))
    upscale = p.add_mutually_exclusive_group()
    upscale.add_argument("--no-upscale", dest="bucket_no_upscale", action="store_const", const=True, default=None,
                         help="bucket_no_upscale: " + BUCKET_SCHEMA["bucket_no_upscale"].reason)
    upscale.add_argument("--upscale", dest="bucket_no_upscale", action="store_const", const=False,
                         help="enlarge small images to fill their bucket (sd-scripts' default)")
    bucket = p.add_mutually_exclusive_group()
    bucket.add_argument("--no-bucket", dest="enable_bucket", action="store_const", const=False, default=None,
                        help="buckets off: every image is resized and centre-cropped to resolution × resolution")
    bucket.add_argument("--bucket", dest="enable_bucket", action="store_const", const=True,
                        help="buckets on (the presets' choice)")
    p.add_argument("--detect", action="store_true", help=BUCKET_SCHEMA["detect"].reason.replace("%", "%%"))


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    given = {f.name: getattr(args, f.name) for f in BUCKET_SCHEMA.fields if getattr(args, f.name, None) is not None}
    report = studio.buckets(args.project, BucketRequest.from_dict(given))
    data = report.to_dict()
    return 0, data, table(data)


def table(data: dict) -> str:
    """The report as a terminal table (others' text — file names — is made safe by the caller's `say`)."""
    s = data["settings"]
    mode = ("buckets off" if not s["enable_bucket"] else "no upscaling" if s["bucket_no_upscale"] else
            f"buckets {s['min_bucket_reso']}–{s['max_bucket_reso']} px")
    lines = [f"Buckets of {data['project']}: resolution {s['resolution'][0]}×{s['resolution'][1]}, {mode}, steps "
             f"{s['bucket_reso_steps']} (from {s['source']})", *(f"  note: {n}" for n in s["notes"])]
    rows = [(r["image"], _size(r["width"], r["height"]), _size(*r["bucket"]), _size(*r["resized"]),
             _kept(r)) for r in data["buckets"]]
    header = ("image", "size", "bucket", "resized", "kept (left, top, right, bottom)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4])
    lines.append("Histogram (images; images × repeats per epoch):")
    most = max((b["count"] for b in data["histogram"]), default=1)
    for b in data["histogram"]:
        bar = "#" * max(1, round(30 * b["count"] / most))
        lines.append(f"  {_size(*b['bucket']):>9}  {b['images']:>5}  {b['count']:>6}  {bar}")
    lines += [f"skipped {s['image']}: {s['reason']}" for s in data["skipped"]]
    if "findings" in data:
        d = data["detection"]
        lines.append(f"Detection ({d['detector']}, on the {d['analysed']} image(s) the crop cuts): "
                     f"{len(data['findings'])} face(s)/head(s) cut")
        lines += [f"  SUBJECT_CUT {f['message']} Fix: {f['fix']}" for f in data["findings"]]
        lines += [f"  not analysed {s['image']}: {s['reason']}" for s in data["detection"]["skipped"]]
    return "\n".join(lines)


def _size(w: int, h: int) -> str:
    return f"{w}×{h}"


def _kept(row: dict) -> str:
    left, top, right, bottom = row["visible"]
    if [left, top, right, bottom] == [0, 0, row["width"], row["height"]]:
        return "all"
    return f"{left:g}, {top:g}, {right:g}, {bottom:g}"

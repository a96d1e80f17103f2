"""HTML for the tab, from typed results. Every string that came from a file or a user is escaped here."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from PIL import Image

from ..dataset.balance import RepeatChange
from ..dataset.report import DatasetReport
from ..display import job_display
from ..fsutil import encoded_image
from ..jobs import JobState
from ..next_step import NextStep
from ..results.lora_info import LoraInfo


def file_uri(path: Path) -> str:
    """A small picture file (a cached thumbnail) as a data URI."""
    mime = mimetypes.guess_type(path.name)[0] or "image/webp"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def image_uri(image: Image.Image, side: int) -> str:
    """A picture shrunk to at most `side` pixels a side, as a JPEG data URI."""
    small = image.convert("RGB")
    small.thumbnail((side, side))
    data = encoded_image(small, format="JPEG", quality=85)
    return f"data:image/jpeg;base64,{base64.b64encode(data).decode('ascii')}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "ts-table") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _list(title: str, items: Sequence[str], limit: int = 50) -> str:
    if not items:
        return ""
    shown = "".join(f"<li>{escape(i)}</li>" for i in items[:limit])
    more = f"<li>… and {len(items) - limit} more</li>" if len(items) > limit else ""
    return f"<details><summary>{escape(title)} ({len(items)})</summary><ul>{shown}{more}</ul></details>"


def report_html(report: DatasetReport) -> str:
    if not report.concepts:
        return '<p class="ts-empty">No concepts yet: import images to create the first one.</p>'
    rows = [(("reg: " if c.kind == "reg" else "") + c.name, c.folder, c.images, c.repeats, c.images_x_repeats,
             ", ".join(f"{k}: {v}" for k, v in c.resolutions.items()) or "–", len(c.small_images),
             len(c.missing_captions), len(c.extension_mismatches))
            for c in report.concepts]
    parts = [f'<div class="ts-report"><p><b>{report.total_images}</b> training images, '
             f"<b>{report.images_x_repeats}</b> images × repeats per epoch.</p>",
             _table(["concept", "folder", "images", "repeats", "images × repeats", "short side",
                     f"below {report.resolution}px", "no caption", "wrong caption ext."], rows)]
    for c in report.concepts:
        parts += [_list(f"{c.folder}: below {report.resolution}px", c.small_images),
                  _list(f"{c.folder}: no caption", c.missing_captions),
                  _list(f"{c.folder}: caption not {report.caption_extension}", c.extension_mismatches),
                  _list(f"{c.folder}: captions without an image", c.orphan_captions),
                  _list(f"{c.folder}: in subfolders, which sd-scripts does not read", c.nested_images),
                  _list(f"{c.folder}: unreadable", [f"{u['image']}: {u['reason']}" for u in c.unreadable])]
    for g in report.duplicates:
        label = "Exact duplicates" if g.kind == "exact" else "Near duplicates"
        parts.append(_list(label, list(g.images)))
    parts.append(_list("Folders sd-scripts will skip (no '<repeats>_' prefix)", report.stray_folders))
    parts.append("</div>")
    return "".join(p for p in parts if p)


def import_html(report: dict) -> str:
    """The outcome of an import job (the job stores the report as a dict)."""
    imported, already = report.get("imported", []), report.get("already", [])
    skipped, warnings, dups = report.get("skipped", []), report.get("warnings", []), report.get("duplicates", [])
    head = (f"<p><b>{len(imported)}</b> imported, <b>{len(already)}</b> already in the project, "
            f"<b>{len(skipped)}</b> skipped{' (cancelled)' if report.get('cancelled') else ''}.</p>")
    return ('<div class="ts-import">' + head
            + (_table(["skipped file", "reason"], [(s["source"], s["reason"]) for s in skipped]) if skipped else "")
            + _list("Notes", [f"{w['source']}: {w['message']}" for w in warnings])
            + "".join(_list(f"{d['kind'].capitalize()} duplicates", d["images"]) for d in dups) + "</div>")


def job_html(job: JobState | None, element_id: str = "train_style_job", *, with_error: bool = True) -> str:
    """A progress bar the page's script keeps up to date while the job is active; `with_error=False` where the
    panel shows a failure's reason beside it already (said once, not twice)."""
    if job is None:
        return f'<div id="{element_id}" class="ts-job" data-state="none"></div>'
    shown = job_display(job)  # the same words the jobs JSON carries for the page script
    pct, text = shown.percent, shown.text
    if job.error and with_error:
        text += f" — {job.error}"
    return (f'<div id="{element_id}" class="ts-job" data-job-id="{escape(job.id)}" '
            f'data-state="{escape(job.state)}">'
            f'<div class="ts-bar"><div class="ts-fill" style="width:{pct}%"></div></div>'
            f'<span class="ts-job-text">{escape(text)}</span></div>')


def balance_html(plan: Sequence[RepeatChange]) -> str:
    if not plan:
        return "<p>No concepts to balance.</p>"
    rows = [(c.concept, c.images, c.repeats, c.steps, c.new_repeats, c.new_steps) for c in plan]
    return ("<p>Balancing renames these folders when you press <b>Apply balance</b>:</p>"
            + _table(["concept", "images", "repeats", "images × repeats", "new repeats", "new images × repeats"],
                     rows))


def next_html(step: NextStep) -> str:
    """A panel's "what to do next" line: where the project stands, then the action."""
    done = " ts-next-done" if step.done else ""
    summary = f"<b>{escape(step.summary)}</b> — " if step.summary else ""
    return f'<p class="ts-next{done}"><span class="ts-next-label">Next:</span> {summary}{escape(step.action)}</p>'


def error_html(message: str) -> str:
    return f'<p class="ts-error">{escape(message)}</p>'


def lora_info_html(info: LoraInfo) -> str:
    rows = [("network", f"{info.network} (dim {info.dim}, alpha {info.alpha})"),
            ("network args", ", ".join(f"{k}={v}" for k, v in info.network_args.items()) or "–"),
            ("base model", info.base_model or "unknown"), ("resolution", info.resolution or "unknown"),
            ("output name", info.output_name), ("hash (as the webui shows it)", info.short_hash),
            ("steps / epochs", f"{info.steps} / {info.epochs}"),
            ("training time", f"{info.training_seconds / 60:.1f} min" if info.training_seconds is not None else "–")]
    rows += [(f"dataset {d['dir']}", f"{d['images']} images × {d['repeats']} repeats") for d in info.datasets]
    tags = ", ".join(f"{t} ({n})" for t, n in info.top_tags(40))
    return (f"<h3>{escape(info.path.name)}</h3>" + _table(["", ""], rows)
            + (f"<p><b>Most frequent training tags:</b> {escape(tags)}</p>" if tags else ""))

"""HTML for the Captions panel. Captions, tags and file names come from users' files: all escaped here."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Optional

from ..captions.audit import AuditReport
from ..captions.ops import CaptionDiff, TagCount
from ..captions.service import TagReport
from ..captions.store import CaptionRecord, HistoryEntry
from ..next_step import NextStep
from .render import _table, next_html

SEVERITY_MARK = {"error": "✖", "warning": "⚠", "info": "ℹ"}


def summary_html(records: Sequence[CaptionRecord], triggers: Sequence[str], shown: int,
                 step: Optional[NextStep] = None) -> str:
    """The next step, then the counts: captioned (the same count as `next_step.ProjectStatus`), triggers, shown."""
    def count(kind: str) -> tuple[int, int]:
        rows = [r for r in records if r.kind == kind]
        return sum(1 for r in rows if r.exists and r.tags), len(rows)

    (captioned, images), (reg_captioned, reg_images) = count("dataset"), count("reg")
    reg = f" (regularisation: {reg_captioned} of {reg_images})" if reg_images else ""
    trig = ", ".join(triggers) if triggers else "none set"
    return ((next_html(step) if step else "")
            + f'<p class="ts-caption-summary">{captioned} of {images} images captioned{reg} · trigger words: '
            f"<b>{escape(trig)}</b> · showing {shown}</p>")


def frequency_html(rows: Sequence[TagCount], limit: int = 60) -> str:
    if not rows:
        return '<p class="ts-empty">No tags yet: tag the images or write captions.</p>'
    concepts = sorted({c for r in rows for c in r.per_concept})
    table = _table(["tag", "images", *concepts],
                   [(r.tag, r.total, *(r.per_concept.get(c, 0) for c in concepts)) for r in rows[:limit]],
                   cls="ts-table ts-freq")
    more = f"<p>… and {len(rows) - limit} more tags.</p>" if len(rows) > limit else ""
    return f"<details open><summary>Tag frequencies ({len(rows)} tags)</summary>{table}{more}</details>"


def preview_html(changes: Sequence[CaptionDiff], limit: int = 100) -> str:
    if not changes:
        return "<p>Nothing would change.</p>"
    rows = [(d.image, ", ".join(d.removed), ", ".join(d.added), d.after) for d in changes[:limit]]
    more = f"<p>… and {len(changes) - limit} more.</p>" if len(changes) > limit else ""
    return (f"<p>{len(changes)} caption(s) would change (press <b>Apply</b>):</p>"
            + _table(["image", "removed", "added", "new caption"], rows, cls="ts-table ts-preview") + more)


def step_html(step: HistoryEntry, verb: str = "Done") -> str:
    if not step.id:
        return "<p>Nothing changed.</p>"
    text = f"{verb}: {step.label} — {step.written} caption(s)."
    if step.conflicts:
        text += (f" {len(step.conflicts)} caption(s) edited since were left as they are: "
                 + ", ".join(step.conflicts[:10]))
    return f'<p class="ts-step">{escape(text)}</p>'


def history_html(steps: Sequence[HistoryEntry]) -> str:
    if not steps:
        return '<p class="ts-empty">No caption changes yet.</p>'
    rows = [(s.time[:19].replace("T", " "), s.label, s.files, "undone" if s.undone else "") for s in steps]
    return "<details><summary>History</summary>" + _table(["when", "change", "captions", ""], rows) + "</details>"


def audit_html(report: AuditReport, image_limit: int = 12) -> str:
    if not report.findings:
        return '<p class="ts-audit-clean">No findings: the captions look ready to train.</p>'
    items = []
    for i, f in enumerate(report.findings):
        imgs = "".join(f"<li>{escape(p)}</li>" for p in f.images[:image_limit])
        if len(f.images) > image_limit:
            imgs += f"<li>… and {len(f.images) - image_limit} more</li>"
        items.append(
            f'<div class="ts-finding" data-code="{escape(f.code)}" data-severity="{escape(f.severity)}">'
            f"<div><b>{SEVERITY_MARK.get(f.severity, '')} {i + 1}. {escape(f.code)}</b> — {escape(f.detail)}</div>"
            f'<div class="ts-note">Why: {escape(f.why)}</div><div class="ts-note">Fix: {escape(f.fix)}</div>'
            f"<details><summary>{len(f.images)} image(s)</summary><ul>{imgs}</ul></details></div>")
    note = ('<p class="ts-note">Token counts are estimates: open_clip\'s vocabulary file was not found.</p>'
            if report.tokens_estimated else "")
    return f'<div class="ts-audit">{"".join(items)}{note}</div>'


def finding_label(index: int, code: str, detail: str) -> str:
    return f"{index + 1}. {code}: {detail[:80]}"


def tag_result_html(report: TagReport) -> str:
    """The tagging run's summary line (the CLI's words) and each image it could not tag, with the reason."""
    html = f"<p>{escape(report.summary())}</p>"
    if report.failed:
        html += _table(["image", "reason"], [(f["image"], f["reason"]) for f in report.failed])
    return html

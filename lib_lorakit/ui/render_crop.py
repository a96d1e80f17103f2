"""HTML for the Crop panel, from typed results (the bucket preview, crop reports, derive steps). File names and
every message that holds them are escaped here; pictures are embedded as data URIs (the projects folder is not
served to the browser), and every overlay is placed in percent of its picture, from the core's numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Optional

from ..crop.bucket_preview import BucketReport, ImageBucket, SubjectCut
from ..crop.buckets import BucketCount
from ..crop.history import DeriveStep
from .render import _table, file_uri, image_uri  # noqa: F401 (the panel uses them through this module)

CARD_HEIGHT = 150  # px: the grid's pictures
PAIR_HEIGHT = 140  # px: before/after pictures
PREVIEW_LIMIT = 24  # before/after pairs shown; the rest is counted
SHADE = "rgba(0, 0, 0, 0.6)"
HATCH = "repeating-linear-gradient(45deg, #f3f4f6 0 6px, #d1d5db 6px 12px)"  # padding, masked out of the loss


# --- pictures --------------------------------------------------------------------------------------------------------
def _pct(value: float, whole: float) -> str:
    return f"{100.0 * value / whole:.3f}%" if whole else "0%"


def _rect(box: Sequence[float], width: float, height: float) -> str:
    """CSS placing a box (left, top, right, bottom in a picture's pixels) over that picture."""
    left, top, right, bottom = box
    return (f"left:{_pct(left, width)};top:{_pct(top, height)};width:{_pct(right - left, width)};"
            f"height:{_pct(bottom - top, height)}")


# --- the bucket preview ----------------------------------------------------------------------------------------------
def settings_html(report: BucketReport) -> str:
    s = report.settings
    side = f"{s.resolution[0]}×{s.resolution[1]}"
    if not s.enable_bucket:
        what = f"Buckets are off: every image is resized and centre-cropped to {side}"
    else:
        upscale = "no upscaling" if s.bucket_no_upscale else "upscaling allowed"
        what = (f"Buckets as sd-scripts makes them at {side} (sides {s.min_bucket_reso}–{s.max_bucket_reso} in "
                f"steps of {s.bucket_reso_steps}, {upscale})")
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return (f'<p class="ts-crop-settings">{escape(what)}; settings from {escape(report.source)}.</p>'
            + (f'<ul class="ts-note">{notes}</ul>' if notes else ""))


def histogram_html(counts: Sequence[BucketCount]) -> str:
    """One bar per bucket, as long as its share of the epoch (images × repeats)."""
    if not counts:
        return '<p class="ts-empty">No image sd-scripts would train on: import some in the Dataset tab.</p>'
    most = max(c.count for c in counts) or 1
    rows = []
    for c in counts:
        bar = (f'<div style="background:var(--color-accent,#f97316);height:0.8em;border-radius:0.2em;'
               f'width:{_pct(c.count, most)}"></div>')
        rows.append(f"<tr><td>{c.bucket[0]}×{c.bucket[1]}</td><td>{c.images}</td><td>{c.count}</td>"
                    f'<td style="width:40%">{bar}</td></tr>')
    head = "<tr><th>bucket (w×h)</th><th>images</th><th>images × repeats</th><th></th></tr>"
    return (f'<details open class="ts-crop-histogram"><summary>Bucket histogram ({len(counts)} buckets)</summary>'
            f'<table class="ts-table" style="width:100%"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
            "</table></details>")


def findings_html(findings: Optional[Sequence[SubjectCut]], detection: Mapping[str, Any]) -> str:
    """SUBJECT_CUT in the core's words (message, why — citing seeds/002 — and fix); or why none are shown."""
    if findings is None:
        return ('<p class="ts-note">Faces and heads were not looked for: tick <b>Find cut faces</b> and press '
                "<b>Show buckets</b>.</p>")
    looked = int(detection.get("analysed", 0))
    notes = "".join(f"<li>{escape(str(n))}</li>" for n in detection.get("notes", []))
    unread = "".join(f"<li>{escape(str(s['image']))}: {escape(str(s['reason']))}</li>"
                     for s in detection.get("skipped", []))
    extra = ((f"<details><summary>Detector notes</summary><ul>{notes}</ul></details>" if notes else "")
             + (f"<details><summary>Not analysed</summary><ul>{unread}</ul></details>" if unread else ""))
    if not findings:
        return (f'<p class="ts-audit-clean">No face or head is cut: looked at the {looked} image(s) the centre crop '
                f"trims.</p>{extra}")
    items = []
    for f in findings:
        d = f.to_dict()
        items.append(f'<div class="ts-finding" data-code="SUBJECT_CUT" data-severity="warning">'
                     f"<div><b>⚠ SUBJECT_CUT</b> — {escape(d['message'])}</div>"
                     f'<div class="ts-note">Why: {escape(d["why"])}</div>'
                     f'<div class="ts-note">Fix: {escape(d["fix"])}</div></div>')
    return (f'<div class="ts-audit ts-crop-findings"><p><b>{len(findings)}</b> face(s) or head(s) cut, found in the '
            f"{looked} image(s) the centre crop trims:</p>{''.join(items)}{extra}</div>")


@dataclass(frozen=True)
class Card:
    """One picture of the grid: the image placed in its bucket, its thumbnail, the faces/heads its crop cuts."""

    item: ImageBucket
    picture: str  # data URI of the thumbnail
    cuts: Sequence[SubjectCut] = ()


def card_html(card: Card) -> str:
    """The thumbnail with what sd-scripts cuts away shaded (all outside `visible`), cut faces outlined in red."""
    p = card.item.placement
    keep = (f'<div class="ts-crop-keep" style="position:absolute;{_rect(p.visible, p.width, p.height)};'
            f'box-shadow:0 0 0 {CARD_HEIGHT * 20}px {SHADE};outline:1px dashed #fff"></div>') if p.cut else ""
    faces = "".join(f'<div class="ts-crop-face" style="position:absolute;{_rect(c.box, p.width, p.height)};'
                    'border:2px solid #dc2626"></div>' for c in card.cuts)
    name = card.item.image.rsplit("/", 1)[-1]
    cut = f"{_cut_share(p):.0f}% cut" if p.cut else "nothing cut"
    flag = " ts-crop-cut" if card.cuts else ""
    title = escape(f"{card.item.image}: {p.width}×{p.height} → resized {p.resized[0]}×{p.resized[1]}, "
                   f"bucket {p.bucket[0]}×{p.bucket[1]}", quote=True)
    return (f'<figure class="ts-crop-card{flag}" data-image="{escape(card.item.image, quote=True)}" '
            f'title="{title}" style="margin:0;display:inline-flex;flex-direction:column;align-items:flex-start;'
            'gap:2px">'
            f'<div style="position:relative;overflow:hidden;height:{CARD_HEIGHT}px;display:inline-block">'
            f'<img src="{card.picture}" alt="{escape(name, quote=True)}" style="height:100%;display:block">'
            f"{keep}{faces}</div>"
            f'<figcaption style="font-size:0.8em;max-width:{CARD_HEIGHT * 2}px;overflow-wrap:anywhere">'
            f"{escape(name)}<br>{p.bucket[0]}×{p.bucket[1]} · {cut}{' · head cut' if card.cuts else ''}"
            "</figcaption></figure>")


def _cut_share(p: Any) -> float:
    """Percent of the picture's area sd-scripts cuts away."""
    left, top, right, bottom = p.visible
    return 100.0 * (1 - (right - left) * (bottom - top) / float(p.width * p.height))


def grid_html(cards: Sequence[Card], total: int) -> str:
    if not cards:
        return ""
    legend = ('<p class="ts-note">Shaded: what sd-scripts cuts away when it centre-crops each image into its bucket. '
              "Red: a face or head that is cut.</p>")
    more = (f'<p class="ts-note">The grid shows the first {len(cards)} of {total} images.</p>'
            if total > len(cards) else "")
    body = "".join(card_html(c) for c in cards)
    return (f'{legend}<div class="ts-crop-grid" style="display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start">'
            f"{body}</div>{more}")


def skipped_html(skipped: Sequence[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    return (f"<details><summary>Not trained on ({len(skipped)})</summary>"
            + _table(["image", "why"], skipped) + "</details>")


def preview_page_html(report: BucketReport, cards: Sequence[Card]) -> str:
    """The whole bucket preview: settings, histogram, findings, the grid, what sd-scripts skips."""
    findings = findings_html(report.findings, report.detection) if report.images else ""
    return (settings_html(report) + histogram_html(report.histogram()) + findings
            + grid_html(cards, len(report.images)) + skipped_html(report.skipped))


# --- crop results ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """Before (the training copy now) and after (the original seen through the planned box) for one image."""

    image: str
    before: str  # data URI
    original: str  # data URI of the upright original
    original_size: tuple[int, int]
    box: Optional[Sequence[int]]  # in the original's pixels; None: the whole original
    size: Sequence[int]  # the derived image's size
    masked: bool
    mode: str
    fill: str
    note: str = ""


def _after_html(pair: Pair) -> str:
    """The original shown through the box: what lies past its edges is padding (hatched: left out of the loss)."""
    width, height = pair.original_size
    left, top, right, bottom = pair.box or (0, 0, width, height)
    bw, bh = right - left, bottom - top
    fill = pair.fill if pair.fill.startswith("#") or pair.fill == "white" else "#9ca3af"
    background = f"{HATCH}" if pair.masked else fill
    return (f'<div class="ts-crop-after" style="position:relative;overflow:hidden;height:{PAIR_HEIGHT}px;'
            f'aspect-ratio:{bw}/{bh};background:{background};outline:1px solid #9ca3af">'
            f'<img src="{pair.original}" alt="" style="position:absolute;max-width:none;'
            f"left:{_pct(-left, bw)};top:{_pct(-top, bh)};width:{_pct(width, bw)};height:{_pct(height, bh)}\">"
            "</div>")


def pair_html(pair: Pair) -> str:
    name = escape(pair.image.rsplit("/", 1)[-1])
    what = f"{pair.mode} → {pair.size[0]}×{pair.size[1]}" + (" · padded (masked)" if pair.masked else "")
    note = f'<div class="ts-note">{escape(pair.note)}</div>' if pair.note else ""
    return (f'<div class="ts-crop-pair" data-image="{escape(pair.image, quote=True)}" style="display:flex;'
            'gap:8px;align-items:center;margin:4px 0">'
            f'<img src="{pair.before}" alt="before" style="height:{PAIR_HEIGHT}px;outline:1px solid #9ca3af">'
            f'<span style="font-size:1.5em">→</span>{_after_html(pair)}'
            f'<div style="font-size:0.9em"><b>{name}</b><br>{escape(what)}{note}</div></div>')


def crop_preview_html(summary: str, pairs: Sequence[Pair], changed: int, skipped: Sequence[Mapping[str, str]]) -> str:
    """A dry run: before → after for the first PREVIEW_LIMIT images, then what would be skipped and why."""
    more = (f'<p class="ts-note">… and {changed - len(pairs)} more.</p>' if changed > len(pairs) else "")
    return (f'<div class="ts-crop-preview"><p>Preview: {escape(summary)}. Press <b>Apply</b> to write it; the '
            "originals are never changed.</p>" + "".join(pair_html(p) for p in pairs) + more
            + _skipped_table(skipped) + "</div>")


def _skipped_table(skipped: Sequence[Mapping[str, str]]) -> str:
    if not skipped:
        return ""
    return _table(["skipped image", "reason"], [(s["image"], s["reason"]) for s in skipped])


def crop_result_html(result: Mapping[str, Any]) -> str:
    """An applied crop (the job's result, CropReport.to_dict()): what changed, skipped, how to take it back."""
    changed, skipped = result.get("changed", []), result.get("skipped", [])
    padded = sum(1 for c in changed if c.get("masked"))
    text = f"{len(changed)} image(s) changed ({padded} padded), {len(skipped)} skipped."
    if result.get("step"):
        text += " Undo takes it back."
    if result.get("caption_step"):
        text += " The caption tag was written as a caption step: the Captions tab's Undo takes it back."
    return f'<div class="ts-crop-result"><p class="ts-step">{escape(text)}</p>{_skipped_table(skipped)}</div>'


def derive_html(report: Any, verb: str) -> str:
    """Undo/redo/manual (a derive.DeriveReport): its label and how many images were derived again."""
    skipped = [s.to_dict() for s in report.skipped]
    text = f"{verb}: {report.label} — {len(report.derived)} image(s) derived again from their originals."
    return f'<p class="ts-step">{escape(text)}</p>{_skipped_table(skipped)}'


def history_html(steps: Sequence[DeriveStep]) -> str:
    if not steps:
        return '<p class="ts-empty">No crops or flips yet.</p>'
    rows = [(s.time[:19].replace("T", " "), s.label, len(s.changes), "undone" if s.undone else "") for s in steps]
    return "<details><summary>Crop history</summary>" + _table(["when", "change", "images", ""], rows) + "</details>"


# --- the manual box --------------------------------------------------------------------------------------------------
def canvas_html(image: str, picture: str, size: tuple[int, int], box: Optional[Sequence[int]]) -> str:
    """The original of `image` to drag a box on (the page script writes it, in the original's pixels, into the box
    field); the crop it has now is outlined."""
    width, height = size
    shown = (f'<div class="ts-crop-box" style="position:absolute;{_rect(box, width, height)};'
             f'box-shadow:0 0 0 4000px {SHADE};outline:2px solid #f97316"></div>') if box else \
        '<div class="ts-crop-box" style="position:absolute;display:none;outline:2px solid #f97316"></div>'
    return (f'<p class="ts-note">{escape(image)} — original {width}×{height}. Drag on the picture to draw the box, '
            "or type it; then press <b>Crop to this box</b>.</p>"
            f'<div class="ts-crop-canvas" data-width="{width}" data-height="{height}" style="position:relative;'
            'display:inline-block;overflow:hidden;cursor:crosshair;user-select:none;touch-action:none">'
            f'<img src="{picture}" alt="" draggable="false" style="display:block;max-width:100%;max-height:520px">'
            f"{shown}</div>")

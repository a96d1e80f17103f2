"""HTML for the Judge panel, from a grid's judge.json as a dict (layout: lib_lorakit/judge/__init__.py): the
recommendation first, the per-epoch table and chart, the epoch × weight cells, and each copied sample beside the
training image it copies. Pure: pictures come in as data URIs the panel made; every text from a file is escaped
here (the chart's labels too)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, Optional

PAIRS_LIMIT = 60  # sample/nearest pairs drawn at most (the rest are counted)
CELLS_LIMIT = 400  # epoch × weight cells tabled at most
SERIES = (("copy_rate", "copy rate", "#dc2626"), ("strength", "strength", "#2563eb"),
          ("adherence", "adherence", "#16a34a"))
HIGHLIGHT = "background:rgba(22,163,74,0.18);font-weight:600"


def number(value: Any) -> Optional[float]:
    """A finite number from a file's value, else None (a damaged or missing entry is shown as –)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: Any, digits: int = 3) -> str:
    n = number(value)
    return "–" if n is None else f"{n:.{digits}g}"


def pct(value: Any) -> str:
    n = number(value)
    return "–" if n is None else f"{100 * n:.0f} %"


def text(value: Any) -> str:
    return escape("" if value is None else str(value))


def rows_of(report: Mapping, key: str) -> list[dict]:
    """A list of dicts from the report (anything else in it is left out)."""
    value = report.get(key)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


# --- choices ---------------------------------------------------------------------------------------------------------
def judged_choices(items: Sequence[Mapping]) -> list[str]:
    """Dropdown entries for judged grids: `<grid id> — <state>` (+ the recommendation); `grid_id_of` reads the id."""
    out = []
    for j in items:
        rec = j.get("recommendation") if isinstance(j.get("recommendation"), dict) else None
        extra = f" · {rec.get('epoch')} at weight {fmt(rec.get('weight'))}" if rec else ""
        out.append(f"{j.get('grid', j.get('id', ''))} — {j.get('state', '')}{extra}")
    return out


def grid_id_of(choice: Optional[str]) -> str:
    return (choice or "").split(" — ", 1)[0].strip()


# --- the report ------------------------------------------------------------------------------------------------------
def report_html(report: Optional[Mapping], pictures: Optional[Mapping[str, str]] = None, *,
                all_samples: bool = False) -> str:
    """The whole judgement as it stands. `pictures`: project-relative image path → data URI (samples and their
    nearest training images); `all_samples` draws every sample beside its nearest image, not only the copies."""
    if not report:
        return '<p class="ts-empty">Nothing judged yet. Judge a run or an existing grid above.</p>'
    pictures = pictures or {}
    return (f'<div class="ts-judge" data-grid-id="{text(report.get("grid"))}" '
            f'data-state="{text(report.get("state"))}">'
            + head_html(report) + recommendation_html(report) + descriptor_html(report) + epochs_html(report)
            + chart_svg(report) + cells_html(report) + pairs_html(report, pictures, all_samples=all_samples)
            + "</div>")


def head_html(report: Mapping) -> str:
    state = str(report.get("state") or "")
    took = number(report.get("elapsed_s"))
    took = f" in {took:.0f} s" if took is not None and state == "done" else ""
    error = f'<p class="ts-error">{text(report.get("error"))}</p>' if report.get("error") else ""
    return (f'<p>Judgement of grid <b>{text(report.get("grid"))}</b> (run <code>{text(report.get("run"))}</code>): '
            f'<span class="ts-judge-state" data-state="{text(state)}">{text(state)}</span>{took}.</p>{error}')


def recommendation_html(report: Mapping) -> str:
    """The recommended epoch and weight with its reasons in words and numbers, or why there is none."""
    rec = report.get("recommendation")
    if not isinstance(rec, dict):
        state = report.get("state")
        if state in ("queued", "running"):
            return '<div class="ts-judge-rec" data-recommended="none"><p>No recommendation yet.</p></div>'
        if state not in ("done", None, ""):
            return (f'<div class="ts-judge-rec" data-recommended="none"><p class="ts-warning">No recommendation: the '
                    f"judging is {text(state)}. Judge the grid again.</p></div>")
        why = report.get("why_none") or "The judge found no epoch and weight to recommend."
        return (f'<div class="ts-judge-rec" data-recommended="none"><p class="ts-warning"><b>No recommendation.</b> '
                f"{text(why)}</p></div>")
    scores = rec.get("scores") if isinstance(rec.get("scores"), dict) else {}
    reasons = [r for r in rec.get("reasons") or [] if isinstance(r, str)]
    items = "".join(f"<li>{escape(r)}</li>" for r in reasons)
    numbers = (f"strength {fmt(scores.get('strength'))}, adherence {fmt(scores.get('adherence'))}, "
               f"copy rate {pct(scores.get('copy_rate'))}")
    return (f'<div class="ts-judge-rec" data-recommended="{text(rec.get("epoch"))}@{fmt(rec.get("weight"))}" '
            f'style="border-left:4px solid #16a34a;padding:0.4em 0.8em;margin:0.5em 0">'
            f'<p><b>Recommended: {text(rec.get("epoch"))} at weight {fmt(rec.get("weight"))}</b> '
            f'(goal: {text(rec.get("goal"))}; {numbers}).</p>'
            + (f'<ul class="ts-judge-reasons">{items}</ul>' if items else "") + "</div>")


def descriptor_html(report: Mapping) -> str:
    """How copies were told: the descriptor, its threshold and unit, what stood in for it and why."""
    d = report.get("descriptor") if isinstance(report.get("descriptor"), dict) else {}
    fallback = (f' <span class="ts-warning">{text(d.get("fallback"))}</span>' if d.get("fallback") else "")
    skipped = [s for s in report.get("skipped") or [] if isinstance(s, (list, tuple)) and len(s) == 2]
    skipped_html = ""
    if skipped:
        items = "".join(f"<li><code>{text(i)}</code>: {text(r)}</li>" for i, r in skipped[:50])
        skipped_html = f"<details><summary>Skipped images ({len(skipped)})</summary><ul>{items}</ul></details>"
    unit = text(d.get("unit") or "similarity")
    return (f'<p class="ts-note ts-judge-descriptor">A sample counts as a copy when its {unit} to a training image'
            f' is at least <b>{fmt(d.get("threshold"))}</b> (descriptor '
            f'<code>{text(d.get("name"))}</code>, {int(number(report.get("training_images")) or 0)} training images)'
            f".{fallback}</p>{skipped_html}")


def epochs_html(report: Mapping) -> str:
    """Per epoch: copy rate, copies of samples, diversity; the first copying epoch marked."""
    epochs = rows_of(report, "epochs")
    if not epochs:
        return ""
    first = report.get("first_copying_epoch")
    rows = []
    for e in epochs:
        mark = first is not None and str(e.get("epoch")) == str(first)
        attr = f' class="ts-first-copy" style="{HIGHLIGHT.replace("22,163,74", "220,38,38")}"' if mark else ""
        rows.append(f"<tr{attr}><td>{text(e.get('epoch'))}{' ⚠ copying starts' if mark else ''}</td>"
                    f"<td>{text(e.get('weight'))}</td><td>{pct(e.get('copy_rate'))}</td>"
                    f"<td>{fmt(e.get('copies'))} of {fmt(e.get('samples'))}</td>"
                    f"<td>{fmt(e.get('diversity'))}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("epoch", "weight", "copy rate", "copies", "diversity"))
    note = (f"<p>Copying starts at <b>{text(first)}</b>.</p>" if first is not None
            else "<p>No epoch copies its training images.</p>")
    return (f'<h4>Per epoch</h4>{note}<table class="ts-table ts-judge-epochs"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def epoch_series(report: Mapping) -> list[tuple[str, dict[str, Optional[float]]]]:
    """Per epoch (in the report's order): copy rate, strength and adherence at the weight the epoch row names
    (cells of that epoch averaged when no cell has that weight)."""
    cells = rows_of(report, "cells")
    out = []
    for e in rows_of(report, "epochs"):
        label = str(e.get("epoch"))
        mine = [c for c in cells if str(c.get("epoch")) == label]
        at = [c for c in mine if str(c.get("weight")) == str(e.get("weight"))] or mine
        values = {"copy_rate": number(e.get("copy_rate"))}
        for key in ("strength", "adherence"):
            found = [v for v in (number(c.get(key)) for c in at) if v is not None]
            values[key] = sum(found) / len(found) if found else None
        out.append((label, values))
    return out


def chart_svg(report: Mapping, width: int = 520, height: int = 180) -> str:
    """Copy rate, strength and adherence per epoch as an inline SVG (empty until one epoch has a number)."""
    series = epoch_series(report)
    values = [v for _, vs in series for v in vs.values() if v is not None]
    if not values:
        return ""
    pad, top = 34, max(1.0, max(values))
    bottom = min(0.0, min(values))
    step = (width - 2 * pad) / max(1, len(series) - 1)

    def at(i: int, v: float) -> str:
        x = pad + (i * step if len(series) > 1 else (width - 2 * pad) / 2)
        return f"{x:.1f},{height - pad - (v - bottom) / (top - bottom) * (height - 2 * pad):.1f}"

    parts = []
    for key, name, colour in SERIES:
        points = [(i, vs[key]) for i, (_, vs) in enumerate(series) if vs[key] is not None]
        if not points:
            continue
        parts.append(f'<polyline class="ts-judge-{key}" fill="none" stroke="{colour}" stroke-width="1.8" '
                     f'points="{" ".join(at(i, v) for i, v in points)}"/>')
        for i, v in points:
            x, y = at(i, v).split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.6" fill="{colour}"><title>{escape(name)} '
                         f"{escape(series[i][0])}: {v:.3g}</title></circle>")
    first = report.get("first_copying_epoch")
    for i, (label, _) in enumerate(series):
        x = at(i, bottom).split(",")[0]
        if first is not None and label == str(first):
            parts.append(f'<line x1="{x}" x2="{x}" y1="{pad - 10}" y2="{height - pad}" stroke="#dc2626" '
                         'stroke-dasharray="3,3"/>')
        parts.append(f'<text x="{x}" y="{height - pad + 14}" font-size="10" text-anchor="middle">'
                     f"{escape(label[:14])}</text>")
    legend = "".join(f'<text x="{pad + 110 * k}" y="12" font-size="11" fill="{c}">■ {escape(n)}</text>'
                     for k, (_, n, c) in enumerate(SERIES))
    return (f'<svg class="ts-judge-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="copy rate, strength and adherence by epoch">'
            f"<title>copy rate, strength and adherence by epoch</title>{legend}"
            f'<line x1="{pad}" x2="{width - pad}" y1="{height - pad}" y2="{height - pad}" stroke="#999"/>'
            f'<text x="2" y="{pad}" font-size="10">{top:.3g}</text>'
            f'<text x="2" y="{height - pad}" font-size="10">{bottom:.3g}</text>{"".join(parts)}</svg>')


def cells_html(report: Mapping) -> str:
    """Epoch × weight: strength, adherence and copy rate of each cell; the recommended one highlighted."""
    cells = rows_of(report, "cells")[:CELLS_LIMIT]
    if not cells:
        return ""
    epochs = list(dict.fromkeys(str(c.get("epoch")) for c in cells))
    weights = sorted(dict.fromkeys(str(c.get("weight")) for c in cells), key=_weight_key)
    by = {(str(c.get("epoch")), str(c.get("weight"))): c for c in cells}
    rec = report.get("recommendation") if isinstance(report.get("recommendation"), dict) else {}
    head = "<th>epoch \\ weight</th>" + "".join(f"<th>{escape(w)}</th>" for w in weights)
    rows = []
    for e in epochs:
        tds = []
        for w in weights:
            c = by.get((e, w))
            if c is None:
                tds.append("<td>–</td>")
                continue
            chosen = rec and str(rec.get("epoch")) == e and _same_weight(rec.get("weight"), w)
            attr = f' class="ts-recommended" style="{HIGHLIGHT}"' if chosen else ""
            tds.append(f"<td{attr}>strength {fmt(c.get('strength'))}<br>adherence {fmt(c.get('adherence'))}"
                       f"<br>copies {pct(c.get('copy_rate'))}</td>")
        rows.append(f"<tr><th>{escape(e)}</th>{''.join(tds)}</tr>")
    return (f'<h4>Epoch × weight</h4><table class="ts-table ts-judge-cells"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>'
            '<p class="ts-note">Strength: 0 = the base model (weight 0), 1 = as close to the training images as they '
            "are themselves. Adherence: the CLIP score of off-dataset prompts against the base model's (1 = follows "
            "prompts as well as without the LoRA). Copies: the share of samples that are near-copies.</p>")


def _weight_key(w: str) -> tuple[int, float, str]:
    try:
        return 0, float(w), w
    except ValueError:
        return 1, 0.0, w


def _same_weight(a: Any, b: Any) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def samples_of(report: Mapping, *, all_samples: bool = False) -> list[dict]:
    """The samples to show beside their nearest training image: every copy (or every sample), most similar first."""
    out = []
    for c in rows_of(report, "cells"):
        for s in rows_of(c, "samples"):
            if all_samples or s.get("copy") is True:
                out.append({**s, "epoch": c.get("epoch"), "weight": c.get("weight")})
    return sorted(out, key=lambda s: -(number(s.get("similarity")) or -2.0))


def pairs_html(report: Mapping, pictures: Mapping[str, str], *, all_samples: bool = False) -> str:
    """Each copied sample (or every sample) beside its nearest training image, with the similarity, the threshold
    and its unit."""
    shown = samples_of(report, all_samples=all_samples)
    d = report.get("descriptor") if isinstance(report.get("descriptor"), dict) else {}
    title = ("Samples and their nearest training images" if all_samples
             else "Copies: samples beside the training image they copy")
    if not shown:
        what = "samples" if all_samples else "samples flagged as copies"
        return f'<h4>{title}</h4><p class="ts-empty ts-judge-no-copies">No {what}.</p>'
    threshold, unit = fmt(d.get("threshold")), text(d.get("unit") or "similarity")
    items = []
    for s in shown[:PAIRS_LIMIT]:
        sim = fmt(s.get("similarity"))
        verdict = "copy" if s.get("copy") is True else "not a copy"
        items.append(
            f'<figure class="ts-judge-pair" data-copy="{str(s.get("copy") is True).lower()}" '
            'style="display:inline-block;margin:0.4em;padding:0.3em;border:1px solid #ccc;vertical-align:top">'
            f'<div style="display:flex;gap:0.3em">{_picture(pictures, s.get("image"), "sample")}'
            f'{_picture(pictures, s.get("nearest"), "nearest training image")}</div>'
            f'<figcaption style="max-width:330px;font-size:0.85em"><b>{verdict}</b>: similarity {sim} '
            f"(threshold {threshold}, {unit})<br>{text(s.get('epoch'))} · weight {text(s.get('weight'))} · "
            f"seed {text(s.get('seed'))} · {text(s.get('kind'))} prompt: <i>{text(s.get('prompt'))}</i><br>"
            f"sample <code>{text(s.get('image'))}</code><br>nearest <code>{text(s.get('nearest'))}</code>"
            "</figcaption></figure>")
    more = f"<p>… and {len(shown) - PAIRS_LIMIT} more.</p>" if len(shown) > PAIRS_LIMIT else ""
    return f'<h4>{title} ({len(shown)})</h4><div class="ts-judge-pairs">{"".join(items)}</div>{more}'


def _picture(pictures: Mapping[str, str], path: Any, role: str) -> str:
    uri = pictures.get(str(path)) if path else None
    if not uri or not uri.startswith("data:image/"):
        return (f'<div class="ts-judge-missing" style="width:160px;height:160px;border:1px dashed #999">'
                f"{escape(role)}: no picture</div>")
    return (f'<img class="ts-judge-{"sample" if role == "sample" else "nearest"}" src="{escape(uri)}" '
            f'alt="{escape(role)}" title="{escape(str(path))}" style="width:160px;height:160px;object-fit:contain">')


# --- outcomes --------------------------------------------------------------------------------------------------------
def started_html(what: str, grid: str = "") -> str:
    where = f" (grid <code>{escape(grid)}</code>)" if grid else ""
    return f"<p>{escape(what)}{where}. The report fills in as each stage ends.</p>"


def applied_html(result: Any) -> str:
    """What "Write to the card" wrote: the card, the weight, the note (a CardChoice or a dict alike)."""
    get = result.get if isinstance(result, Mapping) else (lambda k, d=None: getattr(result, k, d))
    weight, card, lora, note = get("weight"), get("card"), get("lora"), get("note", "")
    lora_name = getattr(lora, "name", lora)
    return (f'<div class="ts-chosen ts-judge-applied"><p>Preferred weight <b>{fmt(weight)}</b> written to '
            f"<code>{text(card)}</code>" + (f" for <code>{text(lora_name)}</code>" if lora_name else "") + ".</p>"
            + (f'<p class="ts-note">{text(note)}</p>' if note else "") + "</div>")

"""HTML for the Direction panel, from the cores' results: images grouped by the way they face, the normalise
preview and outcome, the sorter's classes, predictions and apply plan. Every file name, caption, class name and
message is escaped here; pictures are cached thumbnails embedded as data URIs (the projects folder is not served).

A picture is a `.ts-pick` card carrying its image's path: clicking it adds the path to (or takes it from) the
panel's "Chosen images" box (the page script in direction_panel.PICK_JS); the buttons act on that box.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, Optional

from .render import _table, file_uri  # noqa: F401 (the panel uses them through this module)

GROUPS = (("left", "Faces left"), ("right", "Faces right"), ("front", "Front"), ("away", "Away"),
          ("unknown", "Unknown"))
ROWS_LIMIT = 200  # rows of a table; the rest is counted
STYLE = """<style>
.ts-dir-groups{display:flex;flex-direction:column;gap:0.6em}
.ts-dir-group h4{margin:0.2em 0}
.ts-dir-cards{display:flex;flex-wrap:wrap;gap:0.4em}
.ts-pick{width:104px;cursor:pointer;border:2px solid transparent;border-radius:6px;padding:2px;
 font-size:0.75em;line-height:1.2;overflow:hidden;background:var(--block-background-fill,#fff)}
.ts-pick img{width:100px;height:100px;object-fit:contain;display:block;background:#8883}
.ts-pick.ts-chosen{border-color:var(--color-accent,#f97316);box-shadow:0 0 0 2px var(--color-accent,#f97316)}
.ts-pick .ts-name{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.ts-badge{display:inline-block;padding:0 0.3em;border-radius:0.3em;background:#8884;margin-right:0.2em}
.ts-dir-low{opacity:0.75}
</style>"""


@dataclass(frozen=True)
class Card:
    """One picture: `lines` under it (escaped when drawn), `title` its tooltip (the estimate's reason)."""

    image: str
    picture: str  # a data URI ("" when the image has no thumbnail)
    lines: tuple[str, ...] = ()
    badges: tuple[str, ...] = ()
    title: str = ""
    chosen: bool = False
    low: bool = False  # less sure than Normalise needs


@dataclass(frozen=True)
class Group:
    key: str
    title: str
    cards: list[Card] = field(default_factory=list)
    total: int = 0  # images in the group, shown or not


def percent(value: Optional[float]) -> str:
    return "–" if value is None else f"{100.0 * value:.0f}%"


def card_html(card: Card) -> str:
    name = card.image.rsplit("/", 1)[-1]
    classes = "ts-pick" + (" ts-chosen" if card.chosen else "") + (" ts-dir-low" if card.low else "")
    picture = (f'<img src="{escape(card.picture)}" alt="{escape(name)}" loading="lazy">' if card.picture
               else '<div style="width:100px;height:100px;background:#8883"></div>')
    badges = "".join(f'<span class="ts-badge">{escape(b)}</span>' for b in card.badges)
    lines = "".join(f"<span class=\"ts-name\">{escape(line)}</span>" for line in card.lines)
    return (f'<div class="{classes}" data-image="{escape(card.image)}" title="{escape(card.title or card.image)}">'
            f'{picture}<span class="ts-name">{escape(name)}</span>{lines}{badges}</div>')


def cards_html(cards: Iterable[Card]) -> str:
    return '<div class="ts-dir-cards">' + "".join(card_html(c) for c in cards) + "</div>"


# --- direction -------------------------------------------------------------------------------------------------------
def groups_html(groups: Sequence[Group], *, heading: str = "", hidden: int = 0) -> str:
    """The images in one block per direction (empty directions left out); `hidden` images had no room."""
    if not any(g.cards or g.total for g in groups):
        return STYLE + '<p class="ts-empty">No training images yet: import some in the Dataset tab.</p>'
    parts = [STYLE, '<div class="ts-dir-groups">']
    if heading:
        parts.append(f'<p class="ts-note">{escape(heading)}</p>')
    for g in groups:
        if g.cards or g.total:
            parts.append(f'<div class="ts-dir-group" data-direction="{escape(g.key)}"><h4>{escape(g.title)} '
                         f"({max(g.total, len(g.cards))})</h4>{cards_html(g.cards)}</div>")
    if hidden:
        parts.append(f'<p class="ts-note">… and {hidden} more image(s), not shown.</p>')
    return "".join(parts) + "</div>"


def estimate_html(result: Mapping[str, Any]) -> str:
    """The outcome of an estimate job (its result as stored: images, groups, skipped, embedder, notes)."""
    groups = result.get("groups") or {}
    counts = ", ".join(f"{len(v)} {k}" for k, v in groups.items() if v) or "none"
    parts = [f"<p>Estimated {len(result.get('images') or [])} image(s) with "
             f"{escape(str(result.get('embedder') or 'the default embedder'))}: {escape(counts)}.</p>"]
    parts += [f'<p class="ts-note">{escape(str(n))}</p>' for n in result.get("notes") or ()]
    skipped = result.get("skipped") or []
    if skipped:
        parts.append(_table(["skipped image", "reason"], [(s.get("image", ""), s.get("reason", ""))
                                                          for s in skipped[:ROWS_LIMIT]]))
    return "".join(parts)


def normalise_summary(report: Mapping[str, Any]) -> str:
    """The report in one sentence, with the panel's own words for undoing it."""
    dry = bool(report.get("dry_run"))
    flipped, captions = len(report.get("flipped") or ()), len(report.get("captions") or ())
    flip, swap = ("Would flip", "would swap") if dry else ("Flipped", "swapped")
    text = (f"{flip} {flipped} image(s) to face {report.get('to', '')} and {swap} direction words in {captions} "
            f"caption(s); {len(report.get('kept') or ())} stay as they are")
    if report.get("unsafe"):
        text += f"; {len(report['unsafe'])} left alone as unsafe to flip (each with its reason below)"
    if flipped and not dry:
        text += ". Undo: Undo the last flip (images), then Undo the last caption change (captions)"
    return text + "."


def normalise_html(report: Mapping[str, Any], pictures: Mapping[str, str]) -> str:
    """A normalise preview (dry run) or outcome: the flips with their pictures, the unsafe ones and why, the
    caption swaps, and gaze captions to consider."""
    dry = bool(report.get("dry_run"))
    parts = [f'<p class="ts-dir-summary"><b>{escape(normalise_summary(report))}</b></p>']
    flipped = list(report.get("flipped") or ())
    if flipped:
        title = "Would be mirrored" if dry else "Mirrored"
        parts.append(f"<h4>{title} ({len(flipped)})</h4>"
                     + cards_html(Card(image=i, picture=pictures.get(i, "")) for i in flipped[:ROWS_LIMIT]))
    unsafe = report.get("unsafe") or []
    if unsafe:
        parts.append(f"<h4>Left alone ({len(unsafe)})</h4>"
                     + _table(["image", "why"], [(u.get("image", ""), u.get("reason", "")) for u in unsafe]))
    captions = report.get("captions") or []
    if captions:
        title = "Captions that would change" if dry else "Captions changed"
        parts.append(f"<h4>{title} ({len(captions)})</h4>" + _table(
            ["image", "before", "after"], [(c.get("image", ""), c.get("before", ""), c.get("after", ""))
                                           for c in captions[:ROWS_LIMIT]]))
    suggestions = report.get("suggestions") or []
    if suggestions and not dry:
        parts.append(f"<h4>Caption the gaze ({len(suggestions)} without a gaze tag)</h4>"
                     '<p class="ts-note">Suggestions only, nothing was written: add the fitting tag in the Captions '
                     "tab (seeds/002: once every subject faces one way, say where it looks).</p>"
                     + _table(["image", "faces", "consider"],
                              [(s.get("image", ""), s.get("direction", ""), ", ".join(s.get("tags") or ()))
                               for s in suggestions[:ROWS_LIMIT]]))
    if dry and flipped:
        parts.append('<p class="ts-note">Nothing was changed: press Apply to do it.</p>')
    return '<div class="ts-dir-normalise">' + "".join(parts) + "</div>"


def undo_html(what: str, label: str, count: int) -> str:
    if not label:
        return f"<p>{escape(what)}: nothing to undo.</p>"
    return f"<p>{escape(what)}: {escape(label)} ({count} file(s)).</p>"


def labels_html(count: int, label: str) -> str:
    words = {"never-flip": "marked never flip", "may-flip": "may be flipped again", "unlabel": "unlabelled"}
    what = words.get(label, f"labelled {label}")
    return (f"<p>{count} image(s) {escape(what)}. Press Re-estimate to re-fit the others to your labels.</p>")


# --- the sorter ------------------------------------------------------------------------------------------------------
def sort_status_html(status: Mapping[str, Any]) -> str:
    """Classes with their labelled examples, and what the saved classifier is."""
    classes = list(status.get("classes") or ())
    if not classes:
        return ('<p class="ts-note">No classes yet: type a class name (e.g. <i>3/4 view</i>, <i>blurry</i>) and '
                "press Add class.</p>")
    labels = status.get("labels") or {}
    counts = {c: sum(1 for v in labels.values() if v == c) for c in classes}
    rows = [(c, counts[c]) for c in classes]
    out = _table(["class", "labelled examples"], rows)
    model = status.get("classifier")
    if model:
        if model.get("kind") == "teachable":
            out += "<p>Classifier: a Teachable Machine model (imported).</p>"
        else:
            out += (f"<p>Classifier: trained on {escape(str(model.get('examples', '?')))} example(s), "
                    f"cross-validated accuracy <b>{escape(percent(model.get('cv_accuracy')))}</b>"
                    f" ({escape(str(model.get('embedder', '')))}).</p>")
    else:
        out += '<p class="ts-note">Not trained yet: label at least two images of two classes, then press Train.</p>'
    return out


def train_html(result: Mapping[str, Any]) -> str:
    examples = result.get("examples") or {}
    counts = ", ".join(f"{c}: {n}" for c, n in examples.items())
    cv = result.get("cv_accuracy")
    accuracy = ("not enough examples to cross-validate (2 a class at least)" if cv is None
                else f"cross-validated accuracy {percent(cv)}")
    text = f"Trained on {sum(examples.values())} example(s) ({counts}); {accuracy}."
    skipped = result.get("skipped") or []
    return (f"<p><b>{escape(text)}</b></p>"
            + (_table(["skipped image", "reason"], [(s.get("image", ""), s.get("reason", "")) for s in skipped])
               if skipped else ""))


def predictions_html(cards: Sequence[Card], *, total: int) -> str:
    if not cards:
        return ('<p class="ts-note">No predictions yet: train the sorter (or import a Teachable Machine model), '
                "then press Sort every image.</p>")
    more = f" (the {len(cards)} least certain shown)" if total > len(cards) else ""
    return (STYLE + f"<h4>Predictions, least certain first{escape(more)}</h4>"
            '<p class="ts-note">Correct a wrong one: click it, choose its class, press Label chosen, then Train '
            "again.</p>" + cards_html(cards))


def sort_apply_html(report: Mapping[str, Any]) -> str:
    dry = bool(report.get("dry_run"))
    applied, skipped = report.get("applied") or [], report.get("skipped") or []
    verb = "Would file" if dry else "Filed"
    into = str(report.get("into", ""))
    parts = [f"<p><b>{verb} {len(applied)} image(s) into {escape(into)}</b>"
             + (f"; {len(skipped)} left where they are" if skipped else "") + ".</p>"]
    if applied:
        parts.append(_table(["image", "class", "confidence", "to"],
                            [(a.get("image", ""), a.get("class", ""), percent(a.get("confidence")), a.get("to", ""))
                             for a in applied[:ROWS_LIMIT]]))
    if skipped:
        parts.append(_table(["left alone", "why"], [(s.get("image", ""), s.get("reason", ""))
                                                     for s in skipped[:ROWS_LIMIT]]))
    if dry and applied:
        parts.append('<p class="ts-note">Nothing was changed: press Apply to do it.</p>')
    return "".join(parts)

"""HTML for the Results panel (grids over a run's epochs × weights × prompts), from the core's values. Everything
that came from a file (a report, a prompt, a run's name) is escaped here."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any, Optional
from urllib.parse import quote

from ..evaluate.grid import KINDS, GridPlan

API = "/train-style/v1"
CELL_ROWS = 200  # cells listed at most (a grid holds at most 1,024)
TRANSFER_NOTE = (
    "**Base-model transfer** (seeds/003). A LoRA keeps the difference between your images and the model it was "
    "trained on. Trained on an *ancestor* (e.g. the base a family of merges was made from), it carries to that "
    "family's models and each adds its own look; trained on a merge, it works best on that merge and its close "
    "relatives. To keep a style when switching models, train on an ancestor of the model you want to use. Compare: "
    "tick checkpoints here (or press **All of the same SD version**) and the grid gains a checkpoint axis.")


def weights_html(values: Sequence[str] = (), error: str = "") -> str:
    """The weight spec as the values it names (or why it cannot be read), under the weights box."""
    if error:
        return f'<p class="ts-error">{escape(error)}</p>'
    return f'<p class="ts-note">Weights: {escape(", ".join(values))}</p>' if values else ""


def size_html(plan: Optional[GridPlan] = None, problems: Sequence[str] = ()) -> str:
    """How many images the grid makes, axis by axis, or what is wrong, field by field."""
    if problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in problems)
        return f'<div class="ts-error"><ul>{items}</ul></div>'
    if plan is None:
        return ""
    parts = [f"{len(plan.values(k))} {k}{'s' if len(plan.values(k)) != 1 else ''}" for k in KINDS]
    return (f'<p class="ts-note" id="train_style_results_cells_count"><b>{plan.size}</b> image'
            f'{"s" if plan.size != 1 else ""}: {escape(" × ".join(parts))}.</p>')


def grid_choices(grids: Sequence[dict]) -> list[str]:
    """Dropdown entries for the project's grids: `<id> — <state> (<made>/<cells>)`; `grid_id_of` reads the id."""
    out = []
    for g in grids:
        made = f" ({g.get('made', 0)}/{g.get('cells', 0)})" if "cells" in g else ""
        out.append(f"{g.get('id', '')} — {g.get('state', '')}{made}")
    return out


def grid_id_of(choice: Optional[str]) -> str:
    return (choice or "").split(" — ", 1)[0].strip()


def cell_label(cell: dict) -> str:
    """A cell as one line: its index, epoch, weight, prompt (shortened), and checkpoint and seed."""
    prompt = str(cell.get("prompt", ""))
    prompt = prompt if len(prompt) <= 50 else prompt[:49] + "…"
    extra = "".join(f" · {v}" for v in (cell.get("checkpoint"),) if v)
    return (f"#{cell.get('index')}: {cell.get('epoch')} · weight {cell.get('weight')} · {prompt}{extra} · "
            f"seed {cell.get('seed')}")


def cell_choices(report: Optional[dict]) -> list[str]:
    """The cells that were made, for "Use this cell"."""
    if not report:
        return []
    return [cell_label(c) for c in report.get("cells", []) if c.get("image")]


def cell_index_of(choice: Optional[str]) -> Optional[int]:
    head = (choice or "").split(":", 1)[0].strip().lstrip("#")
    return int(head) if head.isdigit() else None


def grid_url(project: str, grid_id: str, file: str = "grid.png") -> str:
    return f"{API}/projects/{quote(project, safe='')}/eval/{quote(grid_id, safe='')}/{file}"


def report_html(project: str, report: Optional[dict], picture: str = "") -> str:
    """A grid: its state, what it compares, the picture (a link opens it full size) and its cells with labels.
    `picture`: the grid as a data URI (empty while it is not made)."""
    if not report:
        return '<p class="ts-empty">No grid chosen. Make one above, or pick one from the list.</p>'
    gid = str(report.get("id", ""))
    state = str(report.get("state", ""))
    head = (f'<p><b>Grid {escape(gid)}</b> of run <code>{escape(str(report.get("run", "")))}</code>: '
            f'<span class="ts-grid-state" data-state="{escape(state)}">{escape(state)}</span>, '
            f'{int(report.get("made") or 0)} of {len(report.get("cells", []))} images made'
            f'{" by " + escape(str(report["generator"])) if report.get("generator") else ""}.</p>')
    error = f'<p class="ts-error">{escape(str(report["error"]))}</p>' if report.get("error") else ""
    compared = _compared(report.get("axes") or {})
    image = ""
    if picture and report.get("grid"):
        full = escape(grid_url(project, gid))
        image = (f'<a class="ts-grid-link" href="{full}" target="_blank" rel="noopener" '
                 f'title="Open the grid full size">'
                 f'<img class="ts-grid-picture" src="{escape(picture)}" alt="grid {escape(gid)}" '
                 f'style="max-width:100%;max-height:70vh;object-fit:contain;cursor:zoom-in"></a>'
                 '<p class="ts-note">Click the grid to open it full size.</p>')
    return (f'<div class="ts-grid" data-grid-id="{escape(gid)}">{head}{error}{compared}{image}'
            f'{cells_html(project, report)}</div>')


def _compared(axes: dict) -> str:
    rows = [(k, ", ".join(map(str, axes[k]))) for k in KINDS if any(str(v) for v in axes.get(k) or [])]
    if not rows:
        return ""
    items = "".join(f"<li><b>{escape(k)}s</b>: {escape(v)}</li>" for k, v in rows)
    return f'<ul class="ts-grid-axes">{items}</ul>'


def cells_html(project: str, report: dict) -> str:
    cells = report.get("cells", [])
    rows = []
    for c in cells[:CELL_ROWS]:
        made = "made" if c.get("image") else "not made"
        rows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in (
            c.get("index"), c.get("epoch"), c.get("weight"), c.get("prompt"), c.get("checkpoint") or "–",
            c.get("seed"), made)) + "</tr>")
    more = f"<p>… and {len(cells) - CELL_ROWS} more cells.</p>" if len(cells) > CELL_ROWS else ""
    head = "".join(f"<th>{h}</th>" for h in ("#", "epoch", "weight", "prompt", "checkpoint", "seed", ""))
    return (f'<details class="ts-grid-cells" open><summary>Cells ({len(cells)})</summary>'
            f'<table class="ts-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f"{more}</details>")


def started_html(plan: GridPlan, run: str) -> str:
    return (f"<p>Making a grid of {plan.size} images from run <code>{escape(run)}</code>. It keeps what it made "
            "when cancelled; Resume makes the rest.</p>")


def chosen_html(choice: Any) -> str:
    """What "Use this cell" changed (a CardChoice)."""
    gone = "".join(f"<li><code>{escape(p)}</code></li>" for p in choice.unregistered)
    gone = f"<p>Unregistered (kept in the run):</p><ul>{gone}</ul>" if gone else ""
    return (f'<div class="ts-chosen"><p>Preferred weight <b>{choice.weight:g}</b> written to '
            f"<code>{escape(str(choice.card))}</code> for <code>{escape(choice.lora.name)}</code>.</p>"
            f'<p class="ts-note">{escape(choice.note)}</p>{gone}</div>')

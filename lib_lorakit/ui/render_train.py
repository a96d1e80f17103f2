"""HTML for the Train panel, from typed results. Every string that came from a file, a run or a user is escaped."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Optional

from ..jobs import JobState
from ..next_step import NextStep
from ..results.registry import Registered
from ..train.environment import DoctorReport, TrainerEnvironment
from ..train.runner import RunSnapshot
from ..train.service import TrainPlan
from .render import job_html, next_html

SETUP_JOB_ID = "train_style_setup_job"
RUN_BOX_ID = "train_style_run"
# sd-scripts' sample images: <output_name>_<step:06d>_<i:02d>_<YYYYmmddHHMMSS>[_<seed>].png, e<epoch:06d> for epochs
_SAMPLE_NAME = re.compile(r"^(?P<name>.*?)_?(?:e(?P<epoch>\d{6})|(?P<step>\d{6}))_(?P<index>\d{2})_\d{14}"
                          r"(?:_(?P<seed>\d+))?\.png$")


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _cell(value: object) -> str:
    return "–" if value is None or value == "" else escape(str(value))


def heading_html(project: str, trigger_words: str, step: NextStep) -> str:
    """The project trained (chosen above the panels), its trigger words and what to do next."""
    head = (f'<p class="ts-heading">Training project <b>{escape(project)}</b> (trigger words: '
            f"{escape(trigger_words)}).</p>") if project else ""
    return head + next_html(step)


# --- the plan -------------------------------------------------------------------------------------------------------
def plan_html(plan: TrainPlan, reasons: Mapping[str, str]) -> str:
    """Steps (numbers and warnings), preflight findings (errors first, each with its fix) and the settings table;
    each setting's row carries the option's reason as its tooltip."""
    return ('<div class="ts-plan">' + steps_html(plan) + findings_html(plan)
            + settings_html(plan, reasons) + "</div>")


def steps_html(plan: TrainPlan) -> str:
    s = plan.steps
    rows = [("training images", s.train_images), ("images × repeats per epoch", s.epoch_images),
            ("regularisation images per epoch", s.reg_epoch_images), ("batch size", s.batch_size),
            ("gradient accumulation", s.gradient_accumulation_steps), ("epochs", s.epochs),
            ("steps per epoch", s.steps_per_epoch), ("total steps", s.total_steps),
            ("steps per image", f"{s.steps_per_image:.0f}")]
    if plan.settings.values.get("validation_split"):
        rows.insert(1, ("validation images (held out)", s.validation_images))
    body = "".join(f'<tr><th>{escape(k)}</th><td data-key="{_attr(k)}">{_cell(v)}</td></tr>' for k, v in rows)
    warnings = "".join(f'<li class="ts-{_attr(w.level)}" data-code="{_attr(w.code)}">{escape(w.message)}</li>'
                       for w in s.warnings)
    return (f'<div class="ts-steps" id="train_style_steps"><h4>Steps ({escape(plan.settings.preset)}, base '
            f'{escape(plan.base_arch)})</h4><table class="ts-table">{body}</table>'
            + (f"<ul>{warnings}</ul>" if warnings else "")
            + (f'<p class="ts-note">{escape(s.note)}</p>' if s.note else "") + "</div>")


def findings_html(plan: TrainPlan) -> str:
    if not plan.findings:
        return '<p class="ts-ok" id="train_style_ready">Ready to train: every check passed.</p>'
    order = sorted(plan.findings, key=lambda f: f.severity != "error")
    items = "".join(f'<li class="ts-{_attr(f.severity)}" data-code="{_attr(f.code)}"><b>{escape(f.severity)}:</b> '
                    f"{escape(f.message)}" + (f' <span class="ts-fix">Fix: {escape(f.fix)}</span>' if f.fix else "")
                    + "</li>" for f in order)
    head = ("Training is blocked until the errors are fixed." if plan.blocked
            else "Ready to train, but look at these first.")
    cls = "ts-error" if plan.blocked else "ts-ok"
    ready = "" if plan.blocked else ' id="train_style_ready"'
    return f'<div class="ts-findings"><p class="{cls}"{ready}>{escape(head)}</p><ul>{items}</ul></div>'


def settings_html(plan: TrainPlan, reasons: Mapping[str, str]) -> str:
    rows = "".join(f'<tr title="{_attr(reasons.get(r["name"], ""))}"><td>{escape(r["name"])}</td>'
                   f'<td>{_cell(r["value"])}</td><td>{escape(str(r["source"]))}</td></tr>'
                   for r in plan.settings.explain())
    return ("<details class=\"ts-settings\"><summary>Resolved settings (hover a row for why the option matters)"
            f'</summary><table class="ts-table"><thead><tr><th>option</th><th>value</th><th>source</th></tr>'
            f"</thead><tbody>{rows}</tbody></table></details>")


# --- one run --------------------------------------------------------------------------------------------------------
def run_html(snap: Optional[RunSnapshot]) -> str:
    """The run box: state, progress bar, numbers, what went wrong and the loss curve."""
    if snap is None:
        return f'<div id="{RUN_BOX_ID}" class="ts-run" data-state="none"><p class="ts-empty">No run chosen.</p></div>'
    shown = snap.display  # the same words the runs JSON carries for the page script
    parts = [f'<div id="{RUN_BOX_ID}" class="ts-run" data-project="{_attr(snap.project)}" '
             f'data-run-id="{_attr(snap.id)}" data-state="{_attr(snap.state)}">',
             f'<div class="ts-run-head"><b>{escape(snap.id)}</b> <span class="ts-run-state">{escape(shown.state)}'
             f'</span> <span class="ts-run-meta">{escape(_meta_line(snap.meta))}</span></div>',
             f'<div class="ts-bar"><div class="ts-fill" style="width:{shown.percent}%"></div></div>',
             f'<p class="ts-run-text">{escape(shown.text)}</p>']
    if snap.meta.get("depends_on") and snap.state == "queued":
        parts.append(f'<p class="ts-note ts-waits">Starts when run {escape(str(snap.meta["depends_on"]))} has '
                     "succeeded (stage 1 of a two-stage training).</p>")
    for warning in snap.meta.get("warnings", []):
        parts.append(f'<p class="ts-warning">{escape(str(warning))}</p>')
    if snap.notice:
        parts.append(f'<p class="ts-note ts-notice">{escape(snap.notice)}</p>')
    if snap.meta.get("resume_note"):
        parts.append(f'<p class="ts-note ts-resumed">{escape(str(snap.meta["resume_note"]))}</p>')
    if snap.error:
        parts.append(f'<p class="ts-error">{escape(snap.error)}</p>')
    if snap.advice:
        parts.append(f'<p class="ts-advice"><b>Advice:</b> {escape(snap.advice)}</p>')
    if snap.state in ("failed", "interrupted") and snap.log_tail:
        parts.append('<details open><summary>Last lines of the log</summary><pre class="ts-log">'
                     + escape("\n".join(snap.log_tail[-30:])) + "</pre></details>")
    if snap.files:
        parts.append(f'<p class="ts-files">Saved: {escape(", ".join(snap.files))}</p>')
    if (sign := snap.memorising) is not None:
        parts.append(f'<p class="ts-warning ts-memorising" data-code="VALIDATION_LOSS_RISING">'
                     f"{escape(sign.message)}</p>")
    parts.append(loss_svg(snap.losses, snap.val_losses))
    parts.append("</div>")
    return "".join(parts)


def differential_html(stage1: RunSnapshot, stage2: RunSnapshot) -> str:
    """What 'Train both stages' made: the two runs, their concepts, and stage 2's warnings."""
    def concepts(snap: RunSnapshot) -> str:
        return escape(", ".join(snap.meta.get("concepts", [])))

    warnings = "".join(f'<li class="ts-warning">{escape(str(w))}</li>' for w in stage2.meta.get("warnings", []))
    return ('<div class="ts-differential" id="train_style_differential_made">'
            f"<p>Stage 1 <b>{escape(stage1.id)}</b> ({concepts(stage1)}) is {escape(stage1.state)}; stage 2 "
            f"<b>{escape(stage2.id)}</b> ({concepts(stage2)}) trains over its final LoRA and starts when it has "
            "succeeded. Use the stage 2 LoRA alone, at weight 1.</p>"
            + (f"<ul>{warnings}</ul>" if warnings else "") + "</div>")


def _meta_line(meta: Mapping) -> str:
    bits = [str(meta[k]) for k in ("preset", "base_arch") if meta.get(k)]
    if meta.get("base_model"):
        bits.append(Path(str(meta["base_model"])).name)
    return " · ".join(bits)


VALIDATION_COLOUR = "#d9480f"  # the validation curve; the training curve takes the text colour


def loss_svg(losses: Sequence[Sequence[float]], val_losses: Sequence[Sequence[float]] = (), width: int = 480,
             height: int = 140) -> str:
    """sd-scripts' average training loss over the steps as an inline SVG polyline, and with it, on the same axes in
    another colour, the validation loss of each check ([epoch, step, loss]) with a legend. Empty until there are
    two training points; only numbers and fixed words go into the SVG."""
    points = [(float(s), float(v)) for s, v in losses or () if v == v]  # v == v drops NaN
    checks = [(float(s), float(v)) for _, s, v in val_losses or () if v == v]
    if len(points) < 2:
        return ""
    pad = 28
    (x0, x1) = _span([x for x, _ in points + checks])
    (y0, y1) = _span([y for _, y in points + checks])

    def at(x: float, y: float) -> tuple[float, float]:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad), height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    line = " ".join("{:.1f},{:.1f}".format(*at(x, y)) for x, y in points)
    title = "training and validation loss by step" if checks else "average loss by step"
    return (f'<svg class="ts-loss" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{title}"><title>{title}</title>'
            f'<polyline class="ts-loss-train" fill="none" stroke="currentColor" stroke-width="1.5" points="{line}"/>'
            + _validation_marks([at(x, y) for x, y in checks])
            + f'<text x="2" y="{pad - 8}" font-size="10">{y1:.3g}</text>'
            f'<text x="2" y="{height - pad + 4}" font-size="10">{y0:.3g}</text>'
            f'<text x="{pad}" y="{height - 6}" font-size="10">step {x0:g}</text>'
            f'<text x="{width - pad}" y="{height - 6}" font-size="10" text-anchor="end">step {x1:g}</text></svg>')


def _validation_marks(checks: Sequence[tuple[float, float]]) -> str:
    """The validation curve from its checks in SVG coordinates (a dot each, joined) and the legend naming both
    curves."""
    if not checks:
        return ""
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{VALIDATION_COLOUR}"/>' for x, y in checks)
    joined = " ".join(f"{x:.1f},{y:.1f}" for x, y in checks)
    line = (f'<polyline class="ts-loss-validation" fill="none" stroke="{VALIDATION_COLOUR}" stroke-width="1.5" '
            f'stroke-dasharray="4 2" points="{joined}"/>' if len(checks) > 1 else "")
    legend = ('<g class="ts-loss-legend" font-size="10">'
              '<line x1="300" y1="10" x2="316" y2="10" stroke="currentColor" stroke-width="1.5"/>'
              '<text x="320" y="13">training</text>'
              f'<line x1="380" y1="10" x2="396" y2="10" stroke="{VALIDATION_COLOUR}" stroke-width="1.5" '
              'stroke-dasharray="4 2"/><text x="400" y="13">validation</text></g>')
    return line + dots + legend


def _span(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


@dataclass(frozen=True)
class SampleName:
    """What sd-scripts put in a sample image's file name."""

    step: Optional[int]
    epoch: Optional[int]
    index: int
    seed: Optional[int]


def parse_sample_name(filename: str) -> Optional[SampleName]:
    m = _SAMPLE_NAME.match(Path(filename).name)
    if not m:
        return None
    def num(key: str) -> Optional[int]:
        return int(m.group(key)) if m.group(key) is not None else None
    return SampleName(step=num("step"), epoch=num("epoch"), index=int(m.group("index")), seed=num("seed"))


def sample_items(snap: Optional[RunSnapshot]) -> list[tuple[str, str]]:
    """(path, caption) for the gallery, newest first; the caption names the step (or epoch) and the prompt."""
    if snap is None:
        return []
    prompts = _prompts(snap.dir / "sample_prompts.txt")
    items = []
    for rel in snap.samples:
        info = parse_sample_name(rel)
        if info is None:
            items.append((-1, str(snap.dir / rel), Path(rel).name))
            continue
        when = f"epoch {info.epoch}" if info.epoch is not None else f"step {info.step}"
        prompt = prompts[info.index] if info.index < len(prompts) else f"prompt {info.index}"
        items.append((info.epoch if info.epoch is not None else info.step, str(snap.dir / rel), f"{when}: {prompt}"))
    items.sort(key=lambda t: -t[0])
    return [(path, caption) for _, path, caption in items]


def _prompts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [ln.split(" --", 1)[0].strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def run_choices(snaps: Sequence[RunSnapshot]) -> list[str]:
    """Dropdown entries: `<run id> — <state>`; `run_id_of` reads the id back."""
    return [f"{s.id} — {s.state}" for s in snaps]


def run_id_of(choice: Optional[str]) -> str:
    return (choice or "").split(" — ", 1)[0].strip()


def registered_html(done: Sequence[Registered]) -> str:
    rows = "".join(f"<li><code>{escape(d.lora.name)}</code> → {escape(str(d.lora.parent))}"
                   + (" (with preview)" if d.preview else "") + "</li>" for d in done)
    return f'<div class="ts-registered"><p>Registered {len(done)} file(s) with their cards:</p><ul>{rows}</ul></div>'


# --- the trainer ----------------------------------------------------------------------------------------------------
def trainer_html(env: TrainerEnvironment, report: Optional[DoctorReport] = None) -> str:
    """One status line from the doctor's last probe of this interpreter (`report`, cached: no process starts
    here); without one, what our own setup still has to do, or that the environment is not checked yet."""
    python = escape(str(env.python))
    if report is not None and report.ok:
        return f'<p class="ts-ok" id="train_style_trainer_ready">Trainer ready: {python}</p>'
    if report is not None:
        first = next(p for p in report.problems if p.severity == "error")
        return (f'<p class="ts-warning">The trainer is not ready ({python}): {escape(first.what)} Fix: '
                f"{escape(first.fix)}</p>")
    if env.exists() and not env.state_file.exists():
        return (f'<p class="ts-note">Trainer: {python} (an existing environment, checked when you press Check or '
                "Check trainer).</p>")
    if env.setup_complete():
        return f'<p class="ts-note">Trainer: {python} (set up; checked when you press Check or Check trainer).</p>'
    state = "is incomplete" if env.exists() else "is not set up"
    return (f'<p class="ts-warning">The trainer environment {state} ({escape(str(env.venv_dir))}). Press '
            "<b>Set up trainer</b>; it downloads PyTorch and sd-scripts' requirements (several GB), or name an "
            "existing sd-scripts environment's python in the settings (TRAIN_STYLE_TRAINER_PYTHON).</p>")


def doctor_html(rep: DoctorReport) -> str:
    rows = [("python", rep.python_version), ("torch", rep.torch_version), ("CUDA", rep.cuda_available),
            ("GPU", rep.device_name), ("VRAM free / total (MB)", f"{rep.vram_free_mb} / {rep.vram_total_mb}"),
            ("sd-scripts", f"{rep.sd_scripts_commit} (pinned {rep.sd_scripts_pinned})"),
            ("LyCORIS", rep.lycoris_version), ("bitsandbytes", "ok" if rep.bitsandbytes_ok else "missing"),
            ("SDPA", rep.sdpa_available)]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    problems = "".join(f'<li class="ts-{_attr(p.severity)}">{escape(p.what)} <span class="ts-fix">Fix: '
                       f"{escape(p.fix)}</span></li>" for p in rep.problems)
    return f'<table class="ts-table">{body}</table>' + (f"<ul>{problems}</ul>" if problems else "")


def setup_job_html(job: Optional[JobState]) -> str:
    """The setup job's bar; the page script keeps it current (same markup as the import job's)."""
    return job_html(job, SETUP_JOB_ID)



def queue_html(rows: Sequence[tuple[str, str, str]]) -> str:
    """The training queue, in order: (project, run, state)."""
    if not rows:
        return '<p class="ts-note">The training queue is empty.</p>'
    items = "".join(f"<li>{escape(run)} <span class=\"ts-run-meta\">({escape(project)}, {escape(state)})</span></li>"
                    for project, run, state in rows)
    return f'<div class="ts-queue"><b>Training queue</b><ol>{items}</ol></div>'


def note_html(text: str) -> str:
    return f'<p class="ts-note">{escape(text)}</p>'

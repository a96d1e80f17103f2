"""The Autopilot panel: a folder, a preset, a base model and a trigger → "Train and judge" runs the whole chain as one
job (import, tag, audit, plan, train, register, judge, card); its steps are listed with their state, progress and a
link to what each produced. The newest chain of the project is shown again after a reload; a paused, failed or
interrupted one goes on with Continue.

Handlers read the values, make one Studio call with a request built by `AutopilotRequest.from_dict`, and draw the
chain's record (`steps_html`)."""

from __future__ import annotations

from html import escape
from typing import Any, Optional
from urllib.parse import quote

import gradio as gr

from ..autopilot.service import AUTOPILOT_SCHEMA, STEPS, AutopilotRequest
from ..errors import LorakitError
from ..jobs import JobState
from ..judge.service import JUDGE_SCHEMA
from ..studio import Studio
from ..train.service import set_items
from ..websec import API_PREFIX
from . import render
from .compat import bind, unchanged

JOB_ID = "train_style_autopilot_job"  # the page script polls it, redrawing the steps as each one ends
STATE_MARK = {"done": "✔", "skipped": "–", "running": "…", "failed": "✖", "cancelled": "■", "interrupted": "!",
              "pending": "·"}


class AutopilotPanel:
    """Runs the chain on the project chosen above the panels (`project` is that dropdown)."""

    def __init__(self, studio: Studio, project: gr.components.Component):
        self.studio = studio
        self.project = project

    # --- layout ------------------------------------------------------------------------------------------------------
    def render(self) -> None:
        gr.HTML('<p class="ts-note">From a folder to a judged LoRA in one click: the images are imported and tagged, '
                "the captions audited, the preset trained, the LoRA registered and judged, and the recommended "
                "weight written on its card. Pause after a step to look and edit; Continue goes on from there.</p>")
        self.stamp = gr.State("")
        self.chain = gr.State("")
        with gr.Row():
            self.folder = gr.Textbox(label="Folder of images (on this machine, inside the allowed folders)",
                                     elem_id="train_style_autopilot_folder")
            self.trigger = gr.Textbox(label=AUTOPILOT_SCHEMA["trigger"].title, placeholder="zkstyle",
                                      elem_id="train_style_autopilot_trigger")
        with gr.Row():
            presets, bases = self._presets(), list(self._checkpoints())
            self.preset = gr.Dropdown(label="Preset", choices=presets, value=presets[0] if presets else None,
                                      elem_id="train_style_autopilot_preset", interactive=True)
            self.base = gr.Dropdown(label="Base model", choices=bases, value=bases[0] if bases else None,
                                    interactive=True, elem_id="train_style_autopilot_base_model")
            self.refresh_lists = gr.Button("↻", elem_id="train_style_autopilot_lists", scale=0, min_width=40)
        with gr.Row():
            self.accept = gr.Checkbox(label="Accept the audit's warnings (its errors always stop)",
                                      elem_id="train_style_autopilot_accept")
            self.pause = gr.Dropdown(label="Pause after", choices=["", *STEPS], value="", interactive=True,
                                     elem_id="train_style_autopilot_pause")
        with gr.Accordion("More settings", open=False, elem_id="train_style_autopilot_more"):
            self.overrides = gr.Textbox(label="Training options (one name=value per line, e.g. max_train_epochs=8)",
                                        lines=2, elem_id="train_style_autopilot_overrides")
            self.judge = gr.Textbox(label="Judge settings (one name=value per line, e.g. weights=0.6,0.8,1)",
                                    lines=2, elem_id="train_style_autopilot_judge")
        with gr.Row():
            self.start = gr.Button("Train and judge", variant="primary", elem_id="train_style_autopilot_start")
            self.go_on = gr.Button("Continue", elem_id="train_style_autopilot_continue")
            self.cancel = gr.Button("Cancel", elem_id="train_style_autopilot_cancel")
            self.refresh = gr.Button("refresh", elem_id="train_style_autopilot_refresh", elem_classes=["ts-hidden"])
        self.job = gr.HTML(render.job_html(None, JOB_ID), elem_id="train_style_autopilot_job_box")
        self.steps = gr.HTML(steps_html(None), elem_id="train_style_autopilot_steps")

    def register(self) -> None:
        views = [self.chain, self.job, self.steps, self.stamp]
        inputs = [self.project, self.folder, self.preset, self.base, self.trigger, self.accept, self.pause,
                  self.overrides, self.judge]
        bind(self.start.click, self._start, inputs, views)
        bind(self.go_on.click, self._continue, [self.project, self.chain, self.accept, self.pause], views)
        bind(self.cancel.click, self._cancel, [self.project, self.chain], views)
        bind(self.refresh.click, self._views, [self.project, self.chain], views)
        bind(self.project.change, self._views, [self.project], views)
        bind(self.refresh_lists.click, self._lists, [self.preset, self.base], [self.preset, self.base])
        self.sync_inputs = [self.stamp, self.chain]
        self.sync_outputs = views

    # --- handlers ----------------------------------------------------------------------------------------------------
    def _start(self, name: Optional[str], folder: str, preset: Optional[str], base: Optional[str], trigger: str,
               accept: bool, pause: Optional[str], overrides: str, judge: str) -> tuple:
        if not name:
            raise LorakitError("Choose or create a project first (above the panels).")
        if not base and not self._checkpoints():
            raise LorakitError(f"No checkpoint to train on: put one (a .safetensors file) into "
                               f"{self.studio.host.models_dir() / 'Stable-diffusion'} and press ↻ beside Base model.")
        options, extra = set_items(line for line in (overrides or "").splitlines() if line.strip())
        data = {"folder": (folder or "").strip(), "preset": preset or "", "base_model": self._checkpoints().get(
                    base or "", base or ""), "trigger": (trigger or "").strip(), "accept_warnings": bool(accept),
                "pause_after": pause or "", "overrides": options, "extra_args": extra,
                "judge": JUDGE_SCHEMA.parse_set(line for line in (judge or "").splitlines() if line.strip())}
        record, job = self.studio.autopilot.start(name, AutopilotRequest.from_dict(data))
        return self._drawn(name, record, job)

    def _continue(self, name: Optional[str], chain: str, accept: bool, pause: Optional[str]) -> tuple:
        if not name:
            raise LorakitError("Choose a project first (above the panels).")
        record, job = self.studio.autopilot.start_resume(name, chain or None, accept_warnings=bool(accept) or None,
                                                         pause_after=pause or "")
        return self._drawn(name, record, job)

    def _cancel(self, name: Optional[str], chain: str) -> tuple:
        record = self._record(name, chain)
        if record and record.get("job"):
            self.studio.jobs.cancel(record["job"])
        return self._views(name, chain)

    def _views(self, name: Optional[str], chain: str = "") -> tuple:
        record = self._record(name, chain)
        job = self._job(record)
        return self._drawn(name, record, job)

    def sync(self, name: Optional[str], stamp: str, chain: str) -> tuple:
        """Redrawn when the project changed since `stamp` (a chain's run, the captions, …); else as it is."""
        if name and stamp == self.studio.stamp(name):
            return unchanged(len(self.sync_outputs))
        return self._views(name, chain)

    # --- helpers -----------------------------------------------------------------------------------------------------
    def _drawn(self, name: Optional[str], record: Optional[dict], job: Optional[JobState]) -> tuple:
        stamp = self.studio.stamp(name) if name else ""
        return (record["id"] if record else "", render.job_html(job, JOB_ID, with_error=False), steps_html(record),
                stamp)

    def _record(self, name: Optional[str], chain: str) -> Optional[dict]:
        """The chain shown (the project's newest when none is, or when it belongs to another project)."""
        if not name:
            return None
        try:
            return self.studio.autopilot.show(name, chain or None)
        except LorakitError:
            try:
                return self.studio.autopilot.show(name) if chain else None
            except LorakitError:
                return None

    def _job(self, record: Optional[dict]) -> Optional[JobState]:
        if not record or not record.get("job"):
            return None
        try:
            return self.studio.jobs.get(record["job"])
        except LorakitError:
            return None

    def _presets(self) -> list[str]:
        return [p.name for p in self.studio.training(local_user=False).presets()]

    def _checkpoints(self) -> dict[str, str]:
        """Dropdown label (`name (arch)`) → path, as the Train panel lists them."""
        return {f"{c.name} ({c.arch})": str(c.path) for c in self.studio.host.checkpoints()}

    def _lists(self, preset: Optional[str], base: Optional[str]) -> tuple[Any, Any]:
        names, bases = self._presets(), list(self._checkpoints())
        return (gr.update(choices=names, value=preset if preset in names else (names[0] if names else None)),
                gr.update(choices=bases, value=base if base in bases else (bases[0] if bases else None)))


# --- drawing -----------------------------------------------------------------------------------------------------
def steps_html(record: Optional[dict]) -> str:
    """The chain's steps as a table: state, progress, what each produced (links) and why one stopped."""
    if not record:
        return '<p class="ts-note" id="train_style_autopilot_none">No chain yet in this project.</p>'
    rows = []
    for step in record["steps"]:
        progress = f"{step['done']}/{step['total']}" if step.get("total") else ""
        rows.append(
            f'<tr data-step="{escape(step["name"])}" data-state="{escape(step["state"])}">'
            f'<td>{escape(step["title"])}</td>'
            f'<td class="ts-step-state">{STATE_MARK.get(step["state"], "")} {escape(step["state"])}</td>'
            f'<td>{escape(progress)} {escape(step.get("message") or "")}</td>'
            f'<td>{produced_html(record["project"], step)}</td></tr>'
            + (f'<tr class="ts-step-error"><td></td><td colspan="3">{escape(step["error"])}</td></tr>'
               if step.get("error") else ""))
    head = (f'<p id="train_style_autopilot_state" data-state="{escape(record["state"])}">Chain '
            f'{escape(record["id"])}: <b>{escape(record["state"])}</b>'
            + (f" — {escape(record['error'])}" if record.get("error") else "") + "</p>")
    return (head + '<table class="ts-table" id="train_style_autopilot_table"><tr><th>step</th><th>state</th>'
            "<th>progress</th><th>result</th></tr>" + "".join(rows) + "</table>")


def produced_html(project: str, step: dict) -> str:
    """What a step produced, in words, with links to the run, the grid and the judge's report."""
    r = step.get("result") or {}
    base = f"{API_PREFIX}/projects/{quote(project, safe='')}"
    name = step["name"]
    if name in ("import", "tag"):
        return escape(r.get("summary", ""))
    if name == "audit" and (r.get("errors") or r.get("warnings")):
        return escape(f"{len(r.get('errors', []))} error(s), {len(r.get('warnings', []))} warning(s)")
    if name == "plan" and "total_steps" in r:
        return escape(f"{r['total_steps']} steps, {r.get('epochs')} epochs ({r.get('base_arch')})")
    if name == "train" and r.get("run"):
        return _link(f"{base}/runs/{quote(r['run'], safe='')}", f"run {r['run']}")
    if name == "register" and r.get("registered"):
        return escape(", ".join(str(x["lora"]).rsplit("/", 1)[-1] for x in r["registered"]))
    if name == "judge" and r.get("grid"):
        grid = quote(r["grid"], safe="")
        rec = r.get("recommendation")
        words = (f"{rec['epoch']} at weight {rec['weight']}" if rec else r.get("why_none") or "")
        return (_link(f"{base}/eval/{grid}/grid.png", f"grid {r['grid']}") + " · "
                + _link(f"{base}/eval/{grid}/judge", "judge.json") + f" — {escape(str(words))}. The Judge tab "
                "shows why, and every copy beside the training image it copies.")
    if name == "card":
        if r.get("card"):
            return escape(f"preferred weight {r.get('weight')} on {str(r['card']).rsplit('/', 1)[-1]}")
        return escape(r.get("why_none", ""))
    return ""


def _link(url: str, text: str) -> str:
    return f'<a href="{escape(url)}" target="_blank" rel="noopener">{escape(text)}</a>'

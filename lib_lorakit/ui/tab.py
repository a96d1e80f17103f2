"""The Train Style tab: one gr.Blocks holding the project picker and the panels, used by the webui and by the
standalone app.

The project is chosen once, above the panels, and every panel follows it (`project.change`). A panel remembers the
project's change stamp (`next_step.change_stamp`) it was drawn at and redraws when the stamp moved: when its tab is
opened, and, for the open tab, when the page script clicks the hidden sync button (every few seconds while no job
runs). So an import in Dataset shows in Captions and Train as soon as they are opened, and a change made by the CLI
or another window shows within seconds, without reloading the page.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Optional, Protocol

import gradio as gr

from ..errors import LorakitError
from ..host import Host
from ..studio import Studio
from .autopilot_panel import AutopilotPanel
from .captions_panel import CaptionsPanel
from .compat import QUIET, bind
from .crop_panel import CropPanel
from .dataset_panel import DatasetPanel
from .direction_panel import DirectionPanel
from .inspect_panel import InspectPanel
from .judge_panel import JudgePanel
from .results_panel import ResultsPanel
from .train_panel import TrainPanel


class Synced(Protocol):
    """A panel that redraws itself when its project changed: `sync(project, stamp, *rest)` takes the values of
    `sync_inputs` (its stamp, a gr.State, first) and gives those of `sync_outputs`, all unchanged when the stamp is
    current."""

    sync_inputs: list
    sync_outputs: list

    def sync(self, name: Optional[str], stamp: str, *rest: Any) -> tuple: ...


class ProjectBar:
    """The tab's one project picker: every panel works on the project chosen here."""

    def __init__(self, studio: Studio):
        self.studio = studio

    def render(self) -> None:
        with gr.Row(elem_id="train_style_project_bar"):
            self.project = gr.Dropdown(label="Project (every panel works on this one)", choices=self._names(),
                                       elem_id="train_style_project", interactive=True)
            self.refresh = gr.Button("↻", elem_id="train_style_refresh_projects", scale=0, min_width=40)
            self.new_name = gr.Textbox(label="New project", placeholder="my-style", elem_id="train_style_new_name")
            self.create = gr.Button("Create project", elem_id="train_style_create", variant="primary")

    def register(self) -> None:
        bind(self.refresh.click, self._refresh, [self.project], [self.project])
        bind(self.create.click, self._create, [self.new_name], [self.project, self.new_name])

    def load_event(self, blocks: gr.Blocks) -> None:
        blocks.load(self._initial, None, [self.project], queue=False)

    def _names(self) -> list[str]:
        return [p.name for p in self.studio.projects()]

    def _initial(self) -> Any:
        names = self._names()
        return gr.update(choices=names, value=names[0] if names else None)

    def _refresh(self, current: Optional[str]) -> Any:
        names = self._names()
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def _create(self, name: str) -> tuple[Any, Any]:
        project = self.studio.create_project((name or "").strip())
        return gr.update(choices=self._names(), value=project.name), ""


def build_tab(host: Host) -> gr.Blocks:
    studio = Studio(host)
    with gr.Blocks(analytics_enabled=False, elem_id="train_style_tab") as blocks:
        bar = ProjectBar(studio)
        bar.render()
        with gr.Tabs(elem_id="train_style_tabs"):
            with gr.Tab("Dataset", elem_id="train_style_dataset_tab") as dataset_tab:
                dataset = DatasetPanel(studio, bar.project)
                dataset.render()
            with gr.Tab("Captions", elem_id="train_style_captions_tab") as captions_tab:
                captions = CaptionsPanel(studio, bar.project)
                captions.render()
            with gr.Tab("Crop", elem_id="train_style_crop_tab") as crop_tab:
                crop = CropPanel(studio, bar.project)
                crop.render()
            with gr.Tab("Direction", elem_id="train_style_direction_tab") as direction_tab:
                direction = DirectionPanel(studio, bar.project)
                direction.render()
            with gr.Tab("Train", elem_id="train_style_train_tab") as train_tab:
                train = TrainPanel(studio, bar.project)
                train.render()
            with gr.Tab("Results", elem_id="train_style_results_tab") as results_tab:
                results = ResultsPanel(studio, bar.project)
                results.render()
            with gr.Tab("Judge", elem_id="train_style_judge_tab") as judge_tab:
                judge = JudgePanel(studio, bar.project)
                judge.render()
            with gr.Tab("Autopilot", elem_id="train_style_autopilot_tab") as autopilot_tab:
                autopilot = AutopilotPanel(studio, bar.project)
                autopilot.render()
            with gr.Tab("Inspect", elem_id="train_style_inspect_tab") as inspect_tab:
                inspect = InspectPanel(studio)
                inspect.render()
        bar.register()
        dataset.register()
        inspect.register()
        captions.register()
        crop.register()
        direction.register()
        train.register()
        results.register()
        judge.register()
        autopilot.register()
        wire_sync(studio, bar.project, [(dataset_tab, dataset), (captions_tab, captions), (crop_tab, crop),
                                              (direction_tab, direction), (train_tab, train),
                                              (results_tab, results), (judge_tab, judge),
                                              (autopilot_tab, autopilot)],
                  unsynced=[inspect_tab])
        bar.load_event(blocks)
        train.load_event(blocks)
    return blocks


def wire_sync(studio: Studio, project: gr.components.Component, tabs: list[tuple[gr.Tab, Synced]],
              unsynced: list[gr.Tab]) -> None:
    """Opening a tab, or the hidden sync button for the open one (the page script clicks it), checks the panel's
    stamp; only a stale panel is redrawn, through its hidden signal box, so an idle check changes nothing on screen
    (gradio marks every output of an event as pending while it runs, which makes short HTML jump)."""
    current = gr.State(0)
    button = gr.Button("sync", elem_id="train_style_sync", elem_classes=["ts-hidden"])
    for tab in unsynced:
        bind(tab.select, lambda: -1, [], [current], show_progress=QUIET)
    signals = []
    for index, (tab, panel) in enumerate(tabs):
        signal = gr.Textbox(label="sync", elem_id=f"train_style_sync_{index}", elem_classes=["ts-hidden"])
        bind(signal.change, panel.sync, [project, *panel.sync_inputs], panel.sync_outputs, show_progress=QUIET)
        bind(tab.select, functools.partial(_opened, studio, index), [project, panel.sync_inputs[0]],
             [current, signal], show_progress=QUIET)
        signals.append(signal)
    stamps = [panel.sync_inputs[0] for _, panel in tabs]
    bind(button.click, functools.partial(_tick, studio), [project, current, *stamps], signals, show_progress=QUIET)


def _signal(studio: Studio, name: Optional[str], stamp: str) -> Any:
    """A new value for a panel's signal box (its change redraws the panel) when the panel is stale, else none."""
    try:
        fresh = studio.stamp(name) if name else ""
    except LorakitError:  # the project went away: the picker's ↻ says so when pressed
        return gr.update()
    return gr.update() if stamp == fresh else str(time.time_ns())


def _opened(studio: Studio, index: int, name: Optional[str], stamp: str) -> tuple:
    return index, _signal(studio, name, stamp)


def _tick(studio: Studio, name: Optional[str], current: int, *stamps: str) -> tuple:
    """The open panel checked; the others are left as they are (they are checked when opened)."""
    return tuple(_signal(studio, name, stamp) if index == current else gr.update()
                 for index, stamp in enumerate(stamps))

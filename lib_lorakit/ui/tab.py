"""The Train Style tab: one gr.Blocks holding the panels, used by the webui and by the standalone app."""

from __future__ import annotations

import gradio as gr

from ..host import Host
from ..studio import Studio
from .captions_panel import CaptionsPanel
from .dataset_panel import DatasetPanel
from .inspect_panel import InspectPanel
from .train_panel import TrainPanel


def build_tab(host: Host) -> gr.Blocks:
    studio = Studio(host)
    with gr.Blocks(analytics_enabled=False, elem_id="train_style_tab") as blocks:
        with gr.Tabs(elem_id="train_style_tabs"):
            with gr.Tab("Dataset", elem_id="train_style_dataset_tab"):
                dataset = DatasetPanel(studio)
                dataset.render()
            with gr.Tab("Captions", elem_id="train_style_captions_tab"):
                captions = CaptionsPanel(studio, dataset.project)
                captions.render()
            with gr.Tab("Train", elem_id="train_style_train_tab"):
                train = TrainPanel(studio, dataset.project)
                train.render()
            with gr.Tab("Inspect", elem_id="train_style_inspect_tab"):
                inspect = InspectPanel()
                inspect.render()
        dataset.register()
        inspect.register()
        captions.register()
        train.register()
        dataset.load_event(blocks)
        train.load_event(blocks)
    return blocks

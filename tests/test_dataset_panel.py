"""The Dataset panel's handlers, without a browser: what its buttons do to the project's jobs."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("gradio")

from lib_lorakit.host import StandaloneHost  # noqa: E402
from lib_lorakit.studio import Studio  # noqa: E402
from lib_lorakit.ui.dataset_panel import DatasetPanel  # noqa: E402


def _waiting_job(studio: Studio, kind: str):
    started = threading.Event()

    def work(progress, cancel):
        started.set()
        cancel.wait(10)
        return {}

    job = studio.jobs.start(kind=kind, project="p", title=kind, work=work)
    started.wait(5)
    return job


def test_cancel_import_leaves_a_tagging_run_alone(tmp_path):
    studio = Studio(StandaloneHost.from_options(home=str(tmp_path / "home"), config=tmp_path / "none.toml"))
    studio.create_project("p")
    tagging, importing = _waiting_job(studio, "tag"), _waiting_job(studio, "import")
    DatasetPanel(studio)._cancel("p")
    assert studio.jobs.wait(importing.id, 5).state == "cancelled"
    assert studio.jobs.get(tagging.id).state == "running"
    studio.jobs.cancel(tagging.id)
    assert studio.jobs.wait(tagging.id, 5).state == "cancelled"


def test_repeats_reach_the_core_unchanged(tmp_path):
    panel = DatasetPanel(Studio(StandaloneHost.from_options(home=str(tmp_path), config=tmp_path / "none.toml")))
    assert panel._options("c", -2.0, False)["repeats"] == -2  # refused by the core with its reason, not made 1
    assert panel._options("c", 0.0, False)["repeats"] is None  # 0 (gradio 3's empty field): keep the concept's
    assert panel._options("c", 3.0, True) == {"concept": "c", "repeats": 3, "kind": "reg"}
    assert panel._options("", None, False)["repeats"] is None

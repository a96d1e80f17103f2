"""The Dataset panel's "Generate regularisation images" accordion: its handlers without a browser (the fake generator
of tests/test_reg.py), and the whole tab built with it."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio")

from test_reg import PROMPT, DrawingGenerator, GeneratingHost  # noqa: E402

from lib_lorakit.errors import LorakitError  # noqa: E402
from lib_lorakit.studio import Studio  # noqa: E402
from lib_lorakit.ui.reg_panel import RegAccordion  # noqa: E402


@pytest.fixture
def panel(tmp_path) -> RegAccordion:
    studio = Studio(GeneratingHost(tmp_path, DrawingGenerator()))
    studio.create_project("demo", resolution=64)
    return RegAccordion(studio)


def test_generate_runs_a_job_and_its_end_shows_what_it_made(panel):
    box, line = panel._start("demo", "woman", PROMPT + ", <b>bold</b>", "", 3.0, 2.0)
    assert 'id="train_style_reg_job"' in box and "data-job-id" in box
    assert "Making 3 of 3 images" in line and "64×64" in line and "reg/2_woman" in line
    assert "&lt;b&gt;bold&lt;/b&gt;" in line and "<b>bold" not in line  # the prompt is the user's text: escaped
    job = panel.studio.jobs.list("demo")[0]
    assert panel.studio.jobs.wait(job.id, 60).state == "done"
    box, outcome = panel._last("demo")
    assert 'data-state="done"' in box and "reg/2_woman: 3 image(s) made at 64×64, 3 of 3 present" in outcome
    assert len(list((panel.studio.project("demo").root / "reg" / "2_woman").glob("*.png"))) == 3
    # pressed again: nothing missing, nothing made
    panel._start("demo", "woman", PROMPT, "", 3.0, 0.0)
    job = panel.studio.jobs.list("demo")[0]
    panel.studio.jobs.wait(job.id, 60)
    assert "0 image(s) made" in panel._last("demo")[1]


def test_bad_fields_and_no_project_are_said_by_name(panel):
    with pytest.raises(LorakitError, match="Choose or create a project"):
        panel._start(None, "woman", PROMPT, "", 3.0, 0.0)
    with pytest.raises(LorakitError) as e:
        panel._start("demo", "a/b", "", "", 2.5, 0.0)
    assert "class_name:" in str(e.value) and "prompt: required" in str(e.value) and "count:" in str(e.value)
    assert panel.studio.jobs.list("demo") == []


def test_cancel_stops_the_batch_and_leaves_other_jobs_alone(tmp_path):
    fake = DrawingGenerator(hold_after=1)
    studio = Studio(GeneratingHost(tmp_path, fake))
    studio.create_project("demo", resolution=64)
    panel = RegAccordion(studio)
    panel._start("demo", "woman", PROMPT, "", 4.0, 0.0)
    assert fake.reached.wait(30)
    other = studio.jobs.start(kind="import", project="demo", title="x", work=lambda p, c: c.wait(10) or {})
    panel._cancel("demo")
    job = next(j for j in studio.jobs.list("demo") if j.kind == "reg")
    assert studio.jobs.wait(job.id, 60).state == "cancelled"
    assert "1 of 4 present" in panel._last("demo")[1] and "cancelled" in panel._last("demo")[1]
    assert studio.jobs.get(other.id).state == "running"
    studio.jobs.cancel(other.id)


def test_the_tab_builds_with_the_accordion(tmp_path):
    from lib_lorakit.ui.tab import build_tab

    blocks = build_tab(GeneratingHost(tmp_path, DrawingGenerator()))
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert {"train_style_reg_generate", "train_style_reg_cancel", "train_style_reg_refresh"} <= ids

"""The Train panel's HTML: sample names as sd-scripts writes them, the loss curve, escaping."""

from __future__ import annotations

from pathlib import Path

from lib_lorakit.train.runner import RunSnapshot
from lib_lorakit.ui import render_train as render


def snapshot(tmp_path: Path, **kw) -> RunSnapshot:
    base = dict(id="20260101-000000-x", project="p<b>", dir=tmp_path, state="failed",
                progress={"step": 2, "total": 4, "epoch": 1, "epochs": 2, "loss": 0.5, "eta_s": 70},
                files=[], samples=[], error="boom <script>", advice="lower <batch>", log_tail=["<img src=x>"],
                losses=[[1, 0.9], [2, 0.5]], meta={"preset": "style-sd15-lora"})
    base.update(kw)
    return RunSnapshot(**base)


def test_sample_names_by_step_epoch_and_seed():
    s = render.parse_sample_name("sample/my_style_000250_01_20260101120000_42.png")
    assert (s.step, s.epoch, s.index, s.seed) == (250, None, 1, 42)
    e = render.parse_sample_name("art_e000003_00_20260101120000.png")
    assert (e.step, e.epoch, e.index, e.seed) == (None, 3, 0, None)
    assert render.parse_sample_name("000004_00_20260101120000_1.png").step == 4  # no output name
    assert render.parse_sample_name("notes.png") is None


def test_gallery_captions_name_the_step_and_prompt(tmp_path):
    (tmp_path / "sample_prompts.txt").write_text("zk, cat --w 64 --h 64 --d 1\ncat --w 64 --h 64 --d 1\n")
    snap = snapshot(tmp_path, samples=["sample/a_000002_00_20260101120000_1.png",
                                       "sample/a_000004_01_20260101120000_1.png"])
    assert render.sample_items(snap) == [(str(tmp_path / "sample/a_000004_01_20260101120000_1.png"), "step 4: cat"),
                                         (str(tmp_path / "sample/a_000002_00_20260101120000_1.png"),
                                          "step 2: zk, cat")]


def test_run_box_escapes_and_draws_the_loss(tmp_path):
    html = render.run_html(snapshot(tmp_path))
    for raw in ("<script>", "<batch>", "<img src=x>", 'data-project="p<b>"'):
        assert raw not in html
    assert "&lt;script&gt;" in html and 'data-state="failed"' in html and 'style="width:50%"' in html
    assert "Failed · epoch 1 of 2 · step 2/4 · 50 % · loss 0.5000" in html
    assert html.count("<polyline") == 1
    assert render.loss_svg([[1, 0.5]]) == ""


def test_run_choices_round_trip():
    snap = snapshot(Path("."), state="running")
    [choice] = render.run_choices([snap])
    assert render.run_id_of(choice) == snap.id and render.run_id_of(None) == ""

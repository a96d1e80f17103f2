"""The Direction panel's handlers without a browser, on drawn heads and a tiny open_clip model: estimate as a job,
groups, labels, normalise preview then apply (mirrored copy, swapped caption, originals untouched), the two undos,
settings, the sorter (classes, labels, train → accuracy → predictions, apply preview/apply/undo), clear messages,
and every text from files escaped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")

from test_direction import head  # noqa: E402
from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint  # noqa: E402

from lib_lorakit import next_step  # noqa: E402
from lib_lorakit.errors import LorakitError  # noqa: E402
from lib_lorakit.host import StandaloneHost  # noqa: E402
from lib_lorakit.studio import Studio  # noqa: E402
from lib_lorakit.ui import render_direction as rd  # noqa: E402
from lib_lorakit.ui.direction_panel import DirectionPanel, direction_groups, parse_chosen, teachable_files  # noqa: E402

EVIL = "<script>alert(1)</script>"
PLAN = {"l1": ("left", 0, "zkstyle, 1girl, facing left"),
        "l2": ("left", 4, "zkstyle, 1girl, from side"),
        "l3": ("left", -4, "zkstyle, 1boy, looking at viewer"),
        "r1": ("right", 0, "zkstyle, 1girl, facing right, hand on right hip"),
        "r2": ("right", 3, "zkstyle, 1girl, side ponytail, looking to the right"),
        "r3": ("right", -3, f"zkstyle, 1boy, {EVIL}, looking right")}


@pytest.fixture
def demo(tmp_path: Path) -> dict:
    """Six drawn heads (three facing each way) imported by upload into `demo`, the spec of a tiny open_clip."""
    src = tmp_path / "src"
    src.mkdir()
    files = []
    for stem, (facing, shift, caption) in PLAN.items():
        head(facing, shift=shift).save(src / f"{stem}.png")
        (src / f"{stem}.txt").write_text(caption)
        files += [(src / f"{stem}.png", f"{stem}.png"), (src / f"{stem}.txt", f"{stem}.txt")]
    models = tmp_path / "models"
    config = models / f"{TINY_MODEL}.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(TINY_CONFIG))
    register_tiny_clip(models)
    weights = save_tiny_checkpoint(models / "tiny.pt")
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "webui-models",
                          extra_roots=[models])
    studio = Studio(host)
    studio.create_project("demo")
    report = studio.import_uploads("demo", files, concept="heads")
    assert len(report.imported) == 6, report
    project = tmp_path / "home" / "demo"
    originals = {p: p.read_bytes() for p in (project / "originals").rglob("*") if p.is_file()}
    return {"studio": studio, "panel": DirectionPanel(studio, None), "project": project, "spec": f"{config}:{weights}",
            "img": {s: f"dataset/1_heads/{s}.png" for s in PLAN}, "originals": originals}


def views(panel: DirectionPanel, chosen: str = "") -> dict:
    out = panel._views("demo", chosen)
    names = ["next", "groups", "sort_status", "predictions", "sort_class", "swap_words", "flip_unsafe",
             "min_confidence", "chosen", "stamp"]
    assert len(out) == len(names)
    return dict(zip(names, out, strict=True))


def group_of(groups_html: str, image: str) -> str:
    """The direction block an image's card is drawn in."""
    at = groups_html.index(f'data-image="{image}"')
    return groups_html[:at].rsplit('data-direction="', 1)[1].split('"', 1)[0]


def finish(studio: Studio, job_html: str) -> str:
    job_id = job_html.split('data-job-id="', 1)[1].split('"', 1)[0]
    state = studio.jobs.wait(job_id, 120)
    assert state.state == "done", state.error
    return job_id


def test_estimate_label_preview_apply_and_undo(demo):
    studio, panel, img, project = demo["studio"], demo["panel"], demo["img"], demo["project"]
    # 1. before anything: every image unknown, the next line says to estimate
    v = views(panel)
    assert "directions not estimated yet" in v["next"] and "press Estimate" in v["next"]
    assert v["groups"].count('class="ts-pick') == 6 and group_of(v["groups"], img["l1"]) == "unknown"
    # 2. two labels by clicking (the chosen box) and a button: they move to their group at once
    outcome, *rest = panel._labeller("left")("demo", f"{img['l1']}\n{img['l2']}\n{img['l3']}")
    assert "3 image(s) labelled left" in outcome and "Re-estimate" in outcome
    panel._labeller("right")("demo", "\n".join(img[k] for k in ("r1", "r2", "r3")))
    v = views(panel, img["r1"])
    assert group_of(v["groups"], img["l1"]) == "left" and group_of(v["groups"], img["r2"]) == "right"
    assert "3 face left, 3 face right</b> — as many face left as right: choose the side" in v["next"]
    assert v["chosen"] == img["r1"] and 'ts-pick ts-chosen" data-image="dataset/1_heads/r1.png"' in v["groups"]
    # 3. the estimate job with the tiny embedder: its outcome and the groups drawn from it
    box, _ = panel._estimate("demo", demo["spec"], False)
    finish(studio, box)
    *_, job_box, estimated, _sorter = panel._finished("demo", "")
    assert 'data-state="done"' in job_box and "Estimated 6 image(s)" in estimated
    # 4. a tie (3 and 3) goes to the side of r2, which cannot flip (side ponytail); never-flip r3; previews write
    # nothing
    assert "Would flip 3 image(s) to face right" in panel._preview("demo", "the side most face", False, "")
    panel._labeller("never-flip")("demo", img["r3"])
    before = {p: p.read_bytes() for p in (project / "dataset").rglob("*") if p.is_file()}
    preview = panel._preview("demo", "left", False, "")
    assert "Would flip 1 image(s) to face left" in preview and "Would be mirrored (1)" in preview
    assert 'data-image="dataset/1_heads/r1.png"' in preview
    assert "side ponytail" in preview and "marked never flip" in preview  # r2 and r3 left alone, with why
    assert "facing right, hand on right hip" in preview and "facing left, hand on left hip" in preview
    assert {p: p.read_bytes() for p in (project / "dataset").rglob("*") if p.is_file()} == before
    # 5. Apply: r1 mirrored from its original, its caption swapped; gaze suggested; originals untouched
    applied, *rest = panel._apply("demo", "left", False, "")
    assert "Flipped 1 image(s)" in applied and "Caption the gaze" in applied
    assert np.array_equal(np.asarray(Image.open(project / img["r1"]).convert("RGB")), np.asarray(head("left")))
    assert (project / "dataset/1_heads/r1.txt").read_text().strip() == "zkstyle, 1girl, facing left, hand on left hip"
    assert {p: p.read_bytes() for p in (project / "originals").rglob("*") if p.is_file()} == demo["originals"]
    assert group_of(rest[1], img["r1"]) == "left"  # redrawn: it faces left now
    # 6. the two undos, each its own step
    text, *_ = panel._undo_captions("demo", "")
    assert "Captions: undone" in text and "facing right" in (project / "dataset/1_heads/r1.txt").read_text()
    text, *_ = panel._undo_flip("demo", "")
    assert "Images: undone" in text
    assert Image.open(project / img["r1"]).convert("RGB").tobytes() == head("right").tobytes()


def test_settings_are_read_checked_and_saved(demo):
    panel = demo["panel"]
    v = views(panel)
    assert "left:right" in v["swap_words"] and "side ponytail" in v["flip_unsafe"]
    outcome, swap, unsafe, sure = panel._save_settings("demo", "left:right, east:west", "eyepatch", 0.8)
    assert "saved" in outcome and swap == "left:right, east:west" and unsafe == "eyepatch" and sure == 0.8
    assert demo["studio"].direction.settings("demo").min_confidence == 0.8
    with pytest.raises(LorakitError, match="swap_words"):
        panel._save_settings("demo", "left-right", "eyepatch", 0.8)


def test_the_sorter_through_the_panel(demo):
    studio, panel, img, project = demo["studio"], demo["panel"], demo["img"], demo["project"]
    assert "No classes yet" in views(panel)["sort_status"]
    new, *rest = panel._add_class("demo", "facing <b>left</b>", "")
    assert new == "" and "facing &lt;b&gt;left&lt;/b&gt;" in rest[2] and "<b>left</b>" not in rest[2]
    panel._remove_class("demo", "facing <b>left</b>", "")
    for cls in ("lefties", "righties"):
        panel._add_class("demo", cls, "")
    with pytest.raises(LorakitError, match="Choose images first"):
        panel._label_class("demo", "lefties", "")
    panel._label_class("demo", "lefties", f"{img['l1']}\n{img['l2']}")
    text, *rest = panel._label_class("demo", "righties", f"{img['r1']}\n{img['r2']}")
    assert "2 image(s) labelled righties" in text
    assert "<td>lefties</td><td>2</td>" in rest[2] and "Not trained yet" in rest[2]
    # Train is a job; when it ends the panel shows the accuracy and sorts every image (a second job)
    box, _ = panel._train("demo", demo["spec"])
    finish(studio, box)
    opened = panel._select("demo")  # the project picked again: the outcome goes to the sorter's box
    assert len(opened) == 15 and opened[12] == "" and "cross-validated accuracy" in opened[13]
    *out, job_box, _, sorter = panel._finished("demo", "")
    assert "cross-validated accuracy" in sorter and "Sorting every image" in sorter
    finish(studio, job_box)
    *out, job_box, _, _ = panel._finished("demo", "")
    v = views(panel)
    assert "cross-validated accuracy" in v["sort_status"]
    cards = v["predictions"].split('class="ts-pick')[1:]
    assert len(cards) == 6 and "least certain first" in v["predictions"]
    assert "yours: lefties" in v["predictions"]
    # Apply into tags: a preview first (nothing written), then the tags, then concepts with undo
    captions = {p: p.read_text() for p in (project / "dataset").rglob("*.txt")}
    preview = panel._sort_preview("demo", "tags", 0.0, False, 0)
    assert "Would file 6 image(s) into tags" in preview
    assert {p: p.read_text() for p in (project / "dataset").rglob("*.txt")} == captions
    applied, *_ = panel._sort_apply("demo", "concepts", 0.0, False, 0)
    assert "Filed" in applied and (project / "dataset" / "1_lefties").is_dir()
    undone, *_ = panel._sort_undo("demo", "")
    assert "Undone" in undone and not (project / "dataset" / "1_lefties").exists()
    assert {p: p.read_bytes() for p in (project / "originals").rglob("*") if p.is_file()} == demo["originals"]


def test_clear_messages(tmp_path):
    panel = DirectionPanel(Studio(StandaloneHost(home=tmp_path / "h", lora=tmp_path / "l", models=tmp_path / "m")),
                           None)
    with pytest.raises(LorakitError, match="Choose or create a project"):
        panel._estimate(None, "", False)
    empty = panel._views(None)
    assert len(empty) == 10 and "Choose or create a project above" in empty[0]
    with pytest.raises(LorakitError, match="Choose images first"):
        panel._labeller("left")("demo", "  \n ")
    with pytest.raises(LorakitError, match="model_unquant.tflite and labels.txt"):
        teachable_files([(Path("/tmp/a.tflite"), "a.tflite")])
    assert teachable_files([(Path("/t/x"), "labels.txt"), (Path("/t/y"), "model_unquant.tflite")]) == \
        (Path("/t/y"), Path("/t/x"))
    assert parse_chosen(" a.png\n\nb.png\na.png ") == ["a.png", "b.png"]


def test_next_lines():
    status = next_step.ProjectStatus(project="p", concepts=(next_step.ConceptStatus("c", 7, 1, 7),),
                                     trigger_words=())
    assert next_step.direction_next(status, None).text.startswith("7 images, directions not estimated yet")
    line = next_step.direction_next(status, {"left": 5, "right": 2, "front": 0, "away": 0, "unknown": 0}).text
    assert line.startswith("5 face left, 2 face right — normalise them") and "the 2 facing right" in line
    done = next_step.direction_next(status, {"left": 5, "right": 0, "front": 2, "away": 0, "unknown": 0})
    assert done.done and "5 face left, 2 front" in done.text


def test_every_text_from_files_is_escaped():
    bad = f"dataset/1_x/{EVIL}.png"
    groups, counts = direction_groups(
        [bad], {"images": [{"image": bad, "direction": "left", "confidence": 0.9, "reason": EVIL}]},
        {"labels": {}, "never_flip": [bad]}, {bad: "data:image/png;base64,AA=="}, {bad}, min_confidence=0.6)
    html = rd.groups_html(groups)
    assert counts["left"] == 1 and "never flip" in html and "ts-chosen" in html
    assert EVIL not in html and "&lt;script&gt;" in html
    report = {"dry_run": True, "flipped": [bad], "unsafe": [{"image": bad, "reason": EVIL}],
              "captions": [{"image": bad, "before": EVIL, "after": EVIL}], "kept": [],
              "suggestions": [{"image": bad, "direction": "left", "tags": [EVIL]}]}
    pages = [rd.normalise_html({**report, "to": EVIL}, {bad: "x"}),
             rd.normalise_html({**report, "dry_run": False}, {}),
             rd.estimate_html({"images": [], "groups": {"left": [bad]}, "notes": [EVIL], "embedder": EVIL,
                               "skipped": [{"image": bad, "reason": EVIL}]}),
             rd.sort_status_html({"classes": [EVIL], "labels": {bad: EVIL},
                                  "classifier": {"examples": 2, "cv_accuracy": 0.5, "embedder": EVIL}}),
             rd.train_html({"examples": {EVIL: 2}, "cv_accuracy": None, "skipped": [{"image": bad, "reason": EVIL}]}),
             rd.sort_apply_html({"into": EVIL, "dry_run": True, "applied": [{"image": bad, "class": EVIL,
                                                                             "confidence": 0.5, "to": EVIL}],
                                 "skipped": [{"image": bad, "reason": EVIL}]}),
             rd.predictions_html([rd.Card(image=bad, picture="x", lines=(EVIL,), badges=(EVIL,))], total=1),
             rd.labels_html(1, EVIL), rd.undo_html(EVIL, EVIL, 1)]
    for page in pages:
        assert "<script>" not in page and "&lt;script&gt;" in page, page


def test_the_tab_has_the_direction_sub_tab_after_crop(tmp_path):
    from lib_lorakit.ui.tab import build_tab

    blocks = build_tab(StandaloneHost(home=tmp_path / "h", lora=tmp_path / "l", models=tmp_path / "m"))
    config = blocks.get_config_file()
    labels = [c["props"].get("label") for c in config["components"] if c.get("type") in ("tabitem", "tab")]
    assert labels.index("Direction") == labels.index("Crop") + 1, labels
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"train_style_direction_groups", "train_style_direction_chosen", "train_style_sort_train",
            "train_style_direction_refresh"} <= ids


def test_a_teachable_machine_export_dropped_on_the_panel_sorts_the_images(demo, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from tiny_tflite import write_model

    studio, panel = demo["studio"], demo["panel"]
    upload = tmp_path / "gradio-upload"  # where the server keeps what was dropped: not an allowed folder
    model = write_model(upload / "model_unquant.tflite")
    (upload / "labels.txt").write_text("0 red\n1 <b>blue</b>\n")
    with pytest.raises(LorakitError, match="model_unquant.tflite and labels.txt"):
        panel._import_teachable("demo", [str(model)], "")
    text, cleared, *rest = panel._import_teachable("demo", [str(model), str(upload / "labels.txt")], "")
    assert "classes: red, &lt;b&gt;blue&lt;/b&gt;" in text and cleared is None
    assert "Teachable Machine model (imported)" in rest[2] and "<b>blue</b>" not in rest[2]
    box, _ = panel._predict("demo")
    finish(studio, box)
    predictions = views(panel)["predictions"]
    assert predictions.count('class="ts-pick') == 6 and "&lt;b&gt;blue&lt;/b&gt;" in predictions  # drawn blue heads


def test_groups_count_every_image_and_show_the_least_sure_first():
    rows = [{"image": "a", "direction": "left", "confidence": 0.9}, {"image": "b", "direction": "left",
                                                                     "confidence": 0.5},
            {"image": "c", "direction": "left", "confidence": 0.7}, {"image": "d", "direction": "right"}]
    groups, counts = direction_groups(["a", "b", "c", "d", "e"], {"images": rows}, {"labels": {"a": "left"}},
                                      {i: "x" for i in "abd"}, set(), min_confidence=0.6)
    left = next(g for g in groups if g.key == "left")
    assert [c.image for c in left.cards] == ["b", "a"] and left.cards[0].low and not left.cards[1].low
    assert counts == {"left": 3, "right": 1, "front": 0, "away": 0, "unknown": 1}
    html = rd.groups_html(groups, hidden=2)
    assert "Faces left (3)" in html and "Unknown (1)" in html and "2 more image(s), not shown" in html

"""One door for captions: the same tagging request and the same caption operations, given to the CLI, the HTTP API
and the Captions panel, write the same captions; the same bad request is refused with the same words by all three.

The request is plain data (TagRequest.from_dict, CaptionOp.from_dict). Each front end gets it in its own form:
command-line flags (a subprocess), a JSON body (a real FastAPI app), the panel's fields (its handlers, called as
gradio would). Each front end works on its own copy of one project, so their captions can be compared file by file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from test_cli import cli  # noqa: E402
from tiny_wd14 import build_tiny_wd14, reference_scores, reference_tags  # noqa: E402

from lib_lorakit import api  # noqa: E402
from lib_lorakit.captions.service import TAG_SCHEMA  # noqa: E402
from lib_lorakit.errors import LorakitError  # noqa: E402
from lib_lorakit.host import StandaloneHost  # noqa: E402
from lib_lorakit.studio import Studio  # noqa: E402
from lib_lorakit.ui.captions_panel import CaptionsPanel  # noqa: E402

FRONTS = ("cli", "api", "tab")  # one project per front end, made alike
CONCEPT = "dataset/2_art"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230), "dark": (10, 10, 10)}
HAND = "mystyle, my own words"  # the hand-written caption of hand.png: tagging without overwrite leaves it

# the tagging request every front end is given, as plain data; each option differs from its default
TAG = {"tagger": "wd14", "model": "tiny-wd14", "general_threshold": 0.5, "character_threshold": 0.9,
       "include_rating": True, "exclude": ["long hair"], "escape_parentheses": True, "batch": 2, "overwrite": False}


def _image(colour: str) -> Image.Image:
    im = Image.new("RGB", (96, 64), COLOURS[colour])
    if colour == "blue":
        im.paste((230, 20, 20), (0, 0, 30, 20))  # a red corner: the tiny model's top-left features move
    return im


@pytest.fixture
def fronts(tmp_path):
    """(home, models, API client, panel, studio): three alike projects on one home, the tiny WD14 model installed."""
    home, models = tmp_path / "home", tmp_path / "models"
    build_tiny_wd14(models / "train-style" / "taggers" / "tiny-wd14")
    host = StandaloneHost(home=home, lora=models / "Lora", models=models)
    studio = Studio(host)
    for name in FRONTS:
        studio.create_project(name, trigger_words=("mystyle",))
        folder = studio.add_concept(name, "art", repeats=2).folder
        for colour in COLOURS:
            _image(colour).save(folder / f"{colour}.png")
        _image("green").save(folder / "hand.png")
        (folder / "hand.txt").write_text(HAND, encoding="utf-8")
    app = FastAPI()
    api.mount(app, host)
    yield home, models, TestClient(app), CaptionsPanel(studio, project=None), studio


def captions(home: Path, name: str) -> dict[str, str]:
    """The project's caption files as written (a tagged or edited one ends with a newline; the hand's has none)."""
    folder = home / name / CONCEPT
    return {p.name: p.read_text(encoding="utf-8").removesuffix("\n") for p in sorted(folder.glob("*.txt"))}


def expected_caption(colour: str) -> str:
    """mystyle, then what the tiny model gives at TAG's thresholds, without `long hair`, brackets escaped, rating
    last."""
    tags = reference_tags(reference_scores(_image(colour)), general=TAG["general_threshold"],
                          character=TAG["character_threshold"], rating=True)
    kept = [t.replace("(", "\\(").replace(")", "\\)") for t, _ in tags if t not in TAG["exclude"]]
    return ", ".join(["mystyle", *kept])


# --- each front end, given the plain data in its own form ---------------------------------------------------------
def tag_by_cli(home: Path, models: Path, name: str, data: dict):
    args = ["--models-dir", str(models), "tag", name, "--json"]
    for key, value in data.items():
        flag = "--" + key.replace("_", "-")
        if key == "exclude":
            args += [a for tag in value for a in (flag, tag)]
        elif isinstance(value, bool):
            args += [flag] if value else []
        else:
            args += [flag, str(value)]
    return cli(home, *args, check=False)


def tag_by_api(client: TestClient, name: str, data: dict):
    return client.post(f"/train-style/v1/projects/{name}/tag", json={**data, "wait": True})


def tag_by_panel(panel: CaptionsPanel, studio: Studio, name: str, data: dict):
    """The Tag button with the fields filled in as a user would (numbers as gradio's floats), then its job."""
    fields = [data["tagger"], data["model"], TAG_SCHEMA["clip_model"].default, TAG_SCHEMA["clip_pretrained"].default,
              data["general_threshold"], data["character_threshold"], ", ".join(data["exclude"]),
              float(data["batch"]), data["include_rating"], data["escape_parentheses"], data["overwrite"]]
    panel._start_tag(name, None, "", "", "", *fields)
    job = studio.captions.tag_jobs(name)[0]
    return studio.jobs.wait(job.id, timeout=120)


def op_by_cli(home: Path, name: str, op: dict, *extra: str):
    values = [op["target"], *op["replacement"]] if "target" in op else list(op.get("tags", []))
    args = ["caption", name, op["op"], *values, "--json", *extra]
    if op.get("position") == "start":
        args.append("--start")
    args += [a for tag in op.get("without", []) for a in ("--without", tag)]
    return cli(home, *args, check=False)


def op_by_api(client: TestClient, name: str, op: dict):
    return client.post(f"/train-style/v1/projects/{name}/captions/ops", json=op)


def op_by_panel(panel: CaptionsPanel, name: str, op: dict):
    """Apply in 'Edit tags in bulk', with the 'Images without' filter above the gallery filled in."""
    if "target" in op:
        tags, new = op["target"], ", ".join(op["replacement"])
    else:
        tags, new = ", ".join(op["tags"]), ""
    return panel._apply(name, None, "", ", ".join(op.get("without", [])), "", op["op"], tags, new,
                        op.get("position", "end"), "frequency")


# --- the tests ------------------------------------------------------------------------------------------------------
def test_the_same_tag_request_writes_the_same_captions_through_all_three(fronts):
    home, models, client, panel, studio = fronts
    out = tag_by_cli(home, models, "cli", TAG)
    assert out.returncode == 0, out.stderr
    res = tag_by_api(client, "api", TAG)
    assert res.status_code == 200, res.text
    job = tag_by_panel(panel, studio, "tab", TAG)
    assert job.state == "done", job.error
    reports = [json.loads(out.stdout), res.json(), job.result]
    assert [sorted(r["tagged"]) for r in reports] == [[f"{CONCEPT}/{c}.png" for c in sorted(COLOURS)]] * 3
    assert [r["already"] for r in reports] == [[f"{CONCEPT}/hand.png"]] * 3
    written = [captions(home, name) for name in FRONTS]
    assert written[0] == written[1] == written[2]
    assert written[0] == {"hand.txt": HAND, **{f"{c}.txt": expected_caption(c) for c in COLOURS}}
    # every option reached the tagger: with the defaults the captions would differ
    defaults = {f"{c}.txt": ", ".join(["mystyle", *(t for t, _ in reference_tags(reference_scores(_image(c))))])
                for c in COLOURS}
    assert all(written[0][f] != defaults[f] for f in defaults)
    assert "long hair" in defaults["red.txt"].split(", ") and "long hair" not in written[0]["red.txt"].split(", ")
    assert any("\\(" in text for text in written[0].values())


def test_the_same_caption_ops_write_the_same_captions_through_all_three(fronts):
    home, models, client, panel, studio = fronts
    for name in FRONTS:  # the same starting captions, written through the door
        for colour in COLOURS:
            studio.captions.edit(name, f"{CONCEPT}/{colour}.png", f"mystyle, {colour} theme, simple background")
    ops = [{"op": "add", "tags": ["flat colour", "outline"], "position": "start", "without": ["dark theme"]},
           {"op": "replace", "target": "red theme", "replacement": ["crimson", "warm colours"]}]
    for op in ops:
        out = op_by_cli(home, "cli", op)
        assert out.returncode == 0, out.stderr
        res = op_by_api(client, "api", op)
        assert res.status_code == 200, res.text
        op_by_panel(panel, "tab", op)
    written = [captions(home, name) for name in FRONTS]
    assert written[0] == written[1] == written[2]
    assert written[0]["red.txt"] == "mystyle, flat colour, outline, crimson, warm colours, simple background"
    assert written[0]["dark.txt"] == "mystyle, dark theme, simple background"  # the filter kept it out
    assert written[0]["hand.txt"] == "mystyle, flat colour, outline, my own words"  # after the trigger word
    # each change is one undo step in every project
    assert [len(studio.captions.history(name)) for name in FRONTS] == [len(COLOURS) + 2] * 3


def test_the_same_bad_caption_op_is_refused_with_the_same_words(fronts):
    home, models, client, panel, studio = fronts
    bad = {"op": "rename", "target": "green theme", "replacement": ["lime", "grass"]}
    before = [captions(home, name) for name in FRONTS]
    out = op_by_cli(home, "cli", bad)
    assert out.returncode == 1
    cli_text = json.loads(out.stdout)["error"]
    res = op_by_api(client, "api", bad)
    assert res.status_code == 400
    with pytest.raises(LorakitError) as caught:
        op_by_panel(panel, "tab", bad)
    assert cli_text == res.json()["detail"] == str(caught.value)
    assert cli_text == "replacement: the rename op needs exactly one tag, got ['lime', 'grass']"
    assert [captions(home, name) for name in FRONTS] == before
    assert all(studio.captions.history(name) == [] for name in FRONTS)


def test_the_same_bad_tag_request_is_refused_with_the_same_words(fronts):
    home, models, client, panel, studio = fronts
    bad = {**TAG, "general_threshold": 1.5}
    res = tag_by_api(client, "api", bad)
    assert res.status_code == 400
    with pytest.raises(LorakitError) as caught:
        tag_by_panel(panel, studio, "tab", bad)
    assert res.json()["detail"] == str(caught.value) == "general_threshold: expected a number from 0.01 to 1, got 1.5"
    # the command line checks a flag's value by the same declaration while it parses (argparse: status 2)
    out = tag_by_cli(home, models, "cli", bad)
    assert out.returncode == 2 and f"argument --general-threshold: {caught.value}" in out.stderr
    # nothing ran: no job, no caption written
    assert all(studio.captions.tag_jobs(name) == [] for name in FRONTS)
    assert all(captions(home, name) == {"hand.txt": HAND} for name in FRONTS)

"""The Judge panel's HTML from judge.json dicts as the judge writes them: the recommendation first (or why none), the
per-epoch table with the first copying epoch marked, the chart drawn from the numbers, the epoch × weight cells with
the recommended one highlighted, every copy beside its nearest training image with the similarity, the threshold and
its unit; every text from the file escaped (in the SVG too), and a damaged file drawn without a crash."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from lib_lorakit.ui import render_judge as draw

HOSTILE = '<img src=x onerror="alert(1)">'
URI = "data:image/jpeg;base64,AAAA"


def sample(cell: int, i: int, sim: float, copy: bool, prompt: str = "zq, 1girl", nearest: str = "") -> dict:
    return {"cell": cell, "image": f"eval/g1/cells/{cell * 10 + i:04d}.png", "prompt": prompt, "kind": "caption",
            "seed": i + 1, "nearest": nearest or f"dataset/1_art/{i}.png", "similarity": sim, "copy": copy}


def judged(**over) -> dict:
    cells = []
    for e, epoch in enumerate(("epoch 1", "epoch 2", "epoch 3")):
        for w, weight in enumerate(("0", "0.6", "1")):
            index = e * 3 + w
            copies = 2 if (epoch == "epoch 3" and weight != "0") else 0
            cells.append({"epoch": epoch, "weight": weight, "copy_rate": copies / 4, "strength": 0.2 * e + 0.1 * w,
                          "adherence": 1.0 - 0.1 * e, "clip_score": 0.3, "diversity": 0.4,
                          "samples": [sample(index, i, 0.9 if i < copies else 0.2, i < copies) for i in range(4)]})
    report = {
        "grid": "g1", "run": "r1", "project": "demo", "state": "done", "error": "",
        "descriptor": {"name": "perceptual", "id": "perceptual-v1", "threshold": 0.87,
                       "unit": "cosine similarity of perceptual descriptors", "fallback": ""},
        "training_images": 12, "skipped": [],
        "baseline": {"weight": "0", "clip_score": 0.3, "similarity_to_training": 0.5, "training_self_similarity": 0.9},
        "cells": cells,
        "epochs": [{"epoch": f"epoch {k}", "weight": "1", "copy_rate": (0.5 if k == 3 else 0.0), "diversity": 0.4,
                    "copies": (2 if k == 3 else 0), "samples": 4} for k in (1, 2, 3)],
        "first_copying_epoch": "epoch 3",
        "recommendation": {"epoch": "epoch 2", "weight": 0.6, "goal": "style",
                           "reasons": ["epoch 3 copies 50 % of its samples (over 10 %)",
                                       "strongest style (0.26) with adherence 0.9 ≥ 0.8"],
                           "scores": {"strength": 0.26, "adherence": 0.9, "copy_rate": 0.0}},
        "elapsed_s": 12.0}
    report.update(over)
    return report


class Tags(HTMLParser):
    """Every tag and attribute the browser would build from the HTML."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_recommendation_comes_first_in_words_and_numbers():
    html = draw.report_html(judged())
    rec = html.index("Recommended: epoch 2 at weight 0.6")
    assert rec < html.index("Per epoch") < html.index("Epoch × weight")
    text = plain(html)
    assert "goal: style" in text and "strength 0.26" in text and "adherence 0.9" in text and "copy rate 0 %" in text
    assert "epoch 3 copies 50 % of its samples (over 10 %)" in text


def test_no_recommendation_says_why():
    html = draw.report_html(judged(recommendation=None, why_none="every cell copies more than 10 % of samples"))
    assert "No recommendation." in html and "every cell copies more than 10 % of samples" in html
    assert 'data-recommended="none"' in html and "Recommended:" not in html
    assert "No recommendation yet." in draw.report_html(judged(recommendation=None, state="running"))
    assert "the judging is interrupted. Judge the grid again." in draw.report_html(
        judged(recommendation=None, state="interrupted"))


def test_per_epoch_table_marks_the_first_copying_epoch():
    html = draw.epochs_html(judged())
    rows = re.findall(r"<tr[^>]*>.*?</tr>", html.split("<tbody>")[1])
    assert len(rows) == 3
    marked = [r for r in rows if "ts-first-copy" in r]
    assert len(marked) == 1 and "epoch 3" in marked[0] and "50 %" in marked[0] and "2 of 4" in marked[0]
    assert "Copying starts at <b>epoch 3</b>" in html
    calm = draw.epochs_html(judged(first_copying_epoch=None))
    assert "ts-first-copy" not in calm and "No epoch copies its training images." in calm


def test_the_chart_is_drawn_from_the_numbers():
    svg = draw.chart_svg(judged())
    tags = Tags(svg).tags
    lines = {a["class"]: a["points"] for t, a in tags if t == "polyline"}
    assert set(lines) == {"ts-judge-copy_rate", "ts-judge-strength", "ts-judge-adherence"}
    ys = [float(p.split(",")[1]) for p in lines["ts-judge-copy_rate"].split()]
    assert len(ys) == 3 and ys[0] == ys[1] > ys[2]  # SVG y grows downwards: epoch 3 copies most
    strength = [float(p.split(",")[1]) for p in lines["ts-judge-strength"].split()]
    assert strength[0] > strength[1] > strength[2]  # rises epoch by epoch (at weight 1, the epoch rows' weight)
    assert sum(1 for t, a in tags if t == "line" and a.get("stroke-dasharray")) == 1  # the first copying epoch
    assert draw.chart_svg(judged(epochs=[])) == ""


def test_cells_table_highlights_the_recommended_cell():
    html = draw.cells_html(judged())
    assert html.count("ts-recommended") == 1
    chosen = re.search(r'<td class="ts-recommended"[^>]*>(.*?)</td>', html).group(1)
    assert "strength 0.3" in chosen and "adherence 0.9" in chosen  # epoch 2 (e=1), weight 0.6 (w=1): 0.2 + 0.1
    head = re.search(r"<thead>(.*?)</thead>", html).group(1)
    assert plain(head).split() == ["epoch", "\\", "weight", "0", "0.6", "1"]


def test_copies_shown_beside_their_nearest_training_image_with_threshold_and_unit():
    report = judged()
    pictures = {s["image"]: URI for c in report["cells"] for s in c["samples"]} | {"dataset/1_art/0.png": URI}
    html = draw.pairs_html(report, pictures)
    figures = re.findall(r'<figure class="ts-judge-pair".*?</figure>', html)
    assert len(figures) == 4  # epoch 3 at weights 0.6 and 1: two copies each
    first = figures[0]
    assert first.count("<img") == 2 and 'class="ts-judge-sample"' in first and 'class="ts-judge-nearest"' in first
    text = plain(first)
    assert "similarity 0.9" in text and "threshold 0.87" in text
    assert "cosine similarity of perceptual descriptors" in text and "dataset/1_art/0.png" in text
    # a nearest image without a picture is said to lack one, not drawn broken
    assert "nearest training image: no picture" in draw.pairs_html(report, {})
    every = draw.pairs_html(report, pictures, all_samples=True)
    assert every.count('<figure class="ts-judge-pair"') == 36 and 'data-copy="false"' in every
    assert "No samples flagged as copies." in draw.pairs_html(judged(cells=[]), {})


def test_file_text_is_escaped_everywhere_the_svg_included():
    report = judged(grid=HOSTILE, run=HOSTILE, error=HOSTILE, why_none=HOSTILE,
                    skipped=[[HOSTILE, HOSTILE]], first_copying_epoch=HOSTILE)
    report["descriptor"] |= {"unit": HOSTILE, "fallback": HOSTILE, "name": HOSTILE}
    report["recommendation"] |= {"epoch": HOSTILE, "reasons": [HOSTILE], "goal": HOSTILE}
    for e in report["epochs"]:
        e["epoch"] = HOSTILE
    for c in report["cells"]:
        c["epoch"] = HOSTILE
        for s in c["samples"]:
            s.update(prompt=HOSTILE, nearest=HOSTILE, kind=HOSTILE, image=HOSTILE)
    pictures = {HOSTILE: 'x" onerror="alert(1)'}  # not a data URI: refused
    html = draw.report_html(report, pictures, all_samples=True)
    assert "<svg" in html
    for tag, attrs in Tags(html).tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/"), attrs
    assert HOSTILE not in html and "&lt;img src=x" in html


def test_a_damaged_report_is_drawn_without_a_crash():
    damaged = {"grid": "g", "state": "done", "cells": [{"epoch": 1, "weight": None, "strength": "high",
                                                        "samples": "none"}, "junk"],
               "epochs": [{"epoch": "e", "copy_rate": float("nan")}, 3], "recommendation": "soon",
               "descriptor": [], "skipped": "x"}
    html = draw.report_html(damaged)
    assert "No recommendation." in html and "strength –" in html
    assert draw.report_html(None).startswith('<p class="ts-empty">')


def test_judged_choices_and_the_applied_note():
    choices = draw.judged_choices([{"grid": "20260101-x", "state": "done",
                                    "recommendation": {"epoch": "epoch 2", "weight": 0.6}},
                                   {"grid": "20260102-y", "state": "running"}])
    assert choices == ["20260101-x — done · epoch 2 at weight 0.6", "20260102-y — running"]
    assert draw.grid_id_of(choices[0]) == "20260101-x"
    applied = draw.applied_html({"weight": 0.6, "card": "/l/zq-000002.json", "lora": HOSTILE, "note": HOSTILE})
    assert "Preferred weight <b>0.6</b>" in applied and HOSTILE not in applied

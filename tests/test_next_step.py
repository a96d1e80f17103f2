"""What each panel tells the user to do next, the repeats proposed from the step calculator, and the change stamp the
panels compare to know they are stale — on real project folders, changed the way Train Style and users change them."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from lib_lorakit import next_step as ns
from lib_lorakit.captions.store import CaptionStore
from lib_lorakit.fsutil import atomic_write_json
from lib_lorakit.project import Project
from lib_lorakit.train.runner import RunSnapshot
from lib_lorakit.train.steps import EPOCH_IMAGES_TARGET, plan_steps


def images(folder: Path, n: int, captions: int = 0) -> None:
    for i in range(n):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(folder / f"i{i:03d}.png")
        if i < captions:
            (folder / f"i{i:03d}.txt").write_text("mystyle, red", encoding="utf-8")


def status(*concepts: tuple[int, int, int], triggers: tuple[str, ...] = ("mystyle",)) -> ns.ProjectStatus:
    """(images, repeats, captioned) per concept."""
    return ns.ProjectStatus(project="p", trigger_words=triggers, concepts=tuple(
        ns.ConceptStatus(name=f"c{i}", images=n, repeats=r, captioned=c) for i, (n, r, c) in enumerate(concepts)))


def run(state: str) -> RunSnapshot:
    return RunSnapshot(id="20260101-000000-p", project="p", dir=Path("."), state=state, progress={}, files=[],
                       samples=[], error="", advice="", log_tail=[], losses=[], meta={})


# --- repeats ---------------------------------------------------------------------------------------------------------
def test_proposed_repeats_land_in_the_step_calculators_band():
    lo, hi = EPOCH_IMAGES_TARGET
    for n in (1, 3, 4, 14, 37, 90, 150, 250):
        r = ns.proposed_repeats(n)
        assert lo <= n * r <= hi, (n, r)
        assert plan_steps([(n, r)]).codes().count("epoch_images_low") == 0  # the Train panel's check agrees
    assert ns.proposed_repeats(14) == 21 and ns.proposed_repeats(4) == 75
    assert ns.proposed_repeats(1000) == 1  # a large set never gets fewer than one
    assert ns.proposed_repeats(10, other_epoch_images=250) == 5  # the other concepts' share counts
    assert ns.proposed_repeats(0) == 1


def test_propose_repeats_keeps_the_concepts_weights_and_stays_quiet_in_the_band():
    assert [c.new_repeats for c in ns.propose_repeats(status((14, 1, 0)))] == [21]
    plan = ns.propose_repeats(status((10, 2, 0), (50, 2, 0)))  # 120 per epoch, the first weighted ×2 as well
    assert [(c.concept, c.new_repeats) for c in plan] == [("c0", 5), ("c1", 5)]
    assert sum(c.new_steps for c in plan) == 300
    assert ns.propose_repeats(status((14, 21, 0))) == []  # 294: already in the band
    assert ns.propose_repeats(status((1000, 1, 0))) == []  # too many already, and repeats can't go below 1
    assert ns.propose_repeats(status((0, 1, 0))) == []  # nothing to weigh


# --- status and next steps ----------------------------------------------------------------------------------------
def test_status_counts_what_sd_scripts_trains_on(project: Project):
    images(project.add_concept("style", 3).folder, 5, captions=2)
    images(project.add_concept("extra", 1).folder, 2)
    images(project.add_concept("person", 1, "reg").folder, 7)  # regularisation images are not training images
    (project.root / "dataset" / "3_style" / "i004.txt").write_text("", encoding="utf-8")  # empty: not captioned
    s = ns.project_status(project)
    assert (s.images, s.captioned, s.epoch_images) == (7, 2, 17)
    assert ns.project_status(project, CaptionStore(project).records()) == s  # the Captions panel's records


def test_each_panel_names_the_next_step():
    assert "Create project" in ns.dataset_next(None).text
    assert "Import" in ns.dataset_next(status()).text and "Dataset tab" in ns.captions_next(status()).text
    fresh = status((14, 1, 0))
    assert ns.dataset_next(fresh).text == ("14 images × 1 repeat = 14 per epoch; the step guide wants 200–400 — "
                                           "press Use proposed repeats (21 repeats: 294 per epoch).")
    assert ns.captions_next(fresh).text == "14 images, 0 captioned — tag them: press Tag images."
    assert "Captions tab" in ns.train_next(fresh).text
    repeated = status((14, 21, 0))
    assert ns.dataset_next(repeated).text == "14 images, 0 captioned — tag them in the Captions tab."
    half = status((14, 21, 10))
    assert "tag the other 4" in ns.captions_next(half).text
    assert ns.train_next(half).summary == "4 of 14 images have no caption"
    ready = status((14, 21, 14))
    assert ns.dataset_next(ready).done and ns.captions_next(ready).done
    assert "trigger word" in ns.captions_next(status((14, 21, 14), triggers=())).text
    assert "press Check, then Train" in ns.train_next(ready).text
    assert "Register" in ns.train_next(ready, run("succeeded")).text
    assert "Resume" in ns.train_next(ready, run("failed")).text
    assert ns.train_next(fresh, run("running")).summary.endswith("is running")  # a run first, whatever else


# --- the change stamp --------------------------------------------------------------------------------------------
def aged(project: Project) -> str:
    """The stamp after every folder's time is set far back, so the next write moves it whatever the clock's grain."""
    for folder, _dirs, _files in os.walk(project.root):
        os.utime(folder, ns=(10**9, 10**9))
    return ns.change_stamp(project)


def test_the_stamp_moves_with_images_captions_concepts_settings_and_runs(project: Project):
    folder = project.add_concept("style", 1).folder
    images(folder, 2)
    steps = [
        lambda: images(folder, 3),  # an import
        lambda: CaptionStore(project).apply({"dataset/1_style/i000.png": "mystyle, red"}, label="edit",
                                            op={"op": "edit"}),  # a caption change through the store
        lambda: (folder / "i001.txt").write_text("by hand", encoding="utf-8"),  # another program's caption
        lambda: project.set_repeats("style", 21),
        lambda: project.update_settings(trigger_words=("mystyle",)),
        lambda: (project.root / "runs" / "20260101-000000-style").mkdir(parents=True),  # a new run
    ]
    for change in steps:
        before = aged(project)
        assert ns.change_stamp(project) == before  # reading changes nothing
        change()
        assert ns.change_stamp(project) != before


def test_run_progress_leaves_the_stamp_alone(project: Project):
    run_dir = project.root / "runs" / "20260101-000000-demo"
    run_dir.mkdir(parents=True)
    before = aged(project)
    for step in range(3):  # what a running run writes every second: the panels must not redraw for it
        atomic_write_json(run_dir / "run.json", {"state": "running", "progress": {"step": step}})
    assert ns.change_stamp(project) == before


def test_the_stamp_names_its_project(workspace):
    a, b = workspace.create("a"), workspace.create("b")
    assert ns.change_stamp(a).startswith("a:") and ns.change_stamp(b).startswith("b:")
    assert ns.change_stamp(a) != ns.change_stamp(b)

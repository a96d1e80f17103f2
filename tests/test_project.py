"""Projects on disk: create/list/open, project.toml, concepts as `<repeats>_<name>` folders, trash, balance."""

from __future__ import annotations

import pytest
from PIL import Image

from lib_lorakit.dataset.balance import plan_balance
from lib_lorakit.dataset.report import build_report
from lib_lorakit.errors import AlreadyExists, InvalidName, LorakitError, NotFound
from lib_lorakit.project import PROJECT_FILE, Project, ProjectSettings
from lib_lorakit.tomlio import read_toml


def folder_names(project: Project, sub: str = "dataset") -> list[str]:
    return sorted(p.name for p in (project.root / sub).iterdir())


# --- workspace --------------------------------------------------------------------------------------------------

def test_create_list_open(workspace):
    assert workspace.list() == []
    made = workspace.create("sks woman", trigger_words=["sks"], resolution=768)
    workspace.create("キャラ")
    (workspace.home / "not a project").mkdir()
    (workspace.home / "loose file.txt").write_text("x")

    assert [p.name for p in workspace.list()] == ["sks woman", "キャラ"]
    for sub in ("originals", "dataset", "reg", "runs", "eval", ".lorakit"):
        assert (made.root / sub).is_dir(), sub
    opened = workspace.open("sks woman")
    assert opened.root == made.root
    assert opened.settings.trigger_words == ("sks",)
    assert opened.settings.resolution == 768
    assert opened.settings.created  # a timestamp was written


def test_create_refuses_bad_names_and_taken_names(workspace):
    workspace.create("demo")
    with pytest.raises(AlreadyExists):
        workspace.create("demo")
    for bad in ("../escape", "a/b", ".hidden", "NUL", ""):
        with pytest.raises(InvalidName):
            workspace.create(bad)
    assert [p.name for p in workspace.list()] == ["demo"]


def test_create_refuses_bad_settings_without_making_a_folder(workspace):
    with pytest.raises(LorakitError, match="resolution: expected an integer from 64 to 4096, got -3"):
        workspace.create("x", resolution=-3)
    with pytest.raises(LorakitError, match="colour"):
        workspace.create("y", colour="red")
    assert not (workspace.home / "x").exists() and not (workspace.home / "y").exists()


def test_open_missing_project_names_what_exists(workspace):
    workspace.create("alpha")
    with pytest.raises(NotFound, match="alpha"):
        workspace.open("beta")
    with pytest.raises(NotFound):
        Project(workspace.home / "nowhere")


# --- settings ---------------------------------------------------------------------------------------------------

def test_project_toml_round_trip(workspace):
    p = workspace.create("demo", trigger_words=["sks", "キャラ"], notes='line one\nline "two"', background="#102030",
                         caption_extension=".caption", near_duplicate_distance=3)
    on_disk = read_toml(p.root / PROJECT_FILE)
    assert on_disk["trigger_words"] == ["sks", "キャラ"]
    assert on_disk["notes"] == 'line one\nline "two"'
    again = ProjectSettings.from_dict(on_disk)
    assert again == p.settings
    assert again.to_dict() == on_disk
    assert again.background_rgb == (16, 32, 48)


def test_update_settings_persists_and_validates(project):
    project.update_settings(resolution=1024, trigger_words=["ohwx"])
    assert Project(project.root).settings.resolution == 1024
    assert Project(project.root).settings.trigger_words == ("ohwx",)
    before = (project.root / PROJECT_FILE).read_bytes()
    with pytest.raises(LorakitError, match="resolution"):
        project.update_settings(resolution=10)
    with pytest.raises(LorakitError, match="bogus"):
        project.update_settings(bogus=1)
    assert (project.root / PROJECT_FILE).read_bytes() == before


@pytest.mark.parametrize("key,value,message", [
    ("resolution", -3, "resolution: expected an integer from 64 to 4096, got -3"),
    ("resolution", "512", "resolution: expected an integer from 64 to 4096, got '512'"),
    ("resolution", True, "resolution: expected an integer"),
    ("max_image_pixels", 0, "max_image_pixels: expected an integer from 1 to"),
    ("near_duplicate_distance", 33, "near_duplicate_distance: expected an integer from 0 to 32, got 33"),
    ("caption_extension", "txt", "caption_extension: expected one of .txt, .caption, got 'txt'"),
    ("background", "white", "background: expected a colour like '#ffffff', got 'white'"),
    ("trigger_words", "sks", "trigger_words: expected a list of strings, got 'sks'"),
    ("trigger_words", ["sks", 3], "trigger_words[1]: expected a string, got 3"),
    ("notes", 5, "notes: expected a string, got 5"),
    ("name", "a/b", "project name"),
    ("colour", "red", "unknown setting(s) colour"),
])
def test_from_dict_names_the_bad_key(key, value, message):
    data = {"name": "demo", key: value}
    with pytest.raises(LorakitError) as e:
        ProjectSettings.from_dict(data)
    assert message in str(e.value)


def test_from_dict_without_a_name():
    with pytest.raises(LorakitError, match="name"):
        ProjectSettings.from_dict({"resolution": 512})


def test_broken_project_toml_is_a_clear_error(project):
    (project.root / PROJECT_FILE).write_text("name = [unclosed")
    with pytest.raises(LorakitError, match="not valid TOML"):
        _ = project.settings


# --- concepts ---------------------------------------------------------------------------------------------------

def test_add_rename_remove_concept(project):
    c = project.add_concept("sks woman", repeats=3)
    assert c.folder == project.root / "dataset" / "3_sks woman" and c.folder.is_dir()
    (c.folder / "a.png").write_bytes(b"png")
    with pytest.raises(AlreadyExists):
        project.add_concept("sks woman", repeats=5)

    renamed = project.rename_concept("sks woman", "sks lady")
    assert folder_names(project) == ["3_sks lady"]
    assert (renamed.folder / "a.png").read_bytes() == b"png"
    assert (renamed.name, renamed.repeats) == ("sks lady", 3)
    with pytest.raises(NotFound, match="sks lady"):
        project.concept("sks woman")

    trash = project.remove_concept("sks lady")
    assert folder_names(project) == []
    assert trash.parent == project.root / ".lorakit" / "trash"
    assert (trash / "a.png").read_bytes() == b"png", "removed files stay recoverable in the trash"


def test_rename_onto_an_existing_concept_is_refused(project):
    project.add_concept("a")
    project.add_concept("b", repeats=2)
    with pytest.raises(AlreadyExists):
        project.rename_concept("a", "b")
    with pytest.raises(InvalidName):
        project.rename_concept("a", "../x")
    assert folder_names(project) == ["1_a", "2_b"]


def test_concept_names_are_checked(project):
    for bad in ("a/b", "..", "", "NUL", "x" * 101):
        with pytest.raises(InvalidName):
            project.add_concept(bad)
    assert folder_names(project) == []


def test_concept_whose_name_starts_with_digits(project):
    project.add_concept("2_girls", repeats=4)
    assert folder_names(project) == ["4_2_girls"]
    [c] = project.concepts()
    assert (c.name, c.repeats) == ("2_girls", 4)


def test_set_repeats_renames_the_folder(project):
    c = project.add_concept("style")
    (c.folder / "x.png").write_bytes(b"1")
    changed = project.set_repeats("style", 12)
    assert folder_names(project) == ["12_style"]
    assert changed.repeats == 12 and (changed.folder / "x.png").is_file()
    assert project.concept("style").repeats == 12


@pytest.mark.parametrize("repeats", [0, -1, 10_001, 2.5, "3", True, None])
def test_bad_repeats_are_refused(project, repeats):
    project.add_concept("style", repeats=2)
    with pytest.raises(InvalidName, match="repeats"):
        project.set_repeats("style", repeats)
    with pytest.raises(InvalidName, match="repeats"):
        project.add_concept("other", repeats=repeats)
    assert folder_names(project) == ["2_style"]


def test_reg_sets_are_separate_from_concepts(project):
    project.add_concept("woman", repeats=1, kind="reg")
    project.add_concept("woman", repeats=2)
    assert folder_names(project, "reg") == ["1_woman"]
    assert [(c.kind, c.name) for c in project.concepts()] == [("dataset", "woman"), ("reg", "woman")]
    project.set_repeats("woman", 3, kind="reg")
    assert folder_names(project, "reg") == ["3_woman"]
    trash = project.remove_concept("woman", kind="reg")
    assert folder_names(project, "reg") == [] and trash.is_dir()
    assert folder_names(project) == ["2_woman"]
    with pytest.raises(NotFound, match="regularisation set"):
        project.concept("woman", kind="reg")


def test_ensure_concept(project):
    a = project.ensure_concept("a")
    assert a.repeats == 1
    assert project.ensure_concept("a").folder == a.folder
    assert project.ensure_concept("a", repeats=5).folder.name == "5_a"
    assert folder_names(project) == ["5_a"]


def test_stray_folders_are_reported(project):
    project.add_concept("good")
    (project.root / "dataset" / "misc").mkdir()
    (project.root / "dataset" / "_nope").mkdir()
    (project.root / "reg" / "people").mkdir()
    (project.root / "dataset" / ".cache").mkdir()
    (project.root / "dataset" / "notes.txt").write_text("x")
    assert project.stray_folders() == ["dataset/_nope", "dataset/misc", "reg/people"]
    assert [c.name for c in project.concepts()] == ["good"]


# --- balance ----------------------------------------------------------------------------------------------------

def _fill(project: Project, name: str, n: int) -> None:
    folder = project.concept(name).folder
    for i in range(n):
        Image.new("RGB", (8, 8), (i, 2 * i % 256, 3 * i % 256)).save(folder / f"{i:03d}.png")


def test_balance_plan_and_apply(project):
    project.add_concept("few")
    project.add_concept("many")
    _fill(project, "few", 10)
    _fill(project, "many", 40)
    counts = [(c.name, c.images, c.repeats) for c in build_report(project).concepts]
    assert counts == [("few", 10, 1), ("many", 40, 1)]

    plan = plan_balance(counts)
    assert [(p.concept, p.new_repeats, p.new_steps) for p in plan] == [("few", 4, 40), ("many", 1, 40)]
    explicit = plan_balance(counts, target=100)
    assert [p.new_repeats for p in explicit] == [10, 2]  # 40×2 = 80 and 40×3 = 120 are equally far from 100
    assert folder_names(project) == ["1_few", "1_many"], "planning renames nothing"

    for change in plan:
        project.set_repeats(change.concept, change.new_repeats)
    assert folder_names(project) == ["1_many", "4_few"]
    report = build_report(project)
    assert [c.images_x_repeats for c in report.concepts] == [40, 40]


def test_balance_edge_cases():
    plan = plan_balance([("empty", 0, 3), ("one", 1, 1), ("lots", 300, 1)])
    assert [p.new_repeats for p in plan] == [3, 300, 1]
    assert plan_balance([("huge", 1, 1)], target=10**9)[0].new_repeats == 10_000
    assert plan_balance([("a", 1000, 1)], target=1)[0].new_repeats == 1
    assert plan_balance([]) == []
    with pytest.raises(LorakitError, match="target"):
        plan_balance([("a", 1, 1)], target=0)

"""The CLI as a black box: real processes, then assertions on stdout, the exit status and the files left."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from awkward import build_awkward_folder
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(home / "no-config.toml")}
    out = subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], env=env,
                         capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """One project, the awkward folder imported once through the CLI (shared: the import is the slow part)."""
    tmp = tmp_path_factory.mktemp("cli")
    home = tmp / "home"
    awk = build_awkward_folder(tmp / "user")
    before = tree_digest(awk.root)
    cli(home, "project", "new", "demo")
    out = cli(home, "import", "demo", str(awk.root), "--concept", "art", "--repeats", "5", "--json")
    return home, awk, before, out


# The CLI runs with the user's own rights, so it is not confined to allowed folders: a link leading outside is
# followed there (the tab and the API refuse it; see test_api.py).
OUTSIDE_LINK = "links/outside.png"


def test_import_json_lists_every_file_with_its_verdict(imported):
    home, awk, _, out = imported
    data = json.loads(out.stdout)
    assert set(data) >= {"imported", "skipped", "warnings", "duplicates"}
    imported_sources = {i["source"] for i in data["imported"]}
    assert imported_sources == {awk.display(rel) for rel in awk.good} | {awk.display(OUTSIDE_LINK)}
    for item in data["imported"]:
        assert item["image"].startswith("dataset/5_art/")
        assert (home / "demo" / item["image"]).is_file()
        with Image.open(home / "demo" / item["image"]) as im:
            assert im.mode == "RGB" and im.size == (item["width"], item["height"])
    skipped = {s["source"]: s["reason"] for s in data["skipped"]}
    for rel, reason in awk.bad.items():
        if rel != OUTSIDE_LINK:
            assert reason in skipped[awk.display(rel)], rel
    assert {d["kind"] for d in data["duplicates"]} == {"exact", "near"}


def test_import_leaves_the_users_folder_untouched(imported):
    _, awk, before, _ = imported
    assert tree_digest(awk.root) == before


def test_human_messages_go_to_stderr(imported):
    _, awk, _, out = imported
    assert "skipped" in out.stderr
    json.loads(out.stdout)  # stdout is pure JSON


def test_report_json_names_concepts_and_counts(imported):
    home, awk, _, _ = imported
    data = json.loads(cli(home, "report", "demo", "--json").stdout)
    (concept,) = data["concepts"]
    assert concept["name"] == "art" and concept["repeats"] == 5 and concept["folder"] == "dataset/5_art"
    assert concept["images"] == len(awk.good) + 1
    assert concept["images_x_repeats"] == 5 * (len(awk.good) + 1)


def test_importing_again_adds_nothing_and_still_succeeds(imported):
    home, awk, _, _ = imported
    files_before = sorted(p for p in (home / "demo").rglob("*") if ".lorakit" not in p.parts)
    data = json.loads(cli(home, "import", "demo", str(awk.root), "--concept", "art", "--json").stdout)
    assert data["imported"] == [] and len(data["already"]) == len(awk.good) + 1
    assert sorted(p for p in (home / "demo").rglob("*") if ".lorakit" not in p.parts) == files_before


def test_nothing_importable_fails_with_a_message(tmp_path):
    home = tmp_path / "home"
    cli(home, "project", "new", "p")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    out = cli(home, "import", "p", str(tmp_path / "junk.jpg"), "--json", check=False)
    assert out.returncode != 0
    assert "nothing could be imported" in out.stderr
    assert json.loads(out.stdout)["skipped"][0]["reason"].startswith("not a recognisable image")


def test_concepts_add_rename_repeats_balance_and_remove(tmp_path):
    home = tmp_path / "home"
    cli(home, "project", "new", "p")
    src = tmp_path / "src"
    for i in range(4):
        (src / "many").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64 + i, 64), (40 * i, 90, 200 - 30 * i)).save(src / "many" / f"{i}.png")
    Image.new("RGB", (70, 60), (10, 200, 10)).save(src / "one.png")
    cli(home, "import", "p", str(src / "many"), "--concept", "big")
    cli(home, "import", "p", str(src / "one.png"), "--concept", "small")
    plan = json.loads(cli(home, "concept", "p", "balance", "--json").stdout)
    assert not plan["applied"]
    assert {r["concept"]: r["new_repeats"] for r in plan["plan"]} == {"big": 1, "small": 4}
    assert (home / "p" / "dataset" / "1_small").is_dir(), "a plan must not rename anything"
    cli(home, "concept", "p", "balance", "--apply")
    assert (home / "p" / "dataset" / "4_small" / "one.png").is_file()
    cli(home, "concept", "p", "rename", "small", "tiny")
    cli(home, "concept", "p", "repeats", "tiny", "2")
    assert (home / "p" / "dataset" / "2_tiny" / "one.png").is_file()
    bad = cli(home, "concept", "p", "rename", "tiny", "a/../../escape", check=False)
    assert bad.returncode == 1 and "contains '/'" in bad.stderr
    removed = json.loads(cli(home, "concept", "p", "remove", "tiny", "--json").stdout)
    assert Path(removed["trash"], "one.png").is_file() and not (home / "p" / "dataset" / "2_tiny").exists()
    listed = json.loads(cli(home, "project", "list", "--json").stdout)
    assert [p["name"] for p in listed["projects"]] == ["p"]


def test_project_settings_change_how_images_are_imported(tmp_path):
    home = tmp_path / "home"
    cli(home, "project", "new", "p")
    src = tmp_path / "src"
    src.mkdir()
    rgba = Image.new("RGBA", (64, 64), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 64))  # left half fully transparent
    rgba.save(src / "half.png")
    Image.new("RGB", (3000, 2000), "gray").save(src / "big.jpg")
    out = json.loads(cli(home, "project", "set", "p", "background=#102030", "max_image_pixels=5000000",
                         "trigger_words=sks, style", "--json").stdout)
    assert out["trigger_words"] == ["sks", "style"] and out["max_image_pixels"] == 5_000_000
    data = json.loads(cli(home, "import", "p", str(src), "--json").stdout)
    with Image.open(home / "p" / data["imported"][0]["image"]) as im:
        assert im.getpixel((5, 5)) == (0x10, 0x20, 0x30) and im.getpixel((50, 5)) == (0, 0, 255)
    (big,) = data["skipped"]
    assert big["source"].endswith("big.jpg") and "6 MP, above the limit of 5 MP" in big["reason"]
    bad = cli(home, "project", "set", "p", "resolution=12", check=False)
    assert bad.returncode == 1 and "resolution: expected an integer from 64 to 4096, got 12" in bad.stderr


def test_each_command_loads_only_its_capability_and_the_table_matches_the_modules():
    """`tag` must not pay for importing training, grids or crop; the command table is what the modules add."""
    import argparse
    import importlib
    import subprocess
    import sys

    from lib_lorakit.cli import CAPABILITIES, COMMAND_MODULES

    added = {}
    for name in CAPABILITIES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"lib_lorakit.cli.{name}").add_parsers(sub, argparse.ArgumentParser(add_help=False))
        added.update(dict.fromkeys(sub.choices, name))
    assert added == COMMAND_MODULES
    probe = ("import sys; from lib_lorakit.cli import build_parser; build_parser('tag').parse_args(['tag', 'p']); "
             "print(sorted(m for m in sys.modules if m.startswith(('lib_lorakit.train', 'lib_lorakit.evaluate', "
             "'lib_lorakit.crop', 'lib_lorakit.cli.'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['lib_lorakit.cli.captions', 'lib_lorakit.cli.output']", out

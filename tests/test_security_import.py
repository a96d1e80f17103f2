"""Import, attacked the way issue 8 found it open: symbolic links and `..` that lead outside the allowed folders,
caption files that are links (to a secret, to /proc) or far too long, imports running at once in threads and in
processes, file names that are not UTF-8, uploads whose names lie about their content, loose file modes, silent
repeats, endless trigger words, and one broken project hiding all the others."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from awkward import encode, pattern
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from lib_lorakit import api
from lib_lorakit.dataset.captions_io import MAX_CAPTION_CHARS, MAX_CAPTION_FILE_BYTES
from lib_lorakit.dataset.importer import RECORDS_FILE, import_paths, import_sources, sources_from_uploads
from lib_lorakit.errors import InvalidName, LorakitError
from lib_lorakit.fsutil import atomic_write_bytes, atomic_write_json, read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.images import IMAGE_SUFFIXES
from lib_lorakit.project import MAX_TRIGGER_CHARS, Workspace
from lib_lorakit.studio import Studio

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"TOP-SECRET-7f3a9c"


def png(seed: int, size: int = 32) -> bytes:
    return encode(Image.fromarray(pattern(seed, size, size)), "PNG")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def everything_written(root: Path) -> bytes:
    """The bytes of every file under `root` (symlinks not followed), to look for leaked content."""
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def cli(home: Path, *args: str | bytes) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(home / "no-config.toml"),
           "PYTHONIOENCODING": "utf-8"}
    return subprocess.Popen([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def client_for(tmp_path: Path, roots: list[Path]) -> TestClient:
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models",
                          extra_roots=roots)
    app = FastAPI()
    api.mount(app, host)
    return TestClient(app)


# --- 4. symbolic links and `..` ---------------------------------------------------------------------------------

@pytest.fixture
def linked_tree(tmp_path: Path) -> dict[str, Path]:
    """allowed/deep → allowed/a/b/c; beside `allowed`, an `outside` folder with a picture and an SSH key."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "a" / "b" / "c").mkdir(parents=True)
    os.symlink(allowed / "a" / "b" / "c", allowed / "deep")
    (outside / ".ssh").mkdir(parents=True)
    (outside / "holiday.png").write_bytes(png(1))
    (outside / ".ssh" / "id_rsa").write_bytes(SECRET)
    (outside / "passwords.txt").write_bytes(SECRET)
    return {"allowed": allowed, "outside": outside, "sneaky": allowed / "deep" / ".." / ".." / "outside"}


def test_dotdot_after_a_symlink_is_followed_as_the_system_follows_it(project, linked_tree):
    allowed = linked_tree["allowed"]
    report = import_paths(project, [str(linked_tree["sneaky"])], [allowed])
    assert report.imported == [] and report.already == []
    # allowed/deep/../../outside is allowed/a/outside, which does not exist: nothing from the real outside
    assert [v.text for v in report.skipped] == ["no such file or folder"]
    assert images_in(project.root) == []
    # where it does exist, that is what is imported
    (allowed / "a" / "outside").mkdir()
    (allowed / "a" / "outside" / "inside.png").write_bytes(png(2))
    report = import_paths(project, [str(linked_tree["sneaky"])], [allowed])
    assert [Path(i.source).name for i in report.imported] == ["inside.png"]
    assert [sha(p) for p in (project.root / "originals").iterdir()] == [sha(allowed / "a" / "outside" / "inside.png")]


def test_the_same_through_the_http_api(tmp_path, linked_tree):
    client = client_for(tmp_path, [linked_tree["allowed"]])
    assert client.post("/train-style/v1/projects", json={"name": "demo"}).status_code == 201
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": [str(linked_tree["sneaky"])]})
    assert r.status_code == 200
    body = r.text
    assert r.json()["imported"] == []
    for leaked in ("holiday", "id_rsa", ".ssh", "passwords"):
        assert leaked not in body
    assert images_in(tmp_path / "home" / "demo") == []


def test_a_link_to_a_folder_outside_is_skipped_without_listing_it(project, linked_tree):
    allowed = linked_tree["allowed"]
    os.symlink(linked_tree["outside"], allowed / "home")
    report = import_paths(project, [str(allowed)], [allowed])
    assert report.imported == []
    assert [(Path(v.source).name, v.text) for v in report.skipped] == [
        ("deep", "a link to a folder already imported from: its files are not imported twice"),
        ("home", "a symbolic link that points outside the allowed folders")]
    shown = json.dumps(report.to_dict())
    assert str(linked_tree["outside"]) not in shown and "id_rsa" not in shown and "holiday" not in shown
    assert SECRET not in everything_written(project.root)


# --- 5. captions beside images -----------------------------------------------------------------------------------

def test_caption_files_that_are_links_special_or_huge_are_not_read(project, tmp_path):
    folder, outside = tmp_path / "allowed" / "set", tmp_path / "outside"
    folder.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    for i, stem in enumerate(("linked", "environ", "inner", "fifo", "huge", "long", "fine")):
        (folder / f"{stem}.png").write_bytes(png(10 + i))
    os.symlink(outside / "secret.txt", folder / "linked.txt")
    os.symlink("/proc/self/environ", folder / "environ.txt")
    (folder / "real.txt").write_text("a caption inside the folder")
    os.symlink(folder / "real.txt", folder / "inner.txt")  # inside, but a link all the same
    os.mkfifo(folder / "fifo.txt")  # a pipe nobody writes to: reading it would hang
    (folder / "huge.txt").write_bytes(b"tag, " * (MAX_CAPTION_FILE_BYTES // 5 + 1))
    (folder / "long.txt").write_text("x" * (MAX_CAPTION_CHARS + 1))
    (folder / "fine.txt").write_text("1girl, solo")

    # the root is / as for the command line: even /proc is "inside"; a link is refused for being a link
    report = import_paths(project, [str(folder)], [Path("/")])
    assert len(report.imported) == 7 and report.skipped == []
    concept = project.concept("demo").folder
    assert sorted(p.name for p in concept.glob("*.txt")) == ["fine.txt"]
    assert (concept / "fine.txt").read_text() == "1girl, solo\n"
    notes = {Path(v.source).stem: v.text for v in report.warnings}
    for stem in ("linked", "environ", "inner"):
        assert "is a symbolic link" in notes[stem] and "imported without it" in notes[stem]
    assert "not a regular file" in notes["fifo"]
    assert f"({MAX_CAPTION_FILE_BYTES:,} bytes)" in notes["huge"] and "imported without it" in notes["huge"]
    assert f"{MAX_CAPTION_CHARS + 1:,} characters long" in notes["long"] and "imported without it" in notes["long"]
    written = everything_written(project.root)
    assert SECRET not in written and b"PATH=" not in written and b"a caption inside" not in written


def test_uploaded_captions_follow_the_same_rules(project, tmp_path):
    (tmp_path / "up").mkdir()
    image, caption = tmp_path / "up" / "a.png", tmp_path / "up" / "a.txt"
    image.write_bytes(png(30))
    os.symlink("/proc/self/environ", caption)
    report = import_sources(project, sources_from_uploads([(image, "a.png"), (caption, "a.txt")]))
    assert len(report.imported) == 1 and "symbolic link" in report.warnings[0].text
    assert list(project.concept("demo").folder.glob("*.txt")) == []


# --- 6. imports at the same time ---------------------------------------------------------------------------------

def make_folder(folder: Path, count: int, first_seed: int, size: int = 32) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"img{i:03d}.png").write_bytes(png(first_seed + i, size))
        (folder / f"img{i:03d}.txt").write_text(f"tag{i}")


def test_three_threads_importing_one_folder_add_each_image_once(project, tmp_path):
    folder = tmp_path / "user" / "forty"
    make_folder(folder, 40, 100)
    start = threading.Barrier(3)
    reports, errors = [], []

    def run() -> None:
        try:
            start.wait()
            reports.append(import_paths(project, [str(folder)], [tmp_path / "user"]))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(reports) == 3
    concept = project.concept("demo").folder
    assert len(images_in(concept)) == 40 and len(list(concept.glob("*.txt"))) == 40
    assert sum(len(r.imported) for r in reports) == 40
    assert all(len(r.imported) + len(r.already) == 40 and r.skipped == [] for r in reports)
    originals = {sha(p) for p in (project.root / "originals").iterdir()}
    assert originals == {sha(p) for p in folder.glob("*.png")}
    assert len(list((project.root / "originals").iterdir())) == 40
    assert len(read_json(project.state_dir / RECORDS_FILE)) == 40
    assert not [p for p in project.root.rglob(".*") if p.is_file() and p.name != "lock"]


def test_two_processes_importing_different_folders_keep_both_records(workspace, tmp_path):
    project = workspace.create("demo")
    make_folder(tmp_path / "user" / "one", 25, 200, size=96)
    make_folder(tmp_path / "user" / "two", 25, 300, size=96)
    procs = [cli(workspace.home, "import", "demo", str(tmp_path / "user" / name)) for name in ("one", "two")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    records = read_json(project.state_dir / RECORDS_FILE)
    assert len(records) == 50
    assert {Path(r["source"]).parent.name for r in records.values()} == {"one", "two"}
    assert len(images_in(project.concept("demo").folder)) == 50
    # nothing was lost, so importing both again adds nothing
    again = import_paths(project, [str(tmp_path / "user")], [tmp_path / "user"])
    assert again.imported == [] and len(again.already) == 50


# --- 7. file names that are not UTF-8 ----------------------------------------------------------------------------

@pytest.fixture
def bad_names(tmp_path: Path) -> Path:
    folder = tmp_path / "user"
    folder.mkdir()
    raw = os.fsencode(folder)
    with open(raw + b"/bad\xff\xfe.png", "wb") as f:
        f.write(png(40))
    with open(raw + b"/bad\xff\xfe.txt", "wb") as f:
        f.write(b"caption of the bad one")
    (folder / "good.png").write_bytes(png(41))
    return folder


def test_undecodable_names_are_imported_and_reported_readably(project, bad_names):
    report = import_paths(project, [str(bad_names)], [bad_names])
    assert len(report.imported) == 2 and report.skipped == []
    json.dumps(report.to_dict(), ensure_ascii=False).encode("utf-8")  # what the API and the CLI print
    sources = sorted(Path(i.source).name for i in report.imported)
    assert sources == ["bad\\xff\\xfe.png", "good.png"]
    concept = project.concept("demo").folder
    names = sorted(p.name for p in concept.iterdir())
    assert all(n.isprintable() and n.encode("utf-8") for n in names)
    caption = next(p for p in concept.glob("bad*.txt"))
    assert caption.read_text() == "caption of the bad one\n"
    (project.state_dir / RECORDS_FILE).read_bytes().decode("utf-8")  # the records were written, as UTF-8
    again = import_paths(project, [str(bad_names)], [bad_names])
    assert again.imported == [] and len(again.already) == 2


def test_undecodable_names_through_the_cli_json(workspace, bad_names):
    workspace.create("demo")
    odd_folder = os.fsencode(bad_names) + b"/sub\xe9"
    os.mkdir(odd_folder)
    with open(odd_folder + b"/x\x80.png", "wb") as f:
        f.write(png(42))
    p = cli(workspace.home, "import", "demo", str(bad_names), odd_folder, "--json")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode("utf-8", "replace")
    data = json.loads(out.decode("utf-8"))
    assert sorted(Path(i["source"]).name for i in data["imported"]) == ["bad\\xff\\xfe.png", "good.png",
                                                                        "x\\x80.png"]
    assert any("sub\\xe9" in i["source"] for i in data["imported"])
    assert b"Traceback" not in err


def test_undecodable_names_through_the_http_api(tmp_path, bad_names):
    client = client_for(tmp_path, [bad_names])
    client.post("/train-style/v1/projects", json={"name": "demo"})
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": [str(bad_names)]})
    assert r.status_code == 200
    assert sorted(Path(i["source"]).name for i in r.json()["imported"]) == ["bad\\xff\\xfe.png", "good.png"]


def test_an_undecodable_path_outside_the_roots_is_a_readable_403(tmp_path, bad_names):
    client = client_for(tmp_path, [bad_names])
    client.post("/train-style/v1/projects", json={"name": "demo"})
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": ["/etc/\udcffsecrets"]})
    assert r.status_code == 403 and "/etc/\\xffsecrets is outside the allowed folders" in r.json()["detail"]


def test_json_records_keep_lone_surrogates_exactly(tmp_path):
    name = os.fsdecode(b"bad\xff.png")
    atomic_write_json(tmp_path / "r.json", {"source": name})
    assert read_json(tmp_path / "r.json") == {"source": name}


# --- 9. originals named by their content; upload names judged ---------------------------------------------------

def test_upload_names_are_judged_and_originals_named_by_their_format(workspace, tmp_path):
    studio = Studio(StandaloneHost(home=workspace.home, lora=tmp_path / "lora", models=tmp_path / "models"))
    studio.create_project("demo")
    up = tmp_path / "uploads"
    up.mkdir()
    page = png(50) + b"<script>alert(document.cookie)</script>"
    files = {"x.html": page, "y.svg": png(51), "z.psd": png(52), "liar.jpg": png(53), "page.png": page,
             "netpbm.png": encode(Image.fromarray(pattern(54, 16, 16)), "PPM")}
    for name, data in files.items():
        (up / name).write_bytes(data)
    report = studio.import_uploads("demo", [(up / name, name) for name in files])
    skipped = {v.source: v.text for v in report.skipped}
    assert "not an image file type" in skipped["x.html"]
    assert "SVG" in skipped["y.svg"] and "Photoshop" in skipped["z.psd"]
    assert "not a recognisable image" in skipped["netpbm.png"]  # Pillow reads only the formats we import
    assert sorted(i.source for i in report.imported) == ["liar.jpg", "page.png"]
    originals = sorted(p.name for p in (workspace.home / "demo" / "originals").iterdir())
    assert [Path(n).suffix for n in originals] == [".png", ".png"]
    assert {sha(workspace.home / "demo" / "originals" / n) for n in originals} == {
        hashlib.sha256(png(53)).hexdigest(), hashlib.sha256(page).hexdigest()}
    assert not list((workspace.home / "demo").rglob("*.html"))


# --- 12. modes, repeats, trigger words ---------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_0666_minus_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        project = Workspace(tmp_path / "home").create("demo")
        (tmp_path / "user").mkdir()
        (tmp_path / "user" / "a.png").write_bytes(png(60))
        (tmp_path / "user" / "a.txt").write_text("caption")
        (tmp_path / "user" / "b.png").write_bytes(encode(Image.fromarray(pattern(61, 20, 20)).convert("L"), "PNG"))
        report = import_paths(project, [str(tmp_path / "user")], [tmp_path / "user"])
        atomic_write_bytes(tmp_path / "plain.bin", b"x")
    finally:
        os.umask(old)
    assert len(report.imported) == 2
    files = [p for p in project.root.rglob("*") if p.is_file()] + [tmp_path / "plain.bin"]
    kinds = {p.parent.name for p in files}
    assert {"originals", "1_demo", ".lorakit", "demo"} <= kinds  # originals, copies + captions, records, toml
    # a training copy kept byte for byte is a hard link to its original, made read-only (0444 minus the umask) so
    # that an editor saving in place cannot write into the original; everything else is 0666 minus the umask
    linked = {p for p in files if p.stat().st_nlink > 1}
    assert {p.parent.name for p in linked} == {"originals", "1_demo"}
    assert {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} == {
        p.relative_to(tmp_path).as_posix(): oct((0o444 if p in linked else 0o666) & ~umask) for p in files}


@pytest.mark.parametrize("repeats", [0, -1, 1.5, "2", True])
def test_bad_repeats_are_refused_before_anything_is_made(project, tmp_path, repeats):
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.png").write_bytes(png(70))
    with pytest.raises(InvalidName, match=r"repeats: expected an integer from 1 to"):
        import_paths(project, [str(tmp_path / "user")], [tmp_path / "user"], concept="art", repeats=repeats)
    assert project.concepts() == [] and images_in(project.root) == []


def test_repeats_zero_over_http_is_a_400(tmp_path):
    client = client_for(tmp_path, [tmp_path / "user"])
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.png").write_bytes(png(71))
    client.post("/train-style/v1/projects", json={"name": "demo"})
    r = client.post("/train-style/v1/projects/demo/import", json={"paths": [str(tmp_path / "user")], "repeats": 0})
    assert r.status_code == 400 and "repeats" in r.json()["detail"]
    assert images_in(tmp_path / "home" / "demo") == []


def test_trigger_words_are_capped(workspace):
    with pytest.raises(LorakitError, match=f"the limit is {MAX_TRIGGER_CHARS}"):
        workspace.create("demo", trigger_words=("x" * 10_000,))
    project = workspace.create("demo", trigger_words=("ohwx style",))
    with pytest.raises(LorakitError, match=f"the limit is {MAX_TRIGGER_CHARS}"):
        project.update_settings(trigger_words=("y" * (MAX_TRIGGER_CHARS + 1),))
    assert project.settings.trigger_words == ("ohwx style",)
    project.update_settings(trigger_words=("z" * MAX_TRIGGER_CHARS,))


# --- 11. one broken project --------------------------------------------------------------------------------------

def test_a_broken_project_is_listed_as_broken_and_the_others_still_are(tmp_path):
    client = client_for(tmp_path, [])
    for name in ("alpha", "broken toml", "not utf8", "zeta"):
        assert client.post("/train-style/v1/projects", json={"name": name}).status_code == 201
    home = tmp_path / "home"
    (home / "broken toml" / "project.toml").write_text("name = [unclosed")
    (home / "not utf8" / "project.toml").write_bytes(b'name = "\xff\xfe"\n')
    r = client.get("/train-style/v1/projects")
    assert r.status_code == 200
    listed = {p["name"]: p for p in r.json()["projects"]}
    assert sorted(listed) == ["alpha", "broken toml", "not utf8", "zeta"]
    assert "broken" not in listed["alpha"] and listed["alpha"]["created"]
    assert "not valid TOML" in listed["broken toml"]["broken"]
    assert listed["not utf8"]["broken"]


def test_what_a_killed_import_left_in_staging_is_cleared(project, tmp_path):
    staging = project.state_dir / "staging"
    staging.mkdir()
    dead = staging / ".import.999999999-1-abcd.tmp"  # no process has this id (above Linux's largest pid)
    dead.write_bytes(b"half a file")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.png").write_bytes(png(80))
    assert len(import_paths(project, [str(tmp_path / "user")], [tmp_path / "user"]).imported) == 1
    assert list(staging.iterdir()) == []


def test_cli_project_list_shows_a_broken_project_beside_the_good_ones(tmp_path):
    home = tmp_path / "home"
    ws = Workspace(home)
    ws.create("good")
    ws.create("bad")
    (home / "bad" / "project.toml").write_bytes(b"name = [unclosed")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "TRAIN_STYLE_CONFIG": str(tmp_path / "none.toml")}
    out = subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), "--json", "project", "list"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["projects"]}
    assert "broken" in rows["bad"] and "broken" not in rows["good"]
    text = subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), "project", "list"],
                          capture_output=True, text=True, env=env).stdout
    assert "good" in text and "bad  (broken" in text

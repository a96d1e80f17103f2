"""Importing the awkward folder: every good file upright in the dataset, every bad one skipped with its reason,
the user's files untouched, and nothing imported twice."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from awkward import Awkward, encode, pattern
from PIL import Image

from lib_lorakit.dataset.importer import ImportReport, ImportSource, import_paths, import_sources
from lib_lorakit.images import CAPTION_SUFFIXES, IMAGE_SUFFIXES


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO or a loop that hangs the importer must fail the test, not the whole run."""
    def stop(signum, frame):
        raise TimeoutError("the import hung")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (symlinks not followed): content hash and mtime of regular files, else kind."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out[str(p)] = (sha(p), st.st_mtime_ns, st.st_size)
            elif stat.S_ISLNK(st.st_mode):
                out[str(p)] = ("link", os.readlink(p))
            else:
                out[str(p)] = ("other", stat.S_IFMT(st.st_mode))
    return out


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith(".") and (p.name.endswith(".tmp")
                                                                          or p.name.startswith(".import."))]


def by_source(report: ImportReport, awk: Awkward, kind: str = "imported") -> dict[str, str]:
    """relative source path → project-relative training copy."""
    rel = {awk.display(r): r for r in awk.good}
    return {rel[i.source]: i.image for i in getattr(report, kind)}


def reasons(report: ImportReport, awk: Awkward) -> dict[str, str]:
    rel = {awk.display(r): r for r in awk.bad}
    return {rel.get(v.source, v.source): v.text for v in report.skipped}


@pytest.fixture
def imported(project, awkward):
    before = snapshot(awkward.root)
    report = import_paths(project, [str(awkward.root)], [awkward.root])
    return project, awkward, report, before


# --- the first import -------------------------------------------------------------------------------------------

def test_every_good_image_is_imported_upright_rgb(imported):
    project, awk, report, _ = imported
    copies = by_source(report, awk)
    assert set(copies) == set(awk.good), f"missing: {set(awk.good) - set(copies)}"
    for rel, expect in awk.good.items():
        path = project.root / copies[rel]
        assert path.parent == project.concept("demo").folder
        with Image.open(path) as im:
            assert im.mode == "RGB", rel
            assert im.size == expect.size, rel
            assert getattr(im, "n_frames", 1) == 1, rel
            for xy, colour in expect.pixels.items():
                got = im.getpixel(xy)
                worst = max(abs(a - b) for a, b in zip(got, colour, strict=True))
                assert worst <= expect.tolerance, (rel, xy, got, colour)
        if expect.keep_suffix:
            assert path.suffix == expect.keep_suffix, rel
            assert sha(path) == sha(awk.root / rel), f"{rel}: a plain image is copied byte for byte"
        item = next(i for i in report.imported if i.image == copies[rel])
        assert (item.width, item.height) == expect.size


def test_every_bad_file_is_skipped_with_its_reason(imported):
    _, awk, report, _ = imported
    got = reasons(report, awk)
    assert set(got) == set(awk.bad), f"unexpected: {set(got) ^ set(awk.bad)}"
    for rel, words in awk.bad.items():
        assert words in got[rel], (rel, got[rel])
    assert "limit of 100 MP" in got["bad/huge.png"]
    shown = {i.source for i in report.imported} | {v.source for v in report.skipped}
    for rel in awk.ignored:
        assert awk.display(rel) not in shown, f"{rel} should be passed over silently"


def test_the_users_folder_is_untouched(imported):
    _, awk, _, before = imported
    assert snapshot(awk.root) == before


def test_originals_are_byte_identical_copies(imported):
    project, awk, _, _ = imported
    originals = {sha(p) for p in (project.root / "originals").iterdir()}
    wanted = {sha(awk.root / rel) for rel in awk.good}
    assert originals == wanted, "one original per distinct good file; nothing kept for skipped files"


def test_captions_come_along_as_utf8(imported):
    project, awk, report, _ = imported
    copies = by_source(report, awk)
    for rel, expect in awk.good.items():
        caption = (project.root / copies[rel]).with_suffix(".txt")
        if expect.caption is None:
            assert not caption.exists(), rel
            continue
        assert caption.read_bytes().decode("utf-8").strip() == expect.caption, rel
    assert not list(project.concept("demo").folder.glob("*.caption")), "captions use the project's extension"


def test_warnings_tell_what_was_changed(imported):
    _, awk, report, _ = imported
    for rel, expect in awk.good.items():
        mine = [w.text for w in report.warnings if w.source == awk.display(rel)]
        for words in expect.warnings:
            assert any(words in w for w in mine), (rel, words, mine)
        if not expect.warnings:
            assert mine == [], (rel, mine)


def test_duplicates_are_reported(imported):
    _, awk, report, _ = imported
    source_of = {img: r for r, img in by_source(report, awk).items()}
    groups = {(g.kind, tuple(sorted(source_of[i] for i in g.images))) for g in report.duplicates}
    assert groups == {("exact", tuple(sorted(awk.exact))), ("near", tuple(sorted(awk.near)))}


def test_no_temporary_files_are_left(imported):
    project, awk, _, _ = imported
    assert leftovers(project.root) == []
    assert leftovers(awk.root.parent) == []


# --- importing again --------------------------------------------------------------------------------------------

def test_importing_twice_adds_nothing(imported):
    project, awk, first, _ = imported
    dataset_before = files_under(project.root / "dataset")
    originals_before = files_under(project.root / "originals")

    second = import_paths(project, [str(awk.root)], [awk.root])

    assert second.imported == []
    assert by_source(second, awk, "already") == by_source(first, awk)
    assert set(reasons(second, awk)) == set(awk.bad)
    assert files_under(project.root / "dataset") == dataset_before
    assert files_under(project.root / "originals") == originals_before
    assert leftovers(project.root) == []


def test_importing_again_after_changing_repeats_adds_nothing(imported):
    project, awk, first, _ = imported
    project.set_repeats("demo", 3)
    dataset_before = files_under(project.root / "dataset")

    second = import_paths(project, [str(awk.root)], [awk.root])

    assert second.imported == []
    assert len(second.already) == len(first.imported)
    assert all(i.image.startswith("dataset/3_demo/") for i in second.already)
    assert files_under(project.root / "dataset") == dataset_before


def test_a_new_file_in_the_folder_is_the_only_one_added(imported):
    project, awk, _, _ = imported
    extra = awk.root / "photos" / "later.png"
    extra.write_bytes(encode(Image.fromarray(pattern(77, 40, 40)), "PNG"))
    second = import_paths(project, [str(awk.root)], [awk.root])
    assert [i.source for i in second.imported] == [str(extra)]
    assert second.duplicates == []


# --- roots, cancel, concepts ------------------------------------------------------------------------------------

def test_paths_outside_the_allowed_folders_are_skipped(project, awkward):
    secret = awkward.outside / "secret.png"
    before = snapshot(awkward.outside)
    report = import_paths(project, [str(secret), str(awkward.root / ".." / "elsewhere")], [awkward.root])
    assert report.imported == [] and len(report.skipped) == 2
    for v in report.skipped:
        assert "outside the allowed folders" in v.text and str(awkward.root.resolve()) in v.text
    assert files_under(project.root / "dataset") == set() and files_under(project.root / "originals") == set()
    assert snapshot(awkward.outside) == before


def test_a_single_file_and_a_nested_folder(project, awkward):
    report = import_paths(project, [str(awkward.root / "photos" / "rot6.jpg"), str(awkward.root / "collide")],
                          [awkward.root], concept="mixed", repeats=2)
    assert len(report.imported) == 3 and report.skipped == []
    folder = project.root / "dataset" / "2_mixed"
    assert sorted(p.name for p in folder.iterdir()) == ["rot6.png", "rot6.txt", "same-2.png", "same-2.txt",
                                                        "same.png", "same.txt"]


def test_reg_import_and_custom_background(project, awkward):
    project.update_settings(background="#00ff00", caption_extension=".caption")
    report = import_paths(project, [str(awkward.root / "modes" / "rgba.PnG"),
                                    str(awkward.root / "captions" / "both.png")], [awkward.root],
                          concept="people", kind="reg")
    assert len(report.imported) == 2
    folder = project.concept("people", kind="reg").folder
    with Image.open(folder / "rgba.png") as im:
        assert im.getpixel((40, 50)) == (0, 255, 0)
    assert (folder / "both.caption").read_text(encoding="utf-8").strip() == "from txt"
    assert any("composited on #00ff00" in w.text for w in report.warnings)


class AfterCalls:
    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls > self.n


def test_cancel_stops_early_and_keeps_what_was_done(project, awkward):
    progress = []
    total = sum(rel.startswith("odd names/") for rel in awkward.good)
    assert total >= 4
    report = import_paths(project, [str(awkward.root / "odd names")], [awkward.root], cancel=AfterCalls(2),
                          progress=lambda i, n, what: progress.append((i, n)))
    assert report.cancelled and "(cancelled)" in report.summary()
    assert len(report.imported) == 2
    images = [p for p in project.concept("demo").folder.iterdir() if p.suffix in IMAGE_SUFFIXES]
    assert sorted(str(p.relative_to(project.root)) for p in images) == sorted(i.image for i in report.imported)
    assert len(list((project.root / "originals").iterdir())) == 2
    assert progress == [(0, total), (1, total), (total, total)]
    assert leftovers(project.root) == []

    rest = import_paths(project, [str(awkward.root / "odd names")], [awkward.root])
    assert len(rest.already) == 2 and not rest.cancelled
    assert len(rest.imported) == total - 2


def test_one_unreadable_file_does_not_stop_the_rest(project, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(encode(Image.fromarray(pattern(5, 32, 32)), "PNG"))
    sources = [ImportSource(path=tmp_path / "vanished.png", display="vanished.png"),
               ImportSource(path=good, display="good.png")]
    report = import_sources(project, sources)
    assert [v.source for v in report.skipped] == ["vanished.png"]
    assert "no such file" in report.skipped[0].text
    assert [i.source for i in report.imported] == ["good.png"]


def test_permission_denied(project, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: every file is readable, so permission denied cannot happen")
    locked = tmp_path / "in" / "locked.png"
    locked.parent.mkdir()
    locked.write_bytes(encode(Image.fromarray(pattern(6, 32, 32)), "PNG"))
    locked.chmod(0)
    try:
        report = import_paths(project, [str(locked.parent)], [tmp_path])
    finally:
        locked.chmod(0o644)
    assert "permission denied" in report.skipped[0].text


def test_report_to_dict_and_summary(imported):
    _, awk, report, _ = imported
    d = report.to_dict()
    assert len(d["imported"]) == len(awk.good) and len(d["skipped"]) == len(awk.bad)
    assert {g["kind"] for g in d["duplicates"]} == {"exact", "near"}
    assert report.summary().startswith(f"{len(awk.good)} imported, {len(awk.bad)} skipped")
    assert report.ok


def test_caption_decoding_details(project, tmp_path):
    folder = tmp_path / "caps"
    folder.mkdir()
    texts = {"bom8": "\ufefftag, ü".encode(), "crlf": b"one,\r\ntwo\r\n", "be16": "größe".encode("utf-16-be"),
             "upper": b"shouting"}
    for i, (stem, data) in enumerate(texts.items()):
        (folder / f"{stem}.png").write_bytes(encode(Image.fromarray(pattern(40 + i, 24, 24)), "PNG"))
        (folder / (f"{stem}.TXT" if stem == "upper" else f"{stem}.txt")).write_bytes(
            (b"\xfe\xff" + data) if stem == "be16" else data)
    report = import_paths(project, [str(folder)], [tmp_path])
    out = project.concept("demo").folder
    assert (out / "bom8.txt").read_text(encoding="utf-8") == "tag, ü\n"
    assert (out / "crlf.txt").read_text(encoding="utf-8") == "one,\ntwo\n"
    assert (out / "be16.txt").read_text(encoding="utf-8") == "größe\n"
    assert (out / "upper.txt").read_text(encoding="utf-8") == "shouting\n"
    assert not any("not UTF-8" in w.text for w in report.warnings)
    assert {p.suffix for p in out.iterdir()} <= set(IMAGE_SUFFIXES) | set(CAPTION_SUFFIXES)
    assert np.asarray(Image.open(out / "bom8.png")).shape == (24, 24, 3)

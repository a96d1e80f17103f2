"""Caption files as sd-scripts reads them, and writing them with undo/redo, on real files in a project."""

from __future__ import annotations

import functools
import os

import pytest
from awkward import encode, pattern
from PIL import Image

import lib_lorakit.captions.store as store_module
from lib_lorakit.captions.ops import CaptionOp, execute
from lib_lorakit.captions.store import CaptionRecord, CaptionStore, HistoryEntry
from lib_lorakit.errors import InvalidName, LorakitError, NotFound


@functools.cache
def png_bytes(seed: int) -> bytes:
    return encode(Image.fromarray(pattern(seed, 32, 32)), "PNG")


@pytest.fixture
def captioned(project):
    """alpha: a caption (.txt), one only as .caption, one without, one in cp1252; plus files sd-scripts skips."""
    alpha = project.add_concept("alpha", repeats=3).folder
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.jpg", ".hidden.png"]):
        (alpha / name).write_bytes(png_bytes(i))
    (alpha / "a.txt").write_text("Long_hair, smile\n", encoding="utf-8")
    (alpha / "b.caption").write_text("wrong extension", encoding="utf-8")
    (alpha / "d.txt").write_bytes("café, smile\r\n".encode("cp1252"))
    (alpha / ".hidden.txt").write_text("hidden")
    (alpha / "sub").mkdir()
    (alpha / "sub" / "nested.png").write_bytes(png_bytes(9))
    (alpha / "notes.md").write_text("not an image")
    people = project.add_concept("people", kind="reg").folder
    (people / "p.png").write_bytes(png_bytes(7))
    (people / "p.txt").write_text("woman", encoding="utf-8")
    return project


def read(project, rel: str) -> bytes:
    return (project.root / rel).read_bytes()


def test_records_are_the_images_sd_scripts_reads(captioned):
    records = {r.image: r for r in CaptionStore(captioned).records()}
    assert list(records) == ["dataset/3_alpha/a.png", "dataset/3_alpha/b.png", "dataset/3_alpha/c.png",
                             "dataset/3_alpha/d.jpg", "reg/1_people/p.png"]
    a = records["dataset/3_alpha/a.png"]
    assert (a.caption, a.concept, a.kind, a.text, a.tags, a.exists, a.encoding, a.other_ext) == \
        ("dataset/3_alpha/a.txt", "alpha", "dataset", "Long_hair, smile", ("Long_hair", "smile"), True, "utf-8", False)
    b = records["dataset/3_alpha/b.png"]
    assert (b.exists, b.other_ext, b.text, b.caption) == (False, True, "", "dataset/3_alpha/b.txt")
    c = records["dataset/3_alpha/c.png"]
    assert (c.exists, c.other_ext) == (False, False)
    d = records["dataset/3_alpha/d.jpg"]
    assert (d.text, d.encoding) == ("café, smile", "cp1252")
    assert records["reg/1_people/p.png"].kind == "reg"
    assert CaptionRecord.from_dict(a.to_dict()) == a


def test_records_filter_by_kind_and_concept(captioned):
    store = CaptionStore(captioned)
    assert [r.image for r in store.records(kind="reg")] == ["reg/1_people/p.png"]
    assert {r.concept for r in store.records(concept="alpha")} == {"alpha"}
    with pytest.raises(NotFound, match="'nope'.*have: alpha, people"):
        store.records(concept="nope")
    assert store.record("dataset/3_alpha/a.png").text == "Long_hair, smile"


def test_records_follow_the_project_caption_extension(captioned):
    captioned.update_settings(caption_extension=".caption")
    records = {r.image: r for r in CaptionStore(captioned).records(kind="dataset")}
    assert records["dataset/3_alpha/b.png"].text == "wrong extension"
    assert records["dataset/3_alpha/a.png"].other_ext is True


def test_apply_writes_only_changed_captions_and_undo_redo(captioned):
    store = CaptionStore(captioned)
    before_d = read(captioned, "dataset/3_alpha/d.txt")
    entry = store.apply({"dataset/3_alpha/a.png": "long hair, smile, outdoors",
                         "dataset/3_alpha/d.jpg": "café, smile"},  # same text: left alone (still cp1252)
                        label="Edit", op={"op": "edit"})
    assert (entry.files, entry.written, entry.undone, entry.label) == (1, 1, False, "Edit")
    assert read(captioned, "dataset/3_alpha/a.txt") == b"long hair, smile, outdoors\n"
    assert read(captioned, "dataset/3_alpha/d.txt") == before_d
    assert [h.id for h in store.history()] == [entry.id]

    undone = store.undo()
    assert (undone.id, undone.undone, undone.written, undone.conflicts) == (entry.id, True, 1, ())
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"
    with pytest.raises(NotFound, match="Nothing to undo"):
        store.undo()
    redone = store.redo()
    assert (redone.undone, redone.written) == (False, 1)
    assert read(captioned, "dataset/3_alpha/a.txt") == b"long hair, smile, outdoors\n"
    with pytest.raises(NotFound, match="Nothing to redo"):
        store.redo()


def test_an_apply_that_changes_nothing_records_nothing(captioned):
    store = CaptionStore(captioned)
    entry = store.apply({"dataset/3_alpha/a.png": "Long_hair, smile"}, label="Same", op={"op": "edit"})
    assert (entry.id, entry.written) == ("", 0)
    assert store.history() == []


def test_undo_leaves_a_caption_edited_by_hand_unless_forced(captioned):
    store = CaptionStore(captioned)
    store.apply({"dataset/3_alpha/a.png": "one", "dataset/3_alpha/d.jpg": "two"}, label="Batch", op={"op": "x"})
    (captioned.root / "dataset/3_alpha/a.txt").write_text("edited by hand\n")

    preview = store.undo(dry_run=True)
    assert preview.conflicts == ("dataset/3_alpha/a.png",) and preview.undone
    assert read(captioned, "dataset/3_alpha/d.txt") == b"two\n"  # the dry run changed nothing
    assert store.history()[0].undone is False

    result = store.undo()
    assert (result.conflicts, result.written) == (("dataset/3_alpha/a.png",), 1)
    assert read(captioned, "dataset/3_alpha/a.txt") == b"edited by hand\n"
    assert read(captioned, "dataset/3_alpha/d.txt") == "café, smile\r\n".encode("cp1252")

    store.redo()  # a re-applies only where the caption is still what the step found: d
    assert read(captioned, "dataset/3_alpha/a.txt") == b"edited by hand\n"
    assert read(captioned, "dataset/3_alpha/d.txt") == b"two\n"
    forced = store.undo(force=True)
    assert forced.conflicts == () and forced.written == 2
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"


def test_an_editor_adding_a_final_newline_is_not_a_conflict(captioned):
    store = CaptionStore(captioned)
    store.apply({"dataset/3_alpha/a.png": "one"}, label="Edit", op={"op": "edit"})
    (captioned.root / "dataset/3_alpha/a.txt").write_bytes(b"one\r\n\r\n")
    assert store.undo().conflicts == ()
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"


def test_a_new_step_after_undo_discards_the_redo_tail(captioned):
    store = CaptionStore(captioned)
    first = store.apply({"dataset/3_alpha/a.png": "first"}, label="First", op={"op": "edit"})
    second = store.apply({"dataset/3_alpha/a.png": "second"}, label="Second", op={"op": "edit"})
    store.undo()
    third = store.apply({"dataset/3_alpha/a.png": "third"}, label="Third", op={"op": "edit"})
    assert [h.label for h in store.history()] == ["Third", "First"]
    assert int(third.id) > int(second.id) > int(first.id)  # ids are never reused
    with pytest.raises(NotFound, match="Nothing to redo"):
        store.redo()
    store.undo()
    store.undo()
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"
    assert store.redo().label == "First"  # the step undone last comes back first
    assert store.redo().label == "Third"


def test_a_tagging_run_appends_batches_to_one_undo_step(captioned):
    store = CaptionStore(captioned)
    run = store.apply({"dataset/3_alpha/c.png": "tag one"}, label="Tag with wd14", op={"op": "tag"})
    more = store.apply({"dataset/3_alpha/a.png": "tag two", "dataset/3_alpha/c.png": "tag one, again"},
                       label="Tag with wd14", op={"op": "tag"}, entry=run.id)
    assert (more.id, more.files, more.written) == (run.id, 2, 2)
    assert len(store.history()) == 1
    store.undo()
    assert not (captioned.root / "dataset/3_alpha/c.txt").exists()  # it did not exist before the run
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"
    store.redo()
    assert read(captioned, "dataset/3_alpha/c.txt") == b"tag one, again\n"
    assert read(captioned, "dataset/3_alpha/a.txt") == b"tag two\n"


def test_appending_to_an_undone_or_unknown_step_is_refused(captioned):
    store = CaptionStore(captioned)
    run = store.apply({"dataset/3_alpha/c.png": "x"}, label="Tag", op={"op": "tag"})
    store.undo()
    with pytest.raises(LorakitError, match="was undone"):
        store.apply({"dataset/3_alpha/a.png": "y"}, label="Tag", op={"op": "tag"}, entry=run.id)
    with pytest.raises(NotFound, match="No caption history step '999999'"):
        store.apply({"dataset/3_alpha/a.png": "y"}, label="Tag", op={"op": "tag"}, entry="999999")


def test_trigger_words_in_settings_are_undone_with_the_step(captioned):
    store = CaptionStore(captioned)
    entry = execute(store, CaptionOp(op="trigger", tags=("zz style",)))
    assert entry.settings == {"trigger_words": {"before": [], "after": ["zz style"]}}
    assert captioned.settings.trigger_words == ("zz style",)
    assert read(captioned, "dataset/3_alpha/a.txt") == b"zz style, Long_hair, smile\n"
    assert read(captioned, "reg/1_people/p.txt") == b"woman"  # reg captions keep no trigger word
    store.undo()
    assert captioned.settings.trigger_words == ()
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"
    store.redo()
    assert captioned.settings.trigger_words == ("zz style",)


def test_a_setting_changed_since_is_a_conflict(captioned):
    store = CaptionStore(captioned)
    execute(store, CaptionOp(op="trigger", tags=("zz",)))
    captioned.update_settings(trigger_words=("other",))
    result = store.undo()
    assert "project.toml:trigger_words" in result.conflicts
    assert captioned.settings.trigger_words == ("other",)


def test_a_caption_that_was_not_utf8_is_rewritten_as_utf8_and_undo_restores_its_bytes(captioned):
    original = read(captioned, "dataset/3_alpha/d.txt")
    store = CaptionStore(captioned)
    store.apply({"dataset/3_alpha/d.jpg": "café, smile, sitting"}, label="Edit", op={"op": "edit"})
    assert read(captioned, "dataset/3_alpha/d.txt") == "café, smile, sitting\n".encode()
    assert store.record("dataset/3_alpha/d.jpg").encoding == "utf-8"
    store.undo()
    assert read(captioned, "dataset/3_alpha/d.txt") == original


def test_history_is_bounded_and_lists_newest_first(captioned, monkeypatch):
    monkeypatch.setattr(store_module, "HISTORY_LIMIT", 3)
    store = CaptionStore(captioned)
    for i in range(5):
        store.apply({"dataset/3_alpha/a.png": f"text {i}"}, label=f"Edit {i}", op={"op": "edit", "n": i})
    history = store.history()
    assert [h.label for h in history] == ["Edit 4", "Edit 3", "Edit 2"]
    assert history[0].op == {"op": "edit", "n": 4} and history[0].files == 1
    assert [h.label for h in store.history(limit=1)] == ["Edit 4"]
    assert HistoryEntry.from_dict(history[0].to_dict()) == history[0]


@pytest.mark.parametrize("image", ["../demo/x.png", "/etc/passwd.png", "dataset/3_alpha/../../x.png",
                                   "dataset/misc/a.png", "dataset/3_alpha/a.txt", "runs/3_alpha/a.png",
                                   "dataset/3_alpha/sub/nested.png", "dataset\\3_alpha\\a.png"])
def test_apply_refuses_paths_that_are_not_training_images(captioned, image):
    with pytest.raises(InvalidName, match="expected an image path"):
        CaptionStore(captioned).apply({image: "x"}, label="Bad", op={"op": "edit"})


def test_apply_refuses_a_missing_image_and_changes_nothing(captioned):
    store = CaptionStore(captioned)
    with pytest.raises(NotFound, match="ghost.png"):
        store.apply({"dataset/3_alpha/a.png": "changed", "dataset/3_alpha/ghost.png": "x"}, label="Bad",
                    op={"op": "edit"})
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"
    assert store.history() == []


def test_adopting_the_other_extension_makes_sd_scripts_read_those_captions(captioned):
    store = CaptionStore(captioned)
    store.adopt_other_extension()
    assert read(captioned, "dataset/3_alpha/b.txt") == b"wrong extension\n"
    assert not any(r.other_ext for r in store.records())
    store.undo()
    assert not (captioned.root / "dataset/3_alpha/b.txt").exists()


def test_every_new_caption_is_on_disk_before_any_is_renamed_into_place(captioned, monkeypatch):
    folder = captioned.concept("alpha").folder
    for i in range(40):
        (folder / f"many{i:02d}.png").write_bytes(png_bytes(0))
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "sync", lambda: events.append(("sync", "")))  # never: it would wait for everyone
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a))), real_replace(a, b)))
    store = CaptionStore(captioned)
    store.apply({f"dataset/3_alpha/many{i:02d}.png": f"tag {i}" for i in range(40)}, label="Big", op={"op": "x"})
    temps = [p for kind, p in events if kind == "replace" and p.endswith(".tmp") and "/dataset/" in p]
    assert len(temps) == 40 and ("sync", "") not in events
    first_rename = next(i for i, (kind, p) in enumerate(events) if kind == "replace" and p in temps)
    assert set(temps) <= {p for kind, p in events[:first_rename] if kind == "fsync"}  # durable before visible
    assert ("fsync", str(folder)) in events  # the renames are made durable
    assert all((folder / f"many{i:02d}.txt").read_text() == f"tag {i}\n" for i in range(40))
    assert not list(folder.glob(".*.tmp"))


def test_written_captions_get_ordinary_permissions(captioned):
    umask = os.umask(0o022)
    try:
        CaptionStore(captioned).apply({"dataset/3_alpha/a.png": "x"}, label="Edit", op={"op": "edit"})
    finally:
        os.umask(umask)
    assert (captioned.root / "dataset/3_alpha/a.txt").stat().st_mode & 0o777 == 0o644


def test_a_failed_batch_leaves_no_temporary_files(captioned, monkeypatch):
    folder = captioned.concept("alpha").folder
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        CaptionStore(captioned).apply({"dataset/3_alpha/a.png": "one", "dataset/3_alpha/c.png": "two",
                                       "dataset/3_alpha/d.jpg": "three"}, label="Edit", op={"op": "edit"})
    assert not list(folder.glob(".*.tmp"))


def test_images_sharing_one_caption_file_cannot_get_different_texts(captioned):
    folder = captioned.concept("alpha").folder
    (folder / "a.jpg").write_bytes(png_bytes(3))  # a.png and a.jpg: sd-scripts reads a.txt for both
    store = CaptionStore(captioned)
    with pytest.raises(LorakitError, match="share the caption file 'dataset/3_alpha/a.txt'"):
        store.apply({"dataset/3_alpha/a.png": "one", "dataset/3_alpha/a.jpg": "two"}, label="Edit", op={"op": "x"})
    assert store.apply({"dataset/3_alpha/a.png": "one", "dataset/3_alpha/a.jpg": "one"}, label="Edit",
                       op={"op": "x"}).files == 1


def test_invalid_settings_are_refused_before_any_caption_is_written(captioned):
    store = CaptionStore(captioned)
    with pytest.raises(LorakitError, match="trigger_words\\[0\\]: expected a string, got 3"):
        store.apply({"dataset/3_alpha/a.png": "changed"}, label="Bad", op={"op": "x"}, settings={"trigger_words": [3]})
    with pytest.raises(LorakitError, match="'name' is not a project setting"):
        store.apply({}, label="Bad", op={"op": "x"}, settings={"name": "other"})
    assert read(captioned, "dataset/3_alpha/a.txt") == b"Long_hair, smile\n"


def test_a_big_batch_that_fails_while_writing_changes_no_caption_and_leaves_no_temporary_files(captioned,
                                                                                               monkeypatch):
    from lib_lorakit import fsutil  # the batch writer

    folder = captioned.concept("alpha").folder
    for i in range(60):
        (folder / f"many{i:02d}.png").write_bytes(png_bytes(0))
        (folder / f"many{i:02d}.txt").write_text(f"old {i}\n")
    real_write, written = fsutil._write_fully, []

    def disk_fills_up(fd, data):
        written.append(fd)
        if len(written) == 45:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(fsutil, "_write_fully", disk_fills_up)
    store = CaptionStore(captioned)
    with pytest.raises(OSError, match="No space"):
        store.apply({f"dataset/3_alpha/many{i:02d}.png": f"new {i}" for i in range(60)}, label="Big", op={"op": "x"})
    assert all((folder / f"many{i:02d}.txt").read_text() == f"old {i}\n" for i in range(60))  # all or nothing
    assert not list(folder.glob(".*.tmp"))
    assert [s.label for s in store.history()] == []  # no step that would make the next undo a no-op


def test_another_process_changing_captions_is_waited_for(captioned):
    """The CLI beside the webui: one writes its step while the other waits, so the history stays one line."""
    import subprocess
    import sys
    import time

    lock = captioned.state_dir / "captions" / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(1.5)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    step = CaptionStore(captioned).apply({"dataset/3_alpha/a.png": "after the other"}, label="Edit",
                                         op={"op": "edit"})
    waited = time.monotonic() - started
    holder.wait(10)
    assert step.written == 1 and waited > 0.8

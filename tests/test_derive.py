"""One derivation for every training copy (crop/derive.py): real imports, real files, real hard links.

What a user would notice: a crop, flip or reset is always made from the original (so going back gives exactly the
copy the import made), the original never changes, the caption stays with its image when the extension changes,
re-importing does not duplicate a cropped image, undo/redo walk the steps, and awkward originals (EXIF-rotated,
CMYK, 16-bit) derive upright and right.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from awkward import MARK, RED, encode, jpeg_bytes, pattern, stored_for_orientation
from PIL import Image

from lib_lorakit.crop import derive as dv
from lib_lorakit.dataset.importer import import_paths
from lib_lorakit.errors import LorakitError, NotFound
from lib_lorakit.project import Project, Workspace


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def originals(project: Project) -> dict[str, str]:
    return {p.name: sha(p) for p in sorted((project.root / "originals").iterdir())}


def folder_bytes(project: Project) -> dict[str, bytes]:
    folder = project.concept("demo").folder
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def imported(tmp_path: Path) -> tuple[Project, dict[str, str]]:
    """A project holding one image of each awkward kind, imported the ordinary way; name → training copy path."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain.jpg").write_bytes(jpeg_bytes(pattern(1, 96, 64)))
    (src / "plain.txt").write_text("a cat, a tree")
    (src / "turned.jpg").write_bytes(jpeg_bytes(stored_for_orientation(pattern(2, 96, 64), 6), 6))
    cmyk = np.zeros((48, 64, 4), np.uint8)
    cmyk[:, :32] = (0, 255, 255, 0)  # red on the left
    cmyk[:, 32:] = (255, 0, 255, 0)  # green on the right
    (src / "cmyk.jpg").write_bytes(encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95))
    ramp = np.rint(np.linspace(0, 65535, 128))[None, :].repeat(40, 0).astype(np.uint16)
    (src / "deep.png").write_bytes(encode(Image.fromarray(ramp, "I;16"), "PNG"))
    (src / "lossless.png").write_bytes(encode(Image.fromarray(pattern(3, 80, 40)), "PNG"))
    project = Workspace(tmp_path / "home").create("demo")
    report = import_paths(project, [str(src)], [tmp_path], concept="demo")
    assert not report.skipped
    return project, {Path(i.source).stem: i.image for i in report.imported}


def test_crop_flip_reset_gives_back_the_imported_copy_and_originals_never_change(imported):
    project, images = imported
    before_originals = originals(project)
    imported_copies = folder_bytes(project)
    plain = project.root / images["plain"]
    assert os.path.samefile(plain, dv.original_path(project, images["plain"]))  # the importer linked it

    crops = {images[n]: dv.StepsChange(crop=(-8, -4, 40, 30), fill="#102030") for n in images}
    cropped = dv.set_steps(project, crops, "crop all")
    assert not cropped.skipped and cropped.step
    now = {d.previous: d.image for d in cropped.derived}
    flipped = dv.flip(project, list(now.values()), True)
    assert not flipped.skipped
    # the same steps derived again give the same bytes (idempotent, from the original, not the copy)
    after_flip = folder_bytes(project)
    for d in flipped.derived:
        dv.derive(project, d.image)
    assert folder_bytes(project) == after_flip
    reset = dv.set_steps(project, {d.image: dv.StepsChange(reset_crop=True, flip=False) for d in flipped.derived},
                         "reset all")
    assert not reset.skipped
    assert folder_bytes(project) == imported_copies  # names, captions and bytes as the import left them
    assert os.path.samefile(plain, dv.original_path(project, images["plain"]))  # a link again
    assert originals(project) == before_originals


def test_replacing_a_linked_copy_never_writes_into_the_original(imported):
    project, images = imported
    original = dv.original_path(project, images["lossless"])
    assert os.path.samefile(project.root / images["lossless"], original)
    before = sha(original)
    dv.set_steps(project, {images["lossless"]: dv.StepsChange(crop=(10, 5, 50, 35))}, "crop")
    copy = project.root / images["lossless"]
    assert not os.path.samefile(copy, original)
    assert sha(original) == before and Image.open(copy).size == (40, 30)
    assert os.stat(original).st_nlink == 1  # the copy's name now holds a file of its own


def test_letterbox_pads_with_transparent_fill_and_keeps_the_whole_original(imported):
    project, images = imported
    src = np.asarray(Image.open(dv.original_path(project, images["lossless"])).convert("RGB"))
    report = dv.set_steps(project, {images["lossless"]: dv.StepsChange(crop=(0, -20, 80, 60), fill="#ff8000")},
                          "letterbox")
    derived = report.derived[0]
    assert derived.masked and derived.image.endswith("lossless.png") and derived.size == (80, 80)
    out = np.asarray(Image.open(project.root / derived.image))
    assert out.shape == (80, 80, 4)
    assert (out[20:60, :, :3] == src).all() and (out[20:60, :, 3] == 255).all()  # the whole original, opaque
    pad = np.concatenate([out[:20], out[60:]])
    assert (pad[..., 3] == 0).all() and (pad[..., :3] == (255, 128, 0)).all()  # alpha 0 over the fill colour


@pytest.mark.parametrize("fill", ["edge", "blur", "white"])
def test_every_fill_keeps_the_picture_and_masks_only_the_padding(imported, fill):
    project, images = imported
    src = np.asarray(Image.open(dv.original_path(project, images["lossless"])).convert("RGB"))
    report = dv.set_steps(project, {images["lossless"]: dv.StepsChange(crop=(-10, -20, 90, 60), fill=fill)}, fill)
    out = np.asarray(Image.open(project.root / report.derived[0].image))
    assert (out[20:60, 10:90, :3] == src).all()
    alpha = out[..., 3].copy()
    assert (alpha[20:60, 10:90] == 255).all()
    alpha[20:60, 10:90] = 0
    assert not alpha.any()
    if fill == "edge":
        assert (out[:20, 10:90, :3] == src[0]).all() and (out[20:60, :10, :3] == src[:, :1]).all()
    if fill == "white":
        assert (out[:20, :, :3] == 255).all()


def test_a_jpeg_padded_becomes_png_with_its_caption_and_is_not_imported_twice(imported, tmp_path):
    project, images = imported
    report = dv.set_steps(project, {images["plain"]: dv.StepsChange(crop=(0, -16, 96, 80))}, "letterbox")
    folder = project.concept("demo").folder
    assert report.derived[0].image == images["plain"][:-4] + ".png"
    assert not (folder / "plain.jpg").exists() and (folder / "plain.png").is_file()
    assert (folder / "plain.txt").read_text() == "a cat, a tree\n"
    again = import_paths(project, [str(tmp_path / "src")], [tmp_path], concept="demo")
    assert not again.imported and len(again.already) == 5
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".txt") == sorted(
        ["plain.png", "turned.png", "cmyk.png", "deep.png", "lossless.png"])


def test_awkward_originals_derive_upright(imported):
    project, images = imported
    # EXIF orientation 6: the upright picture is 96×64 with the red marker at its top-left
    turned = dv.set_steps(project, {images["turned"]: dv.StepsChange(crop=(0, 0, MARK, MARK))}, "corner")
    corner = np.asarray(Image.open(project.root / turned.derived[0].image).convert("RGB")).astype(int)
    assert turned.derived[0].size == (MARK, MARK)
    assert np.abs(corner[4:12, 4:12] - RED).max() < 40
    # CMYK: red left, green right, flipped → green left
    cmyk = dv.flip(project, [images["cmyk"]], True)
    a = np.asarray(Image.open(project.root / cmyk.derived[0].image).convert("RGB")).astype(int)
    assert a[24, 8, 1] > 200 and a[24, 8, 0] < 60 and a[24, 56, 0] > 200
    # 16-bit grayscale: a ramp dark → bright, cropped to its right half stays bright
    deep = dv.set_steps(project, {images["deep"]: dv.StepsChange(crop=(64, 0, 128, 40))}, "right half")
    b = np.asarray(Image.open(project.root / deep.derived[0].image).convert("L")).astype(int)
    assert b.shape == (40, 64) and b[:, 0].min() >= 120 and b[:, -1].min() >= 250


def test_undo_redo_walk_the_steps_and_a_new_step_drops_the_redo_tail(imported):
    project, images = imported
    image = images["lossless"]
    first = dv.set_steps(project, {image: dv.StepsChange(crop=(0, 0, 40, 40))}, "first")
    after_first = (project.root / first.derived[0].image).read_bytes()
    dv.flip(project, [image], True)
    flipped = (project.root / image).read_bytes()
    assert dv.undo(project).label == "Flip 1 image(s)"
    assert (project.root / image).read_bytes() == after_first and dv.steps_of(project, image).flip is False
    assert dv.undo(project).label == "first"
    assert dv.steps_of(project, image) == dv.Steps()
    with pytest.raises(NotFound, match="Nothing to undo"):
        dv.undo(project)
    dv.redo(project)
    dv.redo(project)
    assert (project.root / image).read_bytes() == flipped
    dv.undo(project)
    dv.set_steps(project, {image: dv.StepsChange(crop=(5, 5, 25, 25))}, "another")
    with pytest.raises(NotFound, match="Nothing to redo"):
        dv.redo(project)
    assert [s.label for s in dv.history(project)] == ["another", "first"]


def test_an_image_put_in_by_hand_becomes_its_own_original(tmp_path):
    project = Workspace(tmp_path / "home").create("demo")
    folder = project.add_concept("demo", 1).folder
    data = encode(Image.fromarray(pattern(9, 64, 64)), "PNG")
    (folder / "hand.png").write_bytes(data)
    dv.set_steps(project, {"dataset/1_demo/hand.png": dv.StepsChange(crop=(0, 0, 32, 32))}, "crop")
    assert Image.open(folder / "hand.png").size == (32, 32)
    assert [p.read_bytes() for p in (project.root / "originals").iterdir()] == [data]
    dv.set_steps(project, {"dataset/1_demo/hand.png": dv.StepsChange(reset_crop=True)}, "reset")
    assert (folder / "hand.png").read_bytes() == data


def test_bad_boxes_and_names_are_refused_with_reasons(imported):
    project, images = imported
    report = dv.set_steps(project, {images["lossless"]: dv.StepsChange(crop=(500, 500, 600, 600)),
                                    "dataset/1_demo/nothing.png": dv.StepsChange(flip=True),
                                    "../outside.png": dv.StepsChange(flip=True)}, "bad")
    reasons = {s.image: s.reason for s in report.skipped}
    assert "lies outside the 80×40 picture" in reasons[images["lossless"]]
    assert "No image 'dataset/1_demo/nothing.png'" in reasons["dataset/1_demo/nothing.png"]
    assert "expected an image path like" in reasons["../outside.png"]
    assert not report.step and not dv.history(project)
    with pytest.raises(LorakitError, match="right must exceed left"):
        dv.StepsChange(crop=(10, 10, 5, 20)).apply(dv.Steps())
    with pytest.raises(LorakitError, match="fill: expected one of white, edge, blur"):
        dv.StepsChange(fill="pink").apply(dv.Steps())


def test_many_images_on_every_core_give_the_bytes_of_one_core(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        Image.fromarray(pattern(100 + i, 72, 48)).save(src / f"i{i:02d}.png")
    results = []
    for workers in (1, 2):
        project = Workspace(tmp_path / f"home{workers}").create("demo")
        report = import_paths(project, [str(src)], [tmp_path], concept="demo")
        changes = {i.image: dv.StepsChange(crop=(-6, -12, 66, 60), fill="blur", flip=True) for i in report.imported}
        assert len(dv.set_steps(project, changes, "all", workers=workers).derived) == 12
        results.append(folder_bytes(project))
    assert results[0] == results[1]


def test_two_threads_changing_different_images_both_land(imported):
    project, images = imported
    errors: list[BaseException] = []

    def run(image: str, box: tuple[int, int, int, int]) -> None:
        try:
            dv.set_steps(project, {image: dv.StepsChange(crop=box)}, f"crop {image}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(images["lossless"], (0, 0, 20, 20))),
               threading.Thread(target=run, args=(images["cmyk"], (0, 0, 30, 30)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert dv.steps_of(project, images["lossless"]).crop == (0, 0, 20, 20)
    assert dv.steps_of(project, images["cmyk"].replace(".jpg", ".png")).crop == (0, 0, 30, 30)
    assert len(dv.history(project)) == 2


def test_masked_concepts_name_the_concepts_holding_padding(imported):
    project, images = imported
    assert dv.masked_concepts(project) == set()
    dv.set_steps(project, {images["plain"]: dv.StepsChange(crop=(0, 0, 50, 50))}, "inside")
    assert dv.masked_concepts(project) == set()
    dv.set_steps(project, {images["lossless"]: dv.StepsChange(crop=(0, -1, 80, 40))}, "one row of padding")
    assert dv.masked_concepts(project) == {("dataset", "demo")}
    dv.undo(project)
    assert dv.masked_concepts(project) == set()


def test_a_derived_copy_survives_a_change_of_repeats(imported):
    project, images = imported
    dv.set_steps(project, {images["lossless"]: dv.StepsChange(crop=(0, 0, 20, 20))}, "crop")
    project.set_repeats("demo", 5)
    moved = images["lossless"].replace("1_demo", "5_demo")
    assert dv.steps_of(project, moved).crop == (0, 0, 20, 20)
    dv.undo(project)
    assert io.BytesIO((project.root / moved).read_bytes()).getbuffer().nbytes > 0
    assert Image.open(project.root / moved).size == (80, 40)


def test_a_link_in_the_dataset_is_never_read_or_adopted(tmp_path):
    project = Workspace(tmp_path / "home").create("demo")
    folder = project.add_concept("demo", 1).folder
    secret = tmp_path / "secret.png"
    Image.fromarray(pattern(7, 32, 32)).save(secret)
    os.symlink(secret, folder / "link.png")
    report = dv.set_steps(project, {"dataset/1_demo/link.png": dv.StepsChange(flip=True)}, "flip a link")
    assert "is a symbolic link" in report.skipped[0].reason
    assert not list((project.root / "originals").iterdir())

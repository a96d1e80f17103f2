"""The dataset report on real files, and the index cache behind it (an unchanged project decodes nothing)."""

from __future__ import annotations

import functools
import os
import shutil

import numpy as np
import pytest
from awkward import encode, jpeg_bytes, pattern
from PIL import Image

import lib_lorakit.dataset.index as index_module
from lib_lorakit.dataset.importer import import_paths
from lib_lorakit.dataset.report import build_report, resolution_band


@functools.cache
def picture(seed: int, w: int, h: int) -> np.ndarray:
    return pattern(seed, w, h)


@functools.cache
def png_bytes(seed: int, w: int, h: int) -> bytes:
    return encode(Image.fromarray(picture(seed, w, h)), "PNG", compress_level=1)


@functools.cache
def jpg_bytes(seed: int, w: int, h: int) -> bytes:
    return jpeg_bytes(picture(seed, w, h))


@functools.cache
def near_bytes() -> bytes:
    small = Image.fromarray(picture(1, 1100, 1030)).resize((550, 515), Image.LANCZOS)
    return jpeg_bytes(np.asarray(small), quality=80)


def png(path, seed, w, h):
    path.write_bytes(png_bytes(seed, w, h))


@pytest.fixture
def filled(project):
    """Two concepts, a reg set and a stray folder, with every finding the report knows about."""
    alpha = project.add_concept("alpha", repeats=2).folder
    (alpha / "big.jpg").write_bytes(jpg_bytes(1, 1100, 1030))
    (alpha / "big.txt").write_text("big")
    png(alpha / "mid.png", 2, 600, 800)
    (alpha / "mid.caption").write_text("mid, wrong extension")
    shutil.copyfile(alpha / "mid.png", alpha / "mid copy.png")
    (alpha / "mid copy.txt").write_text("copy")
    png(alpha / "small.png", 3, 300, 200)
    (alpha / "ghost.txt").write_text("no image")
    (alpha / "ghost2.caption").write_text("no image either")
    (alpha / "broken.png").write_bytes(encode(Image.fromarray(pattern(4, 64, 64)), "PNG")[:200])
    (alpha / "broken.txt").write_text("broken")

    beta = project.add_concept("beta").folder
    (beta / "near.jpg").write_bytes(near_bytes())
    (beta / "near.txt").write_text("near")
    png(beta / "tall.png", 5, 800, 900)
    (beta / "tall.txt").write_text("tall")

    people = project.add_concept("people", repeats=1, kind="reg").folder
    png(people / "p.png", 6, 512, 512)
    (people / "p.txt").write_text("person")
    (project.root / "dataset" / "misc").mkdir()
    png(project.root / "dataset" / "misc" / "stray.png", 7, 64, 64)
    return project


def concept(report, name, kind="dataset"):
    return next(c for c in report.concepts if c.name == name and c.kind == kind)


def test_per_concept_figures(filled):
    report = build_report(filled)
    a, b, reg = concept(report, "alpha"), concept(report, "beta"), concept(report, "people", "reg")
    assert (a.images, a.repeats, a.images_x_repeats) == (4, 2, 8)
    assert (b.images, b.images_x_repeats) == (2, 2)
    assert (reg.images, reg.folder) == (1, "reg/1_people")
    assert report.total_images == 6 and report.images_x_repeats == 10, "reg images are not training images"
    assert a.resolutions == {"< 512": 1, "512–767": 2, "1024–1535": 1}
    assert b.resolutions == {"512–767": 1, "768–1023": 1}
    assert reg.resolutions == {"512–767": 1}


def test_findings(filled):
    report = build_report(filled)
    a, b = concept(report, "alpha"), concept(report, "beta")
    assert a.small_images == ["dataset/2_alpha/small.png"]
    assert a.missing_captions == ["dataset/2_alpha/small.png"]
    assert a.extension_mismatches == ["dataset/2_alpha/mid.png"]
    assert a.orphan_captions == ["dataset/2_alpha/ghost.txt", "dataset/2_alpha/ghost2.caption"]
    assert [u["image"] for u in a.unreadable] == ["dataset/2_alpha/broken.png"]
    assert "corrupt" in a.unreadable[0]["reason"]
    assert (b.small_images, b.missing_captions, b.extension_mismatches, b.orphan_captions) == ([], [], [], [])
    assert report.stray_folders == ["dataset/misc"]


def test_small_images_follow_the_resolution_setting(filled):
    filled.update_settings(resolution=768)
    a = concept(build_report(filled), "alpha")
    assert a.small_images == ["dataset/2_alpha/mid copy.png", "dataset/2_alpha/mid.png", "dataset/2_alpha/small.png"]


def test_caption_extension_setting_turns_mismatches_around(filled):
    filled.update_settings(caption_extension=".caption")
    a = concept(build_report(filled), "alpha")
    assert a.extension_mismatches == ["dataset/2_alpha/big.jpg", "dataset/2_alpha/mid copy.png"]
    assert a.missing_captions == ["dataset/2_alpha/small.png"]


def test_duplicates(filled):
    groups = {(g.kind, g.images) for g in build_report(filled).duplicates}
    assert groups == {("exact", ("dataset/2_alpha/mid copy.png", "dataset/2_alpha/mid.png")),
                      ("near", ("dataset/1_beta/near.jpg", "dataset/2_alpha/big.jpg"))}


def test_to_dict(filled):
    d = build_report(filled).to_dict()
    assert d["total_images"] == 6 and d["images_x_repeats"] == 10
    assert [c["folder"] for c in d["concepts"]] == ["dataset/2_alpha", "dataset/1_beta", "reg/1_people"]
    assert d["concepts"][0]["images_x_repeats"] == 8


@pytest.mark.parametrize("w,h,band", [(511, 2000, "< 512"), (512, 512, "512–767"), (1023, 1024, "768–1023"),
                                      (1024, 1024, "1024–1535"), (4000, 1536, "≥ 1536")])
def test_resolution_band(w, h, band):
    assert resolution_band(w, h) == band


# --- the cache --------------------------------------------------------------------------------------------------

def refuse_to_decode(*args, **kwargs):
    raise AssertionError(f"decoded {args[0]} although nothing changed")


def test_unchanged_project_is_not_decoded_again(filled, monkeypatch):
    first = build_report(filled).to_dict()
    monkeypatch.setattr(index_module, "describe_image", refuse_to_decode)
    assert build_report(filled).to_dict() == first


def test_touched_and_replaced_files_are_read_again(filled, monkeypatch):
    build_report(filled)
    real = index_module.describe_image
    decoded = []

    def counting(path, **kwargs):
        decoded.append(path.relative_to(filled.root).as_posix())
        return real(path, **kwargs)

    monkeypatch.setattr(index_module, "describe_image", counting)
    tall = filled.root / "dataset" / "1_beta" / "tall.png"
    st = tall.stat()
    os.utime(tall, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    build_report(filled)
    assert decoded == ["dataset/1_beta/tall.png"]

    decoded.clear()
    big = Image.fromarray(picture(8, 200, 200)).resize((1600, 1600))
    tall.write_bytes(jpeg_bytes(np.asarray(big)))  # new content (a JPEG named .png), new size: new figures
    report = build_report(filled)
    assert decoded == ["dataset/1_beta/tall.png"]
    assert concept(report, "beta").resolutions == {"512–767": 1, "≥ 1536": 1}

    decoded.clear()
    (filled.root / "dataset" / "2_alpha" / "small.png").unlink()
    report = build_report(filled)
    assert decoded == []
    assert concept(report, "alpha").images == 3 and concept(report, "alpha").small_images == []


def test_report_right_after_import_decodes_nothing(project, awkward, monkeypatch):
    report = import_paths(project, [str(awkward.root)], [awkward.root])
    monkeypatch.setattr(index_module, "describe_image", refuse_to_decode)
    dataset = build_report(project)
    assert concept(dataset, "demo").images == len(report.imported)
    assert {(g.kind, g.images) for g in dataset.duplicates} == {(g.kind, g.images) for g in report.duplicates}


def test_a_corrupt_index_is_rebuilt(filled):
    first = build_report(filled).to_dict()
    (filled.state_dir / "index.json").write_text("{ not json")
    assert build_report(filled).to_dict() == first

"""The Crop panel's handlers and HTML, without a browser, on a real project: the bucket preview with what sd-scripts
cuts away shaded where the core says, SUBJECT_CUT from a real (tiny) ONNX head detector in the models store, a
letterbox previewed (nothing written) then applied as a job and undone, a manual box, the fields' errors, the
"Next:" line, and file names that are HTML staying text."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

gr = pytest.importorskip("gradio")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from lib_lorakit import next_step as ns  # noqa: E402
from lib_lorakit.crop.bucket_preview import ImageBucket  # noqa: E402
from lib_lorakit.crop.buckets import Placement  # noqa: E402
from lib_lorakit.errors import LorakitError  # noqa: E402
from lib_lorakit.host import StandaloneHost  # noqa: E402
from lib_lorakit.studio import Studio  # noqa: E402
from lib_lorakit.ui import render_crop as rc  # noqa: E402
from lib_lorakit.ui.crop_panel import CropPanel, parse_box  # noqa: E402

EVIL = '<img src=x onerror="alert(1)">'  # a file name a user may well have on disk
BUCKETS_DEFAULT = ("", "", "", "", "none", True)  # resolution, min, max, steps, no-upscale: the preset's; detect


def portrait(path: Path) -> None:
    im = Image.new("RGB", (220, 1000), (90, 150, 90))
    ImageDraw.Draw(im).ellipse((40, 10, 180, 170), fill=(240, 200, 170))
    im.save(path)


@pytest.fixture
def panel(tmp_path):
    """Project `p`: a 220×1000 portrait named like an HTML tag (its head at the top), a square, a wide picture;
    a head detector in the store that sees a head at the top middle of any picture."""
    from test_detect import build_constant_yolo

    home = tmp_path / "home"
    studio = Studio(StandaloneHost.from_options(home=str(home), config=tmp_path / "none.toml"))
    studio.create_project("p")
    source = home / "in"
    source.mkdir(parents=True)
    Image.new("RGB", (512, 512), (200, 120, 60)).save(source / "square.png")
    Image.new("RGB", (800, 400), (60, 120, 200)).save(source / "wide.png")
    build_constant_yolo(home / "models" / "train-style" / "detectors" / "head_detect_v2.0_s",
                        np.asarray([(32, 6, 12, 12, 0.9)], np.float32).T, labels=["head"])
    studio.import_paths("p", [str(source)])
    portrait(studio.project("p").root / "dataset" / "1_p" / f"{EVIL}.png")  # placed by hand: the importer renames
    with gr.Blocks():
        panel = CropPanel(studio, gr.Dropdown(["p"], value="p"))
        panel.render()
        panel.register()
    return panel


def names(panel: CropPanel) -> dict[str, str]:
    """Short name → project-relative path of each training image."""
    paths = [i.image for i in panel.studio.buckets("p", _request()).images]
    return {("evil" if p.endswith(f"{EVIL}.png") else p.rsplit("/", 1)[1].split(".")[0]): p for p in paths}


def _request():
    from lib_lorakit.crop.bucket_preview import BucketRequest

    return BucketRequest()


def views(panel: CropPanel, *picks) -> tuple:
    return panel._views("p", *BUCKETS_DEFAULT, *(picks or (None, [], None)))


def originals(panel: CropPanel) -> dict[str, str]:
    folder = panel.studio.project("p").root / "originals"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def letterbox(selection="chosen images", chosen=(), **over) -> tuple:
    fields = {"selection": selection, "concept": None, "chosen": list(chosen), "mode": "letterbox",
              "aspect": "square", "ratio": "", "fill": "white", "colour": "#ffffff", "fraction": 1.0,
              "tag": "letterboxed", **over}
    return tuple(fields.values())


# --- the bucket preview --------------------------------------------------------------------------------------------
def test_the_grid_shades_what_sd_scripts_cuts_and_names_the_cut_head(panel):
    nxt, grid, cut_images, *_ = views(panel)
    evil = names(panel)["evil"]
    assert "1 head would be cut" in nxt and "smart-crop them" in nxt
    assert cut_images == [evil]
    assert grid.count('class="ts-crop-card') == 3
    assert "SUBJECT_CUT" in grid and "seeds/002" in grid and "Bucket histogram (3 buckets)" in grid
    # the kept part of the portrait, where the core's `visible` says: a full-width band, trimmed top and bottom
    placed = next(i.placement for i in panel.studio.buckets("p", _request()).images if i.image == evil)
    card = grid[grid.index(f'data-image="{rc.escape(evil, quote=True)}"'):]
    keep = re.search(r'ts-crop-keep" style="position:absolute;left:([\d.]+)%;top:([\d.]+)%;width:([\d.]+)%;'
                     r'height:([\d.]+)%', card)
    left, top, width, height = map(float, keep.groups())
    vl, vt, vr, vb = placed.visible
    assert (left, width) == pytest.approx((100 * vl / 220, 100 * (vr - vl) / 220), abs=1e-3)
    assert (top, height) == pytest.approx((100 * vt / 1000, 100 * (vb - vt) / 1000), abs=1e-3)
    assert 0 < top < 10 and height < 95
    # the square one is not cut: no shade over it
    square = grid[grid.index('data-image="dataset/1_p/square.png"'):]
    assert square[:square.index("</figure>")].count("ts-crop-keep") == 0


def test_file_names_that_are_html_stay_text_everywhere(panel):
    evil = names(panel)["evil"]
    nxt, grid, *_ = views(panel)
    preview = panel._preview("p", *letterbox(chosen=[evil]))
    canvas, box = panel._pick_one("p", evil)
    for html in (grid, preview, canvas):
        assert "<img src=x" not in html and 'onerror="alert' not in html
        assert "&lt;img src=x onerror=" in html
    # the only <img> tags are the panel's own pictures, embedded as data
    for html in (grid, preview, canvas):
        assert all(src.startswith("data:image/") for src in re.findall(r'<img src="([^"]*)"', html))


def test_bucket_settings_typed_in_the_fields_reach_the_core(panel):
    _, grid, *_ = panel._views("p", "768", "", "", "", "true", False, None, [], None)
    assert "at 768×768" in grid and "no upscaling" in grid and "with resolution=768" in grid
    assert "were not looked for" in grid  # detection off: said, not silently empty
    with pytest.raises(LorakitError, match="resolution"):
        panel._views("p", "big", "", "", "", "none", False, None, [], None)


def test_without_a_project_the_panel_says_what_to_do(panel):
    nxt, grid, cut, *_ = panel._views(None, *BUCKETS_DEFAULT, None, [], None)
    assert "Choose or create a project" in nxt and grid == "" and cut == []
    with pytest.raises(LorakitError, match="Choose or create a project"):
        panel._preview(None, *letterbox(selection="all images"))


# --- crop: preview, apply, undo ------------------------------------------------------------------------------------
def test_preview_writes_nothing_then_apply_pads_and_undo_takes_it_back(panel):
    evil = names(panel)["evil"]
    copy = panel.studio.project("p").root / evil
    before, kept = copy.read_bytes(), originals(panel)
    # 1. the preview: before → after, the original seen through a box that reaches past its sides (padding)
    preview = panel._preview("p", *letterbox(chosen=[evil]))
    assert "1 image(s) would change (1 padded)" in preview and preview.count('class="ts-crop-pair"') == 1
    after = re.search(r'ts-crop-after" style="[^"]*aspect-ratio:(\d+)/(\d+);background:([^;"]+)', preview)
    assert after.groups()[:2] == ("1000", "1000") and "repeating-linear-gradient" in after.group(3)
    assert copy.read_bytes() == before
    # 2. apply: a job; its outcome shows when the page's poller presses refresh
    job, outcome = panel._apply("p", *letterbox(chosen=[evil]))
    assert 'data-job-id="' in job and outcome == ""
    state = panel.studio.jobs.wait(re.search(r'data-job-id="([^"]+)"', job).group(1), 30)
    assert state.state == "done", state.error
    nxt, grid, cut_images, *_, job_box, outcome = panel._finished("p", *BUCKETS_DEFAULT, None, [], None)
    assert "1 image(s) changed (1 padded)" in outcome and "Undo takes it back" in outcome
    assert "Captions tab" in outcome  # the caption tag went in as a caption step
    with Image.open(copy) as im:
        assert im.size == (1000, 1000) and im.mode == "RGBA"
    assert "letterboxed" in copy.with_suffix(".txt").read_text(encoding="utf-8")
    assert cut_images == [] and "no face or head cut" in nxt
    now = originals(panel)  # the imported originals untouched; the hand-placed picture kept as it was
    assert {k: now[k] for k in kept} == kept
    assert set(now.values()) - set(kept.values()) == {hashlib.sha256(before).hexdigest()}
    # 3. undo: derived again from the original
    outcome, nxt, *_ = panel._move("undo", "p", *BUCKETS_DEFAULT, None, [], None)
    assert "Undone: Letterbox 1 image(s) to square" in outcome
    assert copy.read_bytes() == before and "1 head would be cut" in nxt
    outcome, *_ = panel._move("redo", "p", *BUCKETS_DEFAULT, None, [], None)
    assert "Redone" in outcome and Image.open(copy).size == (1000, 1000)


def test_choose_the_cut_images_selects_them_and_says_when_there_are_none(panel):
    _, _, cut_images, *_ = views(panel)
    selection, chosen = panel._choose_cut(cut_images)
    assert selection == "chosen images" and chosen["value"] == cut_images
    with pytest.raises(LorakitError, match="Find cut faces"):
        panel._choose_cut([])


@pytest.mark.parametrize(("over", "message"), [
    ({"selection": "a concept"}, "Choose a concept"),
    ({"selection": "chosen images"}, "Choose some images"),
    ({"selection": "all images", "aspect": "W:H", "ratio": "0:1"}, "aspect: '0:1' has a zero side"),
    ({"selection": "all images", "fill": "colour", "colour": "red"}, "fill: expected one of"),
    ({"selection": "all images", "tag": "a, b"}, "tag: expected one caption tag"),
])
def test_bad_fields_are_named_and_nothing_is_written(panel, over, message):
    kept = {p: p.read_bytes() for p in (panel.studio.project("p").root / "dataset").rglob("*.png")}
    with pytest.raises(LorakitError, match=re.escape(message)):
        panel._apply("p", *letterbox(**over))
    assert {p: p.read_bytes() for p in (panel.studio.project("p").root / "dataset").rglob("*.png")} == kept


def test_cancel_stops_only_a_crop_job(panel):
    import threading

    started = threading.Event()

    def work(progress, cancel):
        started.set()
        cancel.wait(10)
        return {}

    tagging = panel.studio.jobs.start(kind="tag", project="p", title="tag", work=work)
    cropping = panel.studio.jobs.start(kind="crop", project="p", title="crop", work=work)
    started.wait(5)
    panel._cancel("p")
    assert panel.studio.jobs.wait(cropping.id, 5).state == "cancelled"
    assert panel.studio.jobs.get(tagging.id).state == "running"
    panel.studio.jobs.cancel(tagging.id)


# --- manual ----------------------------------------------------------------------------------------------------------
def test_a_typed_box_crops_one_image_and_the_canvas_shows_it(panel):
    square = names(panel)["square"]
    canvas, box = panel._pick_one("p", square)
    assert 'data-width="512" data-height="512"' in canvas and box == ""
    out = panel._crop_box("p", "100, 50, 300, 450", *BUCKETS_DEFAULT, None, [], square)
    assert "1 image(s) changed (0 padded)" in out[0]
    assert Image.open(panel.studio.project("p").root / square).size == (200, 400)
    canvas, box = out[-2:]
    assert box == "100, 50, 300, 450" and "ts-crop-box" in canvas and "display:none" not in canvas
    with pytest.raises(LorakitError, match="reaches outside the 512×512 picture"):
        panel._crop_box("p", "0, 0, 600, 100", *BUCKETS_DEFAULT, None, [], square)
    with pytest.raises(LorakitError, match="Choose the image"):
        panel._crop_box("p", "0, 0, 10, 10", *BUCKETS_DEFAULT, None, [], None)


@pytest.mark.parametrize("text", ["10 20 30", "a, b, c, d", "1, 2, 3, 4, 5", "", "1.5, 2, 3, 4"])
def test_a_box_that_is_not_four_whole_numbers_is_refused(text):
    with pytest.raises(LorakitError, match="four whole numbers"):
        parse_box(text)


def test_a_box_as_the_drawing_writes_it_or_typed_loosely():
    assert parse_box("10, 20, 110, 220") == [10, 20, 110, 220]
    assert parse_box(" 10 20 110 220 ") == [10, 20, 110, 220]
    assert parse_box("-5, 0, 10, 10") == [-5, 0, 10, 10]  # the core says why a box past the edge is refused


# --- sync ------------------------------------------------------------------------------------------------------------
def test_the_panel_redraws_only_when_the_project_changed(panel):
    drawn = views(panel)
    stamp = drawn[-1]
    assert all(u == gr.update() for u in panel.sync("p", stamp, *BUCKETS_DEFAULT, None, [], None))
    Image.new("RGB", (300, 900), (1, 2, 3)).save(panel.studio.project("p").root / "dataset" / "1_p" / "new.png")
    redrawn = panel.sync("p", stamp, *BUCKETS_DEFAULT, None, [], None)
    assert redrawn[1].count('class="ts-crop-card') == 4 and redrawn[-2] != stamp


# --- the Next: line ------------------------------------------------------------------------------------------------
def _status(images: int) -> ns.ProjectStatus:
    return ns.ProjectStatus(project="p", trigger_words=(), concepts=(
        ns.ConceptStatus(name="c", images=images, repeats=1, captioned=0),))


def test_the_next_line_names_the_heads_to_fix_first():
    assert "Choose or create" in ns.crop_next(None).action
    assert "import some" in ns.crop_next(_status(0)).action
    three = ns.crop_next(_status(10), cut=5, heads_cut=3)
    assert three.summary.startswith("3 heads would be cut") and "smart-crop them" in three.action
    assert not three.done
    unknown = ns.crop_next(_status(10), cut=5, heads_cut=None)
    assert "5 of 10 images trimmed" in unknown.summary and "Find cut faces" in unknown.action
    assert ns.crop_next(_status(10), cut=5, heads_cut=0).done
    whole = ns.crop_next(_status(1), cut=0, heads_cut=None)
    assert whole.done and "1 image fits" in whole.summary


# --- rendering -------------------------------------------------------------------------------------------------------
def test_the_after_view_places_the_original_behind_the_box():
    pair = rc.Pair(image="d/1_c/a.png", before="data:image/webp;base64,", original="data:image/jpeg;base64,",
                   original_size=(200, 100), box=(0, -50, 200, 150), size=(200, 200), masked=True, mode="letterbox",
                   fill="white")
    html = rc.pair_html(pair)
    # a 200×200 window whose top quarter is padding: the picture at 25% from its top, full width, half height
    assert "aspect-ratio:200/200" in html
    assert "left:0.000%;top:25.000%;width:100.000%;height:50.000%" in html
    assert "padded (masked)" in html


def test_a_card_without_a_cut_has_no_shade_and_a_cut_one_outlines_the_face():
    whole = ImageBucket(image="dataset/1_c/a.png", repeats=1, placement=Placement(
        512, 512, bucket=(512, 512), resized=(512, 512), visible=(0, 0, 512, 512)))
    assert "ts-crop-keep" not in rc.card_html(rc.Card(item=whole, picture="data:image/webp;base64,"))
    cut = ImageBucket(image="dataset/1_c/b.png", repeats=1, placement=Placement(
        100, 400, bucket=(256, 768), resized=(256, 1024), crop=(0, 128), visible=(0, 50, 100, 350)))

    class Face:
        box = (20, 0, 80, 60)

    html = rc.card_html(rc.Card(item=cut, picture="data:image/webp;base64,", cuts=[Face()]))
    assert "top:12.500%;width:100.000%;height:75.000%" in html
    assert "left:20.000%;top:0.000%;width:60.000%;height:15.000%" in html and "25% cut" in html

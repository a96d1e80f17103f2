"""Face/head detectors: tiny YOLOv8-format ONNX models built here and run through a real onnxruntime session,
OpenCV's cascades on a real portrait, saliency on a drawn picture, the chain's fallbacks, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib_lorakit.detect import Box, ChainDetector, Detector, default_detector, detect_image
from lib_lorakit.detect.chain import forget_failed_downloads, release_detectors
from lib_lorakit.detect.models import KNOWN_DETECTORS, detector_folder, present_detectors
from lib_lorakit.detect.saliency import SaliencyDetector
from lib_lorakit.detect.yolo import YoloDetector

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def fresh_download_memory():
    forget_failed_downloads()
    release_detectors()
    yield
    forget_failed_downloads()
    release_detectors()


# --- tiny YOLOv8-format models ------------------------------------------------------------------------------------

def _save(graph, path: Path) -> Path:
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny_yolo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_constant_yolo(folder: Path, rows: np.ndarray, *, size: int = 64, labels: list[str] | None = None,
                        transposed: bool = False) -> Path:
    """A detector whose output is `rows` ([4 + classes, anchors]) whatever the picture: input fixed to
    [1, 3, size, size]; the output still depends on the input (plus 0 × its maximum) so the graph is a real one."""
    from onnx import TensorProto, helper, numpy_helper

    out = rows.T[None] if transposed else rows[None]
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
         helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
         helper.make_node("Add", ["rows", "nothing"], ["output0"])],
        "tiny_yolo_constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))],
        initializer=[numpy_helper.from_array(out.astype(np.float32), "rows"),
                     numpy_helper.from_array(np.asarray(0.0, np.float32), "zero")])
    _save(graph, folder / "model.onnx")
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    return folder


def build_red_halves_yolo(folder: Path) -> Path:
    """A detector with free input sizes and two anchors: the left and right 32×32 squares of the input's top-left
    32×64 strip; each anchor's score is the mean of the input's first (red) channel over its square."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray([[[16.0, 48.0], [16.0, 16.0], [32.0, 32.0], [32.0, 32.0]]],
                                                np.float32), "geometry"),
             numpy_helper.from_array(np.asarray([1, 1, 2], np.int64), "score_shape"),
             numpy_helper.from_array(np.asarray([0, 1, 2, 3], np.int64), "axes")]
    nodes = []
    for k, x0 in enumerate((0, 32)):
        inits += [numpy_helper.from_array(np.asarray([0, 0, 0, x0], np.int64), f"start{k}"),
                  numpy_helper.from_array(np.asarray([1, 1, 32, x0 + 32], np.int64), f"end{k}")]
        nodes += [helper.make_node("Slice", ["images", f"start{k}", f"end{k}", "axes"], [f"square{k}"]),
                  helper.make_node("ReduceMean", [f"square{k}"], [f"mean{k}"], keepdims=1)]
    nodes += [helper.make_node("Concat", ["mean0", "mean1"], ["means"], axis=3),
              helper.make_node("Reshape", ["means", "score_shape"], ["scores"]),
              helper.make_node("Concat", ["geometry", "scores"], ["output0"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny_yolo_red_halves",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 2])], initializer=inits)
    _save(graph, folder / "model.onnx")
    (folder / "labels.json").write_text('["face"]', encoding="utf-8")
    return folder


# anchors in a 64×64 input: (cx, cy, w, h, head score, hand score)
ANCHORS = np.asarray([
    (32, 32, 16, 16, 0.90, 0.0),   # the head
    (33, 32, 16, 16, 0.80, 0.0),   # the same head again, less sure: suppressed
    (10, 24, 8, 8, 0.20, 0.0),     # below the threshold
    (20, 40, 10, 10, 0.0, 0.95),   # a hand: not a kind the crop looks for
    (52, 40, 8, 8, 0.50, 0.0),     # a second head
    (10, 12, 16, 16, 0.60, 0.0),   # a head reaching into the top padding: clipped to the picture
], dtype=np.float32).T


def expected_heads() -> list[Box]:
    """ANCHORS read back into a 200×100 picture letterboxed into 64×64: scale 0.32, 16 px of padding on top."""
    def back(x0, y0, x1, y1):
        return [x0 / 0.32, (y0 - 16) / 0.32, x1 / 0.32, (y1 - 16) / 0.32]

    boxes = [(back(24, 24, 40, 40), 0.9), (back(2, 4, 18, 20), 0.6), (back(48, 36, 56, 44), 0.5)]
    return [Box("head", max(0.0, x0), max(0.0, y0), x1, y1, s) for (x0, y0, x1, y1), s in boxes]


def assert_boxes(found: list[Box], expected: list[Box]) -> None:
    assert [b.kind for b in found] == [b.kind for b in expected]
    for got, want in zip(found, expected, strict=True):
        assert [got.left, got.top, got.right, got.bottom] == pytest.approx(
            [want.left, want.top, want.right, want.bottom], abs=1e-3)
        assert got.score == pytest.approx(want.score, abs=1e-6)


def test_yolo_output_decoded_through_letterbox_threshold_and_nms(tmp_path):
    folder = build_constant_yolo(tmp_path / "tiny", ANCHORS, labels=["head", "hand"])
    detector = YoloDetector(folder, threshold=0.25)
    assert isinstance(detector, Detector)
    found = detector.detect(Image.new("RGB", (200, 100), "white"))
    assert_boxes(found, [expected_heads()[0], expected_heads()[1], expected_heads()[2]])
    assert found[1].top == 0.0, "a box reaching into the padding is clipped to the picture"


def test_yolo_output_in_the_transposed_layout_gives_the_same_boxes(tmp_path):
    # five anchors, not six: a square [6, 6] output would be read in the standard layout
    folder = build_constant_yolo(tmp_path / "tiny", ANCHORS[:, :5], labels=["head", "hand"], transposed=True)
    heads = expected_heads()
    assert_boxes(YoloDetector(folder).detect(Image.new("RGB", (200, 100))), [heads[0], heads[2]])


def test_yolo_without_labels_takes_every_class_as_the_given_kind(tmp_path):
    folder = build_constant_yolo(tmp_path / "tiny", ANCHORS[:5, :1])  # one class, no labels.json
    (box,) = YoloDetector(folder, kind="face").detect(Image.new("RGB", (200, 100)))
    assert box.kind == "face" and box.score == pytest.approx(0.9)


def test_yolo_sees_the_picture_in_rgb_where_the_letterbox_put_it(tmp_path):
    detector = YoloDetector(build_red_halves_yolo(tmp_path / "red"), threshold=0.5, max_side=64)
    picture = np.zeros((100, 200, 3), np.uint8)
    picture[:, :100] = (255, 0, 0)  # red left half, blue right half
    picture[:, 100:] = (0, 0, 255)
    # scaled by 0.32 to 64×32 (free sizes: already a multiple of 32, no padding); anchor 0 covers the left half
    (box,) = detector.detect(Image.fromarray(picture))
    assert (box.kind, box.score) == ("face", pytest.approx(1.0, abs=0.01))  # the resize blends one column
    assert [box.left, box.top, box.right, box.bottom] == pytest.approx([0, 0, 100, 100])
    (box,) = detector.detect(Image.fromarray(picture[:, ::-1].copy()))
    assert [box.left, box.right] == pytest.approx([100, 200])
    assert detector.detect(Image.fromarray(np.zeros((100, 200, 3), np.uint8))) == []


def test_a_broken_model_file_is_a_reason_not_a_crash(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    result = detect_image(YoloDetector(folder), Image.new("RGB", (64, 64)))
    assert result.skipped and "delete" in result.reason and str(folder) in result.reason
    chain = ChainDetector(detectors=[YoloDetector(folder), SaliencyDetector()])
    result = chain.run(busy_object_picture())
    assert result.detector == "saliency" and result.boxes
    assert any("failed on this image" in n for n in result.notes)


# --- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a garbage"],
                         ids=["empty", "truncated-png", "garbage-gif"])
def test_an_unreadable_image_is_skipped_with_its_reason(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    result = detect_image(default_detector(tmp_path / "models"), path)
    assert result.skipped and result.boxes == () and result.reason


def test_a_large_jpeg_is_read_small_and_its_boxes_come_back_in_its_own_pixels(tmp_path):
    path = tmp_path / "large.jpg"
    busy_object_picture().resize((2800, 2100), Image.Resampling.NEAREST).save(path, quality=95)  # object ×7
    result = detect_image(SaliencyDetector(), path)
    (box,) = result.boxes
    assert box.left <= 7 * 255 and box.right >= 7 * 325 and box.top <= 7 * 45 and box.bottom >= 7 * 95
    assert box.width < 7 * 120 and box.height < 7 * 100


def test_an_empty_picture_is_skipped(tmp_path):
    result = detect_image(SaliencyDetector(), Image.new("RGB", (0, 0)))
    assert result.skipped and "empty" in result.reason


# --- OpenCV cascades ----------------------------------------------------------------------------------------------

def real_portraits() -> list:
    """Real photographs that packages here ship, each with where the face is (read off the picture by eye):
    points that must lie inside the face box, and the largest plausible face width."""
    out = []
    try:
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        # 512×600: eyes at (220, 200) and (310, 200), mouth at (265, 285)
        out.append(pytest.param(Path(path), [(220, 200), (310, 200), (265, 285)], 300, id="grace_hopper"))
    except (ImportError, OSError, ValueError):
        pass
    try:
        import skimage.data

        path = Path(skimage.data.__file__).parent / "astronaut.png"
        # 512×512: the face at x 177–272, y 66–161
        out.append(pytest.param(path, [(200, 100), (250, 100), (225, 140)], 200, id="astronaut"))
    except ImportError:
        pass
    return out or [pytest.param(None, [], 0, marks=pytest.mark.skip(reason="no real portrait ships here"))]


@pytest.mark.parametrize(("path", "inside", "widest"), real_portraits())
def test_the_cascade_finds_a_real_face(path, inside, widest):
    from lib_lorakit.detect.cascade import CascadeDetector, cascade_unavailable

    why = cascade_unavailable()
    if why:
        pytest.skip(why)
    result = detect_image(CascadeDetector(), path)
    assert not result.skipped and result.boxes, "a frontal face in a portrait is found"
    face = result.boxes[0]
    assert face.kind == "face" and 0 < face.score <= 1
    assert all(face.left < x < face.right and face.top < y < face.bottom for x, y in inside)
    assert face.width < widest


def test_without_cv2_the_chain_says_so_and_saliency_answers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    chain = default_detector(tmp_path / "models")
    assert [d.name for d in chain.detectors] == ["saliency"]
    assert any("cv2" in n for n in chain.notes)
    result = chain.run(busy_object_picture())
    assert result.detector == "saliency" and result.boxes[0].kind == "salient"


# --- saliency -----------------------------------------------------------------------------------------------------

def busy_object_picture() -> Image.Image:
    """A flat background with a noisy 80×60 patch at x 250–330, y 40–100."""
    picture = Image.new("RGB", (400, 300), (200, 210, 220))
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    picture.paste(Image.fromarray(noise), (250, 40))
    return picture


def test_saliency_finds_a_busy_object_on_a_flat_background():
    (box,) = SaliencyDetector().detect(busy_object_picture())
    assert box.kind == "salient"
    assert box.left <= 255 and box.right >= 325 and box.top <= 45 and box.bottom >= 95, "the object is inside"
    assert box.width < 120 and box.height < 100, "and little else"
    assert box.score > 0.8


def test_saliency_finds_nothing_in_a_flat_picture_and_spreads_over_an_all_busy_one():
    assert SaliencyDetector().detect(Image.new("RGB", (300, 200), (10, 20, 30))) == []
    noise = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    (box,) = SaliencyDetector().detect(Image.fromarray(noise))
    assert box.width > 240 and box.height > 160 and box.score < 0.4


# --- the chain ----------------------------------------------------------------------------------------------------

def place(key: str, store: Path, rows: np.ndarray, labels: list[str]) -> Path:
    """Put a tiny model where the store keeps a known detector, as a download would."""
    return build_constant_yolo(detector_folder(KNOWN_DETECTORS[key], store), rows, labels=labels)


def test_the_chain_tries_models_then_cascade_then_saliency(tmp_path):
    store = tmp_path / "detectors"
    nothing = np.zeros((5, 1), np.float32)
    place("anime-head", store, nothing, ["head"])  # present but finds nothing on this picture
    place("photo-face", store, ANCHORS[[0, 1, 2, 3, 4]][:, :1], ["face"])
    chain = default_detector(store)
    names = [d.name for d in chain.detectors]
    assert names[:2] == ["anime-head", "photo-face"] and names[-1] == "saliency"
    assert any("anime face detector" in n and str(store / "face_detect_v1.4_s") in n for n in chain.notes)
    result = chain.run(Image.new("RGB", (200, 100)))
    assert result.detector == "photo-face" and result.boxes[0].kind == "face"
    assert set(present_detectors(store)) == {"anime-head", "photo-face"}
    face_only = default_detector(store, kinds=("face",))
    assert "anime-head" not in [d.name for d in face_only.detectors]
    assert face_only.detectors[0] is chain.detectors[1], "the loaded model is reused by the next chain"
    place("photo-face", store, ANCHORS[:5, :2], ["face"])  # replaced on disk (another size): read again
    assert default_detector(store, kinds=("face",)).detectors[0] is not chain.detectors[1]


def test_kinds_are_checked(tmp_path):
    from lib_lorakit.errors import LorakitError

    with pytest.raises(LorakitError, match="kinds"):
        default_detector(tmp_path, kinds=("hand",))


def test_a_missing_model_offline_falls_back_with_a_clear_note(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    store = tmp_path / "detectors"
    chain = default_detector(store, download=True)
    assert [d.name for d in chain.detectors if d.name.startswith(("anime", "photo"))] == []
    assert len(chain.notes) >= 3
    for model in KNOWN_DETECTORS.values():
        (note,) = [n for n in chain.notes if model.subfolder in n]
        assert "offline mode is on: HF_HUB_OFFLINE is set" in note
        assert str(detector_folder(model, store)) in note and model.page in note
    assert not store.exists() or list(store.iterdir()) == [], "nothing half-downloaded is left behind"
    result = detect_image(chain, busy_object_picture())
    assert not result.skipped and result.boxes and result.notes == tuple(chain.notes)


def _fake_hub(monkeypatch, fail: bool = False) -> list[str]:
    """hf_hub_download writing a tiny detector into local_dir (or failing), counting its calls."""
    import huggingface_hub

    calls = []

    def fake(*, repo_id, filename, local_dir, **kwargs):
        calls.append(f"{repo_id}/{filename}")
        if fail:
            raise OSError("connection reset")
        target = Path(local_dir) / filename
        if filename.endswith("model.onnx"):
            build_constant_yolo(target.parent, ANCHORS[:5, :1])
        else:
            target.write_text('["face"]', encoding="utf-8")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return calls


def test_models_download_once_into_the_store_and_are_used(tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch)
    store = tmp_path / "detectors"
    chain = default_detector(store, download=True, kinds=("face",))
    assert [d.name for d in chain.detectors][:2] == ["anime-face", "photo-face"]
    assert calls == [f"{m.repo}/{f}" for m in KNOWN_DETECTORS.values() if m.kind == "face" for f in m.files]
    for key in ("anime-face", "photo-face"):
        folder = detector_folder(KNOWN_DETECTORS[key], store)
        assert sorted(p.name for p in folder.iterdir()) == ["labels.json", "model.onnx"]
    assert sorted(p.name for p in store.iterdir()) == ["face_detect_v1.4_s", "yolov8n-face"], "no staging left"
    default_detector(store, download=True, kinds=("face",))
    assert len(calls) == 4, "models in place are not downloaded again"
    assert chain.run(Image.new("RGB", (200, 100))).boxes[0].kind == "face"


def test_a_failed_download_is_noted_and_not_retried_in_the_same_session(tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, fail=True)
    store = tmp_path / "detectors"
    first = default_detector(store, download=True, kinds=("head",))
    assert len(calls) == 1 and any("connection reset" in n for n in first.notes)
    second = default_detector(store, download=True, kinds=("head",))
    assert len(calls) == 1, "the network is not asked again for every crop"
    assert any("not tried again" in n and "connection reset" in n for n in second.notes)
    assert first.detectors[-1].name == second.detectors[-1].name == "saliency"


def test_the_doctor_names_the_detectors_present_and_a_half_copied_one(tmp_path):
    from lib_lorakit.detect.models import detectors_folder
    from lib_lorakit.doctor import detectors_check
    from lib_lorakit.host import StandaloneHost

    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "models" / "Lora", models=tmp_path / "models")
    store = detectors_folder(host.models_dir())
    check = detectors_check(host)
    assert check.status == "ok" and "no model yet" in check.summary and "saliency" in check.summary
    place("anime-head", store, ANCHORS[:5, :1], ["head"])
    half = detector_folder(KNOWN_DETECTORS["photo-face"], store)
    half.mkdir(parents=True)
    (half / "labels.json").write_text('["face"]', encoding="utf-8")
    check = detectors_check(host)
    assert check.summary.startswith("anime-head in ") and check.facts["models"] == {
        "anime-head": str(detector_folder(KNOWN_DETECTORS["anime-head"], store))}
    (issue,) = check.issues
    assert str(half) in issue.what and "model.onnx" in issue.what and KNOWN_DETECTORS["photo-face"].page in issue.fix


# --- real weights, where they are at hand -------------------------------------------------------------------------

NUDENET_LABELS = ["FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
                  "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
                  "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
                  "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED"]


def nudenet_model(folder: Path) -> Path | None:
    """nudenet 3.4.2's YOLOv8n (`320n.onnx`, 18 classes, two of them faces) from the installed package or the
    wheel named by TRAIN_STYLE_NUDENET_WHEEL (`pip download --no-deps nudenet==3.4.2`); None when neither is here."""
    import importlib.util
    import os
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("nudenet")
    wheel = os.environ.get("TRAIN_STYLE_NUDENET_WHEEL")
    if spec and spec.origin and (Path(spec.origin).parent / "320n.onnx").is_file():
        (folder / "model.onnx").write_bytes((Path(spec.origin).parent / "320n.onnx").read_bytes())
    elif wheel and Path(wheel).is_file():
        with zipfile.ZipFile(wheel) as z:
            (folder / "model.onnx").write_bytes(z.read("nudenet/320n.onnx"))
    else:
        return None
    (folder / "labels.json").write_text(json.dumps(NUDENET_LABELS), encoding="utf-8")
    return folder


def test_a_real_yolov8_detector_finds_a_real_face_wherever_the_letterbox_puts_it(tmp_path):
    folder = nudenet_model(tmp_path / "nudenet")
    if folder is None:
        pytest.skip("nudenet's 320n.onnx is not at hand: install nudenet==3.4.2 or set TRAIN_STYLE_NUDENET_WHEEL")
    import matplotlib.cbook

    portrait = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    detector = YoloDetector(folder, threshold=0.3)
    assert detector.kinds.count("face") == 2 and detector.kinds.count(None) == 16
    (face,) = detector.detect(portrait)
    eyes_and_mouth = [(220, 200), (310, 200), (265, 285)]  # read off the picture by eye
    assert all(face.left < x < face.right and face.top < y < face.bottom for x, y in eyes_and_mouth)
    wide = Image.new("RGB", (1100, 600), "white")  # the same face 300 px to the right in a wide picture
    wide.paste(portrait, (300, 0))
    (moved,) = detector.detect(wide)
    assert moved.left - face.left == pytest.approx(300, abs=15) and moved.top == pytest.approx(face.top, abs=15)

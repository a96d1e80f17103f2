"""PNG Info (evaluate/pnginfo.py, evaluate/inspect.py): real files in every format the generators write, the webui's
quoting read as the webui reads it (compared with its own parser where a webui checkout is present), hostile and
damaged files, LoRAs resolved by hash to the Lora folder and to our runs, and the CLI and HTTP API on top."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lib_lorakit.errors import LorakitError
from lib_lorakit.evaluate import pnginfo
from lib_lorakit.evaluate.inspect import inspect_image
from lib_lorakit.evaluate.pnginfo import decode_user_comment, parse_infotext, read_image_info

ROOT = Path(__file__).resolve().parents[1]
WEBUI = Path(os.environ.get("TRAIN_STYLE_WEBUI") or "/nonexistent-webui")  # opt-in: a webui 1.10 checkout
WEBUI_PYTHON = Path(os.environ.get("TRAIN_STYLE_WEBUI_PYTHON") or WEBUI / "venv" / "bin" / "python")

INFOTEXT = ('masterpiece, "quoted", <lora:mystyle:0.7>, sks\nsecond line of the prompt\n'
            'Negative prompt: lowres, bad hands\nblurry\n'
            'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234, Size: 512x768, '
            'Model hash: 6ce0161689, Model: sd15, VAE: vae-ft-mse, Lora hashes: "mystyle: 0123456789ab, other: '
            'fedcba987654", TI hashes: "easyneg: 1a2b3c4d5e6f", Script: X/Y/Z plot, X Type: Prompt S/R, '
            'X Values: "\\"<lora:mystyle:0>\\",<lora:mystyle:0.5>,\\"<lora:mystyle:1>\\"", Version: v1.10.1')


def tiff_comment(raw: bytes, order: str = "MM") -> bytes:
    """EXIF as piexif writes it: IFD0 pointing at an Exif IFD whose UserComment (UNDEFINED) is `raw`."""
    e = ">" if order == "MM" else "<"
    ifd0 = struct.pack(e + "H", 1) + struct.pack(e + "HHII", 0x8769, 4, 1, 26) + struct.pack(e + "I", 0)
    exif_ifd = struct.pack(e + "H", 1) + struct.pack(e + "HHII", 0x9286, 7, len(raw), 44) + struct.pack(e + "I", 0)
    head = order.encode() + struct.pack(e + "HI", 42, 8)
    return head + ifd0 + exif_ifd + raw


def png(path: Path, chunks: list[tuple[str, str, str]], size: tuple[int, int] = (48, 32)) -> Path:
    info = PngInfo()
    for kind, key, value in chunks:
        if kind == "tEXt":
            info.add_text(key, value)
        elif kind == "zTXt":
            info.add_text(key, value, zip=True)
        else:
            info.add_itxt(key, value, zip=kind == "iTXt-z")
    Image.new("RGB", size, "white").save(path, pnginfo=info)
    return path


def user_comment(text: str, how: str) -> bytes:
    return {"be": b"UNICODE\0" + text.encode("utf-16-be"), "le": b"UNICODE\0" + text.encode("utf-16-le"),
            "ascii": b"ASCII\0\0\0" + text.encode("ascii", errors="replace"),
            "none": text.encode("utf-8")}[how]


# --- formats -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt", "iTXt-z"])
def test_png_parameters_in_every_text_chunk(tmp_path, kind):
    text = INFOTEXT.replace("masterpiece", "masterpiece 猫") if kind.startswith("iTXt") else INFOTEXT
    info = read_image_info(png(tmp_path / "a.png", [(kind, "parameters", text)]))
    p = info.parameters
    assert (info.kind, info.format, info.width, info.height) == ("webui", "PNG", 48, 32)
    assert p["Prompt"].startswith("masterpiece") and p["Prompt"].endswith("second line of the prompt")
    assert p["Negative prompt"] == "lowres, bad hands\nblurry"
    assert (p["Steps"], p["Sampler"], p["Schedule type"], p["CFG scale"], p["Seed"]) == (
        "20", "DPM++ 2M", "Karras", "7.5", "1234")
    assert (p["Size-1"], p["Size-2"], p["Size"], p["Model hash"], p["VAE"]) == ("512", "768", "512x768",
                                                                                   "6ce0161689", "vae-ft-mse")
    assert p["X Values"] == '"<lora:mystyle:0>",<lora:mystyle:0.5>,"<lora:mystyle:1>"'
    assert p["TI hashes"] == "easyneg: 1a2b3c4d5e6f"
    assert [(r.name, r.hash, r.weight) for r in info.loras] == [("mystyle", "0123456789ab", 0.7),
                                                                ("other", "fedcba987654", None)]
    if kind.startswith("iTXt"):
        assert "猫" in p["Prompt"]


@pytest.mark.parametrize("how", ["be", "le", "ascii", "none"])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_in_jpeg_and_webp(tmp_path, fmt, how):
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (40, 24), "red").save(path, fmt, exif=b"Exif\0\0" + tiff_comment(user_comment(INFOTEXT, how),
                                                                                       "II" if how == "le" else "MM"))
    info = read_image_info(path)
    assert (info.kind, info.format, info.width, info.height) == ("webui", fmt, 40, 24)
    assert info.parameters == parse_infotext(INFOTEXT) | {"Size": "512x768"}


def test_user_comment_charsets():
    assert decode_user_comment(b"UNICODE\0" + "ä, <x>".encode("utf-16-be")) == "ä, <x>"
    assert decode_user_comment(b"UNICODE\0" + "ä, <x>".encode("utf-16-le")) == "ä, <x>"
    assert decode_user_comment(b"UNICODE\0" + "猫".encode("utf-16")) == "猫"  # with a byte-order mark
    assert decode_user_comment(b"ASCII\0\0\0steps\0") == "steps"
    assert decode_user_comment(b"\0" * 8 + b"raw") == "raw"


COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 25, "cfg": 6.5, "sampler_name": "euler",
                                                 "scheduler": "normal", "denoise": 1, "model": ["10", 0],
                                                 "positive": ["6", 0], "negative": ["7", 0],
                                                 "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 640, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a <b>cat</b>, sks", "clip": ["10", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 1]}},
    "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "sub/mystyle.safetensors", "strength_model": 0.8,
                                                   "strength_clip": 1, "model": ["4", 0], "clip": ["4", 1]}},
}
COMFY_WORKFLOW = {
    "nodes": [{"id": 3, "type": "KSampler", "widgets_values": [7, "fixed", 30, 5.0, "dpmpp_2m", "karras", 1],
               "inputs": [{"name": "positive", "link": 1}, {"name": "negative", "link": 2}]},
              {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a dog"]},
              {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["ugly"]},
              {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["base.safetensors"]},
              {"id": 9, "type": "LoraLoader", "widgets_values": ["mystyle.safetensors", 0.6, 1]}],
    "links": [[1, 6, 0, 3, 1, "CONDITIONING"], [2, 7, 0, 3, 2, "CONDITIONING"]]}


def test_comfyui_prompt_graph(tmp_path):
    info = read_image_info(png(tmp_path / "c.png", [("tEXt", "prompt", json.dumps(COMFY_PROMPT)),
                                                    ("tEXt", "workflow", json.dumps(COMFY_WORKFLOW))]))
    p = info.parameters
    assert info.kind == "comfyui"
    assert (p["Prompt"], p["Negative prompt"], p["Seed"], p["Steps"], p["CFG scale"]) == (
        "a <b>cat</b>, sks", "blurry", "42", "25", "6.5")
    assert (p["Sampler"], p["Schedule type"], p["Model"], p["Size"]) == ("euler", "normal", "sd15.safetensors",
                                                                         "512x640")
    assert [(r.name, r.weight) for r in info.loras] == [("mystyle", 0.8)]


def test_comfyui_workflow_only(tmp_path):
    info = read_image_info(png(tmp_path / "w.png", [("tEXt", "workflow", json.dumps(COMFY_WORKFLOW))]))
    p = info.parameters
    assert info.kind == "comfyui"
    assert (p["Prompt"], p["Negative prompt"], p["Seed"], p["Steps"], p["Sampler"], p["Model"]) == (
        "a dog", "ugly", "7", "30", "dpmpp_2m", "base.safetensors")
    assert [(r.name, r.weight) for r in info.loras] == [("mystyle", 0.6)]


def test_sd_scripts_gen_img_metadata(tmp_path):
    chunks = [("tEXt", k, v) for k, v in (("prompt", "a cat, sks"), ("seed", "77"), ("sampler", "euler_a"),
                                          ("steps", "30"), ("scale", "7.5"), ("negative-prompt", "bad"),
                                          ("raw-prompt", "a cat, sks --n bad --d 77"))]
    info = read_image_info(png(tmp_path / "im_20240101010101_000_77.png", chunks))
    assert info.kind == "sd-scripts"
    assert {k: info.parameters[k] for k in ("Prompt", "Negative prompt", "Seed", "Sampler", "Steps",
                                            "CFG scale")} == {"Prompt": "a cat, sks", "Negative prompt": "bad",
                                                              "Seed": "77", "Sampler": "euler_a", "Steps": "30",
                                                              "CFG scale": "7.5"}


def test_sd_scripts_training_sample_by_its_name(tmp_path):
    epoch = read_image_info(png(tmp_path / "mystyle_e000003_01_20240101120000_42.png", []))
    step = read_image_info(png(tmp_path / "mystyle_000120_00_20240101120000.png", []))
    assert epoch.kind == step.kind == "sd-scripts"
    assert (epoch.parameters["Epoch"], epoch.parameters["Seed"], epoch.loras[0].name) == ("3", "42", "mystyle")
    assert step.parameters["Step"] == "120" and "Seed" not in step.parameters


def test_webui_infotext_wins_over_other_chunks(tmp_path):
    info = read_image_info(png(tmp_path / "t.png", [("tEXt", "prompt", json.dumps(COMFY_PROMPT)),
                                                    ("tEXt", "parameters", INFOTEXT)]))
    assert info.kind == "webui" and info.infotext == INFOTEXT and set(info.raw) == {"prompt", "parameters"}


def test_text_after_the_image_data_is_read(tmp_path):
    path = png(tmp_path / "late.png", [])
    data = path.read_bytes()
    body = b"parameters\0" + INFOTEXT.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    iend = data.rindex(b"IEND") - 4
    path.write_bytes(data[:iend] + chunk + data[iend:])
    assert read_image_info(path).parameters["Seed"] == "1234"


# --- the webui's quoting -------------------------------------------------------------------------------------------
QUOTING = [
    ('a\nSteps: 1, Seed: 2, Note: "a, b: c", Size: 64x32',
     {"Prompt": "a", "Note": "a, b: c", "Size-1": "64", "Size-2": "32"}),
    ('p\nSteps: 1, Seed: 2, Quote: "say \\"hi\\", ok"', {"Quote": 'say "hi", ok'}),
    ("p\nA: 1, B: 2, C: 3", {"Prompt": "p\nA: 1, B: 2, C: 3"}),  # a key has two characters at least
    ('p\nSteps: 1, Seed: 2, Broken: "unterminated, Cfg: 3', {"Broken": '"unterminated'}),
    ("only a prompt, with: colons, and: more", {"Prompt": "only a prompt, with: colons, and: more"}),
    ("p\nA: 1, B: 2", {"Prompt": "p\nA: 1, B: 2"}),  # fewer than three pairs: the last line is prompt
    ("p\nSteps: , Seed: 2, Sampler: x, Cfg: 3", {"Seed": "2", "Sampler": "x"}),  # an empty value is dropped
    ("Negative prompt: only negative\nSteps: 1, Seed: 2, Sampler: x", {"Prompt": "", "Negative prompt":
                                                                        "only negative"}),
    ("  spaced  \r\n Negative prompt:  neg \r\nSteps: 1, Seed: 2, Sampler: x", {"Prompt": "spaced",
                                                                               "Negative prompt": "neg"}),
    ('p\nSteps: 1, Seed: 2, Hires upscale: 2, Hires resize: 1024x1536, Emoji: "\\ud83d\\ude00"',
     {"Hires resize-1": "1024", "Hires resize-2": "1536", "Emoji": "😀"}),
]


@pytest.mark.parametrize("text,expected", QUOTING)
def test_quoting_as_the_webui_reads_it(text, expected):
    parsed = parse_infotext(text)
    assert {k: parsed.get(k) for k in expected} == expected


def hostile_texts(n: int = 200) -> list[str]:
    """Texts built from the pieces the webui's parser treats specially (seeded): half loose, half shaped like an
    infotext (prompt, `Negative prompt:`, a last line of pairs whose values are quoted, half-quoted or empty)."""
    pieces = ['"', '\\', ",", ":", "\n", " ", "a", "Steps", "Negative prompt:", "Size: 5x6", '\\"', "猫", "\r",
              "\t", "\u2028", "<lora:x:0.5>", 'Lora hashes: "x: 0123"', "Seed: 9", "{", "}", "x:y", '""',
              "<script>alert(1)</script>", "\x00", "Key-1: 2", "A B/C-D: e"]
    rng = random.Random(11)

    def junk(most: int) -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, most)))

    texts = []
    for i in range(n):
        if i % 2:
            texts.append(junk(40))
            continue
        pairs = [f"{rng.choice(['Steps', 'Seed', 'Size', 'Lora hashes', 'X Values', 'A B/C-D', 'k', junk(4)])}: "
                 f"{rng.choice([json.dumps(junk(12), ensure_ascii=False), junk(10), chr(34) + junk(8), '64x96', ''])}"
                 for _ in range(rng.randint(2, 6))]
        texts.append(f"{junk(20)}\nNegative prompt: {junk(20)}\n{', '.join(pairs)}")
    return texts


DEFAULTS = {"Clip skip", "Hires resize-1", "Hires resize-2", "Hires sampler", "Hires schedule type",
            "Hires checkpoint", "Hires prompt", "Hires negative prompt", "Mask mode", "Masked content",
            "Inpaint area", "Masked area padding", "RNG", "Schedule type", "Schedule max sigma", "Schedule min sigma",
            "Schedule rho", "VAE Encoder", "VAE Decoder", "FP8 weight", "Refiner switch by sampling steps",
            "Emphasis", "Cache FP16 weight for LoRA", "Downcast alphas_cumprod", "Old prompt editing timelines",
            "Pad conds v0"}

REFERENCE = r'''
import json, os, sys
sys.path.insert(0, os.getcwd())
sys.argv = sys.argv[:1]
from modules import shared_init
shared_init.initialize()
from modules import infotext_utils  # before images: the other order is a circular import
from modules import images
from PIL import Image
req = json.load(open(os.environ["J4_IN"]))
out = {"texts": [], "files": []}
for t in req["texts"]:
    out["texts"].append({k: v if isinstance(v, str) else str(v)
                         for k, v in infotext_utils.parse_generation_parameters(t).items()})
for w in req["write"]:
    images.save_image_with_geninfo(Image.new("RGB", (32, 16), "red"), w["text"], w["path"])
for p in req["write"]:
    out["files"].append(images.read_info_from_image(Image.open(p["path"]))[0])
json.dump(out, open(os.environ["J4_OUT"], "w"))
'''


@pytest.mark.skipif(not WEBUI_PYTHON.exists(), reason="needs a webui checkout with its venv (TRAIN_STYLE_WEBUI)")
def test_equal_to_the_webuis_own_parser_and_files(tmp_path):
    """The webui 1.10.1's parse_generation_parameters on the same texts, run outside the webui (FACTS.md), and the
    files its own save_image_with_geninfo writes (PNG, JPEG, WebP) read by its read_info_from_image."""
    texts = [INFOTEXT, *(t for t, _ in QUOTING), *hostile_texts()]
    writes = [{"text": INFOTEXT, "path": str(tmp_path / f"w.{ext}")} for ext in ("png", "jpg", "webp")]
    writes.append({"text": "猫 <x>\nNegative prompt: \"q\"\nSteps: 1, Seed: 2, Size: 8x8", "path":
                   str(tmp_path / "u.jpg")})
    (tmp_path / "in.json").write_text(json.dumps({"texts": texts, "write": writes}))
    (tmp_path / "ref.py").write_text(REFERENCE)
    env = {**os.environ, "J4_IN": str(tmp_path / "in.json"), "J4_OUT": str(tmp_path / "out.json"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([str(WEBUI_PYTHON), str(tmp_path / "ref.py")], cwd=WEBUI, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = json.loads((tmp_path / "out.json").read_text())
    for text, theirs in zip(texts, ref["texts"], strict=True):
        ours = parse_infotext(text)
        assert {k: theirs.get(k) for k in ours} == ours, text
        assert set(theirs) - set(ours) <= DEFAULTS, text
    for w, their_text in zip(writes, ref["files"], strict=True):
        info = read_image_info(Path(w["path"]))
        assert info.kind == "webui" and info.infotext == their_text == w["text"]


# --- hostile and damaged files -------------------------------------------------------------------------------------
def test_not_an_image_empty_truncated_and_no_metadata(tmp_path):
    (tmp_path / "x.png").write_text("just text")
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(LorakitError, match="not a PNG, JPEG or WebP"):
        read_image_info(tmp_path / "x.png")
    with pytest.raises(LorakitError, match="empty"):
        read_image_info(tmp_path / "e.png")
    good = png(tmp_path / "g.png", [("tEXt", "parameters", INFOTEXT)]).read_bytes()
    (tmp_path / "t.png").write_bytes(good[:20])
    with pytest.raises(LorakitError, match="damaged"):
        read_image_info(tmp_path / "t.png")  # cut inside the header chunk
    (tmp_path / "c.png").write_bytes(good[:good.index(b"IDAT") + 10])  # cut inside the image data
    partial = read_image_info(tmp_path / "c.png")
    assert partial.parameters["Seed"] == "1234" and "truncated" in partial.notes[0]
    plain = read_image_info(png(tmp_path / "plain.png", []))
    assert plain.kind == "none" and plain.parameters == {} and "no generation parameters" in plain.notes[0]


def test_enormous_files_and_claims_are_refused(tmp_path, monkeypatch):
    big = png(tmp_path / "big.png", [("tEXt", "parameters", INFOTEXT)])
    monkeypatch.setattr(pnginfo, "MAX_FILE_BYTES", big.stat().st_size - 1)
    with pytest.raises(LorakitError, match="larger than"):
        read_image_info(big)
    monkeypatch.undo()
    data = bytearray(big.read_bytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR claims 10 gigapixels (no pixel is decoded anyway)
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(LorakitError, match="decompression-bomb"):
        read_image_info(tmp_path / "bomb.png")


def test_a_compressed_text_bomb_is_cut_off(tmp_path):
    path = png(tmp_path / "z.png", [("tEXt", "parameters", INFOTEXT)])
    body = b"prompt\0\0" + zlib.compress(b"A" * (pnginfo.MAX_TEXT_BYTES * 4), 9)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    data = path.read_bytes()
    path.write_bytes(data[:33] + chunk + data[33:])
    info = read_image_info(path)
    assert info.kind == "webui" and "prompt" not in info.raw and "inflates beyond" in " ".join(info.notes)


def test_hostile_text_stays_text(tmp_path):
    evil = '<img src=x onerror=alert(1)>\nNegative prompt: </textarea><script>x</script>\n' \
           'Steps: 1, Seed: "<b>2</b>", Sampler: \x1b[31mred, Lora hashes: "<i>: 1"'
    info = read_image_info(png(tmp_path / "evil.png", [("tEXt", "parameters", evil)]))
    assert info.parameters["Prompt"] == "<img src=x onerror=alert(1)>"
    assert info.parameters["Seed"] == "<b>2</b>" and info.loras[0].name == "<i>"


# --- LoRAs resolved, the CLI and the API ---------------------------------------------------------------------------
def write_lora(path: Path, metadata: dict[str, str], payload: bytes) -> None:
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]},
                         "__metadata__": metadata}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)


def make_ours(tmp_path: Path) -> dict:
    """A project with a finished run that saved two epochs, registered into the Lora folder; another LoRA there."""
    import hashlib

    from lib_lorakit.project import Workspace
    from lib_lorakit.results.registry import register_files

    home, lora_dir = tmp_path / "home", tmp_path / "Lora"
    Workspace(home).create("mystyle")
    run = home / "mystyle" / "runs" / "20240101-000000-demo"
    files = ["mystyle-000001.safetensors", "mystyle.safetensors"]
    for i, name in enumerate(files):
        write_lora(run / name, {"ss_output_name": "mystyle", "ss_epoch": str(i + 1)}, bytes([i]) * 64)
    (run / "run.json").write_text(json.dumps({"id": run.name, "project": "mystyle", "state": "done",
                                              "files": files}))
    register_files([run / f for f in files], lora_dir=lora_dir, project="mystyle", trigger_words=["sks"],
                   description="")
    write_lora(lora_dir / "other.safetensors", {"sshs_model_hash": "fe" * 32}, b"x" * 16)
    epoch1 = hashlib.sha256(bytes([0]) * 64).hexdigest()[:12]
    text = (f"a <lora:mystyle-000001:0.6>, <lora:unknown:1>, sks\nSteps: 4, Seed: 1, Size: 64x64, "
            f'Lora hashes: "mystyle-000001: {epoch1}, other: fefefefefefe, gone: 999999999999"')
    image = png(tmp_path / "made.png", [("tEXt", "parameters", text)])
    return {"home": home, "lora_dir": lora_dir, "run": run, "image": image, "epoch1": epoch1}


def test_loras_resolved_to_files_and_our_runs(tmp_path):
    ours = make_ours(tmp_path)
    result = inspect_image(ours["image"], lora_dir=ours["lora_dir"], projects_home=ours["home"])
    by_name = {m.name: m for m in result.loras}
    mine = by_name["mystyle-000001"]
    assert (mine.project, mine.run, mine.epoch, mine.weight, mine.found_by) == (
        "mystyle", ours["run"].name, 1, 0.6, "hash")
    assert Path(mine.file) == ours["lora_dir"] / "train-style" / "mystyle" / "mystyle-000001.safetensors"
    other = by_name["other"]
    assert other.file == str(ours["lora_dir"] / "other.safetensors") and not other.ours
    assert by_name["gone"].file == "" and by_name["unknown"].file == "" and by_name["unknown"].weight == 1.0
    cache = json.loads((ours["home"] / ".cache" / "lora-hashes.json").read_text())
    assert any(v["sha256"].startswith(ours["epoch1"]) for v in cache.values())
    # a file changed on disk is hashed again, not taken from the cache
    target = ours["lora_dir"] / "other.safetensors"
    write_lora(target, {"sshs_model_hash": "ab" * 32}, b"y" * 17)
    again = inspect_image(ours["image"], lora_dir=ours["lora_dir"], projects_home=ours["home"])
    assert {m.name: m for m in again.loras}["other"].file == ""


def test_cli_and_api(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lorakit import api
    from lib_lorakit.host import StandaloneHost

    ours = make_ours(tmp_path)
    cmd = [sys.executable, "-m", "lib_lorakit", "--json", "--home", str(ours["home"]), "--lora-dir",
           str(ours["lora_dir"]), "inspect", str(ours["image"])]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "webui" and data["parameters"]["Size"] == "64x64" and data["parameters"]["Steps"] == "4"
    first = data["loras"][0]
    assert {k: first[k] for k in ("name", "hash", "weight", "project", "run")} == {
        "name": "mystyle-000001", "hash": ours["epoch1"], "weight": 0.6, "project": "mystyle",
        "run": ours["run"].name}
    lora = subprocess.run([*cmd[:-1], str(ours["run"] / "mystyle.safetensors")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert json.loads(lora.stdout)["kind"] == "lora"
    plain = subprocess.run([c for c in cmd if c != "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert f"ours: mystyle/{ours['run'].name}/epoch 1" in plain.stdout and "Size: 64x64" in plain.stdout

    host = StandaloneHost(home=ours["home"], lora=ours["lora_dir"], models=tmp_path / "models",
                          extra_roots=[tmp_path / "allowed"])
    app = FastAPI()
    app.include_router(api.make_router(host))
    client = TestClient(app)
    body = ours["image"].read_bytes()
    r = post(client, "/train-style/v1/inspect?name=made.png", body)
    assert r.status_code == 200, r.text
    assert r.json()["loras"][0]["project"] == "mystyle" and r.json()["file"] == "made.png"
    assert post(client, "/train-style/v1/inspect", b"not an image").status_code == 400
    other_site = post(client, "/train-style/v1/inspect", body, headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403  # the upload route keeps the API's web policy
    assert client.get("/train-style/v1/inspect", params={"path": str(ours["image"])}).status_code == 403
    sample = ours["run"] / "sample" / "mystyle_e000001_00_20240101000000_5.png"
    sample.parent.mkdir()
    png(sample, [])
    r = client.get("/train-style/v1/inspect", params={"path": str(sample)})  # inside the projects home
    assert r.status_code == 200 and r.json()["parameters"]["Epoch"] == "1"
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (pnginfo.MAX_FILE_BYTES + 10)
    assert post(client, "/train-style/v1/inspect", big).status_code == 413


def post(client, url: str, body: bytes, **kwargs):
    """Raw bytes as the body (httpx's `content=`, requests' `data=` in older starlette test clients)."""
    import inspect

    key = "content" if "content" in inspect.signature(client.post).parameters else "data"
    return client.post(url, **{key: body}, **kwargs)


def test_other_formats_become_an_infotext_the_webui_reads(tmp_path):
    """What the panel hands to the webui's paste for a ComfyUI image: parsed back, the same fields."""
    info = read_image_info(png(tmp_path / "c.png", [("tEXt", "prompt", json.dumps(COMFY_PROMPT))]))
    text = pnginfo.compose_infotext(info.parameters)
    back = parse_infotext(text)
    assert {k: back[k] for k in info.parameters if k != "Size"} == {k: v for k, v in info.parameters.items()
                                                                    if k != "Size"}
    assert back["Size-1"] == "512" and back["Model"] == "sd15.safetensors"

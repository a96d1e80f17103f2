"""PNG Info: how an image was made, read from the text it carries (pure: no webui, no gradio, no pixels decoded).

Sources, tried in this order (the first that gives parameters wins; `SOURCES` is the table):
- the webui's infotext: PNG `parameters` (tEXt, zTXt or iTXt) or JPEG / WebP EXIF UserComment;
- ComfyUI: PNG `prompt` (the API graph, JSON) or else `workflow` (the editor's graph, JSON);
- sd-scripts' gen_img.py: PNG `prompt`, `seed`, `sampler`, `steps`, `scale`, `negative-prompt` texts;
- sd-scripts' training samples, which carry no text: the file name `<output name>_<step|e<epoch>>_<nn>_<time>_<seed>`.

`parse_infotext` reads the webui's infotext the way the webui's own `parse_generation_parameters` does (its quoting,
multi-line prompts, `Negative prompt:`, the last line's `key: value` pairs, `Size-1`/`Size-2`), giving the fields
the text holds; the defaults the webui adds for pasting (e.g. `Clip skip: 1`, `RNG: GPU`) are not invented here.
Everything is bounded: the file's size, each text, the zTXt/iTXt inflation; the pixels are never decoded.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError
from .infotext import quote

MAX_FILE_BYTES = 64 * 1024 * 1024  # far beyond any generated PNG/JPEG/WebP; a larger file is not read
MAX_TEXT_BYTES = 4 * 1024 * 1024  # one text after inflation (ComfyUI graphs reach a few hundred kB)
MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb limit (2 × Image.MAX_IMAGE_PIXELS): a claim above is refused
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
USER_COMMENT = 0x9286
EXIF_IFD = 0x8769

# the webui's own patterns (modules/infotext_utils.py), so both read a text alike
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")
RE_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # modules/extra_networks.py re_extra_net
RE_SAMPLE_NAME = re.compile(r"^(?:(?P<name>.*)_)?(?:e(?P<epoch>\d{6})|(?P<step>\d{6}))_(?P<index>\d{2})_"
                            r"(?P<time>\d{14})(?:_(?P<seed>\d+))?$")


@dataclass(frozen=True)
class LoraRef:
    """A LoRA an image names: from `Lora hashes` (name and short hash) and/or the prompt's `<lora:NAME:W>`."""

    name: str
    hash: str = ""
    weight: Optional[float] = None

    def to_dict(self) -> dict:
        return {"name": self.name, "hash": self.hash, "weight": self.weight}


@dataclass(frozen=True)
class ImageInfo:
    """What an image says about how it was made. `parameters` uses the webui's field names (`Prompt`, `Negative
    prompt`, `Steps`, `Sampler`, `CFG scale`, `Seed`, `Size-1`/`Size-2` and `Size`, `Model hash`, …); `infotext`
    the webui-format text where there was one; `raw` every text chunk found (name → text), `notes` what could not
    be read and why."""

    kind: str  # "webui" | "comfyui" | "sd-scripts" | "none"
    format: str  # "PNG" | "JPEG" | "WEBP"
    width: int
    height: int
    parameters: dict[str, Any] = field(default_factory=dict)
    infotext: str = ""
    loras: list[LoraRef] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "format": self.format, "width": self.width, "height": self.height,
                "parameters": self.parameters, "infotext": self.infotext,
                "loras": [r.to_dict() for r in self.loras], "raw": self.raw, "notes": self.notes}


# --- the webui's infotext -------------------------------------------------------------------------------------------
def unquote(text: str) -> str:
    """A value in double quotes is JSON text (the webui's `quote` wrote it with json.dumps)."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def parse_infotext(text: str) -> dict[str, str]:
    """The fields an infotext holds, as the webui's `parse_generation_parameters` reads them: lines before the
    last are the prompt until one starts with `Negative prompt:`; the last line holds `key: value` pairs when it
    has at least three (else it belongs to the prompt); a quoted value is unquoted; `WxH` values split into
    `key-1`/`key-2`; a pair with an empty value is dropped (the webui fails on it and skips it)."""
    res: dict[str, str] = {}
    prompt, negative, done_with_prompt = "", "", False
    *lines, lastline = text.strip().split("\n")
    if len(RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for key, value in RE_PARAM.findall(lastline):
        if not value:
            continue
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        m = RE_IMAGESIZE.match(value)
        if m is not None:
            res[f"{key}-1"], res[f"{key}-2"] = m.group(1), m.group(2)
        else:
            res[key] = value
    res["Prompt"], res["Negative prompt"] = prompt, negative
    return res


def compose_infotext(params: dict[str, Any]) -> str:
    """An infotext in the webui's format from parameters (for images that carry another format, so the webui's
    paste mechanism can read them): prompt, `Negative prompt:`, then the other fields as `key: value` pairs."""
    skip = {"Prompt", "Negative prompt", "Size-1", "Size-2"}
    pairs = [f"{k}: {quote(str(v))}" for k, v in params.items() if k not in skip and str(v) != ""
             and "\n" not in k and ":" not in k]
    lines = [str(params.get("Prompt", ""))]
    if params.get("Negative prompt"):
        lines.append(f"Negative prompt: {params['Negative prompt']}")
    return "\n".join([*lines, ", ".join(pairs)]) if pairs else "\n".join(lines)


def lora_hashes(value: str) -> dict[str, str]:
    """`Lora hashes` ("name: hash, name2: hash2") as the webui's Lora extension reads it: name → short hash."""
    out = {}
    for item in value.split(","):
        parts = item.strip().split(":", 1)
        if len(parts) == 2 and parts[0].strip():
            out[parts[0].strip()] = parts[1].strip()
    return out


def prompt_loras(prompt: str) -> list[LoraRef]:
    """`<lora:NAME:W>` (and `<lyco:…>`) in a prompt, as the webui's extra-network syntax reads them; `W` may be
    `te=…`/`unet=…` items, of which the first plain number is the weight (1.0 when there is none)."""
    found = []
    for kind, args in RE_EXTRA_NETWORK.findall(prompt):
        if kind not in ("lora", "lyco"):
            continue
        name, *rest = args.split(":")
        weight = 1.0
        for item in rest:
            item = item.split("=", 1)[-1]
            try:
                weight = float(item)
                break
            except ValueError:
                continue
        found.append(LoraRef(name=name.strip(), weight=weight))
    return found


def infotext_loras(params: dict[str, Any]) -> list[LoraRef]:
    """The LoRAs an infotext names: every `Lora hashes` entry, with the weight the prompt gives it, then prompt
    LoRAs the hashes do not list (no hash known)."""
    in_prompt = prompt_loras(str(params.get("Prompt", "")))
    weights = {r.name: r.weight for r in in_prompt}
    hashes = lora_hashes(str(params.get("Lora hashes", "")))
    refs = [LoraRef(name=name, hash=h, weight=weights.get(name)) for name, h in hashes.items()]
    refs += [r for r in in_prompt if r.name not in hashes]
    return refs


# --- ComfyUI --------------------------------------------------------------------------------------------------------
SAMPLER_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom")
CHECKPOINT_NODES = ("CheckpointLoaderSimple", "CheckpointLoader", "unCLIPCheckpointLoader",
                    "ImageOnlyCheckpointLoader")
LORA_NODES = ("LoraLoader", "LoraLoaderModelOnly")


def comfy_parameters(graph: dict) -> tuple[dict[str, Any], list[LoraRef]]:
    """From ComfyUI's API graph (`prompt`: node id → {class_type, inputs}): the first sampler's settings, the
    texts its positive/negative inputs lead to, the checkpoint, the size, and the LoRA loaders' files. Only plain
    values are taken; an input wired to another node is followed through text-encode nodes only."""
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict) and isinstance(v.get("inputs"), dict)}
    params: dict[str, Any] = {}
    loras: list[LoraRef] = []
    for node in nodes.values():
        kind, inputs = node.get("class_type"), node["inputs"]
        if kind in SAMPLER_NODES and "Steps" not in params:
            _put(params, "Seed", inputs.get("seed", inputs.get("noise_seed")))
            _put(params, "Steps", inputs.get("steps"))
            _put(params, "CFG scale", inputs.get("cfg"))
            _put(params, "Sampler", inputs.get("sampler_name"))
            _put(params, "Schedule type", inputs.get("scheduler"))
            _put(params, "Denoising strength", inputs.get("denoise"))
            _put(params, "Prompt", _comfy_text(nodes, inputs.get("positive")))
            _put(params, "Negative prompt", _comfy_text(nodes, inputs.get("negative")))
        elif kind in CHECKPOINT_NODES:
            _put(params, "Model", inputs.get("ckpt_name"))
        elif kind in ("EmptyLatentImage", "EmptySD3LatentImage"):
            _put(params, "Size-1", inputs.get("width"))
            _put(params, "Size-2", inputs.get("height"))
        elif kind in LORA_NODES and isinstance(inputs.get("lora_name"), str):
            weight = inputs.get("strength_model")
            loras.append(LoraRef(name=_lora_stem(inputs["lora_name"]),
                                 weight=float(weight) if _is_number(weight) else None))
    return params, loras


def comfy_workflow_parameters(workflow: dict) -> tuple[dict[str, Any], list[LoraRef]]:
    """From ComfyUI's editor graph (`workflow`: nodes with `widgets_values`, `links`), for images that carry only
    it: the sampler's widgets, the texts linked to its positive/negative inputs, the checkpoint, LoRA loaders."""
    nodes = [n for n in workflow.get("nodes", []) if isinstance(n, dict)] if isinstance(workflow, dict) else []
    by_id = {n.get("id"): n for n in nodes}
    links = {lk[0]: lk[1] for lk in workflow.get("links", []) if isinstance(lk, list) and len(lk) >= 2}
    params: dict[str, Any] = {}
    loras: list[LoraRef] = []
    for node in nodes:
        kind, values = node.get("type"), node.get("widgets_values")
        values = values if isinstance(values, list) else []
        if kind == "KSampler" and len(values) >= 7 and "Steps" not in params:
            for key, value in zip(("Seed", None, "Steps", "CFG scale", "Sampler", "Schedule type",
                                   "Denoising strength"), values, strict=False):
                if key:
                    _put(params, key, value)
            for slot in node.get("inputs", []) if isinstance(node.get("inputs"), list) else []:
                if isinstance(slot, dict) and slot.get("name") in ("positive", "negative"):
                    source = by_id.get(links.get(slot.get("link")))
                    text = (source or {}).get("widgets_values") or [None]
                    _put(params, "Prompt" if slot["name"] == "positive" else "Negative prompt", text[0])
        elif kind in CHECKPOINT_NODES and values:
            _put(params, "Model", values[0])
        elif kind in LORA_NODES and values and isinstance(values[0], str):
            weight = values[1] if len(values) > 1 and _is_number(values[1]) else None
            loras.append(LoraRef(name=_lora_stem(values[0]), weight=None if weight is None else float(weight)))
    return params, loras


def _comfy_text(nodes: dict[str, dict], link: Any, depth: int = 0) -> Optional[str]:
    """The text a conditioning input comes from: a [node id, slot] link to a node with a plain `text`
    (CLIPTextEncode) or `text_g` (SDXL), followed through conditioning nodes a few steps."""
    if not (isinstance(link, list) and link) or depth > 8:
        return None
    node = nodes.get(str(link[0]))
    if node is None:
        return None
    inputs = node["inputs"]
    for key in ("text", "text_g", "prompt"):
        if isinstance(inputs.get(key), str):
            return inputs[key]
    for key in ("conditioning", "conditioning_1", "positive"):
        if key in inputs:
            return _comfy_text(nodes, inputs[key], depth + 1)
    return None


def _lora_stem(name: str) -> str:
    stem = name.replace("\\", "/").rsplit("/", 1)[-1]
    return stem[:-len(".safetensors")] if stem.lower().endswith(".safetensors") else stem


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _put(params: dict[str, Any], key: str, value: Any) -> None:
    """Plain values only (text, numbers), kept as the text the webui would show."""
    if isinstance(value, str) or _is_number(value):
        params[key] = str(value)


# --- which source: one ordered table --------------------------------------------------------------------------------
Reading = Optional[tuple[dict[str, Any], list[LoraRef], str]]  # parameters, LoRAs, infotext


def _from_webui(texts: dict[str, str], name: str) -> Reading:
    infotext = texts.get("parameters") or texts.get("UserComment")
    if not infotext or not infotext.strip():
        return None
    params = parse_infotext(infotext)
    return params, infotext_loras(params), infotext


def _from_comfy(texts: dict[str, str], name: str) -> Reading:
    for key, reader in (("prompt", comfy_parameters), ("workflow", comfy_workflow_parameters)):
        graph = _json_object(texts.get(key))
        if graph is not None:
            params, loras = reader(graph)
            if params or loras:
                return params, loras, ""
    return None


def _from_sd_scripts(texts: dict[str, str], name: str) -> Reading:
    if "prompt" not in texts or not ({"seed", "scale", "steps"} & texts.keys()):
        return None
    params: dict[str, Any] = {"Prompt": texts["prompt"], "Negative prompt": texts.get("negative-prompt", "")}
    for src, key in (("steps", "Steps"), ("sampler", "Sampler"), ("scale", "CFG scale"), ("seed", "Seed"),
                     ("negative-scale", "Negative scale")):
        if src in texts:
            params[key] = texts[src]
    return params, prompt_loras(texts["prompt"]), ""


def _from_sample_name(texts: dict[str, str], name: str) -> Reading:
    m = RE_SAMPLE_NAME.match(Path(name).stem)
    if m is None:
        return None
    params: dict[str, Any] = {"Sample of": m["name"] or "", "Sample index": str(int(m["index"]))}
    if m["epoch"]:
        params["Epoch"] = str(int(m["epoch"]))
    else:
        params["Step"] = str(int(m["step"]))
    if m["seed"]:
        params["Seed"] = m["seed"]
    return params, [LoraRef(name=m["name"])] if m["name"] else [], ""


SOURCES: tuple[tuple[str, Callable[[dict[str, str], str], Reading]], ...] = (
    ("webui", _from_webui),  # a `parameters` text wins over any other (e.g. a webui extension's extra chunks)
    ("comfyui", _from_comfy),  # `prompt` as a JSON graph
    ("sd-scripts", _from_sd_scripts),  # `prompt` as text with gen_img.py's companions
    ("sd-scripts", _from_sample_name),  # a training sample: nothing but its name
)


def _json_object(text: Optional[str]) -> Optional[dict]:
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text, parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# --- reading files --------------------------------------------------------------------------------------------------
def read_image_info(path: Path, *, name: Optional[str] = None) -> ImageInfo:
    """How the image at `path` was made. `name`: the file's own name where `path` is an upload's temporary file
    (training samples are recognised by name). Not an image, too large, damaged → LorakitError saying so."""
    path = Path(path)
    shown = name or path.name
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise LorakitError(f"Cannot read {shown}: {e.strerror or e}.") from e
    return read_image_bytes(data, name=shown)


def read_image_bytes(data: bytes, *, name: str = "image") -> ImageInfo:
    """As `read_image_info`, from the file's bytes."""
    if len(data) > MAX_FILE_BYTES:
        raise LorakitError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB; PNG Info reads images up to that "
                           "size. Give the image as the webui saved it.")
    if not data:
        raise LorakitError(f"{name} is empty; if it is not empty on your computer, the upload had not finished.")
    fmt, reader = _format(data, name)
    notes: list[str] = []
    width, height, texts = reader(data, notes)
    if width * height > MAX_PIXELS:
        raise LorakitError(f"{name} claims {width}×{height} pixels, more than Pillow's decompression-bomb limit "
                           f"({MAX_PIXELS:,}); it is not read.")
    for kind, source in SOURCES:
        reading = source(texts, name)
        if reading is not None:
            params, loras, infotext = reading
            _add_size(params)
            return ImageInfo(kind=kind, format=fmt, width=width, height=height, parameters=params,
                             infotext=infotext, loras=loras, raw=texts, notes=notes)
    notes.append(f"{name} carries no generation parameters (no webui infotext, ComfyUI graph or sd-scripts "
                 "metadata). Images re-saved by an editor or a website usually lose them: use the file the "
                 "generator saved.")
    return ImageInfo(kind="none", format=fmt, width=width, height=height, raw=texts, notes=notes)


def _add_size(params: dict[str, Any]) -> None:
    """`Size` as the infotext writes it (`WxH`), beside the webui's `Size-1`/`Size-2`."""
    if "Size-1" in params and "Size-2" in params and "Size" not in params:
        params["Size"] = f"{params['Size-1']}x{params['Size-2']}"


def _format(data: bytes, name: str) -> tuple[str, Callable[[bytes, list[str]], tuple[int, int, dict[str, str]]]]:
    if data.startswith(PNG_SIGNATURE):
        return "PNG", _png_texts
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG", _jpeg_texts
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP", _webp_texts
    raise LorakitError(f"{name} is not a PNG, JPEG or WebP image; PNG Info reads those (a LoRA's .safetensors "
                       "goes to LoRA info).")


def _png_texts(data: bytes, notes: list[str]) -> tuple[int, int, dict[str, str]]:
    """Every tEXt/zTXt/iTXt chunk of a PNG (before and after the image data), without decoding pixels."""
    width = height = 0
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            notes.append("The PNG ends inside a chunk (a truncated file); what came before was read.")
            break
        pos += 12 + length
        if ctype == b"IHDR" and length >= 8:
            width, height = struct.unpack(">II", body[:8])
        elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
            _png_text(ctype, body, texts, notes)
        elif ctype == b"IEND":
            break
    if not width:
        raise LorakitError("The file starts like a PNG but has no image header; it is damaged.")
    return width, height, texts


def _png_text(ctype: bytes, body: bytes, texts: dict[str, str], notes: list[str]) -> None:
    key_raw, sep, rest = body.partition(b"\0")
    key = key_raw.decode("latin-1")
    if not sep or not key:
        notes.append(f"A {ctype.decode()} chunk has no keyword; skipped.")
        return
    try:
        if ctype == b"tEXt":
            value = rest.decode("latin-1")
        elif ctype == b"zTXt":
            value = _inflate(rest[1:], key).decode("latin-1")
        else:
            compressed, _method, rest = rest[0], rest[1], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _translated, _, rest = rest.partition(b"\0")
            value = (_inflate(rest, key) if compressed else rest).decode("utf-8", errors="replace")
    except (IndexError, zlib.error, LorakitError) as e:
        notes.append(f"The PNG text {key!r} could not be read ({e}); skipped.")
        return
    if len(value) > MAX_TEXT_BYTES:
        notes.append(f"The PNG text {key!r} is longer than {MAX_TEXT_BYTES // 2**20} MB; skipped.")
        return
    texts.setdefault(key, value)


def _inflate(raw: bytes, key: str) -> bytes:
    """zlib data, stopped at MAX_TEXT_BYTES (a compressed text can claim any size)."""
    z = zlib.decompressobj()
    out = z.decompress(raw, MAX_TEXT_BYTES + 1)
    if len(out) > MAX_TEXT_BYTES:
        raise LorakitError(f"inflates beyond {MAX_TEXT_BYTES // 2**20} MB")
    return out


def _jpeg_texts(data: bytes, notes: list[str]) -> tuple[int, int, dict[str, str]]:
    """The EXIF UserComment of a JPEG (APP1 `Exif`), and its size from the frame header."""
    width = height = 0
    texts: dict[str, str] = {}
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\0\0"):
            _exif_comment(body[6:], texts, notes)
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(body) >= 5:
            height, width = struct.unpack(">HH", body[1:5])
        if marker == 0xDA:  # start of scan: the image data follows
            break
        pos += 2 + length
    if not width:
        raise LorakitError("The file starts like a JPEG but has no frame header; it is damaged.")
    return width, height, texts


def _webp_texts(data: bytes, notes: list[str]) -> tuple[int, int, dict[str, str]]:
    """The EXIF UserComment of a WebP (its `EXIF` chunk) and its canvas size."""
    width = height = 0
    texts: dict[str, str] = {}
    pos = 12
    while pos + 8 <= len(data):
        ctype, length = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + length]
        pos += 8 + length + (length & 1)
        if ctype == b"VP8X" and len(body) >= 10:
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif ctype == b"VP8 " and len(body) >= 10:
            width, height = (v & 0x3FFF for v in struct.unpack("<HH", body[6:10]))
        elif ctype == b"VP8L" and len(body) >= 5:
            bits = int.from_bytes(body[1:5], "little")
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif ctype == b"EXIF":
            _exif_comment(body[6:] if body.startswith(b"Exif\0\0") else body, texts, notes)
    if not width:
        raise LorakitError("The file starts like a WebP but has no image header; it is damaged.")
    return width, height, texts


def _exif_comment(tiff: bytes, texts: dict[str, str], notes: list[str]) -> None:
    """UserComment from EXIF data (a TIFF structure), read by Pillow's EXIF parser (no pixels involved)."""
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(tiff)
        value = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds on damaged EXIF; the note says what happened
        notes.append(f"The image's EXIF data is damaged ({type(e).__name__}); its UserComment was not read.")
        return
    if isinstance(value, bytes) and value:
        texts["UserComment"] = decode_user_comment(value)
    elif isinstance(value, str) and value:
        texts["UserComment"] = value


def decode_user_comment(raw: bytes) -> str:
    """An EXIF UserComment: an 8-byte character-code header (`UNICODE\\0` as UTF-16, big-endian as the webui writes
    it or little-endian as some tools do, told apart by a byte-order mark or where the zero bytes fall; `ASCII`;
    `JIS`) then the text; without a known header, the bytes as UTF-8 (what the webui falls back to)."""
    head, body = raw[:8], raw[8:]
    if head == b"UNICODE\0":
        return _utf16(body)
    if head == b"ASCII\0\0\0":
        return body.decode("ascii", errors="replace").rstrip("\0")
    if head == b"JIS\0\0\0\0\0":
        return body.decode("shift_jis", errors="replace").rstrip("\0")
    return raw.decode("utf-8", errors="ignore").strip("\0")


def _utf16(body: bytes) -> str:
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return body.decode("utf-16", errors="replace").rstrip("\0")
    even_zeros = body[0::2].count(0)
    odd_zeros = body[1::2].count(0)
    codec = "utf-16-le" if odd_zeros > even_zeros else "utf-16-be"
    return body.decode(codec, errors="replace").rstrip("\0")

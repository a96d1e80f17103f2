"""What a LoRA file says about how it was made, read from its safetensors header (tensors are never loaded).

Hashes are computed the way the webui does, so what this shows matches the webui's "Lora hashes" infotext:
`sshs_model_hash` from the metadata when present, else the sha256 of the file after its header; the short
hash is the first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError

MAX_HEADER = 100 * 1024 * 1024  # what the safetensors library itself accepts
MAX_DEPTH = 16  # nesting kept from JSON inside the metadata; sd-scripts writes at most four levels
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class LoraInfo:
    path: Path
    metadata: dict[str, str]
    tensors: int
    sha256: str
    network: str
    dim: Optional[int]
    alpha: Optional[float]
    network_args: dict[str, Any]
    base_model: str
    resolution: str
    output_name: str
    datasets: list[dict] = field(default_factory=list)  # {"dir", "images", "repeats"}
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    buckets: dict[str, Any] = field(default_factory=dict)
    training_seconds: Optional[float] = None
    steps: Optional[int] = None
    epochs: Optional[int] = None
    notes: list[str] = field(default_factory=list)  # metadata that was there but could not be read, and why

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def top_tags(self, n: int = 20) -> list[tuple[str, int]]:
        total: dict[str, int] = {}
        for tags in self.tag_frequency.values():
            for tag, count in tags.items():
                total[tag.strip()] = total.get(tag.strip(), 0) + int(count)
        return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "short_hash": self.short_hash,
                "tensors": self.tensors, "network": self.network, "dim": self.dim, "alpha": self.alpha,
                "network_args": self.network_args, "base_model": self.base_model, "resolution": self.resolution,
                "output_name": self.output_name, "datasets": self.datasets, "tag_frequency": self.tag_frequency,
                "top_tags": self.top_tags(), "buckets": self.buckets, "training_seconds": self.training_seconds,
                "steps": self.steps, "epochs": self.epochs, "metadata": self.metadata, "notes": self.notes}


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file and its length; a clear error for anything else, which never shows
    the file's bytes (any file inside the allowed folders can be named)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise LorakitError(f"Cannot read {path}: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno())
        if not stat.S_ISREG(size.st_mode):
            raise LorakitError(f"{path.name} is not a safetensors file: it is not a regular file.")
        head = f.read(8)
        if len(head) != 8:
            raise LorakitError(f"{path.name} is not a safetensors file: it is too short.")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size.st_size:
            raise LorakitError(f"{path.name} is not a safetensors file: its header claims a length the file does "
                               "not have.")
        raw = f.read(n)
    try:
        header = json.loads(raw, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise LorakitError(f"{path.name} is not a safetensors file: its header is not JSON.") from e
    if not isinstance(header, dict):
        raise LorakitError(f"{path.name} is not a safetensors file: its header is not a JSON object.")
    return header, n


def webui_hash(path: Path, header_len: int) -> str:
    """sha256 of the file after the 8-byte length and the JSON header (the webui's `sshs` hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(8 + header_len)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_lora_info(path: Path) -> LoraInfo:
    """What the header says. Metadata is untrusted (anyone can write a LoRA): a value of the wrong shape is left
    out and named in `notes`, so a hostile file gives a partial result, never a crash."""
    path = Path(path)
    header, n = read_header(path)
    notes: list[str] = []
    meta = _metadata(header.get("__metadata__"), notes)
    tensors = sum(1 for k in header if k != "__metadata__")
    sha = meta.get("sshs_model_hash") or webui_hash(path, n)
    args = _json(meta, "ss_network_args", dict, notes)
    return LoraInfo(
        path=path, metadata=meta, tensors=tensors, sha256=sha,
        network=_network_name(meta, args), dim=_num(meta, "ss_network_dim", int, notes),
        alpha=_num(meta, "ss_network_alpha", float, notes), network_args=args,
        base_model=meta.get("ss_base_model_version") or meta.get("modelspec.architecture", ""),
        resolution=meta.get("ss_resolution", ""), output_name=meta.get("ss_output_name", path.stem),
        datasets=_datasets(meta, notes), tag_frequency=_tag_frequency(meta, notes),
        buckets=_json(meta, "ss_bucket_info", dict, notes), training_seconds=_duration(meta, notes),
        steps=_num(meta, "ss_steps", int, notes) if meta.get("ss_steps") else
        _num(meta, "ss_max_train_steps", int, notes),
        epochs=_num(meta, "ss_epoch", int, notes) if meta.get("ss_epoch") else
        _num(meta, "ss_num_epochs", int, notes),
        notes=notes)


def _metadata(raw: Any, notes: list[str]) -> dict[str, str]:
    """`__metadata__` as text → text (what the format allows); anything else is noted and left out."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        notes.append(f"__metadata__ is a {_kind(raw)}, not an object of texts; ignored.")
        return {}
    meta = {_text(k): _text(v) for k, v in raw.items() if isinstance(v, str)}
    others = sorted(_text(k) for k, v in raw.items() if not isinstance(v, str))
    if others:
        notes.append(f"{len(others)} metadata value(s) are not text and were ignored: {', '.join(others[:10])}"
                     + (" …" if len(others) > 10 else "") + ".")
    return meta


def _network_name(meta: dict[str, str], args: dict[str, Any]) -> str:
    module = meta.get("ss_network_module", "")
    if module.startswith("lycoris"):
        return {"locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}.get(str(args.get("algo", "")).lower(), "LyCORIS")
    if module == "networks.lora":
        return "LoCon" if "conv_dim" in args else "LoRA"
    return module or "unknown"


def _json(meta: dict[str, str], key: str, kind: type, notes: list[str]) -> Any:
    """The JSON in `meta[key]` if it is a `kind` (dict or list), made plain (see `_plain`); else an empty one."""
    text = meta.get(key)
    if not text or text == "None":
        return kind()
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        notes.append(f"{key} is not valid JSON (or nested too deeply); ignored.")
        return kind()
    if not isinstance(value, kind):
        notes.append(f"{key} is a {_kind(value)}, not a JSON {_kind(kind())}; ignored.")
        return kind()
    return _plain(value, 0)


def _plain(value: Any, depth: int) -> Any:
    """JSON data safe to show and send again: no NaN or infinity, no unpaired surrogate, at most MAX_DEPTH deep."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
        return None
    if isinstance(value, dict):
        return {_text(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    return value


def _num(meta: dict[str, str], key: str, kind: type, notes: list[str]) -> Any:
    """A finite number from `meta[key]` (None when absent or not a finite number, which is noted)."""
    text = meta.get(key)
    if text is None or text in ("", "None"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        notes.append(f"{key} is not a finite number; ignored.")
        return None
    return int(value) if kind is int else value


def _count(value: Any) -> Optional[int]:
    """A count from JSON: a whole, finite, non-negative number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _tag_frequency(meta: dict[str, str], notes: list[str]) -> dict[str, dict[str, int]]:
    """`ss_tag_frequency` (folder → tag → count), keeping only the entries of that shape."""
    out: dict[str, dict[str, int]] = {}
    dropped = 0
    for folder, tags in _json(meta, "ss_tag_frequency", dict, notes).items():
        if not isinstance(tags, dict):
            dropped += 1
            continue
        counts = {tag: _count(n) for tag, n in tags.items()}
        dropped += sum(1 for n in counts.values() if n is None)
        out[folder] = {tag: n for tag, n in counts.items() if n is not None}
    if dropped:
        notes.append(f"ss_tag_frequency: {dropped} entr{'y' if dropped == 1 else 'ies'} not a tag count; ignored.")
    return out


def _datasets(meta: dict[str, str], notes: list[str]) -> list[dict]:
    dirs = _json(meta, "ss_dataset_dirs", dict, notes)
    if dirs:
        return [{"dir": d, "images": _count(v.get("img_count")), "repeats": _count(v.get("n_repeats"))}
                for d, v in dirs.items() if isinstance(v, dict)]
    out = []
    for ds in _json(meta, "ss_datasets", list, notes):
        subsets = ds.get("subsets") if isinstance(ds, dict) else None
        for sub in subsets if isinstance(subsets, list) else []:
            if isinstance(sub, dict):
                folder = sub.get("image_dir")
                out.append({"dir": None if folder is None else str(folder), "images": _count(sub.get("img_count")),
                            "repeats": _count(sub.get("num_repeats")), "is_reg": sub.get("is_reg") is True})
    return out


def _duration(meta: dict[str, str], notes: list[str]) -> Optional[float]:
    start = _num(meta, "ss_training_started_at", float, notes)
    end = _num(meta, "ss_training_finished_at", float, notes)
    return end - start if start is not None and end is not None and math.isfinite(end - start) else None


def _text(value: Any) -> str:
    """Text that can be written anywhere: unpaired surrogates (valid JSON escapes, not valid UTF-8) replaced."""
    return _SURROGATES.sub("\ufffd", str(value))


def _kind(value: Any) -> str:
    return {dict: "object", list: "list", str: "text", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON; Python's parser accepts them, we read them as nothing."""
    return None

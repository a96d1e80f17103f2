"""What a LoRA file says about how it was made, read from its safetensors header (tensors are never loaded).

Hashes are computed the way the webui does, so what this shows matches the webui's "Lora hashes" infotext:
`sshs_model_hash` from the metadata when present, else the sha256 of the file after its header; the short
hash is the first 12 hex digits.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError

MAX_HEADER = 100 * 1024 * 1024


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
                "steps": self.steps, "epochs": self.epochs, "metadata": self.metadata}


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a .safetensors file and its length; a clear error for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise LorakitError(f"{path.name} is not a safetensors file: it is too short.")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                raise LorakitError(f"{path.name} is not a safetensors file: its header claims {n} bytes.")
            raw = f.read(n)
    except OSError as e:
        raise LorakitError(f"Cannot read {path}: {e.strerror or e}") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
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
    path = Path(path)
    header, n = read_header(path)
    meta = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    tensors = sum(1 for k in header if k != "__metadata__")
    sha = meta.get("sshs_model_hash") or webui_hash(path, n)
    return LoraInfo(
        path=path, metadata=meta, tensors=tensors, sha256=sha,
        network=_network_name(meta), dim=_num(meta.get("ss_network_dim"), int),
        alpha=_num(meta.get("ss_network_alpha"), float), network_args=_json(meta.get("ss_network_args"), {}),
        base_model=meta.get("ss_base_model_version") or meta.get("modelspec.architecture", ""),
        resolution=meta.get("ss_resolution", ""), output_name=meta.get("ss_output_name", path.stem),
        datasets=_datasets(meta), tag_frequency=_json(meta.get("ss_tag_frequency"), {}),
        buckets=_json(meta.get("ss_bucket_info"), {}), training_seconds=_duration(meta),
        steps=_num(meta.get("ss_steps") or meta.get("ss_max_train_steps"), int),
        epochs=_num(meta.get("ss_epoch") or meta.get("ss_num_epochs"), int))


def _network_name(meta: dict[str, str]) -> str:
    module = meta.get("ss_network_module", "")
    args = _json(meta.get("ss_network_args"), {})
    if module.startswith("lycoris"):
        return {"locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}.get(str(args.get("algo", "")).lower(), "LyCORIS")
    if module == "networks.lora":
        return "LoCon" if "conv_dim" in args else "LoRA"
    return module or "unknown"


def _json(text: Optional[str], default: Any) -> Any:
    if not text or text == "None":
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


def _num(text: Optional[str], kind: type) -> Any:
    try:
        return kind(float(text)) if kind is int else kind(text)
    except (TypeError, ValueError):
        return None


def _datasets(meta: dict[str, str]) -> list[dict]:
    dirs = _json(meta.get("ss_dataset_dirs"), {})
    if dirs:
        return [{"dir": d, "images": v.get("img_count"), "repeats": v.get("n_repeats")} for d, v in dirs.items()]
    out = []
    for ds in _json(meta.get("ss_datasets"), []):
        for sub in ds.get("subsets", []):
            out.append({"dir": sub.get("image_dir"), "images": sub.get("img_count"),
                        "repeats": sub.get("num_repeats"), "is_reg": sub.get("is_reg", False)})
    return out


def _duration(meta: dict[str, str]) -> Optional[float]:
    start, end = _num(meta.get("ss_training_started_at"), float), _num(meta.get("ss_training_finished_at"), float)
    return end - start if start is not None and end is not None else None

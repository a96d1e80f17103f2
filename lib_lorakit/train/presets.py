"""Presets: named sets of training options, each value with the reason or source it came from.

Built-in presets cover style and character × SD1, SDXL and Pony Diffusion V6 XL (an SDXL model: base "SDXL",
slug "pony") × LoRA, LoCon and LoHa, named `<task>-<sd15|sdxl|pony>-<lora|locon|loha>`. Their values come from
the practitioners' guides in the project's seeds (`seeds/003` is the LyCORIS experiments report, `seeds/001` a guide
made with Pony), sd-scripts' own documentation and the users' rules of thumb.
User presets are TOML files in a folder the caller names; they are validated through `options` and may not take
a built-in's name. `resolve()` layers defaults < preset < overrides into a complete, validated mapping that says
where every value came from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import tomli_w

from ..errors import AlreadyExists, LorakitError, NotFound
from ..fsutil import atomic_write_text
from ..paths import check_name
from ..tomlio import read_toml
from . import options as opts

log = logging.getLogger(__name__)

Task = Literal["style", "character"]
Base = Literal["SD1", "SDXL"]
Network = Literal["LoRA", "LoCon", "LoHa"]
TASKS: tuple[str, ...] = ("style", "character")
BASES: tuple[str, ...] = ("SD1", "SDXL")
NETWORKS: tuple[str, ...] = ("LoRA", "LoCon", "LoHa")
_BASE_SLUG = {"SD1": "sd15", "SDXL": "sdxl"}
PRESET_SUFFIX = ".toml"


@dataclass(frozen=True)
class PresetValue:
    """One value in a preset and why it is there (shown beside the value, kept as its provenance)."""

    value: Any
    reason: str


@dataclass(frozen=True)
class Preset:
    """A named set of option values for one task, base model family and network kind."""

    name: str
    task: str
    base: str
    network: str
    summary: str
    values: Mapping[str, PresetValue]
    builtin: bool = True
    path: Path | None = field(default=None, compare=False)
    sample_tags: PresetValue | None = None  # tags every sample prompt starts with (Pony's score tags), and why

    @property
    def label(self) -> str:
        return f"preset {self.name}" if self.builtin else f"user preset {self.name}"


@dataclass(frozen=True)
class PresetInfo:
    """What a preset list shows: name, base type, network and task."""

    name: str
    base: str
    network: str
    task: str
    summary: str
    builtin: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "network": self.network, "task": self.task,
                "summary": self.summary, "builtin": self.builtin}


@dataclass(frozen=True)
class ResolvedSettings:
    """A complete, validated settings mapping with the source of every value.

    `sources[name]` is "default", "<preset label>: <reason>" or the override layer's name ("yours": set by the user).
    """

    preset: str
    base: str
    network: str
    task: str
    values: Mapping[str, Any]
    sources: Mapping[str, str]
    sample_tags: tuple[str, ...] = ()  # the preset's sample-prompt tags (config.py puts them first in each prompt)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def explain(self) -> list[dict[str, Any]]:
        """Rows of name, value and source, in declaration order, for the UI and `--explain`."""
        return [{"name": n, "value": self.values[n], "source": self.sources[n]} for n in self.values]


# --- built-in presets --------------------------------------------------------------------------------------------
# Each part is {option: (value, reason)}; a preset is common + base + network + task, later parts winning.
S003 = "seeds/003 (LyCORIS experiments)"
_COMMON: dict[str, tuple[Any, str]] = {
    "optimizer_type": ("AdamW8bit", f"{S003}: default setup uses Adam 8-bit"),
    "lr_scheduler": ("constant", f"{S003}: constant scheduler throughout; cosine learned slower at the same rate"),
    "lr_warmup_steps": (0, "constant scheduler: no warm-up"),
    "min_snr_gamma": (5.0, "users' rule: min_snr_gamma 5 (Min-SNR weighting) steadies training"),
    "max_train_epochs": (10, "users' rule: about 10 epochs of 200–400 images × repeats each"),
    "save_every_n_epochs": (1, "seeds/002: 'always save your model every nth step' and keep the last good one"),
    "save_state": (True, "Stop and Resume: a stopped or crashed run continues from its newest saved state"),
    "save_last_n_epochs_state": (1, "only the newest state is kept, so resuming costs one state folder of disk"),
    "sample_every_n_epochs": (1, "seeds/000: look at samples at every stage, with and without the trigger"),
    "sample_sampler": ("euler_a", "seeds/002: judge progress with Euler a (50 steps, CFG 7.5)"),
    "enable_bucket": (True, "seeds/002: centre crops cut heads off; buckets keep each image's shape"),
    "flip_aug": (False, "seeds/002: turn subjects one way to teach directionality; random flips undo it"),
    "shuffle_caption": (True, "tagged captions: shuffle tags so none is tied to a position"),
    "keep_tokens": (None, "none: the project's trigger words stay first, unshuffled"),
    "cache_latents": (True, "VAE-encode each image once: faster, and no augmentation here needs it per step"),
    "mixed_precision": ("fp16", "fp16 runs on every CUDA GPU; set bf16 on Ampere or newer, no on CPU"),
    "save_precision": ("fp16", "fp16 files are half the size and load the same in the webui"),
    "max_data_loader_n_workers": (2, "FACTS: at most 2 loader processes on small machines"),
}
_BASE_PARTS: dict[str, dict[str, tuple[Any, str]]] = {
    "SD1": {
        "resolution": (512, f"{S003}: resolution 512; higher mostly adds background detail and is rarely worth it"),
        "min_bucket_reso": (256, "SD1 buckets from 256 px"),
        "max_bucket_reso": (1024, "SD1 buckets up to 1024 px"),
        "clip_skip": (1, f"{S003}: clip skip 1; train and sample with the same clip skip"),
        "gradient_checkpointing": (False, "SD1 at 512 px fits in 8 GB without it"),
    },
    "SDXL": {
        "resolution": (1024, "sd-scripts docs/train_SDXL-en.md: SDXL's native resolution is 1024×1024"),
        "min_bucket_reso": (512, "SDXL buckets from 512 px"),
        "max_bucket_reso": (2048, "SDXL buckets up to 2048 px"),
        "clip_skip": (None, "sd-scripts ignores clip skip for SDXL (it warns); Pony's 'clip skip 2' is at sampling"),
        "gradient_checkpointing": (True, "sd-scripts docs/train_SDXL-en.md: gradient checkpointing for SDXL LoRA"),
        "network_train_unet_only": (True, "sd-scripts docs/train_SDXL-en.md: U-Net only is highly recommended "
                                          "for SDXL LoRA (two text encoders)"),
        "no_half_vae": (True, "sd-scripts docs/train_SDXL-en.md: SDXL's VAE can give NaNs in fp16"),
    },
}
_NETWORK_PARTS: dict[str, dict[str, tuple[Any, str]]] = {
    "LoRA": {
        "network_module": ("networks.lora", "LoRA: sd-scripts' own networks.lora"),
        "network_dim": (16, "users' rule: LoRA dim 16"),
        "network_alpha": (8.0, "users' rule: alpha half the dim (8)"),
        "learning_rate": (1e-4, "sd-scripts docs/train_network.md: 1e-4 is the usual LoRA rate"),
    },
    "LoCon": {
        "network_module": ("lycoris.kohya", "LoCon comes from LyCORIS"),
        "algo": ("locon", "LyCORIS algo=locon: LoRA plus the 3×3 convolutions"),
        "network_dim": (16, f"{S003}: LoCon dim 16 / alpha 8 in the LoRA-LoCon-LoHa comparison"),
        "network_alpha": (8.0, f"{S003}: LoCon dim 16 / alpha 8"),
        "conv_dim": (8, "users' rule: LoCon conv dim 8 (half the linear dim)"),
        "conv_alpha": (4.0, "users' rule: LoCon conv alpha 4 (half the conv dim)"),
        "learning_rate": (1e-4, "sd-scripts docs/train_network.md: 1e-4 with alpha half the dim"),
    },
    "LoHa": {
        "network_module": ("lycoris.kohya", "LoHa comes from LyCORIS"),
        "algo": ("loha", "LyCORIS algo=loha (Hadamard product: more capacity per parameter)"),
        "network_dim": (8, f"{S003}: LoHa net dim 8 'should be more than enough in most cases'"),
        "network_alpha": (1.0, f"{S003}: alpha 1"),
        "conv_dim": (4, f"{S003}: LoHa conv dim 4"),
        "conv_alpha": (1.0, f"{S003}: conv alpha 1"),
        "learning_rate": (2e-4, f"{S003}: lr 2e-4"),
    },
}
_TASK_PARTS: dict[str, dict[str, tuple[Any, str]]] = {
    "style": {
        "text_encoder_lr": (None, f"{S003}: a lower text-encoder rate slows style training the most; keep it "
                                  "equal to learning_rate"),
    },
    "character": {
        "text_encoder_lr": ("half", f"{S003}: half the text-encoder rate keeps prompt understanding and barely "
                                    "slows character training"),
    },
}
_SUMMARIES = {
    ("style", "LoRA"): "Style LoRA: smallest file, trains fastest; good first try.",
    ("style", "LoCon"): "Style LoCon: adds the convolutions, which hold texture and brushwork.",
    ("style", "LoHa"): "Style LoHa: the seeds/003 default setup (dim 8 / conv 4 / alpha 1, lr 2e-4).",
    ("character", "LoRA"): "Character LoRA: small file; text encoder at half rate.",
    ("character", "LoCon"): "Character LoCon: convolutions too; text encoder at half rate.",
    ("character", "LoHa"): "Character LoHa: seeds/003 dims; text encoder at half rate.",
}


# Pony Diffusion V6 XL: an SDXL fine-tune (same trainer, sizes and files) whose conventions differ in prompting.
S001 = "seeds/001 (a guide made with Pony Diffusion V6 XL)"
PONY_SCORE_TAGS: tuple[str, ...] = ("score_9", "score_8_up", "score_7_up")
_PONY_PART: dict[str, tuple[Any, str]] = {
    "clip_skip": (None, "Pony's model card convention is clip skip 2; sd-scripts' SDXL training already reads the "
                        "penultimate layer of both text encoders (= clip skip 2) and ignores clip_skip (it warns), "
                        "so set clip skip 2 in the webui when generating"),
    "sample_sampler": ("euler_a", f"{S001}: its Pony images were made in AUTOMATIC1111 with Euler a, the guide's "
                                  "one scheduler for a consistent style"),
}
_PONY_SAMPLE_TAGS = PresetValue(value=PONY_SCORE_TAGS, reason=(
    "Pony's model card convention: prompts start with the score tags score_9, score_8_up, score_7_up; they go into "
    "the sample prompts, not into the captions (the dataset stays as tagged)"))
_PONY_SUMMARY = (" Pony Diffusion V6 XL: samples start with its score tags; train on Pony itself (seeds/001: "
                 "most LoRAs made for the SD series fail on Pony).")


def _build(task: str, base: str, network: str, *, pony: bool = False) -> Preset:
    parts = {**_COMMON, **_BASE_PARTS[base], **_NETWORK_PARTS[network], **_TASK_PARTS[task],
             **(_PONY_PART if pony else {})}
    if parts.get("network_train_unet_only", (False,))[0]:
        parts["text_encoder_lr"] = (None, "the text encoders are not trained (network_train_unet_only)")
    elif parts["text_encoder_lr"][0] == "half":
        parts["text_encoder_lr"] = (parts["learning_rate"][0] / 2, parts["text_encoder_lr"][1])
    values = {name: PresetValue(value=v, reason=r) for name, (v, r) in parts.items()}
    opts.validate({n: v.value for n, v in values.items()})
    name = f"{task}-{'pony' if pony else _BASE_SLUG[base]}-{network.lower()}"
    tail = _PONY_SUMMARY if pony else " SDXL and Pony." if base == "SDXL" else " SD1.5 models."
    return Preset(name=name, task=task, base=base, network=network, summary=_SUMMARIES[(task, network)] + tail,
                  values=MappingProxyType(values), sample_tags=_PONY_SAMPLE_TAGS if pony else None)


BUILTIN: Mapping[str, Preset] = MappingProxyType({
    p.name: p for p in (*(_build(t, b, n) for t in TASKS for b in BASES for n in NETWORKS),
                        *(_build(t, "SDXL", n, pony=True) for t in TASKS for n in NETWORKS))
})


# --- listing and lookup ------------------------------------------------------------------------------------------
def presets(user_dir: Path | None = None) -> list[PresetInfo]:
    """Built-in presets, then the user's (problems with user files are logged, never hidden)."""
    found = list(BUILTIN.values()) + list(load_user_presets(user_dir).presets if user_dir else ())
    return [PresetInfo(name=p.name, base=p.base, network=p.network, task=p.task, summary=p.summary,
                       builtin=p.builtin) for p in found]


def get_preset(name: str, user_dir: Path | None = None) -> Preset:
    """The preset called `name`: a built-in, else a user preset from `user_dir`."""
    if name in BUILTIN:
        return BUILTIN[name]
    loaded = load_user_presets(user_dir) if user_dir else UserPresets((), ())
    for p in loaded.presets:
        if p.name == name:
            return p
    have = ", ".join([*BUILTIN, *(p.name for p in loaded.presets)])
    raise NotFound(f"No preset named {name!r} (have: {have}).")


# --- resolving ---------------------------------------------------------------------------------------------------
def resolve(preset: str | Preset, overrides: Mapping[str, Any] | None = None, *, user_dir: Path | None = None,
            override_source: str = "yours") -> ResolvedSettings:
    """Defaults < preset < overrides, validated as a whole; every value keeps the layer it came from.

    A layer that sets one of an exclusive pair (max_train_steps / max_train_epochs, sdpa / xformers) switches
    the other off when a lower layer had set it, and says so in its source: `max_train_steps=4` on a 10-epoch
    preset trains 4 steps.
    """
    p = preset if isinstance(preset, Preset) else get_preset(preset, user_dir)
    values = opts.defaults()
    sources = dict.fromkeys(values, "default")
    _apply_layer(values, sources, {n: (v.value, f"{p.label}: {v.reason}") for n, v in p.values.items()})
    user = opts.validate(overrides or {})
    _apply_layer(values, sources, {n: (v, override_source) for n, v in user.items()})
    checked = opts.validate(values, complete=True)
    return ResolvedSettings(preset=p.name, base=p.base, network=p.network, task=p.task,
                            values=MappingProxyType(checked), sources=MappingProxyType(sources),
                            sample_tags=tuple(p.sample_tags.value) if p.sample_tags else ())


def _apply_layer(values: dict[str, Any], sources: dict[str, str], layer: Mapping[str, tuple[Any, str]]) -> None:
    for name, (value, source) in layer.items():
        values[name], sources[name] = value, source
    for a, b in opts.EXCLUSIVE:
        if a in layer and layer[a][0] not in (None, False) and b not in layer and values[b] not in (None, False):
            values[b] = False if opts.OPTION_MAP[b].type is bool else None
            sources[b] = f"{layer[a][1]} (set {a}, so {b} is off)"


# --- user presets ------------------------------------------------------------------------------------------------
NONE_WORD = "none"  # TOML has no null: a cleared optional value is stored as this word


@dataclass(frozen=True)
class UserPresets:
    """The user presets of a folder, and one message per file that could not be used (naming the file)."""

    presets: tuple[Preset, ...]
    problems: tuple[str, ...]


def save_user_preset(folder: Path, name: str, values: Mapping[str, Any], *, task: str, base: str, network: str,
                     summary: str = "", reasons: Mapping[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write `<folder>/<name>.toml` atomically after validating every value; built-in names are refused."""
    check_name(name, what="preset name")
    if name in BUILTIN:
        raise AlreadyExists(f"{name!r} is a built-in preset; save yours under another name.")
    _check_labels(task=task, base=base, network=network)
    checked = opts.validate(values)
    path = Path(folder) / f"{name}{PRESET_SUFFIX}"
    if path.exists() and not overwrite:
        raise AlreadyExists(f"A user preset named {name!r} already exists ({path}).")
    reasons = dict(reasons or {})
    data = {"task": task, "base": base, "network": network, "summary": summary,
            "values": {n: NONE_WORD if v is None else v for n, v in checked.items()},
            "reasons": {n: str(reasons[n]) for n in checked if n in reasons}}
    atomic_write_text(path, tomli_w.dumps(data))
    return path


def load_user_presets(folder: Path | None) -> UserPresets:
    """Every `*.toml` in `folder` as a Preset; a bad file or one named like a built-in becomes a problem."""
    found: list[Preset] = []
    problems: list[str] = []
    base = Path(folder) if folder else None
    for path in sorted(base.glob(f"*{PRESET_SUFFIX}")) if base and base.is_dir() else []:
        if path.stem in BUILTIN:
            problems.append(f"{path}: a user preset may not take the built-in name {path.stem!r}; rename the file "
                            "(the built-in is used)")
            continue
        try:
            found.append(load_user_preset(path))
        except LorakitError as e:
            problems.append(f"{path}: {e}")
    for message in problems:
        log.warning("User preset skipped: %s", message)
    return UserPresets(presets=tuple(found), problems=tuple(problems))


def load_user_preset(path: Path) -> Preset:
    """One user preset file, validated: labels, option names (old names accepted with a warning) and values."""
    path = Path(path)
    data = read_toml(path)
    unknown = sorted(set(data) - {"task", "base", "network", "summary", "values", "reasons"})
    if unknown:
        raise LorakitError(f"unknown key(s) {', '.join(unknown)}; allowed: task, base, network, summary, values, "
                           "reasons")
    labels = {k: data.get(k, "") for k in ("task", "base", "network")}
    _check_labels(**labels)
    raw = {n: None if v == NONE_WORD else v for n, v in dict(data.get("values", {})).items()}
    checked = opts.validate(raw)
    reasons = {opts.canonical_name(n): str(r) for n, r in dict(data.get("reasons", {})).items() if n in raw}
    values = {n: PresetValue(value=v, reason=reasons.get(n, "saved value")) for n, v in checked.items()}
    return Preset(name=path.stem, summary=str(data.get("summary", "")), values=MappingProxyType(values),
                  builtin=False, path=path, **labels)


def _check_labels(*, task: str, base: str, network: str) -> None:
    for label, value, allowed in (("task", task, TASKS), ("base", base, BASES), ("network", network, NETWORKS)):
        if value not in allowed:
            raise LorakitError(f"{label}: expected one of {', '.join(allowed)}, got {value!r}")


def save_resolved(folder: Path, name: str, settings: ResolvedSettings, *, summary: str = "",
                  overwrite: bool = False) -> Path:
    """Save what a preset plus overrides resolved to as a user preset; each value keeps where it came from."""
    return save_user_preset(folder, name, dict(settings.values), task=settings.task, base=settings.base,
                            network=settings.network, summary=summary or f"from {settings.preset}",
                            reasons=dict(settings.sources), overwrite=overwrite)

"""The Host: everything that differs between running inside the webui and running on its own.

The core asks the Host for folders, checkpoints and the roots a user allowed; later steps also ask it to free
the GPU, refresh the webui's Lora list and generate images. `StandaloneHost` serves the CLI and the standalone
app; `lib_lorakit.webui_host.WebuiHost` serves the webui; that module alone imports its `modules`.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Protocol, runtime_checkable

from .errors import LorakitError
from .paths import resolve_inside
from .tomlio import read_toml

Arch = Literal["SD1", "SD2", "SDXL", "Unknown"]
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    name: str
    arch: Arch
    problem: str = ""  # why `arch` is "Unknown" (a damaged header, a pickle), when it is


@dataclass(frozen=True)
class MemoryUse:
    """A process's memory at one moment, in bytes; None where it cannot be measured (no CUDA, no /proc)."""
    rss: Optional[int] = None
    cuda_allocated: Optional[int] = None
    cuda_reserved: Optional[int] = None


@dataclass(frozen=True)
class ModelUnload:
    """What taking the webui's model out of memory freed: measured in the webui's process before and after."""
    webui: str  # "Forge" or "AUTOMATIC1111"
    model: str  # the checkpoint that was loaded ("" when unknown)
    before: MemoryUse
    after: MemoryUse

    def message(self) -> str:
        """One line for the run log, e.g. "… RAM 6.42 GB -> 2.02 GB (4.40 GB freed); CUDA allocated …"."""
        parts = [_change(label, getattr(self.before, key), getattr(self.after, key))
                 for label, key in (("RAM (process RSS)", "rss"), ("CUDA allocated", "cuda_allocated"),
                                    ("CUDA reserved", "cuda_reserved"))]
        shown = "; ".join(p for p in parts if p) or "memory could not be measured here"
        model = f" ({self.model})" if self.model else ""
        return f"Train Style unloaded the {self.webui} webui's model{model} before training: {shown}."


def _change(label: str, before: Optional[int], after: Optional[int]) -> str:
    if before is None or after is None:
        return ""
    gb = 2 ** 30
    return f"{label} {before / gb:.2f} GB -> {after / gb:.2f} GB ({(before - after) / gb:.2f} GB freed)"


@runtime_checkable
class Host(Protocol):
    """What the core needs from its surroundings."""

    name: str

    def projects_home(self) -> Path: ...
    def lora_dir(self) -> Path: ...
    def models_dir(self) -> Path: ...
    def checkpoints(self) -> list[Checkpoint]: ...
    def allowed_roots(self) -> list[Path]: ...
    def folder_import_refusal(self) -> Optional[str]: ...
    def unload_model(self) -> Optional[ModelUnload]: ...  # what it freed; None when nothing was loaded
    def reload_model(self) -> None: ...
    def refresh_loras(self) -> None: ...
    def busy(self) -> Optional[str]: ...
    def gpu_memory(self) -> Optional[tuple[int, int]]: ...
    def trainer_python(self) -> Optional[str]: ...
    def torch_version(self) -> Optional[str]: ...
    def interrogators(self) -> list[str]: ...
    def interrogate(self, name: str, images: Sequence[Any]) -> list[str]: ...
    def webui_pins(self) -> Optional[dict[str, str]]: ...  # the webui's pinned packages; None outside it
    # A Host that makes images itself (the webui) also has `generator()`; evaluate.generators.host_generator
    # falls back to sd-scripts' gen_img.py for the others.


def resolve_server_path(host: Host, path: str) -> Path:
    """A folder typed by a user, checked against the Host's allowed roots (symlinks resolved)."""
    refusal = host.folder_import_refusal()
    if refusal:
        raise LorakitError(refusal)
    return resolve_inside(path, host.allowed_roots())


NETWORK_REFUSAL = ("Importing from server folders is off because this server is reachable from the network and "
                   "no allowed folders are configured. Upload the images instead, or add allowed folders in the "
                   "Train Style settings.")


def arch_from_keys(keys: Sequence[str]) -> Arch:
    """SD1/SD2/SDXL from a checkpoint's tensor names (the text encoder tells them apart)."""
    ks = set(keys)
    if any(k.startswith("conditioner.embedders.1.") for k in ks):
        return "SDXL"
    if any(k.startswith("cond_stage_model.model.transformer.") for k in ks):
        return "SD2"
    if any(k.startswith("cond_stage_model.transformer.") for k in ks):
        return "SD1"
    return "Unknown"


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a .safetensors header, without reading the tensors. Raises LorakitError saying what is
    wrong with a damaged file (too short, a header length past its end, a header that is not a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise LorakitError(f"{path.name} is not a safetensors file (it is only {len(head)} bytes long).")
        (n,) = struct.unpack("<Q", head)
        size = os.fstat(f.fileno()).st_size
        if n > 100_000_000 or n > size - 8:
            raise LorakitError(f"{path.name} is damaged or not a safetensors file: its header length says {n} "
                               f"bytes, but the file holds {size - 8} after it.")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError as e:  # also UnicodeDecodeError
        raise LorakitError(f"{path.name} is damaged: its header is not valid JSON ({e}).") from e
    if not isinstance(header, dict):
        raise LorakitError(f"{path.name} is damaged: its header is a JSON {type(header).__name__}, not an object.")
    return [k for k in header if k != "__metadata__"]


@dataclass(frozen=True)
class ArchReading:
    """What a checkpoint's header says: its architecture, and why it is "Unknown" when it is (else "")."""

    arch: Arch
    problem: str = ""
    damaged: bool = False  # a .safetensors file whose header cannot be read: sd-scripts could not load it either


def read_checkpoint_arch(path: Path) -> ArchReading:
    """The architecture of a checkpoint file with the reason when it cannot be told (a damaged header keeps its
    reason); .ckpt files are pickles and are never opened here."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return ArchReading("Unknown", f"{path.name} is not a .safetensors file (only those can be read safely).")
    try:
        arch = arch_from_keys(safetensors_keys(path))
    except OSError as e:
        return ArchReading("Unknown", f"{path.name} cannot be read: {e.strerror or e}.", damaged=True)
    except LorakitError as e:
        return ArchReading("Unknown", str(e), damaged=True)
    if arch == "Unknown":
        return ArchReading(arch, f"{path.name} has no SD1, SD2 or SDXL text-encoder tensors (a LoRA, a VAE, or "
                                 "another model family?).")
    return ArchReading(arch)


def checkpoint_arch(path: Path) -> Arch:
    """The architecture of a checkpoint file ("Unknown" when it cannot be told; `read_checkpoint_arch` says why)."""
    return read_checkpoint_arch(path).arch


def scan_checkpoints(folder: Path) -> list[Checkpoint]:
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file():
            reading = read_checkpoint_arch(p)
            found.append(Checkpoint(path=p, name=p.relative_to(folder).as_posix(), arch=reading.arch,
                                    problem=reading.problem))
    return found


def default_config_path() -> Path:
    env = os.environ.get("TRAIN_STYLE_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "train-style" / "config.toml"


@dataclass
class StandaloneHost:
    """Folders from command-line flags, then the config file, then defaults under the user's home folder.

    The config file (`~/.config/train-style/config.toml`, or `$TRAIN_STYLE_CONFIG`) may set `home`, `lora_dir`,
    `models_dir` and `allowed_roots` (a list). `exposed` is True when the app listens beyond this machine.
    """

    home: Path
    lora: Path
    models: Path
    extra_roots: list[Path] = field(default_factory=list)
    exposed: bool = False
    name: str = "standalone"
    trainer: Optional[str] = None  # the python of an existing trainer environment (config `trainer_python`)

    @classmethod
    def from_options(cls, *, home: str | None = None, lora_dir: str | None = None, models_dir: str | None = None,
                     allow_roots: Sequence[str] = (), config: Path | None = None,
                     exposed: bool = False) -> StandaloneHost:
        cfg_path = config or default_config_path()
        cfg = read_toml(cfg_path) if cfg_path.is_file() else {}
        home_dir = Path(home or cfg.get("home") or Path.home() / "train-style").expanduser()
        models = Path(models_dir or cfg.get("models_dir") or home_dir / "models").expanduser()
        lora = Path(lora_dir or cfg.get("lora_dir") or models / "Lora").expanduser()
        roots = [Path(r).expanduser() for r in list(cfg.get("allowed_roots", [])) + list(allow_roots)]
        return cls(home=home_dir, lora=lora, models=models, extra_roots=roots, exposed=exposed,
                   trainer=cfg.get("trainer_python"))

    def projects_home(self) -> Path:
        return self.home

    def lora_dir(self) -> Path:
        return self.lora

    def models_dir(self) -> Path:
        return self.models

    def checkpoints(self) -> list[Checkpoint]:
        return scan_checkpoints(self.models / "Stable-diffusion")

    def allowed_roots(self) -> list[Path]:
        return [self.home, *self.extra_roots]

    def folder_import_refusal(self) -> Optional[str]:
        return NETWORK_REFUSAL if self.exposed and not self.extra_roots else None

    def unload_model(self) -> Optional[ModelUnload]:
        """Nothing to unload: no webui model shares the GPU."""
        return None

    def reload_model(self) -> None:
        """Nothing to reload."""

    def refresh_loras(self) -> None:
        """No Lora list to refresh outside the webui."""

    def busy(self) -> Optional[str]:
        """Nothing else uses the GPU here."""
        return None

    def gpu_memory(self) -> Optional[tuple[int, int]]:
        from .train.vram import nvidia_smi_memory

        return nvidia_smi_memory()

    def trainer_python(self) -> Optional[str]:
        return self.trainer

    def torch_version(self) -> Optional[str]:
        """No torch in this process: the trainer setup picks its default."""
        return None

    def interrogators(self) -> list[str]:
        """The webui's DeepBooru and CLIP interrogators exist only inside the webui."""
        return []

    def interrogate(self, name: str, images: Sequence[Any]) -> list[str]:
        raise LorakitError(f"The {name!r} interrogator belongs to the webui; outside it use the WD14 or CLIP tagger.")

    def webui_pins(self) -> Optional[dict[str, str]]:
        """No webui venv to keep as it is here."""
        return None

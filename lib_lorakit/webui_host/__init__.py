"""The Host inside the AUTOMATIC1111 webui (and Forge). This package is the only code that imports the webui's
`modules`: `__init__` (folders, checkpoints, the model hand-off, routes) and `generate` (txt2img, X/Y/Z)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .. import api, websec
from ..errors import LorakitError
from ..host import NETWORK_REFUSAL, Checkpoint, MemoryUse, ModelUnload, checkpoint_arch

if TYPE_CHECKING:
    from .generate import WebuiGenerator

log = logging.getLogger(__name__)


class WebuiHost:
    name = "webui"

    def _opt(self, key: str) -> str:
        from modules import shared

        return str(getattr(shared.opts, key, "") or "").strip()

    def projects_home(self) -> Path:
        from modules import paths_internal, shared

        configured = self._opt("train_style_home") or getattr(shared.cmd_opts, "train_style_home", None)
        return Path(configured or Path(paths_internal.data_path) / "train-style").expanduser()

    def lora_dir(self) -> Path:
        from modules import paths_internal, shared

        return Path(getattr(shared.cmd_opts, "lora_dir", None) or Path(paths_internal.models_path) / "Lora")

    def models_dir(self) -> Path:
        from modules import paths_internal

        return Path(paths_internal.models_path)

    def checkpoints(self) -> list[Checkpoint]:
        from modules import sd_models

        return [Checkpoint(path=Path(info.filename), name=info.title, arch=checkpoint_arch(Path(info.filename)))
                for info in sd_models.checkpoints_list.values()]

    def extra_roots(self) -> list[Path]:
        raw = self._opt("train_style_allowed_roots").replace(";", "\n")
        return [Path(line.strip()).expanduser() for line in raw.splitlines() if line.strip()]

    def allowed_roots(self) -> list[Path]:
        return [self.projects_home(), *self.extra_roots()]

    def folder_import_refusal(self) -> Optional[str]:
        from modules import shared

        exposed = bool(getattr(shared.cmd_opts, "disable_extension_access", False))
        return NETWORK_REFUSAL if exposed and not self.extra_roots() else None

    def unload_model(self) -> Optional[ModelUnload]:
        """Take the webui's model out of VRAM *and* RAM (its own unload only moves it to the CPU), waiting for a
        generation in progress to finish; returns what that freed, measured in this process."""
        from modules import call_queue

        before = memory_use()
        with call_queue.queue_lock:
            model = _forge_unload() if is_forge() else _a1111_unload()
        _release_freed_memory()
        if model is None:
            return None
        return ModelUnload(webui="Forge" if is_forge() else "AUTOMATIC1111", model=model, before=before,
                           after=memory_use())

    def reload_model(self) -> None:
        """Give the model back after training. Forge loads it by itself at the next generation; webui 1.10.1
        would meet an empty model in its UI (token counter, infotext), so it is loaded again here."""
        if is_forge():
            return
        from modules import call_queue, sd_models

        with call_queue.queue_lock:
            if sd_models.model_data.sd_model is None:
                try:
                    sd_models.reload_model_weights()
                except Exception:  # the webui's own loader: it reports why; the next generation tries again
                    log.warning("Train Style: the webui could not load its model back after training",
                                exc_info=True)

    def busy(self) -> Optional[str]:
        """Why training must wait: the webui is generating (its state counts jobs)."""
        from modules import shared

        state = shared.state
        if getattr(state, "job_count", 0) or getattr(state, "job", ""):
            return f"the webui is busy ({state.job or 'generating'}); training starts when it finishes"
        return None

    def gpu_memory(self) -> Optional[tuple[int, int]]:
        """(free MB, total MB) of the webui's CUDA device, measured in-process; None without CUDA."""
        import torch

        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return free // 2**20, total // 2**20

    def trainer_python(self) -> Optional[str]:
        return self._opt("train_style_trainer_python") or None

    def torch_version(self) -> Optional[str]:
        """The webui's torch, so the trainer setup reuses the same wheel."""
        import torch

        return torch.__version__.split("+")[0]

    def webui_pins(self) -> Optional[dict[str, str]]:
        """The packages the webui pins in its requirements_versions.txt ({} when the file is missing)."""
        from modules import paths_internal

        from ..doctor import read_pins

        return read_pins(Path(paths_internal.script_path) / "requirements_versions.txt")

    def refresh_loras(self) -> None:
        networks = sys.modules.get("networks")
        if networks is not None and hasattr(networks, "list_available_networks"):
            networks.list_available_networks()

    def generator(self) -> WebuiGenerator:
        """The webui's own txt2img and X/Y/Z plot, in this process (never while a Train Style run trains)."""
        from .generate import WebuiGenerator

        return WebuiGenerator(training_message=training_message, refresh_loras=self.refresh_loras)

    def bind_paste(self, *, button: Any, tab: str, text: Any, image: Any = None) -> None:
        """`button` sends the infotext in the `text` component (and the picture in `image`) to the webui's `tab`
        ("txt2img", "img2img") through the webui's own paste mechanism, as its PNG Info tab does: the webui parses
        the text with its own parser and fills the fields when it connects the buttons after building the UI."""
        from modules import infotext_utils

        infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
            paste_button=button, tabname=tab, source_text_component=text, source_image_component=image))

    # --- the webui's own interrogators (the webui fetches their models itself) ---------------------
    def interrogators(self) -> list[str]:
        found = []
        if _importable("modules.deepbooru"):
            found.append("deepbooru")
        if _importable("modules.interrogate"):
            found.append("webui-clip")
        return found

    def interrogate(self, name: str, images: Sequence[Any]) -> list[str]:
        """Captions for PIL images from the webui's DeepBooru or CLIP interrogator, loading its model once."""
        if name not in ("deepbooru", "webui-clip"):
            raise LorakitError(f"No webui interrogator named {name!r} (have: {', '.join(self.interrogators())}).")
        label = "DeepBooru" if name == "deepbooru" else "CLIP interrogator"
        try:
            texts = self._interrogate(name, images)
        except LorakitError:
            raise
        except Exception as e:  # the webui's own code: a model it could not fetch or load, a refused file, …
            log.warning("the webui's %s failed", label, exc_info=True)
            raise LorakitError(f"The webui's {label} failed ({type(e).__name__}: {e}); the webui's console shows "
                               "why, often a model it could not download or load.") from e
        if any("<error>" in t for t in texts):  # the CLIP interrogator reports its own failure this way
            raise LorakitError(f"The webui's {label} failed; the webui's console shows why, often a model it "
                               "could not download.")
        return texts

    def _interrogate(self, name: str, images: Sequence[Any]) -> list[str]:
        if name == "deepbooru":
            from modules import deepbooru

            deepbooru.model.start()
            try:
                return [deepbooru.model.tag_multi(im, force_disable_ranks=True) for im in images]
            finally:
                deepbooru.model.stop()
        from modules import shared

        return [shared.interrogator.interrogate(im.convert("RGB")) for im in images]


def is_forge() -> bool:
    """Forge, told by what it offers (its backend's memory manager), not by a version string."""
    return _importable("modules_forge") and _importable("backend.memory_management")


def memory_use() -> MemoryUse:
    """This process's resident memory and, where CUDA is present, what torch holds on the GPU."""
    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return MemoryUse(rss=_rss(), cuda_allocated=torch.cuda.memory_allocated() if cuda else None,
                     cuda_reserved=torch.cuda.memory_reserved() if cuda else None)


def _rss() -> Optional[int]:
    """Resident set size in bytes: /proc on Linux, else psutil where the webui has it (both webuis pin it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _forge_unload() -> Optional[str]:
    """Forge's `unload_model_weights` only moves models to their offload device: drop the model itself, so the
    next generation loads it from disk (a changed hash tells Forge to)."""
    from backend import memory_management
    from modules import sd_models

    data = sd_models.model_data
    loaded = not isinstance(data.sd_model, sd_models.FakeInitialModel)
    name = _checkpoint_title(data.sd_model) if loaded else None
    data.set_sd_model(sd_models.FakeInitialModel())
    data.forge_hash = ""
    memory_management.unload_all_models()
    return name


def _a1111_unload() -> Optional[str]:
    """webui 1.10.1's `unload_model_weights` only moves the model to the CPU: move its weights to the meta device
    (as the webui does before loading another model) and forget it; `reload_model` loads it again."""
    from modules import sd_hijack, sd_models

    data = sd_models.model_data
    current = data.sd_model
    if current is not None:
        sd_hijack.model_hijack.undo_hijack(current)
    kept = [m for m in data.loaded_sd_models if m is not current]  # other checkpoints kept (sd_checkpoints_limit)
    for model in [m for m in [current, *kept] if m is not None]:
        sd_models.send_model_to_trash(model)
    data.sd_model = None
    data.loaded_sd_models.clear()
    return _checkpoint_title(current) if current is not None else None


def _checkpoint_title(model: Any) -> str:
    info = getattr(model, "sd_checkpoint_info", None)
    return str(getattr(info, "title", "") or getattr(info, "name", "") or "")


def _release_freed_memory() -> None:
    """Collect the dropped model, empty the CUDA cache, and hand freed heap pages back to the system."""
    import gc

    import torch

    gc.collect()
    if is_forge():
        from backend import memory_management

        memory_management.soft_empty_cache(force=True)
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass  # not glibc


_host: Optional[WebuiHost] = None


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def host() -> WebuiHost:
    """One host per webui process; lives in this module, which stays imported across "Reload UI"."""
    global _host
    if _host is None:
        _host = WebuiHost()
    return _host


def login_check(app):
    """Our routes are not behind gradio's login: with --gradio-auth they need its session cookie (or HTTP Basic
    with the same user and password)."""
    return websec.login_check(app)


def web_policy() -> websec.WebPolicy:
    """Host and Origin rules for our routes, from how the webui listens (--listen, --server-name, --share, --ngrok)
    and the origins it lets in (--cors-allow-origins); TRAIN_STYLE_ALLOWED_HOSTS adds names (comma-separated)."""
    import os

    from modules import shared

    opts = shared.cmd_opts
    address = getattr(opts, "server_name", None) or ("0.0.0.0" if getattr(opts, "listen", False) else "127.0.0.1")
    if getattr(opts, "share", False) or getattr(opts, "ngrok", None):
        address = "0.0.0.0"  # reached through a tunnel's name
    names = [n for n in os.environ.get("TRAIN_STYLE_ALLOWED_HOSTS", "").split(",") if n.strip()]
    origins = (getattr(opts, "cors_allow_origins", None) or "").split(",")
    return websec.WebPolicy.for_bind(address, allowed_hosts=names, origins=origins)


def _block_home_files(app, home: Path) -> None:
    """gradio's /file= serves files under the webui's data dir (its --gradio-allowed-path default): not ours.
    gradio reads `blocked_paths` per request, so adding the home there is enough; nothing else changes."""
    blocks = getattr(app, "blocks", None)
    if blocks is None:
        return  # --nowebui: a plain FastAPI app, no gradio file route
    blocked = getattr(blocks, "blocked_paths", None)
    if not isinstance(blocked, list):
        log.warning("Train Style: this gradio has no blocked_paths; its /file= route may serve project files")
        return
    blocked += [p for p in websec.blocked_file_paths(home) if p not in blocked]


def mount_api(app) -> None:
    h = host()
    h.projects_home().mkdir(parents=True, exist_ok=True)
    _block_home_files(app, h.projects_home())
    api.mount(app, h, authorize=login_check(app), policy=web_policy())
    from ..train.queue import ensure_worker

    ensure_worker(h)
    log.info("Train Style API mounted at %s (projects in %s)", api.PREFIX, h.projects_home())


def training_message() -> Optional[str]:
    """For the webui's generation guard: a message when a Train Style run holds the GPU."""
    from ..train.queue import TrainQueue

    return TrainQueue(host()).training_message()

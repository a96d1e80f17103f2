"""The Host inside the AUTOMATIC1111 webui (and Forge). The only module that imports the webui's `modules`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from . import api, websec
from .errors import LorakitError
from .host import NETWORK_REFUSAL, Checkpoint, checkpoint_arch

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

    def unload_model(self) -> None:
        from modules import sd_models

        sd_models.unload_model_weights()

    def reload_model(self) -> None:
        from modules import sd_models, shared

        if shared.sd_model is not None:
            sd_models.send_model_to_device(shared.sd_model)

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

        from .doctor import read_pins

        return read_pins(Path(paths_internal.script_path) / "requirements_versions.txt")

    def refresh_loras(self) -> None:
        networks = sys.modules.get("networks")
        if networks is not None and hasattr(networks, "list_available_networks"):
            networks.list_available_networks()

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
    from .train.queue import ensure_worker

    ensure_worker(h)
    log.info("Train Style API mounted at %s (projects in %s)", api.PREFIX, h.projects_home())


def training_message() -> Optional[str]:
    """For the webui's generation guard: a message when a Train Style run holds the GPU."""
    from .train.queue import TrainQueue

    return TrainQueue(host()).training_message()

"""The Host inside the AUTOMATIC1111 webui (and Forge), the only core module that imports the webui's `modules`:
folders, checkpoints, the model hand-off, routes, and images and X/Y/Z grids made by the webui itself (below).

Generation uses the same building blocks its txt2img tab and its API use: a `StableDiffusionProcessingTxt2Img`
handed to `process_images`, under its queue lock, with the webui's progress state begun and ended around it; LoRAs
as `<lora:NAME:W>` prompt text; another checkpoint through the request's override settings (restored afterwards);
grids by the webui's own X/Y/Z plot script, so the grid carries the webui's own grid infotext. The webui's
always-on scripts are left out (an empty script runner), so a grid shows the LoRA and nothing else. Never while a
Train Style run trains, and training waits while this generates (`gpu_use`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Optional

from . import api, gpu_use, websec
from .errors import Cancelled, LorakitError, NotFound
from .evaluate import AxisSpec, GenImage, GenRequest, GridResult, xyz
from .host import NETWORK_REFUSAL, Checkpoint, MemoryUse, ModelUnload, checkpoint_arch
from .progress import CancelFlag, ProgressFn

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

        from .doctor import read_pins

        return read_pins(Path(paths_internal.script_path) / "requirements_versions.txt")

    def refresh_loras(self) -> None:
        networks = sys.modules.get("networks")
        if networks is not None and hasattr(networks, "list_available_networks"):
            networks.list_available_networks()

    def generator(self) -> WebuiGenerator:
        """The webui's own txt2img and X/Y/Z plot, in this process (never while a Train Style run trains)."""
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
    from .train.queue import ensure_worker

    ensure_worker(h)
    log.info("Train Style API mounted at %s (projects in %s)", api.PREFIX, h.projects_home())


def training_message() -> Optional[str]:
    """For the webui's generation guard: a message when a Train Style run holds the GPU."""
    from .train.queue import TrainQueue

    return TrainQueue(host()).training_message()


# --- images and X/Y/Z grids made by the webui itself ---------------------------------------------------------


class WebuiGenerator:
    """`Generator` and `XYZGenerator` inside the webui (A1111 1.10 and Forge)."""

    name = "webui"

    def __init__(self, *, training_message: Callable[[], Optional[str]], refresh_loras: Callable[[], None],
                 poll_every: float = 0.5):
        self.training_message = training_message
        self.refresh_loras = refresh_loras
        self.poll_every = poll_every

    # --- Generator -----------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest], *, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFlag] = None) -> list[GenImage]:
        from modules import processing

        made: list[GenImage] = []
        for request in _distinct(requests):
            self._check(request)
        for i, request in enumerate(requests):
            if cancel is not None and cancel.is_set():
                break
            if progress is not None:
                progress(i, len(requests), f"image {i + 1} of {len(requests)}")
            with self._turn("an image", None, cancel) as watch, closing(_processing(request)) as p:
                processed = processing.process_images(p)
            if watch.interrupted or not processed.images:
                break  # stopped part-way: not a finished image
            made.append(GenImage(image=processed.images[0], infotext=str(processed.infotexts[0] or ""),
                                 seed=int(processed.seed), request=request))
        if progress is not None:
            progress(len(made), len(requests), f"{len(made)} image(s) made")
        return made

    # --- XYZGenerator --------------------------------------------------------------------------------------------
    def xyz_grid(self, base: GenRequest, *, x: AxisSpec, y: Optional[AxisSpec] = None,
                 z: Optional[AxisSpec] = None, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFlag] = None) -> GridResult:
        """The grid by the webui's X/Y/Z plot script (cells included, x counting fastest). On cancel the webui
        stops; cells not made are blank with an empty infotext."""
        axes = (x, y, z)
        xyz.check_prompt_sr(xyz.prompt_with_loras(base), base.negative, axes)
        self._check(base, xyz.axis_texts(axes))
        script = _xyz_script()
        args = xyz.script_args([o.label for o in script.current_axis_options], x=x, y=y, z=z)
        if cancel is not None and cancel.is_set():
            raise Cancelled("The grid was cancelled before it started.")
        with self._turn("an X/Y/Z grid", progress, cancel) as watch, closing(_processing(base)) as p:
            processed = script.run(p, *args)
        images = list(processed.images or [])
        if not images and watch.interrupted:
            raise Cancelled("The grid was cancelled before its first cell was made.")
        return xyz.grid_result(images, list(processed.infotexts or []))

    # --- the webui's turn ----------------------------------------------------------------------------------------
    @contextmanager
    def _turn(self, what: str, progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> Iterator[xyz.Watcher]:
        """Not while a run trains (and no run starts meanwhile); then the webui's queue lock (after a user's own
        generation), its progress state, and a watcher reporting it and turning a cancel into its interrupt."""
        from modules import call_queue, shared

        with gpu_use.generating(what, refuse=self._refusal), call_queue.queue_lock:
            shared.state.begin(job="train_style")
            try:
                with xyz.Watcher(poll=_state_progress, interrupt=shared.state.interrupt, progress=progress,
                                 cancel=cancel, every=self.poll_every) as watch:
                    yield watch
            finally:
                shared.state.end()
                if getattr(shared, "total_tqdm", None) is not None:
                    shared.total_tqdm.clear()

    def _refusal(self) -> Optional[str]:
        message = self.training_message()
        return f"No images now: {message}" if message else None

    def _check(self, request: GenRequest, extra_texts: Sequence[str] = ()) -> None:
        """Refuse by name what the webui would quietly replace: an unknown sampler, checkpoint or LoRA."""
        _sampler_and_scheduler(request.sampler)
        if request.checkpoint:
            _checkpoint_matching(request.checkpoint)
        wanted = xyz.lora_names([xyz.prompt_with_loras(request), request.negative, *extra_texts])
        if wanted and xyz.missing_loras(wanted, _lora_names()):
            self.refresh_loras()  # registered since the webui last looked?
            missing = xyz.missing_loras(wanted, _lora_names())
            if missing:
                raise NotFound(xyz.missing_loras_message(missing, "The webui"))


def _distinct(requests: Sequence[GenRequest]) -> list[GenRequest]:
    seen: dict[tuple, GenRequest] = {}
    for r in requests:
        seen.setdefault((r.checkpoint, r.sampler, tuple(lo.name for lo in r.loras)), r)
    return list(seen.values())


def _processing(request: GenRequest) -> Any:
    """The webui's txt2img request for one image, built as its API builds one (nothing saved as a sample)."""
    from modules import processing, scripts, shared

    sampler, scheduler = _sampler_and_scheduler(request.sampler)
    overrides: dict[str, Any] = {}
    if request.checkpoint:
        overrides["sd_model_checkpoint"] = _checkpoint_matching(request.checkpoint)
    if request.clip_skip:
        overrides["CLIP_stop_at_last_layers"] = int(request.clip_skip)
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model, prompt=xyz.prompt_with_loras(request), negative_prompt=request.negative,
        seed=int(request.seed), steps=int(request.steps), sampler_name=sampler, scheduler=scheduler,
        cfg_scale=float(request.cfg), width=int(request.width), height=int(request.height), batch_size=1, n_iter=1,
        override_settings=overrides, override_settings_restore_afterwards=True, do_not_save_samples=True,
        do_not_save_grid=True)
    # no script of the user's runs, but a runner must be there: with none, the webui writes each image's infotext
    # from the prompt after it took the <lora:…> text out (its UI and API always have one)
    p.scripts = scripts.ScriptRunner()
    p.outpath_samples = shared.opts.outdir_txt2img_samples
    p.outpath_grids = shared.opts.outdir_txt2img_grids  # the X/Y/Z script saves its grid there when grid_save is on
    return p


def _sampler_and_scheduler(name: str) -> tuple[str, str]:
    """The webui's sampler and schedule type for a name such as "DPM++ 2M Karras"; an unknown sampler is refused
    (the webui would take its default)."""
    from modules import sd_samplers, sd_schedulers

    sampler, scheduler = sd_samplers.get_sampler_and_scheduler(name, None)
    base = name
    for sch in sd_schedulers.schedulers:
        suffix = next((s for s in (sch.label, sch.name, *(getattr(sch, "aliases", None) or [])) if s and
                       base.endswith(" " + s)), None)
        if suffix:
            base = base[: -len(suffix) - 1]
            break
    known = {n.lower() for s in sd_samplers.all_samplers for n in (s.name, *(s.aliases or []))}
    if base.lower() not in known:
        names = ", ".join(s.name for s in sd_samplers.all_samplers)
        raise LorakitError(f"The webui has no sampler {name!r} (it has: {names}; a schedule type may follow the "
                           "name, e.g. 'DPM++ 2M Karras').")
    return sampler, scheduler


def _checkpoint_matching(name: str) -> str:
    """The webui's title of the checkpoint `name` names (a title, a file name or a path)."""
    from modules import sd_models

    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        have = ", ".join(sorted(sd_models.checkpoints_list)) or "none"
        raise NotFound(f"The webui has no checkpoint {name!r} (it has: {have}).")
    return str(info.title)


def _lora_names() -> list[str]:
    networks = sys.modules.get("networks")
    if networks is None:
        raise LorakitError("The webui's Lora extension is not loaded (Settings > Extensions: enable the built-in "
                           "Lora), so <lora:…> text would do nothing.")
    return [*getattr(networks, "available_networks", {}), *getattr(networks, "available_network_aliases", {})]


def _xyz_script() -> Any:
    """The webui's X/Y/Z plot script among its txt2img scripts (A1111 and Forge number its axes differently)."""
    from modules import scripts

    runner = getattr(scripts, "scripts_txt2img", None)
    for script in getattr(runner, "selectable_scripts", None) or []:
        if str(script.title()).lower() == xyz.XYZ_SCRIPT:
            if not hasattr(script, "current_axis_options"):  # its UI was never built (--nowebui): build it aside
                import gradio as gr

                with gr.Blocks():
                    script.ui(False)
            return script
    raise LorakitError("The webui has no X/Y/Z plot script for txt2img (scripts/xyz_grid.py is missing or failed "
                       "to load; the webui's console says why).")


def _state_progress() -> Optional[tuple[int, int, str]]:
    from modules import shared

    total = int(getattr(shared.state, "job_count", 0) or 0)
    if total <= 0:
        return None
    done = min(int(getattr(shared.state, "job_no", 0) or 0), total)
    return done, total, f"cell {min(done + 1, total)} of {total}"

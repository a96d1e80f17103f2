"""Images and X/Y/Z grids made by the webui itself, in its own process.

The same building blocks its txt2img tab and its API use: a `StableDiffusionProcessingTxt2Img` handed to
`process_images`, under its queue lock, with the webui's progress state begun and ended around it; LoRAs as
`<lora:NAME:W>` prompt text; another checkpoint through the request's override settings (restored afterwards);
grids by the webui's own X/Y/Z plot script, so the grid carries the webui's own grid infotext. The webui's
always-on scripts are left out (an empty script runner), so a grid shows the LoRA and nothing else. Never while a
Train Style run trains, and training waits while this generates (`gpu_use`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any, Optional

from .. import gpu_use
from ..errors import Cancelled, LorakitError, NotFound
from ..evaluate import AxisSpec, GenImage, GenRequest, GridResult, xyz
from ..progress import CancelFlag, ProgressFn

log = logging.getLogger(__name__)


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
            _checkpoint_title(request.checkpoint)
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
        overrides["sd_model_checkpoint"] = _checkpoint_title(request.checkpoint)
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


def _checkpoint_title(name: str) -> str:
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

"""Standalone generation (no webui): sd-scripts' own `gen_img.py`, run in the trainer environment.

The requests are grouped so each model load serves as many images as it can: one `gen_img.py` process per
checkpoint, sampler and clip skip (gen_img.py fixes those per process; `--sdxl`/`--v2`/`--v1` from the checkpoint's
header). A process loads the group's LoRA files once (`--network_module … --network_weights …`, at most
MAX_NETWORKS of them) and each prompt line sets every LoRA's weight with `--am`: a LoRA a request does not use gets
weight 0, which adds exactly nothing (LoRA adds `up(down(x)) × weight` to each layer's output), so an image with and
one without a LoRA come from the same process. Each prompt line carries the image's own options:

    a photo --n blurry --w 512 --h 512 --s 20 --l 7 --d 1234 --am 0.8,0 --f 00003.png

gen_img.py reads ` --` as the start of an option and a line break as the end of a prompt: a prompt or negative
holding ` --` is refused, line breaks become spaces (the tokenizer reads both as one space), and braces are
escaped so its `{a|b}` variants syntax leaves them as they are. The webui's sampler names map to gen_img.py's
(`SAMPLERS`); gen_img.py's diffusers schedulers have no Karras or exponential schedules, so a schedule in the name
("DPM++ 2M Karras") is not followed: the infotext then names the sampler without it and records the sampler that
ran (`sd-scripts sampler`). Precision: fp16 on a CUDA GPU, fp32 on a CPU; PyTorch's SDPA attention, never xformers.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

from .. import clock, gpu_use, procs
from ..errors import Cancelled, LorakitError, PathNotAllowed
from ..fsutil import atomic_write_text
from ..host import Host, read_checkpoint_arch
from ..images import ImageProblem, open_training_image
from ..progress import CancelFlag, ProgressFn
from ..results.lora_info import read_header
from ..train.environment import ProbeCache, TrainerEnvironment, probe
from ..train.model_path import confine_model_path
from . import GenImage, GenRequest
from .hashes import LORA_SHORT, MODEL_SHORT, FileHashes
from .infotext import format_infotext, lora_hashes, number, prompt_with_loras, split_sampler

if TYPE_CHECKING:
    from . import Generator

logger = logging.getLogger(__name__)

GEN_SCRIPT = "gen_img.py"
FAMILY_FLAGS = {"SD1": ("--v1",), "SD2": ("--v2",), "SDXL": ("--sdxl",)}
MAX_NETWORKS = 8  # LoRA files one process holds (each adds a little to every step, even at weight 0)
MAX_SEED = 2 ** 32 - 1  # gen_img.py draws and takes seeds in [0, 2**32)
NETWORK_MODULES = ("networks.lora", "lycoris.kohya")  # what a LoRA's ss_network_module may name
SAMPLERS = {  # the webui's sampler name → gen_img.py's --sampler (diffusers schedulers)
    "Euler a": "euler_a", "Euler": "euler", "LMS": "lms", "Heun": "heun", "DPM2": "dpm_2", "DPM2 a": "dpm_2_a",
    "DPM++ 2M": "dpmsolver++", "DDIM": "ddim", "PLMS": "pndm",
}
_ALIASES = {"k_euler_a": "Euler a", "k_euler_ancestral": "Euler a", "k_euler": "Euler", "k_lms": "LMS",
            "k_heun": "Heun", "k_dpm_2": "DPM2", "k_dpm_2_a": "DPM2 a", "k_dpmpp_2m": "DPM++ 2M", "ddim": "DDIM",
            "plms": "PLMS"}
_BY_LOWER = {**{k.lower(): k for k in SAMPLERS}, **_ALIASES}
Precision = Literal["auto", "fp16", "bf16", "fp32"]


@dataclass(frozen=True)
class SamplerChoice:
    """A webui sampler name as gen_img.py runs it: `webui` "DPM++ 2M", `schedule` "Karras" as asked (None when the
    name had none; gen_img.py follows its own schedule either way), `gen_img` "dpmsolver++"."""

    webui: str
    schedule: Optional[str]
    gen_img: str


def sampler_for(name: str) -> SamplerChoice:
    """The gen_img.py sampler for a webui sampler name ("Euler a", "DPM++ 2M Karras", "k_euler_a", …); an unknown
    one is refused by name with the names that work."""
    base, schedule = split_sampler(str(name).strip())
    webui = _BY_LOWER.get(base.lower())
    if webui is None:
        raise LorakitError(f"sampler: sd-scripts' gen_img.py has no sampler like {name!r}. Use one of: "
                           f"{', '.join(SAMPLERS)} (a schedule such as \"Karras\" may follow the name).")
    return SamplerChoice(webui=webui, schedule=schedule, gen_img=SAMPLERS[webui])


@dataclass(frozen=True)
class Planned:
    """One request made ready: its place in the call, its seed (drawn when the request said -1), the files."""

    index: int
    request: GenRequest
    seed: int
    checkpoint: Path
    loras: tuple[Path, ...]  # one per request.loras entry
    sampler: SamplerChoice


@dataclass
class Group:
    """The requests one gen_img.py process makes: same checkpoint, sampler and clip skip; `networks` the LoRA
    files it loads (the union of its requests')."""

    checkpoint: Path
    sampler: str
    clip_skip: Optional[int]
    networks: list[Path] = field(default_factory=list)
    items: list[Planned] = field(default_factory=list)

    def key(self) -> tuple:
        return (self.checkpoint, self.sampler, self.clip_skip)

    def weights(self, item: Planned) -> list[float]:
        """Each loaded LoRA's weight for `item` (0 for one it does not use; a file named twice adds up)."""
        pairs = list(zip(item.request.loras, item.loras, strict=True))
        return [sum(lu.weight for lu, p in pairs if p == net) for net in self.networks]


def plan_groups(items: Sequence[Planned], *, max_networks: int = MAX_NETWORKS) -> list[Group]:
    """Requests into as few processes as their checkpoint, sampler and clip skip allow, in the order first seen; a
    group takes a request while the LoRA files it loads stay at most `max_networks`."""
    groups: list[Group] = []
    for item in items:
        key = (item.checkpoint, item.sampler.gen_img, item.request.clip_skip)
        wanted = list(dict.fromkeys(item.loras))
        for group in groups:
            if group.key() == key and len(set(group.networks) | set(wanted)) <= max_networks:
                break
        else:
            group = Group(checkpoint=item.checkpoint, sampler=item.sampler.gen_img, clip_skip=item.request.clip_skip)
            groups.append(group)
        group.networks.extend(p for p in wanted if p not in group.networks)
        group.items.append(item)
    return groups


def output_name(item: Planned) -> str:
    return f"{item.index:05d}.png"


def prompt_line(item: Planned, group: Group) -> str:
    """The item's line of gen_img.py's prompts file (see the module's docstring)."""
    req = item.request
    parts = [one_line(req.prompt)]
    if req.negative.strip():
        parts.append(f"--n {one_line(req.negative)}")
    parts += [f"--w {req.width}", f"--h {req.height}", f"--s {req.steps}", f"--l {plain(req.cfg)}",
              f"--d {item.seed}"]
    if group.networks:
        parts.append("--am " + ",".join(plain(w) for w in group.weights(item)))
    line = " ".join(parts)
    if "{" in line or "}" in line:
        # gen_img.py expands {a|b} variants; escaped braces come back as they were, but only when the line also holds
        # a variant (else v0.10.1 fails: "cannot access local variable 'enumerating'"): the file name is one
        line = line.replace("{", "\\{").replace("}", "\\}") + f" --f {{{output_name(item)}}}"
    else:
        line += f" --f {output_name(item)}"
    return " " + line if line.startswith("#") else line  # a line starting with # is a comment to gen_img.py


def one_line(text: str) -> str:
    """Text on one line: every line break (all that str.splitlines knows, as gen_img.py splits) becomes a space."""
    return " ".join(text.splitlines())


def plain(value: float) -> str:
    """A number without an exponent (gen_img.py's option patterns take digits and dots only): 7.0 → "7"."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def request_problems(index: int, req: GenRequest) -> list[str]:
    """What gen_img.py cannot do as asked, each named by its field (`requests[2].steps: …`)."""
    where, found = f"requests[{index}]", []
    if not req.prompt.strip():
        found.append(f"{where}.prompt: gen_img.py needs a prompt (an empty line is no prompt to it): write at "
                     "least one word.")
    for name, text in (("prompt", req.prompt), ("negative", req.negative)):
        if " --" in one_line(text):
            found.append(f"{where}.{name}: gen_img.py reads \" --\" as the start of an option; remove it from "
                         f"{text!r}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            found.append(f"{where}.{name}: holds characters that are not text (lone surrogates).")
    found += _number_problems(where, req)
    for j, lora in enumerate(req.loras):
        if not lora.name.strip() or not math.isfinite(lora.weight):
            found.append(f"{where}.loras[{j}]: a LoRA needs a name and a finite weight, got {lora.name!r} "
                         f"{lora.weight!r}.")
    return found


def _number_problems(where: str, req: GenRequest) -> list[str]:
    found = []
    if not 1 <= req.steps <= 1000:
        found.append(f"{where}.steps: expected 1 to 1000, got {req.steps}.")
    if not (math.isfinite(req.cfg) and 0 <= req.cfg <= 100):
        found.append(f"{where}.cfg: expected 0 to 100, got {req.cfg}.")
    for name in ("width", "height"):
        value = getattr(req, name)
        if not (64 <= value <= 4096 and value % 8 == 0):
            found.append(f"{where}.{name}: expected a multiple of 8 from 64 to 4096, got {value}.")
    if not (req.seed == -1 or 0 <= req.seed <= MAX_SEED):
        found.append(f"{where}.seed: expected -1 (random) or 0 to {MAX_SEED}, got {req.seed}.")
    if req.clip_skip is not None and not 1 <= req.clip_skip <= 12:
        found.append(f"{where}.clip_skip: expected 1 to 12, got {req.clip_skip}.")
    return found


class SdScriptsGenerator:
    """Makes images with sd-scripts' gen_img.py in the trainer environment (see the module's docstring).

    Checkpoints: a Host checkpoint's name (or stem), or a file path confined like a run's base model
    (train/model_path.py: `.safetensors` inside the models or allowed folders unless `local_user`). LoRAs: their
    `path`, or their name looked up in the Host's Lora folder. `default_checkpoint` serves requests that name none
    (else the Host's only checkpoint). `work_root` holds each call's prompts files, gen_img.py's own outputs and
    logs: kept when a process fails (its error names the log) or with `keep_files`, else removed. `device`: the
    trainer's `cuda` and `sdpa` facts when known (else the doctor's probe, cached, finds them)."""

    name = "sd-scripts"

    def __init__(self, host: Host, *, trainer: TrainerEnvironment, tokenizer_cache_dir: Optional[Path] = None,
                 env: Optional[Mapping[str, str]] = None, local_user: bool = False, precision: Precision = "auto",
                 default_checkpoint: Optional[str] = None, work_root: Optional[Path] = None,
                 hashes: Optional[FileHashes] = None, device: Optional[Mapping[str, bool]] = None,
                 keep_files: bool = False):
        self.host = host
        self.trainer = trainer
        cache = tokenizer_cache_dir or os.environ.get("TRAIN_STYLE_TOKENIZER_CACHE")
        self.tokenizer_cache_dir = Path(cache) if cache else None
        self.extra_env = dict(env or {})
        self.local_user = local_user
        self.precision = precision
        self.default_checkpoint = default_checkpoint
        self.work_root = Path(work_root) if work_root else Path(host.projects_home()) / ".cache" / "generate"
        self.hashes = hashes or FileHashes.under(host.projects_home())
        self._device = dict(device) if device is not None else None  # {"cuda", "sdpa"}; None: the probe says
        self.keep_files = keep_files
        self.last_work_dir: Optional[Path] = None  # the folder of the latest call (read it with keep_files)

    @property
    def script(self) -> Path:
        return self.trainer.sd_scripts_dir / GEN_SCRIPT

    # --- the Generator protocol ----------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest], *, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFlag] = None) -> list[GenImage]:
        """One image per request, in order. On cancel, the images made so far for the first requests: the longest
        run from the first request on with none missing (callers pair images with requests by position), so an
        image a later process made before a gap is dropped."""
        # 1. check every request before anything runs; resolve files, draw seeds
        planned = self.plan(requests)
        if not planned:
            return []
        # 2. one gen_img.py process per group, its outputs read back as they are
        work = self.work_root / f"gen-{clock.stamp(micro=True)}"
        self.last_work_dir = work
        made: dict[int, GenImage] = {}
        try:
            # the GPU is the training queue's or ours: a queued run waits for these images, and none are made
            # while a run trains (the queue's state is on disk, so this holds across the app, webui and CLI)
            with gpu_use.generating(f"{len(planned)} images with sd-scripts", refuse=self._refusal):
                for n, group in enumerate(plan_groups(planned)):
                    self._run_group(group, work / f"{n:02d}", made=made, total=len(planned), progress=progress,
                                    cancel=cancel)
        except Cancelled:
            return _leading(made)
        finally:
            if not self.keep_files and (len(made) == len(planned) or (cancel is not None and cancel.is_set())):
                shutil.rmtree(work, ignore_errors=True)  # a failed group's folder stays: its error names the log
        if progress:
            progress(len(planned), len(planned), f"Made {len(planned)} images with sd-scripts")
        return _leading(made)

    def _refusal(self) -> Optional[str]:
        from ..train.queue import TrainQueue

        message = TrainQueue(self.host).training_message()
        return f"No images now: {message}" if message else None

    # --- planning ------------------------------------------------------------------------------------------------
    def plan(self, requests: Sequence[GenRequest]) -> list[Planned]:
        """The requests checked (every problem named at once), their files resolved and their seeds drawn."""
        problems = [p for i, req in enumerate(requests) for p in request_problems(i, req)]
        samplers: dict[str, SamplerChoice] = {}
        for i, req in enumerate(requests):
            try:
                samplers[req.sampler] = samplers.get(req.sampler) or sampler_for(req.sampler)
            except LorakitError as e:
                problems.append(f"requests[{i}].{e}")
        if problems:
            raise LorakitError("Cannot generate with sd-scripts:\n" + "\n".join(f"- {p}" for p in problems))
        checkpoints: dict[Optional[str], Path] = {}
        loras: dict[tuple[str, Optional[Path]], Path] = {}
        planned = []
        for i, req in enumerate(requests):
            if req.checkpoint not in checkpoints:
                checkpoints[req.checkpoint] = self.resolve_checkpoint(req.checkpoint)
                checkpoint_family(checkpoints[req.checkpoint])
            for lu in req.loras:
                if (lu.name, lu.path) not in loras:
                    loras[(lu.name, lu.path)] = self.resolve_lora(lu.name, lu.path)
            seed = req.seed if req.seed >= 0 else secrets.randbelow(MAX_SEED)
            planned.append(Planned(index=i, request=req, seed=seed, checkpoint=checkpoints[req.checkpoint],
                                   loras=tuple(loras[(lu.name, lu.path)] for lu in req.loras),
                                   sampler=samplers[req.sampler]))
        return planned

    def resolve_checkpoint(self, name: Optional[str]) -> Path:
        """A Host checkpoint by name or stem, or a confined file path; None: the default, or the only usable one."""
        listed = self.host.checkpoints()
        name = name if name is not None else self.default_checkpoint
        if name is None:
            usable = [c for c in listed if c.arch in FAMILY_FLAGS and Path(c.path).suffix.lower() == ".safetensors"]
            if len(usable) == 1:
                return Path(usable[0].path)
            shown = ", ".join(c.name for c in usable) or f"none in {self.host.models_dir()}"
            raise LorakitError(f"checkpoint: name the checkpoint to generate with (the Host lists {shown}).")
        found = next((Path(c.path) for c in listed if name in (c.name, Path(c.name).stem, str(c.path))), None)
        path = found or confine_model_path(self.host, name, local_user=self.local_user, what="checkpoint").path
        if path.suffix.lower() != ".safetensors":
            raise PathNotAllowed(f"The checkpoint {name} is not a .safetensors file. Other formats (.ckpt) are "
                                 "pickles whose loading can run any code they hold, so generation takes only "
                                 ".safetensors: convert it.")
        if not path.is_file():
            raise LorakitError(f"checkpoint: {name} is neither one of the Host's checkpoints nor a file.")
        return path

    def resolve_lora(self, name: str, path: Optional[Path]) -> Path:
        """A LoRA file: its given path (confined unless `local_user`), else `<name>.safetensors` in the Lora
        folder (searched in its subfolders too)."""
        roots = (Path(self.host.lora_dir()), Path(self.host.projects_home()))
        if path is not None:
            found = confine_model_path(self.host, path, local_user=self.local_user, what=f"LoRA {name}",
                                       extra_roots=roots).path
            if found.suffix.lower() != ".safetensors":
                raise PathNotAllowed(f"The LoRA {name} ({found.name}) is not a .safetensors file: other formats are "
                                     "pickles whose loading can run any code they hold. Convert it.")
            if not found.is_file():
                raise LorakitError(f"LoRA {name}: {path} does not exist.")
            return found
        lora_dir = Path(self.host.lora_dir())
        matches = sorted(p for p in lora_dir.rglob("*.safetensors") if p.stem == name and p.is_file())
        if len(matches) != 1:
            what = "no" if not matches else f"{len(matches)}"
            raise LorakitError(f"LoRA {name}: {what} file named {name}.safetensors in {lora_dir}; give its path.")
        return matches[0]

    # --- running -------------------------------------------------------------------------------------------------
    def argv(self, group: Group, *, prompts: Path, outdir: Path) -> list[str]:
        """gen_img.py's command line for one group (no shell)."""
        family = checkpoint_family(group.checkpoint)
        device = self.device_facts()
        argv = [str(self.trainer.python), str(self.script), *FAMILY_FLAGS[family],
                "--ckpt", str(group.checkpoint), "--outdir", str(outdir), "--from_file", str(prompts),
                "--sampler", group.sampler, "--images_per_prompt", "1", "--batch_size", "1",
                "--max_embeddings_multiples", "3"]
        precision = self.precision if self.precision != "auto" else ("fp16" if device.get("cuda") else "fp32")
        if precision != "fp32":
            argv.append(f"--{precision}")
            if family == "SDXL":
                argv.append("--no_half_vae")  # SDXL's VAE overflows in fp16
        if device.get("sdpa"):
            argv.append("--sdpa")
        if self.tokenizer_cache_dir:
            argv += ["--tokenizer_cache_dir", str(self.tokenizer_cache_dir)]
        if group.clip_skip is not None:
            argv += ["--clip_skip", str(group.clip_skip)]
        if group.networks:
            argv += ["--network_module", *(network_module(p) for p in group.networks),
                     "--network_weights", *(str(p) for p in group.networks),
                     "--network_mul", *("1" for _ in group.networks)]
        return argv

    def device_facts(self) -> dict:
        """What the trainer's python says about CUDA and SDPA (the doctor's probe, cached per interpreter)."""
        if self._device is None:
            cache = ProbeCache.under(self.host.projects_home())
            facts = cache.get(self.trainer)
            if facts is None:
                facts, failure = probe(self.trainer)
                if failure is not None:
                    raise LorakitError(f"{failure.what} {failure.fix}")
                cache.put(self.trainer, facts)
            self._device = facts
        return self._device

    def _run_group(self, group: Group, folder: Path, *, made: dict[int, GenImage], total: int,
                   progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> None:
        outdir, prompts = folder / "out", folder / "prompts.txt"
        outdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(prompts, "".join(prompt_line(item, group) + "\n" for item in group.items))
        argv = self.argv(group, prompts=prompts, outdir=outdir)
        before, tail = len(made), deque(maxlen=25)
        seen = [0]

        def on_line(line: str) -> None:
            tail.append(line)
            count = sum(1 for f in outdir.glob("*.png") if _png_complete(f))
            if progress and count != seen[0]:
                seen[0] = count
                progress(before + count, total, f"Made image {before + count} of {total} with sd-scripts")

        if progress:
            progress(before, total, f"Loading {group.checkpoint.name} in sd-scripts' gen_img.py")
        env = {**self.trainer.subprocess_env(), **self.extra_env}
        try:
            code = procs.run_logged(argv, env=env, on_line=on_line, log_file=folder / "gen.log",
                                    cwd=self.trainer.sd_scripts_dir, cancel=cancel,
                                    cancel_message="Generation was cancelled.")
        except Cancelled:
            self._collect(group, outdir, made, partial=True)
            raise
        self._collect(group, outdir, made, partial=False)
        missing = [it.index for it in group.items if it.index not in made]
        if code != 0 or missing:
            shown = "\n".join(tail)
            raise LorakitError(f"sd-scripts' gen_img.py {'failed (exit code ' + str(code) + ')' if code else 'ended'}"
                               f" without making {len(missing)} of its {len(group.items)} images. Its log: "
                               f"{folder / 'gen.log'}. Last lines:\n{shown}")

    def _collect(self, group: Group, outdir: Path, made: dict[int, GenImage], *, partial: bool) -> None:
        """Read back the group's images; after a cancel a half-written file is skipped."""
        for item in group.items:
            file = outdir / output_name(item)
            if not file.is_file():
                continue
            loaded = open_training_image(file)
            if isinstance(loaded, ImageProblem):
                if partial:
                    continue
                raise LorakitError(f"gen_img.py wrote {file} but it cannot be read: {loaded.reason}")
            made[item.index] = GenImage(image=loaded.image, infotext=self.infotext(item), seed=item.seed,
                                        request=replace(item.request, seed=item.seed))

    # --- infotext ------------------------------------------------------------------------------------------------
    def infotext(self, item: Planned) -> str:
        """The webui-format infotext of an item (see infotext.py)."""
        req = item.request
        pairs = [(lu.name, self.hashes.lora(p)[:LORA_SHORT]) for lu, p in zip(req.loras, item.loras, strict=True)]
        params = {
            "Steps": req.steps, "Sampler": item.sampler.webui, "CFG scale": number(req.cfg), "Seed": item.seed,
            "Size": f"{req.width}x{req.height}", "Model hash": self.hashes.checkpoint(item.checkpoint)[:MODEL_SHORT],
            "Model": item.checkpoint.stem, "Clip skip": req.clip_skip if (req.clip_skip or 1) > 1 else None,
            "Lora hashes": lora_hashes(pairs) or None, "sd-scripts sampler": item.sampler.gen_img,
        }
        return format_infotext(prompt=prompt_with_loras(req.prompt, req.loras), negative=req.negative, params=params)


def _leading(made: Mapping[int, GenImage]) -> list[GenImage]:
    """The images of requests 0, 1, 2, … up to the first one not made."""
    out = []
    while len(out) in made:
        out.append(made[len(out)])
    return out


def checkpoint_family(path: Path) -> str:
    """SD1, SD2 or SDXL from the checkpoint's header (gen_img.py's --v1/--v2/--sdxl); else a LorakitError."""
    reading = read_checkpoint_arch(path)
    if reading.arch not in FAMILY_FLAGS:
        raise LorakitError(f"checkpoint {path.name}: cannot tell whether it is SD1, SD2 or SDXL: {reading.problem} "
                           "Pick a Stable Diffusion checkpoint.")
    return reading.arch


def network_module(path: Path) -> str:
    """The module gen_img.py loads a LoRA with: its `ss_network_module` when that is one it can use (LyCORIS for
    LoCon/LoHa), else networks.lora."""
    try:
        meta = read_header(path)[0].get("__metadata__")
    except LorakitError:
        return NETWORK_MODULES[0]
    module = meta.get("ss_network_module") if isinstance(meta, dict) else None
    return module if module in NETWORK_MODULES else NETWORK_MODULES[0]


def standalone_generator(host: Host, *, trainer: Optional[TrainerEnvironment] = None, **options) -> Generator:
    """The sd-scripts generator for a Host without a webui; a LorakitError naming what is missing when the trainer
    environment or sd-scripts' gen_img.py is not there."""
    if trainer is None:
        from ..train.service import default_trainer

        trainer = default_trainer(host)
    if not trainer.exists():
        raise LorakitError(f"Generating without the webui needs the trainer environment, and {trainer.python} does "
                           "not exist. Set it up (Train tab → Set up trainer, or `python -m lib_lorakit trainer "
                           "setup`), or name an existing one (TRAIN_STYLE_TRAINER_PYTHON).")
    script = trainer.sd_scripts_dir / GEN_SCRIPT
    if not script.is_file():
        raise LorakitError(f"Generating without the webui needs sd-scripts' {GEN_SCRIPT}, and {script} does not "
                           "exist. Run `git submodule update --init --recursive` in the extension's folder, or point "
                           "TRAIN_STYLE_SD_SCRIPTS at an sd-scripts checkout.")
    return SdScriptsGenerator(host, trainer=trainer, **options)


PNG_END = b"IEND\xaeB`\x82"  # a PNG's last chunk (type and CRC): the file is whole once it ends with it


def _png_complete(path: Path) -> bool:
    """Whether gen_img.py has finished writing this PNG (it writes in place): only whole images count as made, so a
    cancel at "Made image N" never finds image N half-written."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < len(PNG_END):
                return False
            f.seek(-len(PNG_END), os.SEEK_END)
            return f.read() == PNG_END
    except OSError:
        return False

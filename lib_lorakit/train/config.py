"""The files sd-scripts reads for one run, built from a project and validated settings.

- `dataset.toml` (`--dataset_config`): `[general]` from the options whose `where` is "dataset", then one
  `[[datasets.subsets]]` per concept folder with everything explicit: absolute `image_dir`, `num_repeats`,
  `class_tokens` (the concept's name), `caption_extension` (the project's) and `keep_tokens`; regularisation
  sets are subsets with `is_reg = true`. Nothing depends on sd-scripts guessing from folder names.
- `args.toml` (`--config_file`): every argument explicit, in sections by option group. sd-scripts flattens the
  sections (`train_util.read_config_from_file`), so keys are unique across them.
- `sample_prompts.txt` when sampling is on: each prompt with and without the trigger words (seeds/000 looks at
  both to tell what the trigger holds from what leaks into everything).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..crop.derive import masked_concepts
from ..errors import LorakitError
from ..fsutil import atomic_write_text
from ..project import Concept, Project
from ..tomlio import write_toml
from . import options as opts
from .presets import ResolvedSettings
from .steps import count_images, select_concepts  # noqa: F401 (select_concepts: part of this module's API)

DATASET_FILE = "dataset.toml"
ARGS_FILE = "args.toml"
PROMPTS_FILE = "sample_prompts.txt"
SCRIPTS = {"SD1": "train_network.py", "SDXL": "sdxl_train_network.py"}
_FAMILIES = {"sd1": "SD1", "sd15": "SD1", "sd1.5": "SD1", "sd_v1": "SD1", "sdxl": "SDXL", "pony": "SDXL",
             "sdxl_base_v1-0": "SDXL"}
SAMPLE_KEYS = ("sample_every_n_epochs", "sample_every_n_steps", "sample_at_first", "sample_sampler")


def base_family(base_arch: str) -> str:
    """"SD1" or "SDXL" for a base-model name as users, presets and `ss_base_model_version` write it."""
    family = _FAMILIES.get(str(base_arch).strip().lower())
    if family is None:
        raise LorakitError(f"base model type: expected SD1 or SDXL (Pony is SDXL), got {base_arch!r}")
    return family


def script_for(base_arch: str) -> str:
    """sd-scripts' training script for the base model: train_network.py or sdxl_train_network.py."""
    return SCRIPTS[base_family(base_arch)]


@dataclass(frozen=True)
class SampleSettings:
    """What the sample prompts file holds. Width, height and seed default to the run's resolution and seed;
    CFG 7.5 and 50 steps are seeds/002's check settings. Without prompts, each concept's name is one."""

    prompts: tuple[str, ...] = ()
    negative: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    cfg: float = 7.5
    steps: int = 50
    without_trigger: bool = True


@dataclass(frozen=True)
class SamplePrompt:
    """One line of the prompts file; `index` is the `<i:02d>` in sd-scripts' sample file names."""

    index: int
    prompt: str
    with_trigger: bool
    line: str


@dataclass(frozen=True)
class RunFiles:
    """The content of one run's files (not yet written): dataset and args TOML as dicts, and the prompts."""

    dataset: dict[str, Any]
    args: dict[str, Any]
    sample_prompts: str | None
    output_name: str
    script: str
    samples: tuple[SamplePrompt, ...] = ()

    def dataset_toml(self) -> str:
        return tomli_w.dumps(self.dataset)

    def args_toml(self) -> str:
        return tomli_w.dumps(self.args)


@dataclass(frozen=True)
class RunPaths:
    """Where `write_run_files` put the files; pass `args_toml` as `--config_file`."""

    dataset_toml: Path
    args_toml: Path
    sample_prompts: Path | None


def sample_prompt_line(prompt: str, *, negative: str = "", width: int, height: int, seed: int, cfg: float,
                       steps: int) -> str:
    """`prompt --n neg --w W --h H --d seed --l cfg --s steps`, sd-scripts' prompt-file syntax."""
    for label, text in (("prompt", prompt), ("negative prompt", negative)):
        if "\n" in text or "\r" in text or " --" in text:
            raise LorakitError(f"Sample {label} {text!r}: one line without ' --' (sd-scripts reads ' --' as an "
                               "option).")
    neg = f" --n {negative}" if negative.strip() else ""
    return f"{prompt.strip()}{neg} --w {width} --h {height} --d {seed} --l {cfg:g} --s {steps}"


def _trigger(word: str) -> re.Pattern:
    """The trigger word as a whole word or phrase, in any case (`zqxstyle` is in "zqxstyle, a cat", not in
    "zqxstyles")."""
    return re.compile(rf"(?<!\w){re.escape(word.strip())}(?!\w)", re.IGNORECASE)


def with_trigger(prompt: str, trigger_words: Sequence[str]) -> str:
    """The prompt with the trigger words in front, as the captions have them; one the prompt already holds is not
    added again."""
    missing = [w.strip() for w in trigger_words if w.strip() and not _trigger(w).search(prompt)]
    return ", ".join([*missing, prompt]) if missing else prompt


def without_trigger(prompt: str, trigger_words: Sequence[str]) -> str:
    """The prompt with every trigger word taken out (a tag that held only the trigger goes with its comma); a
    prompt without them comes back as it was."""
    words = [w for w in trigger_words if w.strip()]
    if not any(_trigger(w).search(prompt) for w in words):
        return prompt
    tags = []
    for tag in prompt.split(","):
        for w in words:
            tag = _trigger(w).sub(" ", tag)
        tag = " ".join(tag.split())
        if tag:
            tags.append(tag)
    return ", ".join(tags)


def build_sample_prompts(prompts: Sequence[str], trigger_words: Sequence[str], *, negative: str = "",
                         width: int, height: int, seed: int, cfg: float = 7.5, steps: int = 50,
                         without_trigger: bool = True, lead_tags: Sequence[str] = ()) -> tuple[SamplePrompt, ...]:
    """Each prompt with the trigger words, then (when there are triggers) without them, same seed. A prompt that
    already names a trigger word gets it once, and its twin has it taken out; a twin left empty (the prompt was
    only the trigger) is not drawn. `lead_tags` (a preset's, e.g. Pony's score tags) go first in both, once."""
    out: list[SamplePrompt] = []
    for prompt in prompts:
        variants = [(with_trigger(prompt, trigger_words), True)]
        bare = _without_trigger(prompt, trigger_words)
        if without_trigger and trigger_words and bare.strip():
            variants.append((bare, False))
        for text, triggered in variants:
            text = with_trigger(text, lead_tags)
            line = sample_prompt_line(text, negative=negative, width=width, height=height, seed=seed, cfg=cfg,
                                      steps=steps)
            out.append(SamplePrompt(index=len(out), prompt=text, with_trigger=triggered, line=line))
    return tuple(out)


_without_trigger = without_trigger  # build_sample_prompts' flag has the same name


# --- the two TOMLs -----------------------------------------------------------------------------------------------
def build_dataset_config(concepts: Sequence[Concept], settings: Mapping[str, Any], *, caption_extension: str,
                         trigger_words: Sequence[str], masked: Collection[tuple[str, str]] = ()) -> dict[str, Any]:
    """`[general]` from the dataset options, one dataset, one subset per concept folder (reg sets `is_reg`).

    `masked`: (kind, concept name) of the concepts holding letterboxed images (crop/derive.py): their subsets get
    `alpha_mask = true`, so sd-scripts loads them as RGBA and leaves the padding (alpha 0) out of the loss. That is
    all masked training needs in v0.10.1: the loss is masked whenever a batch carries alpha masks
    (train_network.py), an image without alpha gets a full mask, and latent caching keeps the masks;
    `--masked_loss` is for ControlNet-style mask images (`conditioning_data_dir`) and is not set."""
    general = {o.toml_key: settings[o.name] for o in opts.options_where("dataset") if settings[o.name] is not None}
    general["caption_extension"] = caption_extension
    subsets = []
    for c in concepts:
        keep = settings["keep_tokens"]
        if keep is None:
            keep = len(trigger_words) if c.kind == "dataset" else 0
        subsets.append({"image_dir": str(Path(c.folder).resolve()), "is_reg": c.kind == "reg",
                        "num_repeats": c.repeats, "class_tokens": c.name, "caption_extension": caption_extension,
                        "keep_tokens": keep})
        if (c.kind, c.name) in masked:
            subsets[-1]["alpha_mask"] = True
    return {"general": general, "datasets": [{"subsets": subsets}]}


def network_args(settings: Mapping[str, Any]) -> list[str]:
    """`["conv_dim=4", "conv_alpha=1", "algo=loha"]`: the network_args options that are set, in declaration
    order."""
    return [f"{o.name}={_arg_text(settings[o.name])}" for o in opts.options_where("network_args")
            if settings[o.name] is not None]


def _arg_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def build_args_config(settings: Mapping[str, Any], *, pretrained_model: str, dataset_config: Path,
                      output_dir: Path, output_name: str, caption_extension: str, logging_dir: Path,
                      tokenizer_cache_dir: Path | None = None, sample_prompts: Path | None = None,
                      training_comment: str | None = None,
                      base_weights: Sequence[tuple[str | Path, float]] = (),
                      extra_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The arguments TOML: sections by option group, every key unique, None values left out.

    `base_weights`: (LoRA file, multiplier) pairs sd-scripts merges into the model before training
    (`--base_weights`/`--base_weights_multiplier`; the differential method's stage 2). They are run inputs
    that name another run's output file, not tunable settings, so they are not declared options.

    `extra_args`: sd-scripts arguments beyond the declared options, already checked (extra_args.py), by sd-scripts'
    name: they go into an `[extra]` section; one Train Style also writes (tokenizer_cache_dir, sample_prompts,
    logging_dir, …) is replaced, `network_args` are added to the declared ones."""
    sections: dict[str, dict[str, Any]] = {g: {} for g in ("model", "dataset", *opts.GROUPS, "logging")}
    sections["model"] = {"pretrained_model_name_or_path": str(pretrained_model)}
    if tokenizer_cache_dir is not None:
        sections["model"]["tokenizer_cache_dir"] = str(tokenizer_cache_dir)
    if base_weights:
        sections["model"]["base_weights"] = [str(path) for path, _ in base_weights]
        sections["model"]["base_weights_multiplier"] = [float(m) for _, m in base_weights]
    sections["dataset"] = {"dataset_config": str(dataset_config), "caption_extension": caption_extension}
    for o in opts.options_where("args"):
        if settings[o.name] is not None and (sample_prompts is not None or o.name not in SAMPLE_KEYS):
            sections[o.group][o.toml_key] = settings[o.name]
    sections["training"]["train_batch_size"] = settings["train_batch_size"]  # also in the dataset TOML
    _validation_args(sections["dataset"], settings)
    if network_args(settings):
        sections["network"]["network_args"] = network_args(settings)
    sections["saving"] = {"output_dir": str(output_dir), "output_name": output_name, "save_model_as": "safetensors",
                          **sections["saving"]}
    if sample_prompts is not None:
        sections["sampling"] = {"sample_prompts": str(sample_prompts), **sections["sampling"]}
    sections["logging"] = {"logging_dir": str(logging_dir), "console_log_simple": True}
    if training_comment:
        sections["logging"]["training_comment"] = training_comment
    _add_extra(sections, extra_args or {})
    return {name: body for name, body in sections.items() if body}


def _validation_args(section: dict[str, Any], settings: Mapping[str, Any]) -> None:
    """validation_split as sd-scripts reads it, with the run's seed as validation_seed, or nothing when it is 0.

    Both go into the arguments, not the dataset TOML: sd-scripts v0.10.1 falls back from a dataset's own keys to
    the arguments for them (config_util.BlueprintGenerator), so our DreamBooth-style subsets are split, and the
    LoRA's metadata (ss_validation_split, ss_validation_seed) records what was used. The seed fixes which images
    are held out: each dataset (training, validation) shuffles its paths with it before splitting, so without it
    the two would be shuffled differently and share images, and a resumed run would hold out others.
    Regularisation subsets are never split (train_util.DreamBoothDataset); only training images are held out."""
    if not settings.get("validation_split"):
        section.pop("validation_split", None)
        section.pop("max_validation_steps", None)
        return
    section["validation_seed"] = settings["seed"]


def _add_extra(sections: dict[str, dict[str, Any]], extra: Mapping[str, Any]) -> None:
    """Extra arguments into `[extra]`, each key once over all sections (sd-scripts flattens them)."""
    for key, value in extra.items():
        if key == "network_args":
            given = value if isinstance(value, list) else [value]
            sections["network"]["network_args"] = [*sections["network"].get("network_args", []), *map(str, given)]
            continue
        for body in sections.values():
            if key in body:
                if key not in REPLACEABLE_KEYS:
                    raise LorakitError(f"{key}: set by Train Style for this run; it cannot be an extra argument.")
                del body[key]
        sections.setdefault("extra", {})[key] = value


# keys build_args_config writes that an extra argument may replace (extra_args.REPLACEABLE)
REPLACEABLE_KEYS = frozenset({"tokenizer_cache_dir", "sample_prompts", "logging_dir", "training_comment",
                              "console_log_simple"})


def sampling_on(settings: Mapping[str, Any]) -> bool:
    return bool(settings["sample_every_n_epochs"] or settings["sample_every_n_steps"] or settings["sample_at_first"])


# --- one run -----------------------------------------------------------------------------------------------------
def build_run_files(project: Project, settings: ResolvedSettings | Mapping[str, Any], *, run_dir: Path,
                    pretrained_model: str | Path, base_arch: str, output_name: str | None = None,
                    output_dir: Path | None = None, logging_dir: Path | None = None,
                    tokenizer_cache_dir: Path | None = None, samples: SampleSettings | None = None,
                    concepts: Sequence[str] | None = None,
                    base_weights: Sequence[tuple[str | Path, float]] = (),
                    extra_args: Mapping[str, Any] | None = None) -> RunFiles:
    """Everything sd-scripts needs for one run of `project`, with the files meant to live in `run_dir`.

    `concepts`: the names of the concepts to train (see `select_concepts`; default all). `base_weights`: LoRA
    files merged into the model before training (see `build_args_config`).

    Raises LorakitError when the settings do not validate, the preset was made for another base model, or the
    project has no training images (sd-scripts would "train" zero steps and exit 0).
    """
    # 1. settings: complete and valid, and made for this base model
    family = base_family(base_arch)
    values = opts.validate(dict(_values(settings)), complete=True)
    if isinstance(settings, ResolvedSettings) and settings.base != family:
        raise LorakitError(f"Preset {settings.preset!r} is for {settings.base} models, but the base model is "
                           f"{family}: pick a {family} preset.")
    # 2. the project's concepts, which must hold images
    ps = project.settings
    chosen = select_concepts(project, concepts)
    _check_images(project, chosen)
    # 3. sample prompts, when sampling is on
    run_dir = Path(run_dir).resolve()
    lead = settings.sample_tags if isinstance(settings, ResolvedSettings) else ()
    prompts = _samples(project, chosen, values, samples or SampleSettings(), lead) if sampling_on(values) else ()
    name = output_name or project.name
    # 4. the two TOMLs
    dataset = build_dataset_config(chosen, values, caption_extension=ps.caption_extension,
                                   trigger_words=ps.trigger_words, masked=masked_concepts(project))
    comment = f"Train Style preset {settings.preset}" if isinstance(settings, ResolvedSettings) else None
    if base_weights:  # sd-scripts keeps no record of base weights in the LoRA; the comment (ss_training_comment) does
        merged = ", ".join(f"{Path(p).name} x{float(m):g}" for p, m in base_weights)
        comment = f"{comment or 'Train Style'}; trained over base weights merged first: {merged}"
    args = build_args_config(
        values, pretrained_model=str(pretrained_model), dataset_config=run_dir / DATASET_FILE,
        output_dir=Path(output_dir or run_dir), output_name=name, caption_extension=ps.caption_extension,
        logging_dir=Path(logging_dir or run_dir / "logs"), tokenizer_cache_dir=tokenizer_cache_dir,
        sample_prompts=run_dir / PROMPTS_FILE if prompts else None, training_comment=comment,
        base_weights=base_weights, extra_args=extra_args)
    text = "".join(p.line + "\n" for p in prompts) if prompts else None
    return RunFiles(dataset=dataset, args=args, sample_prompts=text, output_name=name, script=SCRIPTS[family],
                    samples=prompts)


def _values(settings: ResolvedSettings | Mapping[str, Any]) -> Mapping[str, Any]:
    return settings.values if isinstance(settings, ResolvedSettings) else settings


def _check_images(project: Project, concepts: Sequence[Concept]) -> None:
    train = [c for c in concepts if c.kind == "dataset"]
    if not train:
        raise LorakitError(f"Project {project.name!r} has no concepts: add a concept with images before training.")
    if not any(count_images(c.folder) for c in train):
        folders = ", ".join(c.relpath for c in train)
        raise LorakitError(f"Project {project.name!r} has no training images in {folders}: add images first.")


def _samples(project: Project, concepts: Sequence[Concept], values: Mapping[str, Any],
             spec: SampleSettings, lead_tags: Sequence[str] = ()) -> tuple[SamplePrompt, ...]:
    prompts = spec.prompts or tuple(c.name for c in concepts if c.kind == "dataset")
    return build_sample_prompts(
        prompts, project.settings.trigger_words, negative=spec.negative, width=spec.width or values["resolution"],
        height=spec.height or values["resolution"], seed=values["seed"] if spec.seed is None else spec.seed,
        cfg=spec.cfg, steps=spec.steps, without_trigger=spec.without_trigger, lead_tags=lead_tags)


def write_run_files(files: RunFiles, run_dir: Path) -> RunPaths:
    """Write the files atomically into `run_dir` (the folder `build_run_files` was given)."""
    run_dir = Path(run_dir)
    paths = RunPaths(dataset_toml=run_dir / DATASET_FILE, args_toml=run_dir / ARGS_FILE,
                     sample_prompts=run_dir / PROMPTS_FILE if files.sample_prompts is not None else None)
    write_toml(paths.dataset_toml, files.dataset)
    write_toml(paths.args_toml, files.args)
    if paths.sample_prompts is not None:
        atomic_write_text(paths.sample_prompts, files.sample_prompts or "")
    return paths

"""Every training option, declared once: type, default, range or choices, a one-line reason, and where it goes.

The names are sd-scripts' own argument names (checked against its argparse in tests), so what a user reads in
the UI, types after `--set`, finds in a preset and sees in `args.toml` is the same word. From this table come
the validation, the `--set` parser, the UI tooltips and ranges (`describe()`), and the TOML files
(`config.py` asks each option's `where`):

- "args": the arguments TOML given to `--config_file`;
- "dataset": the `[general]` table of the dataset TOML given to `--dataset_config`;
- "network_args": one `key=value` string in the `network_args` list (LyCORIS and LoRA extras);
- "subset": computed per subset by `config.py` (only `keep_tokens`, whose default depends on the trigger words).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from ..schema import Field, InvalidSettings, Schema

log = logging.getLogger(__name__)

Where = Literal["args", "dataset", "network_args", "subset"]
GROUPS = ("network", "optimizer", "training", "dataset", "saving", "sampling", "performance")


InvalidOption = InvalidSettings  # one or more training options are unknown or out of range; `problems` names each
Option = Field  # one training option; `default=None` (or `optional=True`) leaves it to sd-scripts' own default


OPTIMIZERS = ("AdamW", "AdamW8bit", "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit", "Lion", "Lion8bit",
              "PagedLion8bit", "SGDNesterov", "SGDNesterov8bit", "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdaGrad",
              "DAdaptAdam", "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD", "Prodigy", "Adafactor",
              "RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant")
# lycoris-lora 3.4.0 (the pinned version) `lycoris.wrapper.network_module_dict`; it has no ia3
LYCORIS_ALGOS = ("lora", "locon", "loha", "lokr", "dylora", "glora", "full", "diag-oft", "boft")
SAMPLERS = ("ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
            "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a")


def _o(name: str, type_: type, default: Any, reason: str, group: str, **kw: Any) -> Option:
    return Option(name=name, type=type_, default=default, reason=reason, group=group, **kw)


OPTIONS: tuple[Option, ...] = (
    # --- network ------------------------------------------------------------------------------------------------
    _o("network_module", str, "networks.lora", "networks.lora for LoRA; lycoris.kohya for LoCon, LoHa and the other "
       "LyCORIS kinds (needs lycoris-lora).", "network", choices=("networks.lora", "lycoris.kohya")),
    _o("network_dim", int, 16, "Rank of the linear layers: capacity and file size; 8–32 is plenty for most styles "
       "and characters.", "network", minimum=1, maximum=1024),
    _o("network_alpha", float, 8.0, "Scales the update by alpha/dim: lower alpha is like a lower learning rate.",
       "network", minimum=0, maximum=1024),
    _o("conv_dim", int, None, "Rank of the 3×3 convolution layers (LoCon/LoHa); none leaves them untrained.",
       "network", minimum=1, maximum=1024, where="network_args"),
    _o("conv_alpha", float, None, "Alpha of the convolution layers, as network_alpha is for the linear ones.",
       "network", minimum=0, maximum=1024, where="network_args"),
    _o("algo", str, None, "LyCORIS algorithm (only with network_module lycoris.kohya): locon, loha, lokr, …",
       "network", choices=LYCORIS_ALGOS, where="network_args"),
    _o("use_tucker", bool, None, "LyCORIS: Tucker-decompose convolution weights (smaller, slower to train).",
       "network", where="network_args"),
    _o("network_dropout", float, None, "Dropout on the network's neurons each step; none is no dropout.",
       "network", minimum=0, maximum=1),
    _o("network_train_unet_only", bool, False, "Train the U-Net only and leave the text encoder(s) untouched.",
       "network"),
    # --- optimizer ----------------------------------------------------------------------------------------------
    _o("optimizer_type", str, "AdamW8bit", "Optimizer; AdamW8bit needs bitsandbytes, DAdapt*/Prodigy pick their "
       "own step size (set learning_rate 1).", "optimizer", choices=OPTIMIZERS, ignore_case=True),
    _o("learning_rate", float, 1e-4, "Step size for everything not given its own rate.", "optimizer",
       minimum=0, maximum=10),
    _o("unet_lr", float, None, "U-Net learning rate; none uses learning_rate.", "optimizer", minimum=0, maximum=10),
    _o("text_encoder_lr", float, None, "Text-encoder learning rate; lower keeps more of the base model's prompt "
       "understanding, but slows learning.", "optimizer", minimum=0, maximum=10),
    _o("lr_scheduler", str, "constant", "How the learning rate changes over the run.", "optimizer",
       choices=SCHEDULERS),
    _o("lr_warmup_steps", int, 0, "Steps to ramp the learning rate up; 'constant' must have 0.", "optimizer",
       minimum=0, maximum=1_000_000),
    _o("lr_scheduler_num_cycles", int, 1, "Restarts of cosine_with_restarts.", "optimizer", minimum=1, maximum=1000),
    _o("max_grad_norm", float, 1.0, "Gradient clipping; 0 turns it off.", "optimizer", minimum=0, maximum=1000),
    _o("min_snr_gamma", float, None, "Min-SNR loss weighting (5 is the usual value): steadier, faster "
       "convergence.", "optimizer", minimum=0, maximum=100),
    _o("noise_offset", float, None, "Lets the model learn very dark and very bright images (about 0.05–0.1).",
       "optimizer", minimum=0, maximum=1),
    # --- training length ----------------------------------------------------------------------------------------
    _o("max_train_epochs", int, 10, "Passes over the dataset (each image × its repeats); overrides "
       "max_train_steps.", "training", minimum=1, maximum=10_000, optional=True),
    _o("max_train_steps", int, None, "Optimizer steps in all; used only when max_train_epochs is none.",
       "training", minimum=1, maximum=10_000_000),
    _o("train_batch_size", int, 1, "Images per step; larger needs more VRAM and fewer steps per epoch.",
       "training", minimum=1, maximum=256, where="dataset", key="batch_size"),
    _o("gradient_accumulation_steps", int, 1, "Steps whose gradients add up before one update: a larger "
       "effective batch without the VRAM.", "training", minimum=1, maximum=1024),
    _o("seed", int, 42, "Random seed: same seed and data, same result.", "training", minimum=0,
       maximum=2**32 - 1),
    _o("clip_skip", int, None, "Use the text encoder's n-th layer from the end; match what you sample with "
       "(SD1 only: SDXL ignores it).", "training", minimum=1, maximum=12),
    _o("max_token_length", int, None, "Caption tokens read (none is 75): 150 or 225 for long captions.",
       "training", choices=(150, 225)),
    # --- dataset ([general] of the dataset TOML) --------------------------------------------------------------
    _o("resolution", int, 512, "Training size in pixels (square side): 512 for SD1, 1024 for SDXL.", "dataset",
       minimum=64, maximum=4096, where="dataset"),
    _o("enable_bucket", bool, True, "Aspect-ratio buckets: images keep their shape instead of being "
       "centre-cropped.", "dataset", where="dataset"),
    _o("min_bucket_reso", int, 256, "Smallest bucket side; must not exceed resolution.", "dataset",
       minimum=64, maximum=4096, where="dataset"),
    _o("max_bucket_reso", int, 1024, "Largest bucket side; must be at least resolution.", "dataset",
       minimum=64, maximum=8192, where="dataset"),
    _o("bucket_reso_steps", int, 64, "Bucket sides are multiples of this (64 is safe for SD1 and SDXL).",
       "dataset", minimum=8, maximum=512, where="dataset"),
    _o("bucket_no_upscale", bool, False, "Never enlarge a small image to fill its bucket.", "dataset",
       where="dataset"),
    _o("shuffle_caption", bool, True, "Shuffle the comma-separated tags each step, so no tag order is learned.",
       "dataset", where="dataset"),
    _o("keep_tokens", int, None, "Leading tags never shuffled; none keeps the project's trigger words in front.",
       "dataset", minimum=0, maximum=255, where="subset"),
    _o("flip_aug", bool, False, "Random horizontal flips: doubles poses but erases a character's left/right "
       "features.", "dataset", where="dataset"),
    _o("caption_dropout_rate", float, 0.0, "Share of steps that train with an empty caption.", "dataset",
       minimum=0, maximum=1, where="dataset"),
    _o("caption_tag_dropout_rate", float, 0.0, "Share of tags dropped from each caption.", "dataset",
       minimum=0, maximum=1, where="dataset"),
    _o("validation_split", float, 0.0, "Share of each concept's images held out to measure validation loss every "
       "epoch (e.g. 0.1; 0 is off); the same images on resume (the run's seed); regularisation sets are never "
       "split.", "dataset", minimum=0, maximum=1),
    _o("max_validation_steps", int, None, "Validation batches per check at most (none: every held-out image, each "
       "at 4 timesteps); caps the time validation adds.", "dataset", minimum=1, maximum=1_000_000),
    # --- saving ---------------------------------------------------------------------------------------------------
    _o("save_every_n_epochs", int, 1, "Keep a LoRA file every n epochs so an earlier, less overcooked one can be "
       "picked.", "saving", minimum=1, maximum=10_000, optional=True),
    _o("save_every_n_steps", int, None, "Also keep a LoRA file every n steps.", "saving", minimum=1,
       maximum=10_000_000),
    _o("save_precision", str, "fp16", "Precision of the saved file: fp16 halves its size.", "saving",
       choices=("float", "fp16", "bf16")),
    _o("save_state", bool, False, "Also save optimizer state with each file, so training can resume from it.",
       "saving"),
    _o("save_last_n_epochs_state", int, None, "Keep only the newest n saved states (none keeps them all).",
       "saving", minimum=1, maximum=10_000),
    # --- sampling -------------------------------------------------------------------------------------------------
    _o("sample_every_n_epochs", int, None, "Draw the sample prompts every n epochs (overrides the step "
       "setting).", "sampling", minimum=1, maximum=10_000),
    _o("sample_every_n_steps", int, None, "Draw the sample prompts every n steps.", "sampling", minimum=1,
       maximum=10_000_000),
    _o("sample_at_first", bool, False, "Draw the samples once before training, as a baseline.", "sampling"),
    _o("sample_sampler", str, "euler_a", "Sampler for the samples.", "sampling", choices=SAMPLERS),
    # --- performance ----------------------------------------------------------------------------------------------
    _o("mixed_precision", str, "fp16", "Compute precision: fp16 or bf16 on GPUs, no on CPU.", "performance",
       choices=("no", "fp16", "bf16")),
    _o("gradient_checkpointing", bool, False, "Recompute activations instead of storing them: much less VRAM, "
       "~20% slower.", "performance"),
    _o("cache_latents", bool, True, "Encode each image with the VAE once instead of every step (faster).",
       "performance"),
    _o("cache_latents_to_disk", bool, False, "Keep the cached latents on disk between runs.", "performance"),
    _o("sdpa", bool, True, "PyTorch's scaled-dot-product attention: fast, no extra package.", "performance"),
    _o("xformers", bool, False, "xformers attention (needs the xformers package); not with sdpa.", "performance"),
    _o("no_half_vae", bool, False, "Keep the VAE in fp32: SDXL's VAE gives NaN latents in fp16.", "performance"),
    _o("max_data_loader_n_workers", int, 2, "Image-loading processes; more use more RAM.", "performance",
       minimum=0, maximum=64),
)

OPTION_MAP: Mapping[str, Option] = MappingProxyType({o.name: o for o in OPTIONS})

# Old or foreign names still accepted with a warning, so saved presets keep loading (LyCORIS does the same with
# its `deprecated_arg_dict`).
ALIASES: Mapping[str, str] = MappingProxyType({
    "batch_size": "train_batch_size",  # sd-scripts' dataset-TOML name
    "epoch": "max_train_epochs",  # kohya_ss GUI
    "use_cp": "use_tucker",  # LyCORIS < 2
    "use_conv_cp": "use_tucker",  # LyCORIS < 2
})

# Pairs where setting the first (to a value, or to true) in a later layer switches the second off.
EXCLUSIVE: tuple[tuple[str, str], ...] = (
    ("max_train_steps", "max_train_epochs"), ("max_train_epochs", "max_train_steps"),
    ("xformers", "sdpa"), ("sdpa", "xformers"),
)


def defaults() -> dict[str, Any]:
    """Every option at its default (None where sd-scripts' own default applies)."""
    return SCHEMA.defaults()


def canonical_name(name: str) -> str:
    """The declared name for `name` (an old name is mapped, with a warning); unknown names raise with hints."""
    return SCHEMA.canonical_name(name)


def unknown_message(name: str) -> str:
    """`unknown option 'x'`, with the closest declared names (difflib) when some are close."""
    return SCHEMA.unknown_message(name)


def validate(values: Mapping[str, Any], *, complete: bool = False) -> dict[str, Any]:
    """Check `values` against the declarations and return them canonical (declared names, typed values).

    Every problem is collected and raised together as one InvalidOption, each naming its option and what it
    allows. With `complete=True` the result holds every option (defaults filled in) and the combinations
    sd-scripts would reject later (e.g. sdpa with xformers, resolution below min_bucket_reso) are checked too.
    """
    return SCHEMA.validate(values, complete=complete)


def combination_problems(s: Mapping[str, Any]) -> list[str]:
    """Problems between options of a complete settings mapping, worded as sd-scripts' failure would be fixed."""
    problems = []
    if s["sdpa"] and s["xformers"]:
        problems.append("sdpa and xformers: choose one attention (set the other to false)")
    if s["max_train_epochs"] is None and s["max_train_steps"] is None:
        problems.append("max_train_epochs and max_train_steps: set one of them")
    lycoris_only = [n for n in ("algo", "use_tucker") if s[n] is not None]
    if lycoris_only and s["network_module"] != "lycoris.kohya":
        problems.append(f"{', '.join(lycoris_only)}: only network_module lycoris.kohya reads it; "
                        f"network_module is {s['network_module']}")
    if s["network_module"] == "lycoris.kohya" and s["algo"] is None:
        problems.append(f"algo: lycoris.kohya needs one of {', '.join(LYCORIS_ALGOS)}")
    if s["lr_scheduler"] == "constant" and s["lr_warmup_steps"]:
        problems.append(f"lr_warmup_steps: the constant scheduler takes no warm-up (got {s['lr_warmup_steps']}); "
                        "set 0 or use constant_with_warmup")
    if s["enable_bucket"]:
        problems += _bucket_problems(s)
    return problems


def _bucket_problems(s: Mapping[str, Any]) -> list[str]:
    res, lo, hi, step = s["resolution"], s["min_bucket_reso"], s["max_bucket_reso"], s["bucket_reso_steps"]
    problems = []
    if lo > res:
        problems.append(f"min_bucket_reso: expected at most resolution {res}, got {lo}; lower it or set "
                        "enable_bucket=false")
    if hi < res:
        problems.append(f"max_bucket_reso: expected at least resolution {res}, got {hi}")
    for name, value in (("min_bucket_reso", lo), ("max_bucket_reso", hi)):
        if value % step:
            problems.append(f"{name}: expected a multiple of bucket_reso_steps {step}, got {value}")
    return problems


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """`["max_train_steps=4", "resolution=64"]` → `{"max_train_steps": 4, "resolution": 64}`, typed by each
    option's declaration; `none` clears an optional value. All problems are raised together."""
    return SCHEMA.parse_set(items)


def split_set(items: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--set NAME=VALUE` items as (declared options typed by their declaration, extra sd-scripts arguments).

    A NAME that is neither declared nor an old name is an extra argument for sd-scripts (e.g. tokenizer_cache_dir,
    an option newer than this table): its VALUE stays text for sd-scripts' own parser to type and check
    (extra_args.py); a NAME given more than once collects its values in a list (`network_args`, `base_weights`)."""
    declared: list[str] = []
    extra: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"{item!r}: expected NAME=VALUE, e.g. max_train_epochs=10")
        elif name in OPTION_MAP or name in ALIASES:
            declared.append(item)
        elif name in extra:
            extra[name] = [*(extra[name] if isinstance(extra[name], list) else [extra[name]]), text.strip()]
        else:
            extra[name] = text.strip()
    try:
        values = parse_set(declared)
    except InvalidOption as e:
        problems += e.problems
    if problems:
        raise InvalidOption(problems)
    return values, extra


def describe() -> list[dict[str, Any]]:
    """All options, in declaration order, as JSON-able dicts (name, type, default, range, choices, reason, …)."""
    return SCHEMA.describe()


def options_where(where: Where) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if o.where == where)


# The form's groups (the Train panel's field groups, `--help`): the declaration's groups folded into six.
FORM_GROUPS: tuple[tuple[str, str], ...] = (
    ("basics", "Basics"), ("network", "Network"), ("optimizer", "Optimizer and schedule"),
    ("dataset", "Dataset and buckets"), ("saving", "Saving and samples"), ("advanced", "Advanced"),
)
# options that also have a flag of their own on the command line (`--validation-split 0.1`), besides `--set`
FLAGS = ("validation_split",)
# the basics, in the order the panel shows them
BASICS = ("learning_rate", "network_dim", "network_alpha", "max_train_epochs", "train_batch_size", "resolution")
_FORM_GROUP = {"network": "network", "optimizer": "optimizer", "training": "advanced", "dataset": "dataset",
               "saving": "saving", "sampling": "saving", "performance": "advanced"}


def form_group(option: Option) -> str:
    """The Train panel's group of an option: the basics first, then the declaration's group folded into six."""
    return "basics" if option.name in BASICS else _FORM_GROUP.get(option.group, "advanced")


def form_groups() -> list[tuple[str, str, tuple[Option, ...]]]:
    """(group, title, its options) for the Train panel: the six groups in order, the basics in BASICS order."""
    groups = SCHEMA.grouped(form_group)
    return [(k, t, tuple(sorted(fs, key=lambda o: BASICS.index(o.name))) if k == "basics" else fs)
            for k, t, fs in groups]


SCHEMA = Schema(noun="option", fields=OPTIONS, aliases=ALIASES, combine=combination_problems, groups=FORM_GROUPS,
                example="max_train_epochs=10")

"""Extra sd-scripts arguments: any argument the selected sd-scripts accepts, beyond the declared options.

The CLI passes them through `--set NAME=VALUE` (a NAME that is not a declared option, options.split_set), the API
as the train body's `extra_args` object, the tab through its overrides box. Two checks, in this order:

1. `screen`, here, by name: arguments Train Style sets for every run (the base model, the output folder, the
   dataset, resume…) are refused with the way to set them; for the tab and the API (`local_user` False) an
   argument that names a file or folder is confined like the base model (model_path.confine_model_path for model
   files, the models/allowed folders or the project for others), one that sets or sends the output elsewhere or
   names Python code to import is refused, and a text that looks like a path is refused under any other name.
   The command line runs with its user's own rights and may name any file.
2. `check_with_sd_scripts`: sd-scripts' own parser (`setup_parser()` of the run's training script, run with the
   trainer's python in its folder) types every value and names the unknown ones, with the closest names it has.
   The answer is cached per interpreter, script and arguments.

The checked values go into an `[extra]` section of args.toml (config.build_args_config) under sd-scripts' names
(`dest`), since sd-scripts reads that file's keys as its namespace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import procs
from ..errors import LorakitError, PathNotAllowed
from ..fsutil import atomic_write_json, read_json
from ..host import Host
from ..paths import readable_name, resolve_inside
from . import options as opts
from .environment import TrainerEnvironment, last_json
from .model_path import confine_model_path

log = logging.getLogger(__name__)

MAX_EXTRA_ARGS = 64
MAX_TEXT = 4096
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")

# Set by Train Style for every run: refused from everyone, with the way to set them.
MANAGED: Mapping[str, str] = {
    "pretrained_model_name_or_path": "choose the base model (--base-model, base_model)",
    "output_dir": "a run writes into its own folder, where Train Style finds, shows and registers its files",
    "output_name": "use the output name (--output-name, output_name)",
    "config_file": "Train Style writes the arguments file from the settings",
    "dataset_config": "Train Style writes the dataset file from the project's concepts",
    "train_data_dir": "the images come from the project's concepts (its dataset file)",
    "reg_data_dir": "regularisation images come from the project's reg sets (its dataset file)",
    "in_json": "the images come from the project's concepts (its dataset file)",
    "resume": "press Resume on a stopped run (`run resume`): it picks the newest complete state",
    "skip_until_initial_step": "Resume sets it",
    "save_model_as": "runs save .safetensors, the format Train Style registers and reads safely",
    "output_config": "it writes the arguments to a file and exits without training",
    "caption_extension": "set the project's caption extension",
    "caption_extention": "set the project's caption extension",
}
# Model files sd-scripts loads (a name without .safetensors is unpickled): confined like the base model.
MODEL_ARGS = frozenset({"vae", "network_weights", "base_weights"})
# Other files or folders sd-scripts reads.
PATH_ARGS = frozenset({"tokenizer_cache_dir", "sample_prompts", "metadata_thumbnail", "log_tracker_config",
                       "conditioning_data_dir"})
_PATH_NAME = re.compile(r"(_dirs?|_path|_file|_files|_weights|_config|_json|_or_path|_model|_thumbnail)$|path|file")
# Where the run writes or sends its output (or secrets for that): not from the tab or the API.
OUTPUT_ARGS = frozenset({"logging_dir", "log_prefix", "console_log_file", "offload_optimizer_nvme_path",
                         "offload_param_nvme_path", "log_with", "log_tracker_name", "wandb_api_key", "wandb_run_name",
                         "huggingface_repo_id", "huggingface_repo_type", "huggingface_path_in_repo",
                         "huggingface_token", "huggingface_repo_visibility", "save_state_to_huggingface",
                         "resume_from_huggingface", "async_upload"})
# A dotted Python name sd-scripts imports.
CODE_ARGS = frozenset({"dataset_class", "lr_scheduler_type"})
Value = Any  # str | int | float | bool, or a list of those


@dataclass(frozen=True)
class Screened:
    """Extra arguments after `screen`: the values to check (paths confined or made absolute), the refusals and the
    warnings (a local user's pickle), each naming its argument."""

    values: dict[str, Value] = field(default_factory=dict)
    refused: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checked:
    """sd-scripts' answer: typed values by its names (`dest`), unknown arguments and invalid values."""

    values: dict[str, Value] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()


def screen(extra: Mapping[str, Any], *, host: Host, project_root: Path, local_user: bool,
           taken: Iterable[str] = ()) -> Screened:
    """Check extra arguments by name before anything opens a file: see the module's docstring. `taken`: keys this
    run already sets otherwise (e.g. base_weights of a two-stage run's stage 2)."""
    if not isinstance(extra, Mapping):
        return Screened(refused=("extra_args: expected an object of NAME: value",))
    if len(extra) > MAX_EXTRA_ARGS:
        return Screened(refused=(f"extra_args: at most {MAX_EXTRA_ARGS} arguments, got {len(extra)}",))
    values: dict[str, Value] = {}
    refused: list[str] = []
    warnings: list[str] = []
    taken = set(taken)
    for name, value in extra.items():
        try:
            values[name] = _screen_one(str(name), value, host=host, project_root=project_root,
                                       local_user=local_user, taken=taken, warnings=warnings)
        except _Refused as e:
            refused.append(str(e))
    return Screened(values=values, refused=tuple(refused), warnings=tuple(warnings))


class _Refused(Exception):
    pass


def _screen_one(name: str, value: Any, *, host: Host, project_root: Path, local_user: bool, taken: set[str],
                warnings: list[str]) -> Value:
    shown = readable_name(name)[:80]
    if not NAME.fullmatch(name):
        raise _Refused(f"{shown}: not an argument name (letters, digits and _, as sd-scripts spells them)")
    if name in opts.OPTION_MAP or name in opts.ALIASES:
        raise _Refused(f"{name}: a Train Style option, not an extra argument: set it with the overrides "
                       "(--set, overrides), where it is checked")
    if name in MANAGED:
        raise _Refused(f"{name}: set by Train Style for every run; {MANAGED[name]}")
    if name in taken:
        raise _Refused(f"{name}: set by Train Style for this run (a two-stage run's stage 2 merges stage 1's LoRA)")
    items = _items(name, value)
    if not local_user and name in OUTPUT_ARGS:
        raise _Refused(f"{name}: sets where the run writes or sends its output; only the command line may set it")
    if not local_user and name in CODE_ARGS:
        raise _Refused(f"{name}: names Python code for sd-scripts to import; only the command line may set it")
    if name in MODEL_ARGS:
        items = [_model(name, v, host=host, project_root=project_root, local_user=local_user, warnings=warnings)
                 for v in items]
    elif name in PATH_ARGS or _PATH_NAME.search(name):
        items = [_path(name, v, host=host, project_root=project_root, local_user=local_user) for v in items]
    elif not local_user:
        for v in items:
            if isinstance(v, str) and ("/" in v or "\\" in v or v.strip().startswith("~")):
                raise _Refused(f"{name}: {readable_name(v)[:80]!s} looks like a path; the tab and the API take "
                               "paths only for the arguments known to name files, and only inside the allowed "
                               "folders")
    return items if isinstance(value, list) else items[0]


def _items(name: str, value: Any) -> list:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise _Refused(f"{name}: an empty list")
    for v in items:
        if not isinstance(v, (str, int, float, bool)) or (isinstance(v, float) and v != v):
            raise _Refused(f"{name}: expected a text, a number, true/false or a list of those, got "
                           f"{type(v).__name__}")
        if isinstance(v, str) and (len(v) > MAX_TEXT or "\x00" in v or "\n" in v or "\r" in v):
            raise _Refused(f"{name}: a value must be one line of at most {MAX_TEXT} characters")
    return list(items)


def _model(name: str, value: Value, *, host: Host, project_root: Path, local_user: bool,
           warnings: list[str]) -> str:
    if local_user and not Path(os.path.expanduser(str(value))).exists():
        return str(value)  # not a file here: a Hugging Face name, which sd-scripts resolves itself
    try:
        allowed = confine_model_path(host, str(value), local_user=local_user, what=name, extra_roots=(project_root,))
    except PathNotAllowed as e:
        raise _Refused(f"{name}: {e}") from None
    if allowed.warning:
        warnings.append(allowed.warning)
    return str(allowed.path)


def _path(name: str, value: Value, *, host: Host, project_root: Path, local_user: bool) -> str:
    raw = str(value)
    if local_user:
        path = Path(os.path.expanduser(raw))
        return str(path.absolute()) if path.exists() else raw  # sd-scripts runs in its own folder
    try:
        return str(resolve_inside(raw, [Path(host.models_dir()), *host.allowed_roots(), project_root]))
    except PathNotAllowed as e:
        raise _Refused(f"{name}: {e}") from None


# --- sd-scripts' own parser ----------------------------------------------------------------------------------
PARSE_PROBE = r"""# lorakit extra-args probe
import argparse, contextlib, difflib, importlib, json, sys
script, items = sys.argv[1], json.loads(sys.argv[2])
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
out = {"values": {}, "unknown": {}, "errors": {}}
with contextlib.redirect_stdout(sys.stderr):
    parser = importlib.import_module(script[:-3]).setup_parser()
options = parser._option_string_actions
for action in parser._actions:
    action.required = False
def fail(message):
    raise ValueError(message)
parser.error = fail
for name, value in items.items():
    action = options.get("--" + name)
    if action is None:
        out["unknown"][name] = [o[2:] for o in difflib.get_close_matches("--" + name, list(options), n=2,
                                                                        cutoff=0.75)]
        continue
    try:
        if action.nargs == 0:
            word = str(value).strip().lower()
            if value is True or word in TRUE:
                result = action.const if action.const is not None else True
            elif value is False or word in FALSE:
                result = action.default
            else:
                raise ValueError(f"argument --{name}: a switch, expected true or false, got {value!r}")
        else:
            if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
                raise ValueError(f"argument --{name}: expects a value, not true/false")
            many = action.nargs in ("*", "+") or isinstance(action.nargs, int)
            if isinstance(value, list) and not many:
                raise ValueError(f"argument --{name}: takes one value, got a list")
            argv = ["--" + name, *map(str, value)] if isinstance(value, list) else (
                ["--" + name, str(value)] if many else [f"--{name}={value}"])
            with contextlib.redirect_stdout(sys.stderr):
                ns, rest = parser.parse_known_args(argv, argparse.Namespace())
            if rest:
                raise ValueError(f"argument --{name}: could not use {' '.join(rest)}")
            result = getattr(ns, action.dest)
        out["values"][name] = {"dest": action.dest, "value": result}
    except (ValueError, TypeError, argparse.ArgumentError) as e:
        out["errors"][name] = str(e)
print("LORAKIT_JSON " + json.dumps(out, default=str))
"""


def check_with_sd_scripts(trainer: TrainerEnvironment, script: str, values: Mapping[str, Value], *,
                          cache_file: Optional[Path] = None, timeout_s: float = 300) -> Checked:
    """`values` typed and checked by sd-scripts' parser for `script` (train_network.py, …) in the trainer's python.
    Raises LorakitError when that parser cannot run."""
    if not values:
        return Checked()
    key = _cache_key(trainer, script, values)
    cache = _read_cache(cache_file)
    answer = cache.get(key) if key else None
    if not isinstance(answer, dict):
        answer = _run_probe(trainer, script, values, timeout_s=timeout_s)
        if key and cache_file is not None:
            cache[key] = answer
            _write_cache(cache_file, cache)
    return _checked(answer, values)


def _run_probe(trainer: TrainerEnvironment, script: str, values: Mapping[str, Value], *, timeout_s: float) -> dict:
    env = {**trainer.subprocess_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        proc = procs.run_captured([trainer.python, "-c", PARSE_PROBE, script, json.dumps(dict(values))],
                                  cwd=trainer.sd_scripts_dir, env=env, timeout_s=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LorakitError(f"sd-scripts' argument parser could not run to check the extra arguments: {e}") from e
    answer = last_json(proc.stdout)
    if answer is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise LorakitError(f"sd-scripts' argument parser ({script} in {trainer.sd_scripts_dir}) failed while "
                           f"checking the extra arguments:\n{tail}")
    return answer


def _checked(answer: dict, given: Mapping[str, Value]) -> Checked:
    values: dict[str, Value] = {}
    invalid = [f"{name}: {_argparse_text(str(msg))}" for name, msg in (answer.get("errors") or {}).items()]
    for name, found in (answer.get("values") or {}).items():
        dest, value = found.get("dest") or name, found.get("value")
        if dest != name and (dest in MANAGED or dest in opts.OPTION_MAP):
            invalid.append(f"{name}: sd-scripts reads it as {dest}, which "
                           + (f"is set by Train Style ({MANAGED[dest]})" if dest in MANAGED else
                              "is a Train Style option: set it with the overrides"))
        elif value is not None:
            values[dest] = value
    unknown = []
    for name, close in (answer.get("unknown") or {}).items():
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        unknown.append(f"unknown sd-scripts argument {name!r}{hint}")
    return Checked(values=values, unknown=tuple(unknown), invalid=tuple(invalid))


def _argparse_text(message: str) -> str:
    """argparse's `argument --x: invalid float value: 'y'` without the repeated name."""
    return message.split(": ", 1)[1] if message.startswith("argument --") and ": " in message else message


def typed_without_sd_scripts(values: Mapping[str, Value]) -> dict[str, Value]:
    """Text values typed as TOML would read them (numbers, true/false), for a dry run whose trainer cannot check
    them; values that are already typed stay."""
    def one(v: Value) -> Value:
        if not isinstance(v, str):
            return v
        word = v.strip().lower()
        if word in ("true", "false"):
            return word == "true"
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v

    return {k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in values.items()}


def _cache_key(trainer: TrainerEnvironment, script: str, values: Mapping[str, Value]) -> Optional[str]:
    try:
        path = trainer.sd_scripts_dir / script
        stamp = [os.path.abspath(trainer.python), os.stat(trainer.python).st_mtime_ns, os.path.abspath(path),
                 os.stat(path).st_mtime_ns]
    except OSError:
        return None
    raw = json.dumps([stamp, script, dict(values)], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _read_cache(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    try:
        data = read_json(path, {})
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, cache: dict) -> None:
    keep = dict(list(cache.items())[-100:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, keep)
    except OSError as e:
        log.warning("Train Style: cannot keep the checked extra arguments in %s: %s", path, e)

"""Training on another machine: a run exported as a self-contained bundle, and its LoRAs imported back.

A bundle is one .zip holding a folder `<project>-<run>/`:

    bundle.json          what it is: project, run, output name, training script, base model's file name, meta
    README.md            how to run it and bring the LoRAs back
    train.sh, train.ps1  the launch scripts: `sh train.sh SD_SCRIPTS_DIR BASE_MODEL [extra sd-scripts args]`
    args.toml            the run's arguments with paths relative to the bundle folder (the scripts cd there)
    dataset.toml         the run's dataset with `image_dir = "dataset/10_art"`, …
    sample_prompts.txt   when the run samples
    dataset/…, reg/…     the images and captions of exactly the folders dataset.toml uses
    extra/…              other files the arguments name (e.g. base_weights of a differential run)
    model/<file>         the base model, only with `include_model` (it is several GB)
    output/              where sd-scripts writes the LoRAs, samples and train.log

args.toml names the base model `model/<file name>`; the scripts pass the real path with
`--pretrained_model_name_or_path`, which wins over the config file in sd-scripts. Importing reads
`output/` of a trained bundle (the folder, or a zip of it) into a new run of a project.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Optional, Union

import tomli_w

from .. import clock
from ..errors import LorakitError
from ..fsutil import _atomic_file, atomic_write_json, atomic_write_text, read_json
from ..paths import check_name
from ..project import Project
from ..tomlio import read_toml
from .config import ARGS_FILE, DATASET_FILE, PROMPTS_FILE, script_for
from .progress import LogReader
from .runner import Runs, RunSnapshot, meta_problems
from .steps import SD_SCRIPTS_IMAGE_SUFFIXES

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
RECORDS = "bundle"  # where an imported run keeps the bundle's args.toml, dataset.toml, … (for the record)
OUTPUT = "output"
# keys whose paths only mean something on this machine: dropped (the scripts give the tokenizers by variable)
_DROPPED = ("tokenizer_cache_dir", "resume", "skip_until_initial_step")
_STORED = {".safetensors", ".ckpt", ".png", ".jpg", ".jpeg", ".webp", ".zip"}  # compressed already
_MAX_ENTRY = 64 * 2**30  # a zip entry claiming more than this is refused (zip bomb)
# what import reads back, each kind capped (a LoRA of a few GiB is already large; a train.log of sd-scripts is a few
# MB even for long runs), all of it together, and how far a non-tiny entry may expand (deflate reaches ~1000:1 on
# runs of one byte; logs, images and weights compress below 10:1)
_LIMITS = {"lora": 8 * 2**30, "sample": 64 * 2**20, "log": 64 * 2**20, "record": 16 * 2**20}
_MAX_TOTAL = 64 * 2**30
_MAX_RATIO = 100
_RATIO_FROM = 2**20  # entries up to this size may compress as well as they like
_MAX_DEPTH = 16  # nesting of bundle.json

Source = Union[Path, bytes]


@dataclass
class _Bundle:
    """The bundle's files before they are zipped: arcname (relative, POSIX) → a file to copy or the bytes."""

    top: str  # the one folder everything is in
    entries: dict[str, Source] = field(default_factory=dict)
    executable: set[str] = field(default_factory=set)

    def add(self, arcname: str, source: Source, *, executable: bool = False) -> None:
        if arcname in self.entries:
            raise LorakitError(f"Two files of the bundle would both be {arcname}.")
        self.entries[arcname] = source
        if executable:
            self.executable.add(arcname)

    def unique(self, folder: str, name: str) -> str:
        stem, suffix = os.path.splitext(name)
        arcname, n = f"{folder}/{name}", 1
        while arcname in self.entries:
            n += 1
            arcname = f"{folder}/{stem}-{n}{suffix}"
        return arcname


# --- export --------------------------------------------------------------------------------------------------------
def default_bundle_path(project: Project, run_id: str) -> Path:
    return project.root / "exports" / f"{_slug(project.name)}-{run_id}.zip"


def export_run(project: Project, run_id: str, *, out: Optional[Path] = None, include_model: bool = False) -> Path:
    """Write the bundle of run `run_id` to `out` (a .zip file, or a folder to put it in; default: the project's
    exports/ folder), atomically; return its path."""
    snap = Runs(project).get(run_id)
    bundle = build_bundle(project, snap, include_model=include_model)
    path = Path(out).expanduser() if out else default_bundle_path(project, snap.id)
    if path.is_dir():
        path = path / f"{bundle.top}.zip"
    if path.suffix.lower() != ".zip":
        raise LorakitError(f"The bundle is a .zip file: {path} does not end with .zip.")
    with _atomic_file(path) as f:
        _write_zip(f, bundle)
    return path.resolve()


def build_bundle(project: Project, snap: RunSnapshot, *, include_model: bool = False) -> _Bundle:
    run_dir = snap.dir
    for name in (ARGS_FILE, DATASET_FILE):
        if not (run_dir / name).is_file():
            raise LorakitError(f"Run {snap.id} has no {name}, so it cannot be exported (it was not made by Train "
                               "Style's Train, or by an older version).")
    args, dataset = read_toml(run_dir / ARGS_FILE), read_toml(run_dir / DATASET_FILE)
    flat = {k: v for section in args.values() if isinstance(section, dict) for k, v in section.items()}
    if not flat.get("output_name"):
        raise LorakitError(f"Run {snap.id}'s {ARGS_FILE} names no output_name.")
    output_name = check_name(str(flat["output_name"]), what="output name")
    bundle = _Bundle(top=f"{_slug(project.name)}-{snap.id}")
    # 1. the dataset: every subset's folder, its images and their captions
    default_ext = dataset.get("general", {}).get("caption_extension") or flat.get("caption_extension") or ".caption"
    for d in dataset.get("datasets", []):
        for subset in d.get("subsets", []):
            folder = Path(subset["image_dir"])
            rel = _dataset_folder(project, folder, bundle)
            n = _add_images(bundle, folder, rel, subset.get("caption_extension") or
                            d.get("caption_extension") or default_ext)
            if not n:
                raise LorakitError(f"{folder} (in run {snap.id}'s {DATASET_FILE}) holds no images any more.")
            subset["image_dir"] = rel
    _check_relative(dataset, DATASET_FILE)
    # 2. the arguments, with the bundle's paths
    model = Path(str(flat.get("pretrained_model_name_or_path", "")))
    model_name = model.name if model.name else "model.safetensors"
    for section in args.values():
        if not isinstance(section, dict):
            continue
        for key in [k for k in section if k in _DROPPED]:
            del section[key]
        for key, value in list(section.items()):
            if key == "pretrained_model_name_or_path":
                section[key] = f"model/{model_name}"
            elif key == "dataset_config":
                section[key] = DATASET_FILE
            elif key == "output_dir":
                section[key] = OUTPUT
            elif key == "logging_dir":
                section[key] = f"{OUTPUT}/logs"
            elif key == "sample_prompts":
                if not (run_dir / PROMPTS_FILE).is_file():
                    raise LorakitError(f"Run {snap.id} samples but its {PROMPTS_FILE} is missing.")
                section[key] = PROMPTS_FILE
                bundle.add(PROMPTS_FILE, run_dir / PROMPTS_FILE)
            else:
                section[key] = _carry(bundle, key, value)
    _check_relative(args, ARGS_FILE)
    if include_model:
        if not model.is_file():
            raise LorakitError(f"The base model {model} is not a file on this machine, so it cannot be included.")
        bundle.add(f"model/{model_name}", model)
    bundle.add(ARGS_FILE, tomli_w.dumps(args).encode())
    bundle.add(DATASET_FILE, tomli_w.dumps(dataset).encode())
    # 3. the launch scripts, the manifest and the README
    script = _script(run_dir, snap)
    accelerate = _accelerate_args(run_dir)
    manifest = {"format": BUNDLE_FORMAT, "project": project.name, "run": snap.id, "folder": bundle.top,
                "output_name": output_name,
                "script": script, "base_model": model_name, "base_model_included": include_model,
                "accelerate_args": accelerate, "created": clock.now_iso(), "meta": snap.meta}
    bundle.add(MANIFEST, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    bundle.add("train.sh", train_sh(manifest).encode(), executable=True)
    bundle.add("train.ps1", train_ps1(manifest).encode())
    bundle.add("README.md", readme(manifest, flat).encode())
    return bundle


def _dataset_folder(project: Project, folder: Path, bundle: _Bundle) -> str:
    """`dataset/10_art` or `reg/1_person` (the folder's place in the project), else `dataset/extra/<name>`."""
    try:
        rel = folder.resolve().relative_to(project.root.resolve()).as_posix()
    except ValueError:
        rel = ""
    if not rel or rel.startswith(".") or "/" not in rel:
        rel = bundle.unique("dataset/extra", folder.name or "images")
    return rel


def _add_images(bundle: _Bundle, folder: Path, rel: str, caption_ext: str) -> int:
    """The images sd-scripts would read in `folder` (not its sub-folders) and their captions."""
    if not folder.is_dir():
        raise LorakitError(f"The dataset folder {folder} does not exist any more.")
    suffixes = SD_SCRIPTS_IMAGE_SUFFIXES | {s.upper() for s in SD_SCRIPTS_IMAGE_SUFFIXES}
    count = 0
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix not in suffixes:
            continue
        _check_member_name(p.name)
        bundle.add(f"{rel}/{p.name}", p)
        count += 1
        caption = p.with_name(p.stem + caption_ext)
        if caption.is_file():
            bundle.add(f"{rel}/{caption.name}", caption)
    return count


def _carry(bundle: _Bundle, key: str, value: Any) -> Any:
    """An argument's value with every absolute file path in it copied into `extra/` and made relative."""
    if isinstance(value, list):
        return [_carry(bundle, key, v) for v in value]
    if not isinstance(value, str) or not _absolute(value):
        return value
    path = Path(value)
    if path.is_file():
        arcname = bundle.unique("extra", path.name)
        bundle.add(arcname, path)
        return arcname
    what = "is a folder (a bundle carries files only)" if path.is_dir() else "does not exist"
    raise LorakitError(f"The argument {key} names {value}, which {what}; the bundle cannot carry it.")


def _check_relative(data: Any, what: str) -> None:
    """No absolute path may stay in a bundle's TOML (it would mean nothing on the other machine)."""
    if isinstance(data, dict):
        for v in data.values():
            _check_relative(v, what)
    elif isinstance(data, list):
        for v in data:
            _check_relative(v, what)
    elif isinstance(data, str) and _absolute(data):
        raise LorakitError(f"{what} of the bundle would keep the absolute path {data}.")


def _absolute(text: str) -> bool:
    return text.startswith("/") or bool(re.match(r"^[A-Za-z]:[\\/]", text)) or text.startswith("\\\\")


def _script(run_dir: Path, snap: RunSnapshot) -> str:
    argv = (read_json(run_dir / "launch.json", default={}) or {}).get("argv", [])
    for a in argv:
        if Path(a).name.endswith("train_network.py"):
            return Path(a).name
    return script_for(snap.meta.get("base_arch") or "SD1")


def _accelerate_args(run_dir: Path) -> list[str]:
    """`accelerate launch`'s options of the run (what stands between the module and the script)."""
    argv = (read_json(run_dir / "launch.json", default={}) or {}).get("argv", [])
    if "accelerate.commands.launch" not in argv:
        return ["--num_cpu_threads_per_process", "2"]
    rest = argv[argv.index("accelerate.commands.launch") + 1:]
    end = next((i for i, a in enumerate(rest) if a.endswith(".py")), len(rest))
    return [a for a in rest[:end] if re.fullmatch(r"[A-Za-z0-9_.,:=\[\]-]+", a)]


def _write_zip(f: BinaryIO, bundle: _Bundle) -> None:
    top = bundle.top
    with zipfile.ZipFile(f, "w", allowZip64=True) as zf:
        folder = zipfile.ZipInfo(f"{top}/{OUTPUT}/", date_time=clock.zip_date_time())
        folder.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
        zf.writestr(folder, b"")
        for arcname in sorted(bundle.entries):
            source = bundle.entries[arcname]
            mode = 0o755 if arcname in bundle.executable else 0o644
            compress = zipfile.ZIP_STORED if Path(arcname).suffix.lower() in _STORED else zipfile.ZIP_DEFLATED
            if isinstance(source, bytes):
                info = zipfile.ZipInfo(f"{top}/{arcname}", date_time=clock.zip_date_time())
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = compress
                zf.writestr(info, source)
            else:
                info = zipfile.ZipInfo.from_file(source, f"{top}/{arcname}")
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = compress
                with open(source, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)


# --- the scripts and the README -------------------------------------------------------------------------------------
def _comment(text: Any) -> str:
    return re.sub(r"[\r\n]+", " ", str(text))


def train_sh(m: dict) -> str:
    """POSIX sh: check the sd-scripts folder and the base model, then run accelerate in the bundle folder."""
    q = shlex.quote
    name, acc = m["output_name"], " ".join(m["accelerate_args"])
    return f"""#!/bin/sh
# Train Style bundle: LoRA {_comment(name)} of project {_comment(m['project'])} (run {m['run']}).
#
#   sh train.sh SD_SCRIPTS_DIR [BASE_MODEL] [extra sd-scripts arguments...]
#
# SD_SCRIPTS_DIR  a checkout of kohya-ss/sd-scripts with its environment installed
# BASE_MODEL      the base checkpoint {_comment(m['base_model'])}: the file, or the folder holding it
#                 (optional when the bundle has model/{_comment(m['base_model'])})
# Environment: SD_SCRIPTS and BASE_MODEL instead of the arguments; PYTHON (default: SD_SCRIPTS_DIR/venv/bin/python,
# else python3); ACCELERATE_ARGS (default: {_comment(acc)}); TOKENIZER_CACHE_DIR (offline tokenizers).
# The LoRAs, samples and train.log land in output/ beside this script.
set -eu
set -f

SCRIPT={q(m['script'])}
MODEL_NAME={q(m['base_model'])}
OUTPUT_NAME={q(name)}
DEFAULT_ACCELERATE_ARGS={q(acc)}

HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
usage() {{
  echo "usage: sh train.sh SD_SCRIPTS_DIR [BASE_MODEL] [extra sd-scripts arguments...]" >&2
  exit 2
}}
SD_SCRIPTS=${{1:-${{SD_SCRIPTS:-}}}}
if [ $# -gt 0 ]; then shift; fi
MODEL=${{1:-${{BASE_MODEL:-}}}}
if [ $# -gt 0 ]; then shift; fi
[ -n "$SD_SCRIPTS" ] || usage
if [ ! -f "$SD_SCRIPTS/$SCRIPT" ]; then
  echo "error: $SD_SCRIPTS is not an sd-scripts folder: it has no $SCRIPT." >&2
  exit 2
fi
SD_SCRIPTS=$(CDPATH= cd -- "$SD_SCRIPTS" && pwd)
if [ -z "$MODEL" ] && [ -f "$HERE/model/$MODEL_NAME" ]; then MODEL="$HERE/model/$MODEL_NAME"; fi
if [ -z "$MODEL" ]; then
  echo "error: give the base model $MODEL_NAME (the file or its folder) as the second argument or in BASE_MODEL." >&2
  exit 2
fi
if [ -d "$MODEL" ]; then MODEL="$MODEL/$MODEL_NAME"; fi
if [ ! -f "$MODEL" ]; then
  echo "error: the base model $MODEL does not exist." >&2
  exit 2
fi
case $MODEL in /*) ;; *) MODEL="$(pwd)/$MODEL" ;; esac
if [ -n "${{TOKENIZER_CACHE_DIR:-}}" ]; then
  case $TOKENIZER_CACHE_DIR in /*) ;; *) TOKENIZER_CACHE_DIR="$(pwd)/$TOKENIZER_CACHE_DIR" ;; esac
  set -- "$@" --tokenizer_cache_dir "$TOKENIZER_CACHE_DIR"
fi
if [ -z "${{PYTHON:-}}" ]; then
  if [ -x "$SD_SCRIPTS/venv/bin/python" ]; then PYTHON="$SD_SCRIPTS/venv/bin/python"
  elif command -v python3 >/dev/null 2>&1; then PYTHON=python3
  else PYTHON=python
  fi
fi
ACCELERATE_ARGS=${{ACCELERATE_ARGS-$DEFAULT_ACCELERATE_ARGS}}

cd "$HERE"
mkdir -p output
echo "train.sh: $PYTHON -m accelerate.commands.launch $ACCELERATE_ARGS $SD_SCRIPTS/$SCRIPT" \
  "--config_file args.toml --dataset_config dataset.toml --pretrained_model_name_or_path $MODEL $*" >&2
# shellcheck disable=SC2086  # ACCELERATE_ARGS is a list of words
{{
  rc=0
  "$PYTHON" -m accelerate.commands.launch $ACCELERATE_ARGS "$SD_SCRIPTS/$SCRIPT" --config_file args.toml \\
    --dataset_config dataset.toml --pretrained_model_name_or_path "$MODEL" "$@" 2>&1 || rc=$?
  echo "$rc" > output/.exit-code
}} | tee -a output/train.log
rc=$(cat output/.exit-code)
rm -f output/.exit-code
if [ "$rc" -ne 0 ]; then
  echo "train.sh: training failed (exit code $rc); see output/train.log." >&2
  exit "$rc"
fi
if [ ! -f "output/$OUTPUT_NAME.safetensors" ]; then
  echo "train.sh: sd-scripts ended without saving output/$OUTPUT_NAME.safetensors; see output/train.log." >&2
  exit 1
fi
echo "train.sh: done: output/$OUTPUT_NAME.safetensors. Bring this folder (or a zip of it) back and run" >&2
echo "  python -m lib_lorakit run import PROJECT <this folder>" >&2
"""


def _ps(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def train_ps1(m: dict) -> str:
    """The same for Windows PowerShell (output on the console; no train.log)."""
    acc = ", ".join(_ps(a) for a in m["accelerate_args"])
    return f"""# Train Style bundle: LoRA {_comment(m['output_name'])} of project {_comment(m['project'])}
# (run {m['run']}).
#   powershell -ExecutionPolicy Bypass -File train.ps1 SD_SCRIPTS_DIR [BASE_MODEL] [extra sd-scripts arguments...]
# Environment: PYTHON, ACCELERATE_ARGS, TOKENIZER_CACHE_DIR as in train.sh.
param(
  [Parameter(Mandatory = $true)][string]$SdScripts,
  [string]$BaseModel = "",
  [Parameter(ValueFromRemainingArguments = $true)][string[]]$Extra = @()
)
$Script = {_ps(m['script'])}
$ModelName = {_ps(m['base_model'])}
$OutputName = {_ps(m['output_name'])}
$Here = $PSScriptRoot
if (-not (Test-Path -LiteralPath (Join-Path $SdScripts $Script) -PathType Leaf)) {{
  Write-Host "error: $SdScripts is not an sd-scripts folder: it has no $Script."; exit 2
}}
$SdScripts = (Resolve-Path -LiteralPath $SdScripts).Path
if (-not $BaseModel) {{
  $Bundled = Join-Path (Join-Path $Here "model") $ModelName
  if (Test-Path -LiteralPath $Bundled -PathType Leaf) {{ $BaseModel = $Bundled }}
  else {{
    Write-Host "error: give the base model $ModelName (the file or its folder) as the second argument."; exit 2
  }}
}}
if (Test-Path -LiteralPath $BaseModel -PathType Container) {{ $BaseModel = Join-Path $BaseModel $ModelName }}
if (-not (Test-Path -LiteralPath $BaseModel -PathType Leaf)) {{
  Write-Host "error: the base model $BaseModel does not exist."; exit 2
}}
$BaseModel = (Resolve-Path -LiteralPath $BaseModel).Path
if ($env:TOKENIZER_CACHE_DIR) {{ $Extra += @("--tokenizer_cache_dir", $env:TOKENIZER_CACHE_DIR) }}
if ($env:PYTHON) {{ $Python = $env:PYTHON }}
elseif (Test-Path -LiteralPath (Join-Path $SdScripts "venv\\Scripts\\python.exe")) {{
  $Python = Join-Path $SdScripts "venv\\Scripts\\python.exe"
}}
else {{ $Python = "python" }}
if ($null -ne $env:ACCELERATE_ARGS) {{
  $AccelerateArgs = @($env:ACCELERATE_ARGS -split '\\s+' | Where-Object {{ $_ }})
}}
else {{ $AccelerateArgs = @({acc}) }}
Set-Location -LiteralPath $Here
New-Item -ItemType Directory -Force -Path "output" | Out-Null
& $Python -m accelerate.commands.launch @AccelerateArgs (Join-Path $SdScripts $Script) --config_file args.toml `
  --dataset_config dataset.toml --pretrained_model_name_or_path $BaseModel @Extra
$rc = $LASTEXITCODE
if ($rc -ne 0) {{ Write-Host "training failed (exit code $rc)"; exit $rc }}
if (-not (Test-Path -LiteralPath (Join-Path "output" "$OutputName.safetensors"))) {{
  Write-Host "sd-scripts ended without saving output\\$OutputName.safetensors"; exit 1
}}
Write-Host "done: output\\$OutputName.safetensors. Bring this folder back and run:"
Write-Host "  python -m lib_lorakit run import PROJECT <this folder>"
"""


def readme(m: dict, args: dict) -> str:
    meta = m.get("meta") or {}
    steps = meta.get("steps") or {}
    words = ", ".join(meta.get("trigger_words") or []) or "none"
    model_line = (f"The base model is in `model/{m['base_model']}`; the second argument may be left out."
                  if m["base_model_included"] else
                  f"The base model is **not** in the bundle: copy `{m['base_model']}` (the "
                  f"{meta.get('base_arch', '?')} checkpoint this run was planned on) to the training machine and "
                  "give its path.")
    return f"""# Train Style bundle: {m['output_name']}

Project **{m['project']}**, run `{m['run']}`: preset {meta.get('preset', '?')}, {steps.get('total_steps', '?')} steps,
{steps.get('train_images', '?')} training images, trigger words: {words}. Script: `{m['script']}`,
network `{args.get('network_module', '?')}`, mixed precision `{args.get('mixed_precision', '?')}`.

## What you need on the training machine

- A checkout of [kohya-ss/sd-scripts](https://github.com/kohya-ss/sd-scripts) (Train Style uses v0.10.1) with
  its environment installed (`pip install -r requirements.txt` after torch; LyCORIS presets also need
  `lycoris-lora==3.4.0`).
- {model_line}

## Train

```sh
unzip <the bundle>.zip && cd {m['folder']}
sh train.sh /path/to/sd-scripts /path/to/{m['base_model']}
```

The second argument may also be the folder that holds `{m['base_model']}`. Anything after it goes to
`{m['script']}` (e.g. `--max_data_loader_n_workers 4`; the command line wins over `args.toml`). On Windows:
`powershell -ExecutionPolicy Bypass -File train.ps1 C:\\sd-scripts C:\\models\\{m['base_model']}`.

Environment variables: `PYTHON` (default: `<sd-scripts>/venv/bin/python`, else `python3`), `TOKENIZER_CACHE_DIR`
(sd-scripts' offline tokenizers), `ACCELERATE_ARGS` (default: `{' '.join(m['accelerate_args'])}`). For several
GPUs: `ACCELERATE_ARGS="--multi_gpu --num_processes 2 --gpu_ids 0,1"`; for several machines run the bundle on
each with `--num_machines M --machine_rank R --main_process_ip MAIN --main_process_port 29500` (`--num_processes`
counts the processes of all machines); only the main machine (rank 0) saves the LoRAs.

All paths in `args.toml` and `dataset.toml` are relative to this folder (the scripts run there):
images in `dataset/` (and `reg/`), results in `output/`.

## Bring the LoRAs back

When `train.sh` has finished, `output/` holds `{m['output_name']}.safetensors` (and the epoch/step saves, samples
and `train.log`). Copy the whole folder back (or zip it), then on the Train Style machine:

```sh
python -m lib_lorakit run import {m['project']} /path/to/{m['folder']}
python -m lib_lorakit register {m['project']} <the new run id it printed>
```

(or `POST /train-style/v1/projects/{{name}}/runs/import` with `{{"path": "…"}}`). Only the LoRA files, the samples
and `train.log` are read back.
"""


# --- import --------------------------------------------------------------------------------------------------------
class _Reader:
    """The members of a bundle (a zip or a folder), by relative POSIX name, checked for escapes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.zip: Optional[zipfile.ZipFile] = None
        self.members: dict[str, Any] = {}
        if self.path.is_dir():
            root = self.path.resolve()
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
                for fn in filenames:
                    p = Path(dirpath) / fn
                    if p.is_symlink() or not p.is_file():
                        continue
                    self.members[p.relative_to(root).as_posix()] = p
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self.zip = zipfile.ZipFile(self.path)
            for info in self.zip.infolist():
                name = info.filename
                _check_zip_name(name)
                if info.is_dir():
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise LorakitError(f"The bundle's entry {name} is a symbolic link; bundles hold plain files.")
                if info.file_size > _MAX_ENTRY:
                    raise LorakitError(f"The bundle's entry {name} claims {info.file_size} bytes; refused.")
                if name in self.members:
                    raise LorakitError(f"The bundle holds {name} twice.")
                self.members[name] = info
        elif self.path.exists():
            raise LorakitError(f"{self.path} is neither a folder nor a .zip file.")
        else:
            raise LorakitError(f"{self.path} does not exist.")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()

    def open(self, name: str) -> BinaryIO:
        member = self.members[name]
        return open(member, "rb") if isinstance(member, Path) else self.zip.open(member)  # type: ignore[union-attr]

    def size(self, name: str) -> int:
        member = self.members[name]
        return member.stat().st_size if isinstance(member, Path) else member.file_size

    def stored_size(self, name: str) -> int:
        """The bytes the entry takes in the zip (its size in a folder)."""
        member = self.members[name]
        return member.stat().st_size if isinstance(member, Path) else member.compress_size

    def check_sizes(self, kinds: dict[str, str]) -> None:
        """Refuse, before anything is read, entries (name → kind, see _LIMITS) that are too large alone, together,
        or expand from too little (a zip bomb)."""
        total = 0
        for name, kind in kinds.items():
            size, stored = self.size(name), self.stored_size(name)
            if size > _LIMITS[kind]:
                raise LorakitError(f"The bundle's {name} would be {_mib(size)} (the limit for a {_KIND_WORDS[kind]} "
                                   f"is {_mib(_LIMITS[kind])}); nothing was imported.")
            if size > _RATIO_FROM and size > _MAX_RATIO * max(stored, 1):
                raise LorakitError(f"The bundle's {name} would expand from {_mib(stored)} to {_mib(size)}, more than "
                                   f"{_MAX_RATIO} times, as zip bombs do; nothing was imported. Zip the trained "
                                   "folder again from the files themselves.")
            total += size
        if total > _MAX_TOTAL:
            raise LorakitError(f"The bundle's files to import add up to {_mib(total)} (the limit is "
                               f"{_mib(_MAX_TOTAL)}); nothing was imported.")

    def read(self, name: str, limit: int = 16 * 2**20) -> bytes:
        if self.size(name) > limit:
            raise LorakitError(f"The bundle's {name} is too large ({self.size(name)} bytes).")
        with self.open(name) as f:
            return f.read(limit + 1)[:limit]

    def root(self) -> str:
        """'' or 'folder/': where bundle.json is (the bundle itself, or its one top folder)."""
        found = sorted(n[: -len(MANIFEST)] for n in self.members
                       if n == MANIFEST or (n.endswith("/" + MANIFEST) and n.count("/") == 1))
        if not found:
            raise LorakitError(f"{self.path} is not a Train Style bundle: it has no {MANIFEST} (at its top or in its "
                               "one folder). Import the bundle folder that train.sh ran in, or a zip of it.")
        if len(found) > 1:
            raise LorakitError(f"{self.path} holds several bundles ({', '.join(found)}); import one at a time.")
        return found[0]


def _check_zip_name(name: str) -> None:
    """Refuse entries that could land outside the folder they are extracted to (zip-slip) or are odd."""
    bad = ("\x00" in name or "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) is not None
           or any(part in ("..", ".") for part in PurePosixPath(name).parts)
           or any(ord(c) < 32 for c in name))
    if bad:
        raise LorakitError(f"The bundle holds an unsafe entry {name!r} (absolute, with '..', or with odd "
                           "characters); it was not made by Train Style or was altered. Nothing was imported.")


def _check_member_name(name: str) -> str:
    if (not name or name.startswith(".") or any(c in name for c in '/\\:*?"<>|')
            or any(ord(c) < 32 for c in name) or len(name) > 200):
        raise LorakitError(f"The file name {name!r} is not safe to carry in a bundle; rename it.")
    return name


@dataclass(frozen=True)
class _Found:
    loras: list[str]  # member names under output/
    samples: list[str]
    log: Optional[str]
    records: list[str]  # args.toml, dataset.toml, sample_prompts.txt, bundle.json


def _find(reader: _Reader, root: str, output_name: str) -> _Found:
    out = f"{root}{OUTPUT}/"
    lora = re.compile(re.escape(output_name) + r"(?:-\d{6}|-step\d{8})?\.safetensors")
    loras, samples = [], []
    for name in sorted(reader.members):
        if not name.startswith(out):
            continue
        rel = name[len(out):]
        if lora.fullmatch(rel):
            loras.append(name)
        elif rel.startswith("sample/") and rel.count("/") == 1 and rel.lower().endswith(".png"):
            _check_member_name(rel.split("/", 1)[1])
            samples.append(name)
    log = f"{out}train.log" if f"{out}train.log" in reader.members else None
    records = [f"{root}{n}" for n in (ARGS_FILE, DATASET_FILE, PROMPTS_FILE, MANIFEST)
               if f"{root}{n}" in reader.members]
    return _Found(loras=loras, samples=samples, log=log, records=records)


def _check_safetensors(reader: _Reader, name: str) -> None:
    size = reader.size(name)
    with reader.open(name) as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        ok = 2 <= n <= min(size - 8, 100 * 2**20)
        if ok:
            try:
                ok = isinstance(json.loads(f.read(n)), dict)
            except (ValueError, UnicodeDecodeError):
                ok = False
    if not ok:
        raise LorakitError(f"The bundle's {name} is not a safetensors file (cut short or damaged); nothing was "
                           "imported. Copy the file again.")


def import_bundle(project: Project, path: Path) -> RunSnapshot:
    """The LoRAs (and samples, train.log) of a trained bundle as a new run of `project`: state "succeeded" when
    the final LoRA is there, "failed" when only epoch or step saves are; then `register` it like any run.

    Everything is checked before the run folder is made: entry names, sizes and compression, bundle.json's
    fields and the LoRAs' headers; a refused bundle leaves nothing behind."""
    path = Path(path).expanduser()
    reader = _Reader(path)
    try:
        root = reader.root()
        reader.check_sizes({root + MANIFEST: "record"})
        manifest = _manifest(reader.read(root + MANIFEST))
        output_name = manifest["output_name"]
        found = _find(reader, root, output_name)
        if not found.loras:
            raise LorakitError(f"{path} holds no trained LoRA: expected {root}{OUTPUT}/{output_name}.safetensors "
                               "(or its epoch/step saves). Run train.sh in the bundle first, then import that "
                               "folder.")
        reader.check_sizes({**dict.fromkeys(found.loras, "lora"), **dict.fromkeys(found.samples, "sample"),
                            **dict.fromkeys(found.records, "record"), **({found.log: "log"} if found.log else {})})
        for name in found.loras:
            _check_safetensors(reader, name)
        return _import(project, path, reader, root, manifest, output_name, found)
    finally:
        reader.close()


# bundle.json's fields that import reads, and what each must be
_MANIFEST_TEXTS = ("project", "run", "created", "folder", "script", "base_model")


def _manifest(raw: bytes) -> dict:
    """bundle.json parsed and checked: an object of format 1 whose fields are of their kind, `meta` an object whose
    known keys are too (runner.meta_problems), nested at most _MAX_DEPTH deep. Raises LorakitError naming each
    problem."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; deep nesting: RecursionError
        raise LorakitError(f"The bundle's {MANIFEST} is not valid JSON ({type(e).__name__}); nothing was "
                           "imported.") from e
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise LorakitError(f"The bundle's {MANIFEST} is not a Train Style bundle of format {BUNDLE_FORMAT}.")
    problems = [] if _depth(data) <= _MAX_DEPTH else [f"nested more than {_MAX_DEPTH} levels deep"]
    problems += [f"{key}: expected a text, got {type(data[key]).__name__}" for key in _MANIFEST_TEXTS
                 if key in data and not isinstance(data[key], str)]
    if not isinstance(data.get("output_name"), str):
        problems.append(f"output_name: expected a text, got {type(data.get('output_name')).__name__}")
    problems += meta_problems({} if data.get("meta") is None else data["meta"])
    if problems:
        raise LorakitError(f"The bundle's {MANIFEST} is damaged or was not written by Train Style: "
                           f"{'; '.join(problems)}. Nothing was imported.")
    check_name(data["output_name"], what="bundle's output name")
    return data


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (without recursion: the value may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= _MAX_DEPTH:
                stack += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _import(project: Project, path: Path, reader: _Reader, root: str, manifest: dict, output_name: str,
            found: _Found) -> RunSnapshot:
    runs = Runs(project)
    run_dir = runs.new_dir(f"imported-{output_name}")
    try:
        copies = [(n, run_dir / n[len(root) + len(OUTPUT) + 1:]) for n in [*found.loras, *found.samples]]
        # the bundle's own records go in a folder of their own: they describe the run elsewhere, so this run never
        # takes their paths as its own (it has no args.toml to resume or export from)
        copies += [(n, run_dir / RECORDS / n[len(root):]) for n in found.records]
        if found.log:
            copies.append((found.log, run_dir / "train.log"))
        for name, dest in copies:
            with reader.open(name) as src, _atomic_file(dest) as out:
                _copy_limited(src, out, reader.size(name), name)
        reader_log = LogReader()
        if found.log:
            with open(run_dir / "train.log", "rb") as f:
                reader_log.feed(f.read().decode("utf-8", "replace"))
            reader_log.flush()
        files = sorted(Path(n).name for n in found.loras)
        final = f"{output_name}.safetensors" in files
        # the other machine's run ids mean nothing here (and depends_on would hold the run in the queue)
        meta = {k: v for k, v in (manifest.get("meta") or {}).items() if k not in ("depends_on", "resumed_from")}
        meta["imported"] = {"from": str(path.resolve()), "project": manifest.get("project"),
                            "run": manifest.get("run"), "exported": manifest.get("created"), "at": clock.now_iso()}
        data = {"id": run_dir.name, "project": project.name, "state": "succeeded" if final else "failed",
                "meta": meta, "created": clock.now_iso(), "finished": clock.now_iso(), "files": files,
                "samples": sorted(f"sample/{Path(n).name}" for n in found.samples),
                "progress": reader_log.progress.to_dict() if found.log else {},
                "losses": reader_log.losses[-5000:], "val_losses": reader_log.val_losses[-5000:],
                "log_tail": reader_log.tail[-40:],
                "error": "" if final else (f"The bundle holds no final {output_name}.safetensors (training stopped "
                                           "early?); its epoch/step saves were imported.")}
        atomic_write_text(run_dir / "README.txt", f"Imported from {path.resolve()} (bundle of project "
                                                  f"{manifest.get('project')}, run {manifest.get('run')}).\n")
        atomic_write_json(run_dir / "run.json", data)  # last: the run exists once everything is in place
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return runs.get(run_dir.name)


def _copy_limited(src: BinaryIO, out: BinaryIO, size: int, name: str) -> None:
    copied = 0
    while chunk := src.read(1 << 20):
        copied += len(chunk)
        if copied > size:
            raise LorakitError(f"The bundle's {name} is larger than it claims; nothing was imported.")
        out.write(chunk)


# --- small helpers -------------------------------------------------------------------------------------------------
_KIND_WORDS = {"lora": "LoRA file", "sample": "sample image", "log": "training log", "record": "settings file"}


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "bundle"

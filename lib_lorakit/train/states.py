"""sd-scripts' saved training states: which are complete, and which one Resume uses.

A state save (`--save_state`) is not atomic (FACTS): accelerate runs sd-scripts' pre-hook, which writes
`train_state.json`, then `model.safetensors`, `optimizer.bin`, `scheduler.bin` and `random_states_<i>.pkl`. A
process killed mid-save leaves a folder with `train_state.json` beside a truncated or missing file, and `--resume`
on it dies ("PytorchStreamReader failed reading zip archive"). So a state is complete only when every file is
present and readable: the safetensors header and the data it announces, the zip central directory of each
`torch.save` file (read with zipfile; nothing is ever unpickled), and no file older than `train_state.json` (a
folder overwritten by a later run that was killed mid-save would mix two saves).

sd-scripts removes an old state (`save_last_n_*_state`) only after the new one is saved, so keeping n ≥ 1 never
leaves a run without a complete state; `tests/test_resume_states.py` checks that order in the pinned sources.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TRAIN_STATE = "train_state.json"
MODEL = "model.safetensors"
TORCH_FILES = ("optimizer.bin", "scheduler.bin")
RANDOM_STATES = "random_states_0.pkl"
STATE_FILES = (TRAIN_STATE, MODEL, *TORCH_FILES, RANDOM_STATES)
MTIME_SLACK_NS = 2_000_000_000  # file systems with 2-second timestamps (FAT) still order the files of one save


@dataclass(frozen=True)
class StateCheck:
    """One `*-state` folder: the step it was saved at and, when it cannot be resumed from, why."""

    path: Path
    step: int
    problem: str = ""

    @property
    def complete(self) -> bool:
        return not self.problem

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class StateChoice:
    """The state Resume uses (the newest complete one; None when there is none) and the newer or broken ones it
    passed over, each with its reason."""

    state: Optional[StateCheck]
    skipped: tuple[StateCheck, ...] = ()

    def explain(self) -> str:
        """`Resumed from demo-step00000002-state (step 2); skipped demo-step00000004-state: optimizer.bin is …`."""
        head = (f"Resumed from {self.state.name} (step {self.state.step})" if self.state
                else "No complete saved state")
        skipped = "; ".join(f"skipped {s.name}: {s.problem}" for s in self.skipped)
        return head + (f"; {skipped}" if skipped else "") + "."


def check_state(folder: Path) -> StateCheck:
    """Whether `folder` holds a complete state, read without loading any of it."""
    folder = Path(folder)
    step, problem = _train_state(folder / TRAIN_STATE)
    if not problem:
        problem = (safetensors_problem(folder / MODEL)
                   or next(filter(None, (torch_file_problem(folder / n) for n in TORCH_FILES)), "")
                   or _random_states_problem(folder) or _older_than_train_state(folder))
    return StateCheck(path=folder, step=step, problem=problem)


def state_folders(run_dir: Path) -> list[Path]:
    """The `*-state` folders sd-scripts left in a run's output folder (links are not followed)."""
    return sorted(p for p in Path(run_dir).glob("*-state") if p.is_dir() and not p.is_symlink())


def choose_state(run_dir: Path) -> StateChoice:
    """The newest complete state of a run (by step, then time), and every incomplete or newer one passed over."""
    checks = [check_state(p) for p in state_folders(run_dir)]
    order = sorted(checks, key=lambda c: (c.step, _mtime_ns(c.path / TRAIN_STATE)), reverse=True)
    chosen = next((c for c in order if c.complete), None)
    skipped = tuple(c for c in order if not c.complete and (chosen is None or c.step >= chosen.step))
    return StateChoice(state=chosen, skipped=skipped)


# --- one file each -------------------------------------------------------------------------------------------------
def safetensors_problem(path: Path) -> str:
    """"" when `path` is a whole safetensors file (its header parses and the file holds every byte the header
    announces); else what is wrong."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) != 8:
                return f"{path.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path.name} is truncated (its header needs {n} bytes, {size - 8} follow)"
            header = json.loads(f.read(n))
    except FileNotFoundError:
        return f"{path.name} is missing"
    except OSError as e:
        return f"{path.name} cannot be read ({e.strerror or e})"
    except ValueError:
        return f"{path.name} has a damaged header"
    if not isinstance(header, dict):
        return f"{path.name} has a damaged header"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    need = 8 + n + max((e for e in ends if isinstance(e, int)), default=0)
    return "" if size >= need else f"{path.name} is truncated ({size} of {need} bytes)"


def torch_file_problem(path: Path) -> str:
    """"" when `path` is a whole `torch.save` archive: a zip whose central directory (at the end of the file, so a
    truncated file has none) lists a `data.pkl` and entries that fit in the file. Never unpickled."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        return f"{path.name} is truncated or damaged ({_short(e)})"
    if not any(i.filename.endswith("data.pkl") for i in infos):
        return f"{path.name} is not a torch archive (no data.pkl)"
    if any(i.header_offset + i.compress_size > size for i in infos):
        return f"{path.name} is truncated (an entry runs past the end of the file)"
    return ""


def _random_states_problem(folder: Path) -> str:
    """random_states_0.pkl (one per process) present and not empty; a zip (torch.save) must be whole. Not opened
    as a pickle."""
    files = [folder / RANDOM_STATES, *sorted(p for p in folder.glob("random_states_*.pkl") if p.name != RANDOM_STATES)]
    for path in files:
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                magic = f.read(4)
        except FileNotFoundError:
            return f"{path.name} is missing"
        except OSError as e:
            return f"{path.name} cannot be read ({e.strerror or e})"
        if size == 0:
            return f"{path.name} is empty"
        if magic == b"PK\x03\x04" and torch_file_problem(path):
            return torch_file_problem(path)
    return ""


def _train_state(path: Path) -> tuple[int, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0, f"{TRAIN_STATE} is missing"
    except (OSError, ValueError):
        return 0, f"{TRAIN_STATE} cannot be read"
    step = data.get("current_step") if isinstance(data, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return 0, f"{TRAIN_STATE} holds no step"
    return step, ""


def _older_than_train_state(folder: Path) -> str:
    """The other files are written after train_state.json; one that is older is left from an earlier save."""
    start = _mtime_ns(folder / TRAIN_STATE) - MTIME_SLACK_NS
    old = [n for n in STATE_FILES[1:] if _mtime_ns(folder / n) < start]
    return (f"{', '.join(old)} {'is' if len(old) == 1 else 'are'} older than {TRAIN_STATE}: left from an earlier "
            "save, this one did not finish") if old else ""


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


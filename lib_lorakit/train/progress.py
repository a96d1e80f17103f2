"""Reading sd-scripts' console output: tqdm redraws, epochs, saves, samples and the errors worth explaining.

sd-scripts writes its progress bar to stderr and redraws it with carriage returns, so output is split on both
`\\r` and `\\n` before parsing (`procs.LineSplitter`). Each line becomes at most one event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Optional

from ..procs import LineSplitter

# steps:  50%|█████     | 2/4 [00:03<00:03,  1.52s/it, avr_loss=0.113]
_STEPS = re.compile(r"^\s*steps:\s*(?P<pct>\d+)%\|[^|]*\|\s*(?P<step>\d+)/(?P<total>\d+)\s*"
                    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+),?\s*(?P<rate>[^,\]]*)(?P<post>[^\]]*)\]")
# epoch validation steps: 100%|██████████| 4/4 [00:01<00:00,  3.02it/s, val_epoch_avg_loss=0.0912, timestep=800]
# (train_network.py: the average over this check's batches × 4 timesteps once the bar is full; "validation steps"
# is the same bar every validate_every_n_steps, whose average mixes checks, so only its redraws are kept out)
# (a nested bar: each redraw is "\n\r<bar>\x1b[A", the cursor moved down and back up again)
_ANSI = r"(?:\x1b\[[0-9;]*[A-Za-z])*"
_VAL_EPOCH = re.compile(rf"^{_ANSI}\s*epoch validation steps:\s*\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
                        r"\[(?P<post>[^\]]*)\]")
_VAL_BAR = re.compile(rf"^{_ANSI}\s*(epoch )?validation steps:\s*\d+%\|")
_EPOCH = re.compile(r"^\s*epoch (\d+)/(\d+)\s*$")
_SAVED = re.compile(r"saving checkpoint: (.+\.safetensors)")
_SAMPLE = re.compile(r"generating sample images at step[^:]*:\s*(\d+)")
_POSTFIX = re.compile(r"(\w+)=([-+0-9.eE]+)")
# A resumed run's bar counts only the steps left ("skipping N steps": it resumed at step N). When whole epochs are
# skipped, sd-scripts v0.10.1 (train_network.py) takes their batches off that count and restarts its global step
# from the rest, so its bar's total is max_train_steps minus the rest, and the bar stops when the epochs run out,
# short of that total: the step reached is N plus the bar's count, the total is the bar's plus the rest.
_SKIPPING = re.compile(r"^\s*skipping (\d+) steps")
_SKIPPING_EPOCH = re.compile(r"^\s*skipping epoch \d+ because initial_step")
_BATCHES = re.compile(r"num batches per epoch[^:]*:\s*(\d+)")
# Saves (train_network.py, library/train_util.py, accelerate's save_state): a model file, or a state folder written
# file by file after train_state.json. A save is over when the state's last file is logged or training goes on.
_STATE_SAVE = re.compile(r"^\s*(saving state at (step|epoch) \d+|saving last state\.)")
_STATE_DIR = re.compile(r"^\s*Saving current state to (.+-state)\s*$")
_STATE_DONE = re.compile(r"^\s*Random states saved in ")
_SAVE_OVER = re.compile(r"^\s*(model saved\.|removing old state:|generating sample images|epoch \d+/\d+)")


@dataclass(frozen=True)
class Save:
    """A save sd-scripts is writing: a model file (`path` as logged) or a state folder (`path` once logged)."""

    kind: str  # "model" | "state"
    path: Optional[str] = None

    def describe(self) -> str:
        name = self.path.replace("\\", "/").rsplit("/", 1)[-1] if self.path else ""
        return f"the {'training state' if self.kind == 'state' else 'LoRA file'}{' ' + name if name else ''}"


@dataclass(frozen=True)
class Progress:
    step: int = 0
    total: int = 0
    epoch: int = 0
    epochs: int = 0
    loss: Optional[float] = None  # the moving average sd-scripts shows (avr_loss)
    seconds_per_step: Optional[float] = None
    elapsed_s: Optional[int] = None
    eta_s: Optional[int] = None

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {"step": self.step, "total": self.total, "epoch": self.epoch, "epochs": self.epochs,
                "loss": self.loss, "seconds_per_step": self.seconds_per_step, "elapsed_s": self.elapsed_s,
                "eta_s": self.eta_s}


@dataclass
class LogReader:
    """Feeds raw output through, keeps the latest progress, the loss curve, saved files and the log tail."""

    progress: Progress = field(default_factory=Progress)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, avr_loss) once per step
    val_losses: list[tuple[int, int, float]] = field(default_factory=list)  # (epoch, step, val_epoch_avg_loss)
    saved: list[str] = field(default_factory=list)
    samples_at: list[int] = field(default_factory=list)
    skipped_steps: int = 0  # where a resumed run began ("skipping N steps")
    bar_offset: int = 0  # what sd-scripts' bar leaves out of its total (N less the batches of skipped epochs)
    batches_per_epoch: int = 0
    saving: Optional[Save] = None  # the save sd-scripts is writing now, as far as its output tells
    tail: list[str] = field(default_factory=list)
    tail_lines: int = 60
    _val_post_before: Optional[dict] = field(default=None, repr=False, compare=False)
    _lines: LineSplitter = field(default_factory=LineSplitter, repr=False, compare=False)

    def feed(self, data: str | bytes) -> None:
        """Raw output as it comes, in pieces of any size (bytes are decoded as UTF-8, bad bytes replaced)."""
        for line in self._lines.feed(data):
            self.feed_line(line)

    def flush(self) -> None:
        """The end of the output: its last line need not end with a line break."""
        for line in self._lines.flush():
            self.feed_line(line)

    def feed_line(self, line: str) -> None:
        if not line.strip():
            return
        m = _STEPS.match(line)
        if m:
            self.saving = None  # training goes on: whatever was being saved is written
            self._on_steps(m)
            return  # redraws would flood the tail
        if _VAL_BAR.match(line):
            if m := _VAL_EPOCH.match(line):
                self._on_validation(m)
            return
        self.tail.append(line[:500])
        del self.tail[:-self.tail_lines]
        self._track_save(line)
        if m := _EPOCH.match(line):
            self.progress = replace(self.progress, epoch=int(m.group(1)), epochs=int(m.group(2)))
        elif m := _SAVED.search(line):
            self.saved.append(m.group(1).strip())
        elif m := _SAMPLE.search(line):
            self.samples_at.append(int(m.group(1)))
        elif m := _SKIPPING.match(line):
            self.skipped_steps = self.bar_offset = int(m.group(1))
        elif _SKIPPING_EPOCH.match(line):
            self.bar_offset = max(0, self.bar_offset - self.batches_per_epoch)
        elif m := _BATCHES.search(line):
            self.batches_per_epoch = int(m.group(1))

    def _track_save(self, line: str) -> None:
        if m := _SAVED.search(line):
            self.saving = Save("model", m.group(1).strip())
        elif _STATE_SAVE.match(line):
            self.saving = Save("state")
        elif m := _STATE_DIR.match(line):
            self.saving = Save("state", m.group(1).strip())
        elif _STATE_DONE.match(line) or _SAVE_OVER.match(line):
            self.saving = None

    def _on_steps(self, m: re.Match) -> None:
        total = int(m.group("total")) + self.bar_offset
        step = min(int(m.group("step")) + self.skipped_steps, total)
        post = dict(_POSTFIX.findall(m.group("post")))
        loss = float(post["avr_loss"]) if "avr_loss" in post else self.progress.loss
        self.progress = replace(self.progress, step=step, total=total, loss=loss,
                                seconds_per_step=_seconds_per_step(m.group("rate")),
                                elapsed_s=_clock(m.group("elapsed")), eta_s=_clock(m.group("remaining")))
        if loss is not None and step > 0 and (not self.losses or self.losses[-1][0] != step):
            self.losses.append((step, loss))


    def _on_validation(self, m: re.Match) -> None:
        """A full epoch-validation bar: this epoch's validation loss (a later check of the same epoch, as after a
        resume, replaces it and the points after it).

        Per timestep sd-scripts calls `update(1)`, which may draw the bar one further with the postfix before, and
        then `set_postfix`, which draws the new average: a full bar whose postfix is the one drawn before it is that
        first draw, and is skipped (its average lacks the last loss); a bar still filling averages this check's
        losses with the last check's (train_util.LossRecorder). The last check's bar is closed, and drawn full once
        more, only when the next check's bar replaces it, after that one's empty draw: a full bar is taken only
        after a partly filled one of the same check. A check before any epoch line (none in sd-scripts' output) has
        no epoch to belong to and is skipped."""
        post = dict(_POSTFIX.findall(m.group("post")))
        n, total = int(m.group("n")), int(m.group("total"))
        if n == 0 or n < total:
            self._val_post_before = post if n else None
            return
        before = self._val_post_before
        if before is not None and post != before and "val_epoch_avg_loss" in post and self.progress.epoch:
            self.add_validation(self.progress.epoch, self.progress.step, float(post["val_epoch_avg_loss"]))

    def add_validation(self, epoch: int, step: int, loss: float) -> None:
        """One validation point (also used to carry a resumed run's earlier points over)."""
        self.val_losses = [p for p in self.val_losses if p[0] < epoch]
        self.val_losses.append((epoch, step, loss))


def _clock(text: str) -> Optional[int]:
    """tqdm's [HH:]MM:SS to seconds; '?' (not known yet) to None."""
    if "?" in text or not text:
        return None
    seconds = 0
    for part in text.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def _seconds_per_step(rate: str) -> Optional[float]:
    rate = rate.strip()
    try:
        if rate.endswith("s/it"):
            return float(rate[:-4])
        if rate.endswith("it/s"):
            value = float(rate[:-4])
            return 1.0 / value if value else None
    except ValueError:
        return None
    return None


# Known failures → what to do. Ordered: the first pattern found in the log tail wins.
ADVICE: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p, re.I), a) for p, a in (
    (r"out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED",
     "The GPU ran out of memory. Lower train_batch_size or resolution, turn on gradient_checkpointing and "
     "cache_latents, use mixed_precision fp16/bf16, or unload other models from the GPU."),
    (r"No data found|画像がありません",
     "sd-scripts found no training images: check that the concept folders hold images and the caption "
     "extension matches."),
    (r"ModuleNotFoundError: No module named '([^']+)'",
     "A package is missing from the trainer environment: run `python -m lib_lorakit trainer setup` again "
     "(or install the named package there)."),
    (r"bitsandbytes",
     "bitsandbytes failed to load: choose optimizer_type AdamW instead of AdamW8bit, or install a bitsandbytes "
     "build for your GPU in the trainer environment."),
    (r"FileNotFoundError|No such file or directory",
     "A file sd-scripts needs is missing: check the base model path and the dataset folders."),
    (r"Killed|SIGKILL|MemoryError",
     "The process was killed, most often for lack of system RAM: close other programs, lower the batch size, "
     "or use --lowram / cache latents to disk."),
))


def advice_for(tail: list[str]) -> str:
    text = "\n".join(tail)
    for pattern, advice in ADVICE:
        if pattern.search(text):
            return advice
    return "See the end of the log above for the cause."

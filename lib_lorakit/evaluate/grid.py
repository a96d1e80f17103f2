"""Grids over epochs × weights × prompts × checkpoints × seeds: the axes, the cells, and the X/Y/Z expression.

Pure: no files are written, nothing is generated. `parse_weights` reads the weight-range syntax (`0-1.2 (+0.2)`,
`0,0.4,0.8,1`, the webui's count form `1-3 [5]`) with decimal arithmetic, so a value is exact to its step
(0.6, never 0.6000000001). A `GridPlan` lists its cells, first axis fastest, and `GridPlan.xyz()` says how the
webui's X/Y/Z plot script makes the same grid: Prompt S/R axes over `<lora:NAME:WEIGHT>` text whose search strings
are chosen so that every axis finds its text in every cell — checked by replaying the script's replacements on
every cell — or None when no such expression exists.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Optional

from ..errors import LorakitError, NotFound
from ..train.config import with_trigger, without_trigger

MAX_VALUES = 64  # values one axis may hold
MAX_CELLS = 1024  # images one grid may hold
MAX_WEIGHT = Decimal(10)
COUNT_PLACES = Decimal("0.0001")  # the count form's values (0-1 [4] -> 0.3333) are rounded to this
KINDS = ("weight", "epoch", "prompt", "checkpoint", "seed")  # the order of the axes: the first varies fastest
SR = "Prompt S/R"
XYZ_LABELS = {"checkpoint": "Checkpoint name", "seed": "Seed"}

_NUM = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
_STEP_RANGE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*({_NUM})\s*\))?\s*")
_COUNT_RANGE = re.compile(rf"\s*({_NUM})\s*-\s*({_NUM})\s*\[\s*(\d+)\s*\]\s*")
_SINGLE = re.compile(rf"\s*({_NUM})\s*")


# --- weights --------------------------------------------------------------------------------------------------------
def format_number(value: Decimal) -> str:
    """`Decimal("1.20")` -> "1.2", `Decimal("1E+1")` -> "10", never "-0"."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "+0") else text


def _dec(text: str) -> Decimal:
    return Decimal(text.replace(" ", ""))


def parse_weights(spec: str) -> tuple[str, ...]:
    """The weights a spec names, as texts exact to their step, each once, in order. Items separated by commas: a
    number, `START-END (+STEP)` (END included when a step lands on it), `START-END [COUNT]` (COUNT values evenly
    from START to END). LorakitError naming the item that cannot be read."""
    if not isinstance(spec, str) or not spec.strip():
        raise LorakitError("weights: empty; give e.g. '0-1.2 (+0.2)' or '0,0.4,0.8,1'.")
    out: list[Decimal] = []
    for item in spec.split(","):
        if not item.strip():
            continue
        out += _weight_item(item)
        if len(out) > MAX_VALUES:
            raise LorakitError(f"weights: {spec.strip()!r} names more than {MAX_VALUES} values; use a larger step.")
    values = tuple(dict.fromkeys(format_number(v) for v in out))
    if not values:
        raise LorakitError("weights: empty; give e.g. '0-1.2 (+0.2)' or '0,0.4,0.8,1'.")
    return values


def _weight_item(item: str) -> list[Decimal]:
    try:
        single = _SINGLE.fullmatch(item)
        if single:
            values = [_dec(single.group(1))]
        elif (m := _STEP_RANGE.fullmatch(item)) is not None:
            values = _step_range(item, _dec(m.group(1)), _dec(m.group(2)),
                                 _dec(m.group(3)) if m.group(3) else Decimal(1))
        elif (m := _COUNT_RANGE.fullmatch(item)) is not None:
            values = _count_range(item, _dec(m.group(1)), _dec(m.group(2)), int(m.group(3)))
        else:
            raise LorakitError(f"weights: {item.strip()!r} is not a number, 'START-END (+STEP)' nor "
                               "'START-END [COUNT]', e.g. '0-1.2 (+0.2)' or '0.2-1 [5]'.")
    except InvalidOperation:
        raise LorakitError(f"weights: {item.strip()!r} holds a number that cannot be read.") from None
    for v in values:
        if v.normalize().as_tuple().exponent < COUNT_PLACES.as_tuple().exponent:
            raise LorakitError(f"weights: {format_number(v)} in {item.strip()!r} has more than 4 decimals; the "
                               "webui writes weights to 4.")
        if abs(v) > MAX_WEIGHT:
            raise LorakitError(f"weights: {format_number(v)} in {item.strip()!r} is outside -10 to 10.")
    return values


def _step_range(item: str, start: Decimal, end: Decimal, step: Decimal) -> list[Decimal]:
    if step == 0:
        raise LorakitError(f"weights: {item.strip()!r} has a step of 0; give e.g. (+0.2).")
    if (end - start) * step < 0:
        raise LorakitError(f"weights: {item.strip()!r} steps away from its end; use "
                           f"({'-' if step > 0 else '+'}{format_number(abs(step))}).")
    count = int((end - start) / step) + 1
    if count > MAX_VALUES:
        raise LorakitError(f"weights: {item.strip()!r} names {count} values; at most {MAX_VALUES}.")
    return [start + step * k for k in range(count)]


def _count_range(item: str, start: Decimal, end: Decimal, count: int) -> list[Decimal]:
    if count < 1 or count > MAX_VALUES:
        raise LorakitError(f"weights: {item.strip()!r} asks for {count} values; give 1 to {MAX_VALUES}.")
    if count == 1:
        return [start]
    return [(start + (end - start) * k / (count - 1)).quantize(COUNT_PLACES, rounding=ROUND_HALF_EVEN)
            for k in range(count)]


# --- epochs ---------------------------------------------------------------------------------------------------------
_EPOCH = re.compile(r"(.+)-(\d{6})")
_STEP = re.compile(r"(.+)-step(\d{8})")


@dataclass(frozen=True)
class EpochFile:
    """One saved LoRA of a run: `name` is its stem (what `<lora:NAME:W>` and the Lora folder call it)."""

    name: str
    path: Path
    epoch: Optional[int] = None
    step: Optional[int] = None

    @property
    def final(self) -> bool:
        return self.epoch is None and self.step is None

    @property
    def label(self) -> str:
        if self.epoch is not None:
            return f"epoch {self.epoch}"
        return f"step {self.step}" if self.step is not None else "final"

    def to_dict(self) -> dict:
        return {"name": self.name, "file": self.path.name, "epoch": self.epoch, "step": self.step,
                "label": self.label}


def epoch_files(run_dir: Path, files: Sequence[str]) -> list[EpochFile]:
    """A run's saved LoRAs (run.json's `files`), epochs first in order, then step saves, the final file last."""
    found = []
    for name in files:
        path = Path(run_dir) / name
        if path.suffix != ".safetensors":
            continue
        if (m := _EPOCH.fullmatch(path.stem)) is not None:
            found.append(EpochFile(path.stem, path, epoch=int(m.group(2))))
        elif (m := _STEP.fullmatch(path.stem)) is not None:
            found.append(EpochFile(path.stem, path, step=int(m.group(2))))
        else:
            found.append(EpochFile(path.stem, path))
    return sorted(found, key=lambda f: (f.final, f.epoch is None, f.epoch or 0, f.step or 0, f.name))


def select_epochs(files: Sequence[EpochFile], spec: str) -> list[EpochFile]:
    """`all`, `last`, or a comma list of epoch numbers, `stepN` and `final` (e.g. `2,4,final`)."""
    if not files:
        raise NotFound("This run has saved no LoRA yet; wait for its first epoch, or pick another run.")
    words = [w.strip().lower() for w in str(spec or "all").split(",") if w.strip()]
    if words in ([], ["all"]):
        return list(files)
    if words == ["last"]:
        return [files[-1]]
    chosen: list[EpochFile] = []
    for word in words:
        match = [f for f in files if (word == "final" and f.final) or (word.isdigit() and f.epoch == int(word))
                 or (word.startswith("step") and word[4:].isdigit() and f.step == int(word[4:]))]
        if not match:
            have = ", ".join(_word(f) for f in files)
            raise NotFound(f"epochs: the run saved no {word!r}; it has {have}.")
        chosen += [f for f in match if f not in chosen]
    return chosen


def _word(f: EpochFile) -> str:
    return str(f.epoch) if f.epoch is not None else (f"step{f.step}" if f.step is not None else "final")


# --- prompts, checkpoints -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptChoice:
    text: str
    label: str


def prompt_axis(prompts: Sequence[str], trigger_words: Sequence[str], *,
                with_and_without: bool = False) -> list[PromptChoice]:
    """Each prompt with the trigger words in front (as the captions have them) and, when asked, its twin without
    them (seeds/000: what the trigger holds against what leaks into everything), the way sample prompts are made."""
    out: list[PromptChoice] = []
    for raw in prompts:
        text = " ".join(str(raw).split())
        if not text:
            continue
        if with_and_without and trigger_words:
            out.append(PromptChoice(with_trigger(text, trigger_words), f"{_short(text)} (with trigger)"))
            bare = without_trigger(text, trigger_words)
            if bare.strip():
                out.append(PromptChoice(bare, f"{_short(bare)} (without trigger)"))
        else:
            out.append(PromptChoice(text, _short(text)))
    unique = list({p.text: p for p in out}.values())
    if not unique:
        raise LorakitError("prompts: none given; give at least one prompt (or prompts from captions).")
    return unique


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def same_version(checkpoints: Sequence[object], arch: str) -> list[str]:
    """The names of the Host's checkpoints of one SD version (seeds/003: the same LoRA over several bases)."""
    return [c.name for c in checkpoints if getattr(c, "arch", "") == arch]


# --- the plan -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    index: int
    epoch: EpochFile
    weight: str
    prompt: PromptChoice
    checkpoint: Optional[str]
    seed: int

    @property
    def lora_tag(self) -> str:
        return f"<lora:{self.epoch.name}:{self.weight}>"

    @property
    def full_prompt(self) -> str:
        """The prompt as the webui sees it: the text, then the LoRA."""
        return f"{self.prompt.text} {self.lora_tag}"

    def value(self, kind: str) -> str:
        return {"weight": self.weight, "epoch": self.epoch.label, "prompt": self.prompt.label,
                "checkpoint": self.checkpoint or "", "seed": str(self.seed)}[kind]

    def to_dict(self) -> dict:
        return {"index": self.index, "epoch": self.epoch.label, "lora": self.epoch.name, "weight": self.weight,
                "prompt": self.prompt.text, "checkpoint": self.checkpoint, "seed": self.seed}


@dataclass(frozen=True)
class XYZPlan:
    """The grid as the webui's X/Y/Z plot script makes it: the base prompt (holding the first cell's LoRA text) and
    up to three axes (label, values); `cells[i]` is the plan's cell the script draws i-th (X fastest)."""

    base_prompt: str
    negative: str
    axes: tuple[tuple[str, tuple[str, ...]], ...]
    cells: tuple[int, ...]

    def values_text(self, i: int) -> str:
        return csv_values(self.axes[i][1])


@dataclass(frozen=True)
class GridPlan:
    epochs: tuple[EpochFile, ...]
    weights: tuple[str, ...]
    prompts: tuple[PromptChoice, ...]
    checkpoints: tuple[Optional[str], ...] = (None,)
    seeds: tuple[int, ...] = (1,)
    negative: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in KINDS:
            if not self.values(kind):
                raise LorakitError(f"{kind}s: none chosen; a grid needs at least one of each.")
        if len(self.values("checkpoint")) > MAX_VALUES or len(self.values("seed")) > MAX_VALUES:
            raise LorakitError(f"checkpoints and seeds: at most {MAX_VALUES} each.")
        if self.size > MAX_CELLS:
            raise LorakitError(f"This grid has {self.size:,} cells; at most {MAX_CELLS:,}. Choose fewer epochs, "
                               "weights, prompts, checkpoints or seeds.")
        for p in self.prompts:
            if "\n" in p.text or "\r" in p.text:
                raise LorakitError(f"prompts: {p.text[:40]!r} spans lines; give one line per prompt.")

    def values(self, kind: str) -> tuple:
        return {"weight": self.weights, "epoch": self.epochs, "prompt": self.prompts,
                "checkpoint": self.checkpoints, "seed": self.seeds}[kind]

    @property
    def size(self) -> int:
        n = 1
        for kind in KINDS:
            n *= len(self.values(kind))
        return n

    def varying(self) -> list[str]:
        """The axes with more than one value, first (fastest) first."""
        return [k for k in KINDS if len(self.values(k)) > 1]

    def labels(self, kind: str) -> list[str]:
        values = self.values(kind)
        if kind == "epoch":
            return [e.label for e in values]
        if kind == "prompt":
            return [p.label for p in values]
        return [str(v or "") for v in values]

    def cells(self) -> list[Cell]:
        """Every cell, the first axis (weight) fastest, then epoch, prompt, checkpoint, seed."""
        combos = itertools.product(self.seeds, self.checkpoints, self.prompts, self.epochs, self.weights)
        return [Cell(index=i, epoch=e, weight=w, prompt=p, checkpoint=c, seed=s)
                for i, (s, c, p, e, w) in enumerate(combos)]

    def layout(self) -> tuple[list[str], list[str]]:
        """(column labels, row labels) of the composed grid: columns are the first varying axis, rows the product of
        the others (slowest last), each row label joining its values with ' · '."""
        varying = self.varying()
        if not varying:
            return [""], [""]
        cols = self.labels(varying[0])
        rest = [self.labels(k) for k in varying[1:]]
        rows = [" · ".join(reversed(combo)) for combo in itertools.product(*reversed(rest))] if rest else [""]
        return cols, rows

    def axes_summary(self) -> dict[str, list[str]]:
        return {k: self.labels(k) for k in KINDS}

    # --- the X/Y/Z expression ---------------------------------------------------------------------------------------
    def xyz(self) -> Optional[XYZPlan]:
        """How the webui's X/Y/Z script makes this grid, or None when it cannot (more than three varying axes
        even with epoch × weight folded into one, or no search strings that work in every cell)."""
        cells = self.cells()
        varying = self.varying()
        layouts = [varying]
        if "epoch" in varying and "weight" in varying:
            layouts.append(["lora"] + [k for k in varying if k not in ("epoch", "weight")])
        for kinds in layouts:
            if len(kinds) > 3:
                continue
            for style in _STYLES:
                plan = self._try_xyz(cells, kinds, style)
                if plan is not None:
                    return plan
        return None

    def _try_xyz(self, cells: list[Cell], kinds: list[str], style: dict[str, bool]) -> Optional[XYZPlan]:
        first = cells[0]
        axes, keys = [], []
        for kind in kinds:
            label, values, key = self._axis(kind, style)
            axes.append((label, tuple(values)))
            keys.append(key)
        by_key = {tuple(k(c) for k in keys): c for c in cells if _same_fixed(c, first, kinds)}
        order: list[int] = []
        for combo in itertools.product(*reversed([range(len(v)) for _, v in axes])):
            idx = tuple(reversed(combo))
            expected = by_key.get(tuple(i for i in idx))
            if expected is None:
                return None
            prompt, negative = first.full_prompt, self.negative
            for (label, values), i in zip(axes, idx, strict=True):
                if label == SR:
                    search = values[0]
                    if search not in prompt and search not in negative:
                        return None
                    prompt, negative = prompt.replace(search, values[i]), negative.replace(search, values[i])
            if prompt != expected.full_prompt or negative != self.negative:
                return None
            order.append(expected.index)
        return XYZPlan(base_prompt=first.full_prompt, negative=self.negative, axes=tuple(axes), cells=tuple(order))

    def _axis(self, kind: str, style: dict[str, bool]):
        if kind == "weight":
            fmt = (lambda w: f":{w}>") if style["weight"] else (lambda w: w)
            values = [fmt(w) for w in self.weights]
            return SR, values, lambda c: values.index(fmt(c.weight))
        if kind == "epoch":
            fmt = (lambda e: f"<lora:{e.name}:") if style["epoch"] else (lambda e: e.name)
            names = [e.name for e in self.epochs]
            return SR, [fmt(e) for e in self.epochs], lambda c: names.index(c.epoch.name)
        if kind == "lora":
            pairs = [(e, w) for e in self.epochs for w in self.weights]
            return SR, [f"<lora:{e.name}:{w}>" for e, w in pairs], lambda c: pairs.index((c.epoch, c.weight))
        if kind == "prompt":
            texts = [p.text for p in self.prompts]
            return SR, texts, lambda c: texts.index(c.prompt.text)
        values = [str(v) for v in self.values(kind)]
        return XYZ_LABELS[kind], values, lambda c: values.index(str(c.checkpoint if kind == "checkpoint"
                                                                    else c.seed))


_STYLES = ({"epoch": False, "weight": False}, {"epoch": False, "weight": True}, {"epoch": True, "weight": False},
           {"epoch": True, "weight": True})


def _same_fixed(cell: Cell, first: Cell, kinds: list[str]) -> bool:
    covered = set(kinds) | ({"epoch", "weight"} if "lora" in kinds else set())
    return all(cell.value(k) == first.value(k) for k in KINDS if k not in covered)


def csv_values(values: Sequence[str]) -> str:
    """Values as the X/Y/Z script's text box takes them (CSV, read with skipinitialspace and each value stripped):
    a value holding a comma, a quote or a line break, or with spaces at its ends, is quoted."""
    def one(v: str) -> str:
        if any(c in v for c in ',"\n\r') or v != v.strip():
            return '"' + v.replace('"', '""') + '"'
        return v

    return ", ".join(one(str(v)) for v in values)

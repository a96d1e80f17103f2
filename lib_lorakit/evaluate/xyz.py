"""The webui's generation requests as data, shared by the in-process and the by-URL generators.

`<lora:NAME:WEIGHT>` prompt text, the X/Y/Z plot script's 18 positional arguments with each axis looked up by its
label (A1111 and Forge number them differently), the check that a Prompt S/R axis finds its first value, a grid
result cut from what the webui returns, and the watcher that turns the webui's own progress into `progress(...)`
calls and a cancel into the webui's interrupt. Pure: no webui, no network.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional

from PIL import Image

from ..errors import LorakitError
from ..progress import CancelFlag, ProgressFn
from . import AxisSpec, GenImage, GenRequest, GridResult, LoraUse

XYZ_SCRIPT = "x/y/z plot"  # the script's name in the webui's API (its title, lower-cased)
XYZ_ARG_COUNT = 18
_LORA_TAG = re.compile(r"<lora:([^:>]*)(?::[^>]*)?>")
_SEED = re.compile(r"(?:^|, )Seed: (-?\d+)(?:,|$)", re.MULTILINE)
_NAME_BREAKERS = set(":<>\n\r")


def weight_text(weight: float) -> str:
    """A LoRA weight as a person writes it: 1, 0.8, 0.25 (never 0.6000000001)."""
    text = f"{round(float(weight), 4):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def lora_tag(lora: LoraUse) -> str:
    """`<lora:NAME:WEIGHT>` as the webui's prompt syntax has it."""
    if not lora.name.strip() or _NAME_BREAKERS & set(lora.name):
        raise LorakitError(f"The LoRA name {lora.name!r} cannot be written in a webui prompt (it must not be empty "
                           "nor hold ':', '<', '>' or a line break); rename the file or register it under another "
                           "name.")
    return f"<lora:{lora.name}:{weight_text(lora.weight)}>"


def prompt_with_loras(request: GenRequest) -> str:
    """The request's prompt with its LoRAs appended as the webui's `<lora:…>` text."""
    return " ".join(part for part in (request.prompt.strip(), *map(lora_tag, request.loras)) if part)


def lora_names(texts: Sequence[str]) -> list[str]:
    """The LoRA names `<lora:NAME:…>` text mentions, in order of first mention."""
    found: dict[str, None] = {}
    for text in texts:
        for m in _LORA_TAG.finditer(text):
            found.setdefault(m.group(1), None)
    return list(found)


def missing_loras(wanted: Sequence[str], known: Sequence[str]) -> list[str]:
    """The wanted names the webui does not know (it would log a line and make the image without them)."""
    have = set(known)
    return [name for name in wanted if name not in have]


def missing_loras_message(missing: Sequence[str], where: str) -> str:
    return (f"{where} has no LoRA named {', '.join(map(repr, missing))}; it would make the images without it. "
            "Register the LoRA (Results) or copy it into the webui's Lora folder, then try again.")


def csv_values(values: Sequence[str]) -> str:
    """Axis values as the X/Y/Z script reads them: one CSV row, quoted where a value holds a comma or a quote."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([str(v) for v in values])
    return out.getvalue()


def axis_labels_from_script_info(script_info: Any, *, img2img: bool = False) -> list[str]:
    """The X/Y/Z plot script's axis labels, in the order its "X type" index counts them, from the answer of
    `/sdapi/v1/script-info` (gradio 3 lists choices as labels, gradio 4 as [label, value] pairs)."""
    for script in script_info if isinstance(script_info, list) else []:
        if not isinstance(script, dict) or str(script.get("name", "")).lower() != XYZ_SCRIPT:
            continue
        if bool(script.get("is_img2img")) != img2img:
            continue
        args = script.get("args") or []
        choices = (args[0] or {}).get("choices") if args and isinstance(args[0], dict) else None
        if isinstance(choices, list) and choices:
            return [str(c[0] if isinstance(c, (list, tuple)) and c else c) for c in choices]
    raise LorakitError("The webui lists no X/Y/Z plot script for txt2img (its scripts/xyz_grid.py is missing or "
                       "failed to load; the webui's console says why).")


def axis_index(labels: Sequence[str], label: str) -> int:
    """Where the X/Y/Z script counts the axis `label` ("Prompt S/R", "Seed", "Checkpoint name", …)."""
    if label in labels:
        return list(labels).index(label)
    near = difflib.get_close_matches(label, labels, n=3)
    hint = f"; did you mean {' or '.join(map(repr, near))}?" if near else f" (it has: {', '.join(labels)})."
    raise LorakitError(f"The webui's X/Y/Z plot has no axis {label!r}{hint}")


def script_args(labels: Sequence[str], *, x: AxisSpec, y: Optional[AxisSpec] = None,
                z: Optional[AxisSpec] = None) -> list[Any]:
    """The X/Y/Z plot script's 18 positional arguments: three axes (type index, CSV values, dropdown values), then
    draw legend, include the cells, no sub-grids, fixed seeds, seeds not varied per axis, no margin, and text
    inputs for every axis (so checkpoint and sampler names are read from the CSV too)."""
    args: list[Any] = []
    for axis in (x, y, z):
        if axis is None:
            args += [axis_index(labels, "Nothing"), "", []]
            continue
        label, values = axis
        if not list(values):
            raise LorakitError(f"The X/Y/Z axis {label!r} has no values.")
        args += [axis_index(labels, label), csv_values(values), []]
    args += [True, True, False, False, False, False, False, 0, True]
    assert len(args) == XYZ_ARG_COUNT
    return args


def check_prompt_sr(base_prompt: str, negative: str, axes: Sequence[Optional[AxisSpec]]) -> None:
    """The X/Y/Z script's Prompt S/R replaces its first value in each cell: that value must be in the prompt."""
    for axis in axes:
        if axis is None or axis[0] != "Prompt S/R" or not list(axis[1]):
            continue
        first = str(list(axis[1])[0])
        if first not in base_prompt and first not in negative:
            raise LorakitError(f"Prompt S/R searches for its first value {first!r}, which is not in the prompt "
                               f"{base_prompt!r}: start the axis with text the prompt holds (e.g. its <lora:…> "
                               "tag).")


def axis_texts(axes: Sequence[Optional[AxisSpec]]) -> list[str]:
    return [str(v) for axis in axes if axis is not None for v in axis[1]]


def seed_of(infotext: str, default: int = -1) -> int:
    """The `Seed:` field of an infotext's parameters line."""
    found = _SEED.findall(infotext.rsplit("\n", 1)[-1]) if infotext else []
    return int(found[-1]) if found else default


def grid_result(images: Sequence[Image.Image], infotexts: Sequence[Optional[str]]) -> GridResult:
    """The webui's X/Y/Z answer (sub-images included, no sub-grids): the grid first, then one cell per combination
    with x counting fastest, then y, then z. A cell the webui could not make (or that a cancel skipped) is its blank
    stand-in with an empty infotext."""
    if not images:
        raise LorakitError("The webui's X/Y/Z plot made no image (its console says why).")
    texts = [t or "" for t in infotexts] + [""] * max(0, len(images) - len(infotexts))
    cells = [GenImage(image=im, infotext=texts[i], seed=seed_of(texts[i])) for i, im in enumerate(images) if i > 0]
    return GridResult(grid=images[0], infotext=texts[0], cells=cells)


ProgressPoll = Callable[[], Optional[tuple[int, int, str]]]


class Watcher:
    """While the webui works on one call: every `every` seconds report its progress (`poll()` → done, total,
    message) and, once `cancel` is set, call `interrupt()` once. A context manager; the thread ends with it."""

    def __init__(self, *, poll: ProgressPoll, interrupt: Callable[[], None], progress: Optional[ProgressFn],
                 cancel: Optional[CancelFlag], every: float = 1.0):
        self.poll, self.interrupt, self.progress, self.cancel, self.every = poll, interrupt, progress, cancel, every
        self.interrupted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="train-style-gen-watch", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            if self.cancel is not None and self.cancel.is_set() and not self.interrupted:
                self.interrupted = True
                _quietly(self.interrupt)
            if self.progress is not None and not self.interrupted:
                seen = _quietly(self.poll)
                if seen is not None:
                    self.progress(*seen)


def _quietly(fn: Callable[[], Any]) -> Any:
    """A watcher's call must not end the work it watches: a failed poll is skipped (the next one may answer)."""
    try:
        return fn()
    except (LorakitError, OSError, ValueError, KeyError, TypeError):
        return None

"""Gradio fields from declared settings (lib_lorakit/schema.py): one component per Field, its one-line reason as
`info`, and the value read back typed and checked by the declaration. Works in gradio 3.41 and 4.

- a bool is a checkbox (a bool that may be none: a dropdown of none/true/false);
- a field with choices is a dropdown (with "none" first when it may be none);
- a number that is always set is a number box (precision 0 for integers);
- a number that may be none is a text box, empty for none (gradio's number box cannot hold "no value");
- text is a text box.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import gradio as gr

from ..schema import Field, InvalidSettings

NONE = "none"


def kind(f: Field) -> str:
    """The component a field becomes: checkbox, dropdown, number or text."""
    if f.type is bool:
        return "dropdown" if f.nullable else "checkbox"
    if f.choices:
        return "dropdown"
    if f.type in (int, float) and not f.nullable:
        return "number"
    return "text"


def shown(f: Field, value: Any) -> Any:
    """`value` as the field's component holds it."""
    k = kind(f)
    if k == "checkbox":
        return bool(value)
    if k == "dropdown":
        return NONE if value is None else (str(value).lower() if f.type is bool else str(value))
    if k == "number":
        return value
    return "" if value is None else _text(value)


def read(f: Field, raw: Any) -> Any:
    """The component's value typed and checked by the declaration (InvalidSettings names the field)."""
    k = kind(f)
    if k == "checkbox":
        return f.check(bool(raw))
    if k == "number":
        if raw is None or raw == "":
            raise InvalidSettings([f"{f.name}: expected {f.expected}, got nothing"])
        if f.type is int:
            if float(raw) != int(float(raw)):
                raise InvalidSettings([f.bad(raw)])
            return f.check(int(float(raw)))
        return f.check(float(raw))
    return f.parse("" if raw is None else str(raw))


def component(f: Field, value: Any, *, elem_id: Optional[str] = None, label: Optional[str] = None,
              info: Optional[str] = None) -> gr.components.Component:
    """A gradio component for `f` holding `value`; `info` (default: the reason) is the line under its label."""
    k = kind(f)
    common = dict(label=label or f.title, info=info if info is not None else f.reason, elem_id=elem_id,
                  interactive=True)
    if k == "checkbox":
        return gr.Checkbox(value=shown(f, value), **common)
    if k == "dropdown":
        return gr.Dropdown(choices=choices(f), value=shown(f, value), **common)
    if k == "number":
        return gr.Number(value=value, precision=0 if f.type is int else None, **common)
    return gr.Textbox(value=shown(f, value), placeholder=f"empty: {NONE}" if f.nullable else None, **common)


def choices(f: Field) -> list[str]:
    base = ["true", "false"] if f.type is bool else [str(c) for c in f.choices]
    return ([NONE] if f.nullable else []) + base


def read_all(fields: tuple[Field, ...], raws: tuple[Any, ...]) -> dict[str, Any]:
    """Every field's value (in order of `fields`), all problems raised together."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for f, raw in zip(fields, raws, strict=True):
        try:
            out[f.name] = read(f, raw)
        except InvalidSettings as e:
            problems += e.problems
    if problems:
        raise InvalidSettings(problems)
    return out


def changed(fields: tuple[Field, ...], raws: tuple[Any, ...], base: Mapping[str, Any]) -> dict[str, Any]:
    """The fields whose value differs from `base` (the preset's values): the user's overrides."""
    values = read_all(fields, raws)
    return {n: v for n, v in values.items() if n in base and not same(v, base[n])}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)

"""Every setting declared once: name, type, default, range or choices, a one-line reason and a group.

A `Field` says what a valid value is; a `Schema` is an ordered set of fields (training options, audit thresholds,
multi-GPU settings, …) and gives what each front end needs from that one declaration:

- validation of plain data (`validate`, `from_dict`): every problem collected, each naming its field (with the
  path of the request it sits in, e.g. `audit.max_tokens`), and what the field allows;
- `NAME=VALUE` text typed by the declaration (`parse_set`), and argparse arguments with `--help` text
  (`add_arguments`, `from_namespace`);
- a JSON-able description (`describe`) for the API and the UI, whose gradio fields come from `ui/fields.py`;
- TOML: values are plain bool/int/float/str, and `to_toml` leaves out what TOML cannot hold (None).

This module is core: it imports neither gradio nor argparse's callers.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import LorakitError

log = logging.getLogger(__name__)


class InvalidSettings(LorakitError, ValueError):
    """One or more settings are unknown or out of range; `problems` lists each, naming the setting."""

    def __init__(self, problems: Iterable[str]):
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True, "0": False}


@dataclass(frozen=True)
class Field:
    """One setting. `default=None` (or `optional=True`) means "may be left out" (none).

    `label` is the words a form shows (default: the name with spaces); `key` is the name in a TOML file when it
    differs; `where` tells a schema's owner where the value goes (training options: args or dataset TOML);
    `ignore_case` accepts choices in any case.
    """

    name: str
    type: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    reason: str = ""
    group: str = ""
    where: str = "args"
    key: str | None = None
    optional: bool = False
    ignore_case: bool = False
    label: str = ""

    @property
    def nullable(self) -> bool:
        return self.default is None or self.optional

    @property
    def toml_key(self) -> str:
        return self.key or self.name

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")

    @property
    def expected(self) -> str:
        """What a valid value looks like, in words: the tail of every error message about this field."""
        if self.choices:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.type is bool:
            text = "true or false"
        elif self.type is str:
            text = "a string"
        else:
            noun = "an integer" if self.type is int else "a number"
            text = noun + range_words(self.minimum, self.maximum)
        return text + (" (or none)" if self.nullable else "")

    def check(self, value: Any) -> Any:
        """`value` made canonical (ints as floats for float fields, choices in their declared case)."""
        if value is None:
            if self.nullable:
                return None
            raise InvalidSettings([self.bad(value)])
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, str)
        if ok and self.choices:
            return self._choice(value)
        if not ok or not self._in_range(value):
            raise InvalidSettings([self.bad(value)])
        return float(value) if self.type is float else value

    def parse(self, text: str) -> Any:
        """A value typed from text (`--set name=text`, a command-line flag, a form's text box), then checked."""
        raw = str(text).strip()
        if self.nullable and raw.lower() in ("", "none", "null"):
            return None
        try:
            if self.type is bool:
                value: Any = _BOOL_WORDS[raw.lower()]
            elif self.type is int:
                value = int(raw.replace("_", ""))
            elif self.type is float:
                value = float(raw.replace("_", ""))
            else:
                value = raw
        except (KeyError, ValueError):
            raise InvalidSettings([f"{self.name}: expected {self.expected}, got {raw!r}"]) from None
        if self.type is int and self.choices and value not in self.choices and str(value) in map(str, self.choices):
            value = next(c for c in self.choices if str(c) == str(value))
        return self.check(value)

    def help(self) -> str:
        """The `--help` line: the reason, what is allowed and the default."""
        default = ("none" if self.default is None else "empty" if self.default == "" else
                   str(self.default).lower() if self.type is bool else self.default)
        return f"{self.reason} ({self.expected}; default {default})".replace("%", "%%")

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for the UI (tooltip = reason), the API and `--help`."""
        return {"name": self.name, "type": self.type.__name__, "default": self.default, "minimum": self.minimum,
                "maximum": self.maximum, "choices": list(self.choices), "nullable": self.nullable,
                "reason": self.reason, "group": self.group, "where": self.where, "key": self.toml_key,
                "expected": self.expected, "label": self.title}

    def _choice(self, value: Any) -> Any:
        for c in self.choices:
            if c == value or (self.ignore_case and str(c).lower() == str(value).lower()):
                return c
        raise InvalidSettings([self.bad(value)])

    def _in_range(self, value: Any) -> bool:
        if self.type not in (int, float):
            return True
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)

    def bad(self, value: Any) -> str:
        return f"{self.name}: expected {self.expected}, got {value!r}"


def text_list(value: Any, name: str, what: str) -> tuple[str, ...]:
    """A request's list of texts (image paths, class names), refused by name when it is anything else (a lone
    string included: `"a.png"` is not `["a.png"]`)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise LorakitError(f"{name}: expected a list of {what}, got {value!r}")
    return tuple(value)


def range_words(lo: float | None, hi: float | None) -> str:
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    if lo is not None and hi is not None:
        return f" from {num(lo)} to {num(hi)}"
    if lo is not None:
        return f" ≥ {num(lo)}"
    if hi is not None:
        return f" ≤ {num(hi)}"
    return ""


@dataclass(frozen=True)
class Schema:
    """An ordered set of fields. `noun` names one in messages ("option", "audit setting"); `aliases` maps old
    names to declared ones (accepted with a warning); `combine(values)` lists problems between the fields of a
    complete mapping; `groups` orders and titles the groups for forms and `--help`."""

    noun: str
    fields: tuple[Field, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    combine: Callable[[Mapping[str, Any]], list[str]] | None = None
    groups: tuple[tuple[str, str], ...] = ()
    example: str = ""  # NAME=VALUE shown when an item has no `=`

    @functools.cached_property
    def by_name(self) -> Mapping[str, Field]:
        return MappingProxyType({f.name: f for f in self.fields})

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.fields}

    def canonical_name(self, name: str) -> str:
        """The declared name for `name` (an old name is mapped, with a warning); unknown names raise with hints."""
        if name in self.by_name:
            return name
        if name in self.aliases:
            log.warning("%s %r is an old name; use %r instead.", self.noun.capitalize(), name, self.aliases[name])
            return self.aliases[name]
        raise InvalidSettings([self.unknown_message(name)])

    def unknown_message(self, name: str) -> str:
        """`unknown option 'x'`, with the closest declared names (difflib) when some are close."""
        close = difflib.get_close_matches(str(name), list(self.by_name) + list(self.aliases), n=3, cutoff=0.6)
        close = list(dict.fromkeys(self.aliases.get(c, c) for c in close))
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"unknown {self.noun} {name!r}{hint}"

    def validate(self, values: Mapping[str, Any], *, complete: bool = False, path: str = "") -> dict[str, Any]:
        """`values` checked and canonical (declared names, typed values), in declaration order.

        Every problem is collected and raised together as one InvalidSettings, each naming its field (prefixed
        with `path.` when given). With `complete=True` the result holds every field (defaults filled in) and
        `combine` checks the combinations.
        """
        problems: list[str] = []
        out: dict[str, Any] = {}
        if not isinstance(values, Mapping):
            raise InvalidSettings([f"{path or self.noun}: expected a table of {self.noun}s, got {values!r}"])
        for name, value in values.items():
            try:
                key = self.canonical_name(name)
                if key in out and key != name:
                    raise InvalidSettings([f"{name}: both {name!r} and {key!r} are given; keep {key!r}"])
                out[key] = self.by_name[key].check(value)
            except InvalidSettings as e:
                problems += e.problems
        if not problems and complete:
            out = {**self.defaults(), **out}
            problems = self.combine(out) if self.combine else []
        if problems:
            raise InvalidSettings([self.at(path, p) for p in problems])
        return {name: out[name] for name in self.by_name if name in out}

    def at(self, path: str, problem: str) -> str:
        """`problem` placed under `path`: `audit.max_tokens: …` for a field's problem, `audit: …` for others."""
        if not path:
            return problem
        head = problem.partition(":")[0]
        return f"{path}.{problem}" if head in self.by_name or head in self.aliases else f"{path}: {problem}"

    def from_dict(self, data: Mapping[str, Any] | None, *, path: str = "") -> dict[str, Any]:
        """Plain data (JSON, TOML) → every field, defaults filled in, validated; errors name `path.field`."""
        return self.validate(data or {}, complete=True, path=path)

    def parse_set(self, items: Iterable[str]) -> dict[str, Any]:
        """`["a=1", "b=none"]` → `{"a": 1, "b": None}`, typed by each declaration. All problems together."""
        out: dict[str, Any] = {}
        problems: list[str] = []
        for item in items:
            name, sep, text = str(item).partition("=")
            name = name.strip()
            if not sep or not name:
                example = self.example or next((f"{f.name}={f.default}" for f in self.fields
                                                if f.default is not None), "name=value")
                problems.append(f"{item!r}: expected NAME=VALUE, e.g. {example}")
                continue
            try:
                key = self.canonical_name(name)
                out[key] = self.by_name[key].parse(text)
            except InvalidSettings as e:
                problems += e.problems
        if problems:
            raise InvalidSettings(problems)
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self.fields]

    def grouped(self, key: Callable[[Field], str] | None = None) -> list[tuple[str, str, tuple[Field, ...]]]:
        """(group, its title, its fields) in `groups` order, undeclared groups last; `key` picks a field's group
        (default: its `group`)."""
        of = key or (lambda f: f.group)
        keys = [k for k, _ in self.groups] + [of(f) for f in self.fields]
        titles = dict(self.groups)
        return [(k, titles.get(k, k), tuple(f for f in self.fields if of(f) == k)) for k in dict.fromkeys(keys)
                if any(of(f) == k for f in self.fields)]

    # --- argparse ---------------------------------------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser | Any, *, names: Iterable[str] | None = None) -> None:
        """`--field-name VALUE` per field (`names`: only these), typed and checked by the declaration, with the
        reason, the allowed values and the default as `--help`. A flag not given is None (see from_namespace)."""
        for f in self.fields if names is None else [self.by_name[n] for n in names]:
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, metavar=_metavar(f),
                                type=_argparse_type(f), default=None, help=f.help())

    def from_namespace(self, args: argparse.Namespace, *, complete: bool = True) -> dict[str, Any]:
        """The values given on the command line (parsed by `add_arguments`); with `complete`, defaults for the rest."""
        given = {f.name: getattr(args, f.name) for f in self.fields if getattr(args, f.name, None) is not None}
        return self.validate(given, complete=complete)

    # --- TOML -------------------------------------------------------------------------------------------------------
    def to_toml(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A TOML-ready table under each field's TOML key; None (TOML has no null) is left out."""
        checked = self.validate(values)
        return {self.by_name[n].toml_key: v for n, v in checked.items() if v is not None}


def _metavar(f: Field) -> str:
    if f.choices:
        return "{" + ",".join(str(c) for c in f.choices) + "}"
    return {bool: "BOOL", int: "N", float: "X"}.get(f.type, "TEXT")


def _argparse_type(f: Field) -> Callable[[str], Any]:
    def typed(text: str) -> Any:
        try:
            return f.parse(text)
        except InvalidSettings as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    typed.__name__ = f.name
    return typed

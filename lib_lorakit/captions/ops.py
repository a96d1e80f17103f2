"""Batch caption operations: pure functions on tag lists, one typed `CaptionOp`, and `plan`, which turns an op
into the new caption of every image it changes, so a preview and the real run are the same computation.

Tags compare by `tag_key` (`Long_hair` is `long hair`). Trigger words always stay first: sd-scripts keeps the
first `keep_tokens` tags in place when it shuffles, and Train Style sets keep_tokens to the number of trigger
words, so a caption must start with them. Only the `trigger` op (and `reorder`, `dedupe`) touches them; the other
ops work on the tags after the leading trigger words and refuse a trigger word as an argument.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Optional, get_args

from ..dataset.captions_io import clean_caption_text
from ..errors import LorakitError
from .store import CaptionRecord, CaptionStore, HistoryEntry
from .tags import dedupe, join_tags, split_tags, tag_key

OpKind = Literal["trigger", "prune", "add", "remove", "replace", "rename", "reorder", "dedupe"]
Position = Literal["start", "end"]
Order = Literal["frequency", "alphabetical", "front"]
OP_KINDS: tuple[str, ...] = get_args(OpKind)
POSITIONS: tuple[str, ...] = get_args(Position)
ORDERS: tuple[str, ...] = get_args(Order)
# Ops that mean "the trigger word carries this": they act on dataset captions only; regularisation captions
# describe the class without the trigger (seeds/003).
DATASET_ONLY = ("trigger", "prune")


@functools.lru_cache(maxsize=1 << 16)
def key_of(tag: str) -> str:
    """`tag_key`, cached: a dataset has a few thousand distinct tags and batch ops look each up many times."""
    return tag_key(tag)


def _keys(tags: Iterable[str]) -> set[str]:
    return {key_of(t) for t in tags}


# --- pure functions on tag lists --------------------------------------------------------------------------------
def split_leading(tags: Sequence[str], triggers: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the trigger words at the start of a caption, the rest)."""
    keys = _keys(triggers)
    n = 0
    while n < len(tags) and key_of(tags[n]) in keys:
        n += 1
    return list(tags[:n]), list(tags[n:])


def _after_triggers(fn: Callable[[list[str]], list[str]]) -> Callable[..., list[str]]:
    """Apply `fn` to the tags after the leading trigger words; the trigger words stay first, untouched."""
    @functools.wraps(fn)
    def wrapper(tags: Sequence[str], *args: Any, triggers: Sequence[str] = (), **kwargs: Any) -> list[str]:
        leading, rest = split_leading(tags, triggers)
        return leading + fn(rest, *args, **kwargs)
    return wrapper


def set_triggers(tags: Sequence[str], new: Sequence[str], *, old: Sequence[str] = ()) -> list[str]:
    """`new` trigger words first, every other copy of them and of the `old` trigger words removed."""
    new = dedupe(new)
    drop = _keys(new) | _keys(old)
    return list(new) + [t for t in tags if key_of(t) not in drop]


@_after_triggers
def remove_tags(tags: list[str], remove: Sequence[str]) -> list[str]:
    """The tags without any spelling of those in `remove`."""
    drop = _keys(remove)
    return [t for t in tags if key_of(t) not in drop]


@_after_triggers
def add_tags(tags: list[str], add: Sequence[str], position: Position = "end") -> list[str]:
    """`add` at the start (after the trigger words) or the end; tags already there stay where they are."""
    have = _keys(tags)
    new = [t for t in dedupe(add) if key_of(t) not in have]
    return new + tags if position == "start" else tags + new


@_after_triggers
def replace_tag(tags: list[str], target: str, replacement: Sequence[str]) -> list[str]:
    """Every spelling of `target` replaced, in place, by `replacement`; a replacement tag already in the caption
    is not repeated (its first occurrence is kept)."""
    key = key_of(target)
    if key not in _keys(tags):
        return tags
    out: list[str] = []
    for t in tags:
        out += list(replacement) if key_of(t) == key else [t]
    return _drop_repeats(out, _keys(replacement))


def _drop_repeats(tags: list[str], keys: set[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in tags:
        k = key_of(t)
        if k in keys:
            if k in seen:
                continue
            seen.add(k)
        out.append(t)
    return out


def reorder_tags(tags: Sequence[str], *, order: Order, triggers: Sequence[str] = (),
                 frequency: Mapping[str, int] | None = None, front: Sequence[str] = ()) -> list[str]:
    """Trigger words first (wherever they were, in the project's order), then the other tags: by `frequency`
    (tag key → images, most frequent first), alphabetically, or with the `front` tags moved ahead in the given
    order. Ties keep the caption's order."""
    trigger_keys = [key_of(t) for t in triggers]
    first = sorted((t for t in tags if key_of(t) in trigger_keys), key=lambda t: trigger_keys.index(key_of(t)))
    rest = [t for t in tags if key_of(t) not in trigger_keys]
    if order == "frequency":
        counts = frequency or {}
        rest.sort(key=lambda t: -counts.get(key_of(t), 0))
    elif order == "alphabetical":
        rest.sort(key=key_of)
    else:
        ahead = [key_of(t) for t in front]
        rest.sort(key=lambda t: ahead.index(key_of(t)) if key_of(t) in ahead else len(ahead))
    return first + rest


def dedupe_tags(tags: Sequence[str]) -> list[str]:
    """Later spellings of a tag already seen dropped (a trigger word repeated later included)."""
    return dedupe(tags)


# --- the operation ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionOp:
    """One batch operation and the images it is limited to. `from_dict` is the schema the CLI, API and tab fill.

    - trigger: `tags` become the trigger words, first in every dataset caption (old trigger words removed);
    - prune: remove `tags` from dataset captions so the trigger word absorbs them (seeds/003);
    - add: `tags` at `position` "start" (after the trigger words) or "end"; remove: drop `tags`;
    - replace: `target` → `replacement` (one or more tags), in place; rename: the same with exactly one;
    - reorder: trigger words first, then by `order` ("frequency" in the records given, "alphabetical", or "front":
      `tags` moved to the front); dedupe: repeated tags dropped.
    Scope: `concept`, `kind`, `images` (explicit paths), and tag filters `with_all`, `without`, `with_any`.
    Ops change existing captions; `add` also creates the caption of an image named in `images`.
    """

    op: OpKind
    tags: tuple[str, ...] = ()
    target: str = ""
    replacement: tuple[str, ...] = ()
    position: Position = "end"
    order: Order = "frequency"
    concept: Optional[str] = None
    kind: Optional[Literal["dataset", "reg"]] = None
    images: tuple[str, ...] = ()
    with_all: tuple[str, ...] = ()
    without: tuple[str, ...] = ()
    with_any: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaptionOp:
        if not isinstance(data, Mapping):
            raise LorakitError(f"caption op: expected an object with 'op' and its options, got "
                               f"{type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in set(data) - set(known))
        if unknown:
            raise LorakitError(f"caption op: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        d: dict[str, Any] = {k: v for k, v in data.items() if v is not None}
        if "op" not in d:
            raise LorakitError(f"op: missing; expected one of {', '.join(OP_KINDS)}")
        for key in ("concept", "kind"):  # a form's empty field means "any"
            if d.get(key) == "":
                del d[key]
        for key in ("tags", "replacement", "with_all", "without", "with_any"):
            if key in d:
                d[key] = _tag_list(d[key], key)
        if isinstance(d.get("target"), str):
            d["target"] = clean_caption_text(d["target"])
        if "images" in d:
            d["images"] = _str_list(d["images"], "images")
        for key, value in d.items():
            for text in value if isinstance(value, tuple) else (value,):
                check_storable(text, key)
        op = cls(**d)
        op.validate()
        return op

    def validate(self) -> None:
        """Raise LorakitError naming the bad value when the op cannot run."""
        _choice(self.op, OP_KINDS, "op")
        _choice(self.position, POSITIONS, "position")
        _choice(self.order, ORDERS, "order")
        if self.kind is not None:
            _choice(self.kind, ("dataset", "reg"), "kind")
        for name in ("concept", "target"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise LorakitError(f"{name}: expected a string, got {shown(value)}")
        needs_tags = self.op in ("trigger", "prune", "add", "remove") or (self.op == "reorder" and
                                                                           self.order == "front")
        if needs_tags and not self.tags:
            raise LorakitError(f"tags: the {self.op} op needs at least one tag, got {list(self.tags)!r}")
        if self.op in ("replace", "rename"):
            if not self.target.strip() or "," in self.target:
                raise LorakitError(f"target: the {self.op} op needs the one tag to replace, got {self.target!r}")
            wanted = "exactly one tag" if self.op == "rename" else "at least one tag"
            if not self.replacement or (self.op == "rename" and len(self.replacement) != 1):
                raise LorakitError(f"replacement: the {self.op} op needs {wanted}, got {list(self.replacement)!r}")
        if self.op in DATASET_ONLY and self.kind == "reg":
            raise LorakitError(f"kind: the {self.op} op changes dataset captions only (regularisation captions "
                               f"describe the class without the trigger word), got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("tags", "replacement", "images", "with_all", "without", "with_any"):
            d[key] = list(d[key])
        return d

    def describe(self) -> str:
        """A short label for the history and the UI."""
        quoted = ", ".join(repr(t) for t in self.tags)
        text = {
            "trigger": f"Set trigger words {quoted}", "prune": f"Prune {quoted} into the trigger",
            "add": f"Add {quoted} at the {self.position}", "remove": f"Remove {quoted}",
            "replace": f"Replace {self.target!r} with {', '.join(repr(t) for t in self.replacement)}",
            "rename": f"Rename {self.target!r} to {self.replacement[0]!r}" if self.replacement else "Rename",
            "reorder": f"Reorder tags ({self.order})", "dedupe": "Remove repeated tags",
        }[self.op]
        scope = [f"concept {self.concept!r}"] if self.concept else []
        scope += [f"{len(self.images)} image(s)"] if self.images else []
        scope += [f"with {', '.join(self.with_all)}"] if self.with_all else []
        scope += [f"with any of {', '.join(self.with_any)}"] if self.with_any else []
        scope += [f"without {', '.join(self.without)}"] if self.without else []
        return text + (f" ({'; '.join(scope)})" if scope else "")


def shown(value: Any, limit: int = 80) -> str:
    """A bad value as an error message shows it: its repr, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def check_storable(value: Any, name: str) -> None:
    """Refuse text that cannot be stored (an unpaired surrogate from a JSON body: `"\\ud800"`)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise LorakitError(f"{name}: {shown(value)} holds an unpaired surrogate, which no file can "
                               "hold") from None


def _choice(value: Any, allowed: Sequence[str], name: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise LorakitError(f"{name}: expected one of {', '.join(allowed)}, got {shown(value)}")


def _str_list(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise LorakitError(f"{name}: expected a list of strings, got {shown(value)}")
    return tuple(value)


def _tag_list(value: Any, name: str) -> tuple[str, ...]:
    """Tags as a list, or as one comma-separated string (what a CLI user types)."""
    if isinstance(value, str):
        return tuple(split_tags(value))
    tags = tuple(clean_caption_text(t) for t in _str_list(value, name))
    for t in tags:
        if "," in t or "\n" in t or not t.strip():
            raise LorakitError(f"{name}: {shown(t)} is not one tag (a tag is non-empty and holds no comma or line "
                               "break)")
    return tuple(" ".join(t.split()) for t in tags)


# --- choosing images and planning -------------------------------------------------------------------------------
def filter_records(records: Iterable[CaptionRecord], *, with_all: Sequence[str] = (), without: Sequence[str] = (),
                   with_any: Sequence[str] = (), concept: str | None = None, kind: str | None = None,
                   images: Iterable[str] | None = None) -> list[CaptionRecord]:
    """The records whose caption has every `with_all` tag, none of `without`, at least one of `with_any` (when
    given), in `concept` / of `kind` / among `images` when given."""
    need, avoid, some = _keys(with_all), _keys(without), _keys(with_any)
    chosen = None if images is None else set(images)
    out = []
    for r in records:
        if (concept is not None and r.concept != concept) or (kind is not None and r.kind != kind) \
                or (chosen is not None and r.image not in chosen):
            continue
        if need or avoid or some:
            keys = _keys(r.tags)
            if not need <= keys or keys & avoid or (some and not keys & some):
                continue
        out.append(r)
    return out


@dataclass(frozen=True)
class TagCount:
    """How many captions hold a tag, in all and per concept (reg sets are named '<name> (reg)')."""

    tag: str
    total: int
    per_concept: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "total": self.total, "per_concept": dict(self.per_concept)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TagCount:
        return cls(tag=str(data["tag"]), total=int(data["total"]), per_concept=dict(data.get("per_concept", {})))


def concept_label(record: CaptionRecord) -> str:
    return record.concept if record.kind == "dataset" else f"{record.concept} (reg)"


def frequency(records: Iterable[CaptionRecord]) -> list[TagCount]:
    """Each tag with the number of captions holding it (once per caption), most frequent first, then by tag. A tag
    is shown in its most common spelling."""
    spellings: Counter[str] = Counter()
    per_label: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        spellings.update(r.tags)
        per_label[concept_label(r)].update({key_of(t) for t in r.tags})
    best: dict[str, tuple[int, str]] = {}
    for spelling, n in spellings.items():
        k = key_of(spelling)
        if k not in best or (-n, spelling) < (-best[k][0], best[k][1]):
            best[k] = (n, spelling)
    per: dict[str, dict[str, int]] = defaultdict(dict)
    for label in sorted(per_label):
        for k, n in per_label[label].items():
            per[k][label] = n
    counts = [TagCount(tag=best[k][1], total=sum(labels.values()), per_concept=labels) for k, labels in per.items()]
    return sorted(counts, key=lambda c: (-c.total, key_of(c.tag)))


def _key_totals(records: Iterable[CaptionRecord]) -> Counter[str]:
    """Tag key → captions holding it."""
    totals: Counter[str] = Counter()
    for r in records:
        totals.update({key_of(t) for t in r.tags})
    return totals


def plan(records: Sequence[CaptionRecord], op: CaptionOp, *, trigger_words: Sequence[str]) -> dict[str, str]:
    """image → new caption text, for the images whose tags `op` changes (the others are left out).

    `records` are all the captions the op may see (reorder by frequency counts over them); `trigger_words` are
    the project's current ones.
    """
    op.validate()
    _check_against_triggers(op, trigger_words)
    chosen = filter_records(records, with_all=op.with_all, without=op.without, with_any=op.with_any,
                            concept=op.concept, kind="dataset" if op.op in DATASET_ONLY else op.kind,
                            images=op.images or None)
    transform = _transform(op, trigger_words, records)
    named = set(op.images)
    out = {}
    for r in chosen:
        if not r.readable or (not r.exists and not (op.op == "add" and r.image in named)):
            continue  # a caption that was not read (a link, too long) is never overwritten
        new = transform(list(r.tags))
        if new != list(r.tags):
            out[r.image] = join_tags(new)
    return out


def _transform(op: CaptionOp, triggers: Sequence[str],
               records: Sequence[CaptionRecord]) -> Callable[[list[str]], list[str]]:
    if op.op == "trigger":
        return lambda tags: set_triggers(tags, op.tags, old=triggers)
    if op.op in ("prune", "remove"):
        return lambda tags: remove_tags(tags, op.tags, triggers=triggers)
    if op.op == "add":
        return lambda tags: add_tags(tags, op.tags, op.position, triggers=triggers)
    if op.op in ("replace", "rename"):
        return lambda tags: replace_tag(tags, op.target, op.replacement, triggers=triggers)
    if op.op == "reorder":
        counts = _key_totals(records) if op.order == "frequency" else None
        return lambda tags: reorder_tags(tags, order=op.order, triggers=triggers, frequency=counts, front=op.tags)
    return dedupe_tags


def _check_against_triggers(op: CaptionOp, triggers: Sequence[str]) -> None:
    if op.op == "trigger":
        return
    if op.op == "prune" and not triggers:
        raise LorakitError("Prune moves traits into the trigger word, and this project has none: set the trigger "
                           "word first (the trigger op).")
    keys = _keys(triggers)
    named = [*op.tags, *([op.target] if op.target else []), *op.replacement]
    clash = [t for t in named if key_of(t) in keys]
    if clash:
        raise LorakitError(f"{', '.join(repr(t) for t in clash)}: trigger words are changed with the trigger op "
                           f"only (current trigger words: {', '.join(triggers)}).")


def execute(store: CaptionStore, op: CaptionOp, *, label: str | None = None) -> HistoryEntry:
    """Plan `op` on the project's captions and apply it as one undo step; the trigger op also sets the project's
    trigger words (so keep_tokens matches) in the same step."""
    triggers = store.project.settings.trigger_words
    changes = plan(store.records(), op, trigger_words=triggers)
    settings = {"trigger_words": list(dedupe(op.tags))} if op.op == "trigger" else None
    return store.apply(changes, label=label or op.describe(), op=op.to_dict(), settings=settings)


@dataclass(frozen=True)
class CaptionDiff:
    """What a planned change does to one caption, for a preview."""

    image: str
    before: str
    after: str
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "before": self.before, "after": self.after, "added": list(self.added),
                "removed": list(self.removed)}


def diff(records: Iterable[CaptionRecord], changes: Mapping[str, str]) -> list[CaptionDiff]:
    """The planned changes as before/after with the tags added and removed, in record order."""
    out = []
    for r in records:
        if r.image in changes:
            after = split_tags(changes[r.image])
            old, new = _keys(r.tags), _keys(after)
            out.append(CaptionDiff(image=r.image, before=r.text, after=changes[r.image],
                                   added=tuple(t for t in after if key_of(t) not in old),
                                   removed=tuple(t for t in r.tags if key_of(t) not in new)))
    return out

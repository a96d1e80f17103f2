"""The caption audit: what in the captions will teach the model something the user did not mean.

Each finding names its images, says why it matters with the guide it comes from (seeds/000, 002, 003) and which
fix the caption tools offer. Findings, in order of severity:

- error:   CAPTION_EXT_MISMATCH (sd-scripts never reads these captions), OVERLONG_CAPTION past 225 tokens,
           CAPTION_UNREADABLE (a caption file that is a link, not a regular file, or too long to be a caption);
- warning: TRIGGER_MISSING, EMPTY_CAPTION, UNTAGGED_IMAGE, IDENTICAL_CAPTIONS, DOMINANT_TAG, LOW_VARIETY,
           SEMANTIC_DUPLICATES (only where embeddings are stored),
           OVERLONG_CAPTION past `max_tokens`;
- info:    MISSING_CATEGORY (no pose, camera angle, shot distance, gaze, eye-state or mouth tag).

Images the index cannot read are left out (the dataset report lists them).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from ..dataset.index import DatasetIndex, IndexEntry
from ..errors import Cancelled, LorakitError, NotFound
from ..fsutil import atomic_copy
from ..progress import ProgressFn
from ..project import Project
from ..schema import Field, Schema
from ..tomlio import read_toml
from .ops import CaptionOp, key_of, split_leading
from .store import CaptionRecord, CaptionStore
from .tokens import TOKEN_LIMITS, count_tokens

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
DEFAULT_CATEGORIES = Path(__file__).with_name("categories.toml")

WHY = {
    "IDENTICAL_CAPTIONS": "seeds/002: differently posed images under one caption make the model interpolate "
                          "between them — the 'third hand' sticking out of the chest.",
    "DOMINANT_TAG": "seeds/000: 'One busty character can influence all of it' — a trait on most images leaks into "
                    "everything the model makes; seeds/003 prunes what should belong to the trigger word.",
    "MISSING_CATEGORY": "seeds/002: standardised tags for pose, camera angle, shot distance, gaze, eye and mouth "
                        "state let the model tell these apart instead of averaging them.",
    "LOW_VARIETY": "seeds/000: 'Diversity of clothing options and background are important' — one outfit or "
                   "backdrop everywhere melts into the style.",
    "TRIGGER_MISSING": "seeds/003: the trigger words, first in every caption and kept there by keep_tokens, absorb "
                       "what the tags leave out.",
    "EMPTY_CAPTION": "seeds/003: training with no tags at all 'is terrible, especially for style training'.",
    "CAPTION_EXT_MISMATCH": "seeds/002: the caption is the training signal, and sd-scripts reads only the "
                            "project's caption extension, so these captions are never seen.",
    "UNTAGGED_IMAGE": "seeds/003: no tags at all 'is terrible, especially for style training'; without a caption "
                      "sd-scripts trains the image on the folder's class token alone.",
    "OVERLONG_CAPTION": "seeds/002: detailed captions matter, but the text encoder reads 75 tokens per chunk "
                        "(sd-scripts' max_token_length: 75, 150 or 225) and the rest is cut off.",
    "SEMANTIC_DUPLICATES": "seeds/000: diversity matters more than count; images that differ only slightly (a "
                           "re-crop, a re-encode, a variant) weigh one picture several times over.",
    "CAPTION_UNREADABLE": "Train Style reads captions only from regular files inside the project, at most "
                          "10,000 characters, so no link can show or change a file elsewhere; sd-scripts would "
                          "still read these files as they are.",
}


@dataclass(frozen=True)
class Finding:
    """One audit finding. `data` holds what a fix needs: `action` (add_tags, prune, set_trigger, tag,
    use_other_extension, shorten, vary_dataset), and where one click can fix it `op`, a `CaptionOp` dict."""

    code: str
    severity: Severity
    images: list[str]
    detail: str
    why: str
    fix: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "images": list(self.images), "detail": self.detail,
                "why": self.why, "fix": self.fix, "data": dict(self.data)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        return cls(code=str(d["code"]), severity=d["severity"], images=list(d["images"]), detail=str(d["detail"]),
                   why=str(d["why"]), fix=str(d["fix"]), data=dict(d.get("data") or {}))


@dataclass(frozen=True)
class AuditReport:
    """The findings, most severe first. `tokens_estimated` is True when no CLIP vocabulary was found."""

    findings: list[Finding]
    tokens_estimated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"findings": [f.to_dict() for f in self.findings], "tokens_estimated": self.tokens_estimated}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditReport:
        return cls(findings=[Finding.from_dict(f) for f in d["findings"]],
                   tokens_estimated=bool(d.get("tokens_estimated", False)))

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]


def _finding(code: str, severity: Severity, images: Iterable[str], detail: str, fix: str, **data: Any) -> Finding:
    return Finding(code=code, severity=severity, images=sorted(images), detail=detail, why=WHY[code], fix=fix,
                   data=data)


# --- categories ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Category:
    """A named set of tags (and patterns) the audit checks for presence (`required`) or variety (`variety`)."""

    name: str
    tags: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    required: bool = False
    variety: bool = False
    skip_if: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keys", frozenset(key_of(t) for t in self.tags))
        object.__setattr__(self, "_regexes", tuple(re.compile(p) for p in self.patterns))
        object.__setattr__(self, "_skip", frozenset(key_of(t) for t in self.skip_if))

    def matches(self, key: str) -> bool:
        """Whether a tag (given by its `tag_key`) belongs to this category."""
        return key in self._keys or any(r.search(key) for r in self._regexes)

    def skips(self, keys: set[str]) -> bool:
        return bool(self._skip & keys)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tags": list(self.tags), "patterns": list(self.patterns),
                "required": self.required, "variety": self.variety, "skip_if": list(self.skip_if)}


_CATEGORY_KEYS = {"tags": list, "patterns": list, "required": bool, "variety": bool, "skip_if": list}


def load_categories(path: Path | None = None) -> list[Category]:
    """The categories of a TOML file (the shipped default when `path` is None), in file order; every mistake is
    reported with the file, the category and the key."""
    path = Path(path) if path is not None else DEFAULT_CATEGORIES
    if not path.is_file():
        raise NotFound(f"No categories file at {path}; create it with ensure_categories_file (a copy of the "
                       "default) or pass another file.")
    data = read_toml(path)
    table = data.get("categories")
    if not isinstance(table, dict) or not table:
        raise LorakitError(f"{path}: expected [categories.<name>] tables, found {sorted(data) or 'nothing'}")
    return [_category(path, name, spec) for name, spec in table.items()]


def _category(path: Path, name: str, spec: Any) -> Category:
    where = f"{path}: categories.{name}"
    if not isinstance(spec, dict):
        raise LorakitError(f"{where}: expected a table with tags, got {spec!r}")
    unknown = sorted(set(spec) - set(_CATEGORY_KEYS))
    if unknown:
        raise LorakitError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_CATEGORY_KEYS)}")
    for key, kind in _CATEGORY_KEYS.items():
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            wanted = "true or false" if kind is bool else "a list of strings"
            raise LorakitError(f"{where}.{key}: expected {wanted}, got {value!r}")
    for pattern in spec.get("patterns", []):
        try:
            re.compile(pattern)
        except re.error as e:
            raise LorakitError(f"{where}.patterns: {pattern!r} is not a valid regular expression ({e})") from e
    if not spec.get("tags") and not spec.get("patterns"):
        raise LorakitError(f"{where}: a category needs tags or patterns, got neither")
    return Category(name=name, tags=tuple(spec.get("tags", [])), patterns=tuple(spec.get("patterns", [])),
                    required=spec.get("required", False), variety=spec.get("variety", False),
                    skip_if=tuple(spec.get("skip_if", [])))


def ensure_categories_file(dest: Path) -> Path:
    """Copy the default categories to `dest` for the user to edit, unless a file is already there (never
    overwritten); return `dest`."""
    dest = Path(dest)
    if not dest.exists():
        atomic_copy(DEFAULT_CATEGORIES, dest)
    return dest


# --- the audit --------------------------------------------------------------------------------------------------
AUDIT_SCHEMA = Schema(noun="audit setting", groups=(("audit", "Audit thresholds"),), fields=(
    Field(name="dominant_threshold", type=float, default=0.6, minimum=0.01, maximum=1, group="audit",
          label="Dominant tag share",
          reason="A non-trigger tag on at least this share of a concept's images is reported: it would be learned "
                 "as part of the trigger."),
    Field(name="low_variety_threshold", type=float, default=0.9, minimum=0.01, maximum=1, group="audit",
          label="Low variety share",
          reason="One clothing or background value on at least this share of a concept's images is reported: "
                 "the LoRA would always draw it."),
    Field(name="near_identical", type=float, default=0.9, minimum=0.01, maximum=1, group="audit",
          label="Near-identical similarity",
          reason="Two captions whose tags (trigger words left out) overlap this much count as the same."),
    Field(name="max_tokens", type=int, default=75, minimum=1, maximum=1000, group="audit",
          label="Caption token limit",
          reason="sd-scripts' max_token_length (75, 150 or 225): longer captions are cut, so they are reported."),
    Field(name="semantic_duplicate", type=float, default=0.97, minimum=0.5, maximum=1, group="audit",
          label="Semantic near-duplicate similarity",
          reason="Two images whose stored embeddings reach this cosine similarity are reported (only when "
                 "embeddings exist: the audit never computes them)."),
    Field(name="min_images", type=int, default=4, minimum=1, maximum=100_000, group="audit",
          label="Smallest concept",
          reason="Concepts with fewer images are too small for the per-concept statistics."),
))


@dataclass(frozen=True)
class AuditSettings:
    """The thresholds of one audit (see `audit`; declared in AUDIT_SCHEMA)."""

    dominant_threshold: float = AUDIT_SCHEMA["dominant_threshold"].default
    low_variety_threshold: float = AUDIT_SCHEMA["low_variety_threshold"].default
    near_identical: float = AUDIT_SCHEMA["near_identical"].default
    max_tokens: int = AUDIT_SCHEMA["max_tokens"].default
    min_images: int = AUDIT_SCHEMA["min_images"].default
    semantic_duplicate: float = AUDIT_SCHEMA["semantic_duplicate"].default
    near_duplicate_distance: int = 6

    def validate(self) -> None:
        AUDIT_SCHEMA.validate({f.name: getattr(self, f.name) for f in AUDIT_SCHEMA.fields})
        value = self.near_duplicate_distance
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LorakitError(f"near_duplicate_distance: expected an integer of at least 0, got {value!r}")


@dataclass
class _Caption:
    """A record the audit looks at, with what it needs precomputed."""

    record: CaptionRecord
    content: frozenset[str]  # tag keys without the trigger words
    keys: set[str]
    phash: Optional[int]
    by_category: dict[str, set[str]] = field(default_factory=dict)  # category name → the caption's keys in it


def audit(project: Project, *, categories_file: Path | None = None, progress: Optional[ProgressFn] = None,
          cancel: threading.Event | None = None, **thresholds: Any) -> AuditReport:
    """Audit every caption of `project` (see the module docstring for the findings).

    `thresholds` are AUDIT_SCHEMA's fields (None or absent: the declared default): `dominant_threshold`, the share
    of a concept's captioned images a non-trigger tag may reach; `low_variety_threshold`, the share one
    clothing/background value may reach; `near_identical`, the Jaccard similarity of tag sets (trigger words left
    out) from which two captions count as the same; `max_tokens`, sd-scripts' max_token_length; `min_images`, the
    smallest concept the per-concept statistics speak about. The index scan behind the image hashes reports
    `progress`; `cancel` stops between steps.
    """
    chosen = AUDIT_SCHEMA.from_dict({k: v for k, v in thresholds.items() if v is not None})
    settings = AuditSettings(**chosen, near_duplicate_distance=project.settings.near_duplicate_distance)
    settings.validate()
    categories = load_categories(categories_file)
    triggers = tuple(project.settings.trigger_words)
    entries = {e.path: e for e in DatasetIndex(project).scan(progress=progress)}
    _check(cancel)
    records = [r for r in CaptionStore(project).records() if not _unreadable(entries.get(r.image))]
    report = run_audit(records, entries=entries, triggers=triggers, categories=categories, settings=settings,
                       caption_extension=project.settings.caption_extension, cancel=cancel)
    semantic = _semantic_duplicates(project, [r.image for r in records if r.kind == "dataset"],
                                    settings.semantic_duplicate)
    findings = sorted(report.findings + semantic, key=lambda f: (SEVERITY_ORDER[f.severity], f.code, f.detail,
                                                                 f.images))
    return AuditReport(findings=findings, tokens_estimated=report.tokens_estimated)


def _semantic_duplicates(project: Project, images: list[str], threshold: float) -> list[Finding]:
    """SEMANTIC_DUPLICATES from the embeddings already stored (none stored: no finding, and no model is loaded)."""
    from ..embed.neighbours import groups_of, similar_pairs
    from ..embed.store import stored_table

    table = stored_table(project, images)
    if table is None:
        return []
    pairs = similar_pairs(table.vectors, threshold)
    best = {}
    for i, j, cos in pairs:
        best[i] = max(best.get(i, 0.0), cos)
        best[j] = max(best.get(j, 0.0), cos)
    return [_finding("SEMANTIC_DUPLICATES", "warning", [table.images[i] for i in group],
                     f"{len(group)} images look alike (embedding similarity up to {max(best[i] for i in group):.3f} "
                     f"≥ {threshold})", "Keep the best of them and remove the others, or vary them.",
                     action="remove_duplicates", similarity=round(max(best[i] for i in group), 4))
            for group in groups_of(pairs)]


def run_audit(records: Sequence[CaptionRecord], *, entries: Mapping[str, IndexEntry], triggers: Sequence[str],
              categories: Sequence[Category], settings: AuditSettings, caption_extension: str = ".txt",
              cancel: threading.Event | None = None) -> AuditReport:
    """The audit on records already read (what `audit` does after scanning the project)."""
    # 1. the files: wrong extension, none, empty, trigger words; then the length in CLIP tokens
    findings = _file_findings(records, triggers, caption_extension)
    overlong, estimated = _overlong(records, settings.max_tokens)
    findings += overlong
    _check(cancel)
    # 2. what the tags say, on dataset captions that hold more than the trigger words
    captions = _prepare(records, triggers=triggers, categories=categories, entries=entries)
    findings += _identical(captions, settings)
    _check(cancel)
    variety = _low_variety(captions, categories, settings)
    findings += variety
    findings += _dominant(captions, triggers, settings, skip={(f.data["concept"], f.data["tag_key"]) for f in variety})
    findings += _missing_categories(captions, categories)
    # 3. most severe first, in a stable order
    findings.sort(key=lambda f: (SEVERITY_ORDER[f.severity], f.code, f.detail, f.images))
    return AuditReport(findings=findings, tokens_estimated=estimated)


def _prepare(records: Sequence[CaptionRecord], *, triggers: Sequence[str], categories: Sequence[Category],
             entries: Mapping[str, IndexEntry]) -> list[_Caption]:
    """Dataset captions with content besides the trigger words, their tag keys sorted into categories."""
    trigger_keys = {key_of(t) for t in triggers}
    index = _CategoryIndex(categories)
    out = []
    for r in records:
        if not r.exists or r.kind != "dataset":
            continue
        keys = {key_of(t) for t in r.tags}
        c = _Caption(record=r, content=frozenset(keys - trigger_keys), keys=keys, phash=_phash(entries.get(r.image)))
        if not c.content:
            continue
        for k in keys:
            for name in index.of(k):
                c.by_category.setdefault(name, set()).add(k)
        out.append(c)
    return out


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("The caption audit was cancelled.")


def _unreadable(entry: Optional[IndexEntry]) -> bool:
    return entry is not None and bool(entry.problem)


def _phash(entry: Optional[IndexEntry]) -> Optional[int]:
    return entry.phash_int if entry is not None and entry.phash else None


def _file_findings(records: Sequence[CaptionRecord], triggers: Sequence[str], ext: str) -> list[Finding]:
    """Findings about the caption files themselves: wrong extension, none, empty, trigger words missing."""
    other = ".caption" if ext == ".txt" else ".txt"
    mismatch = [r.image for r in records if r.other_ext]
    untagged = [r for r in records if not r.exists and not r.other_ext and r.kind == "dataset"]
    refused = [r for r in records if not r.readable]
    empty = [r.image for r in records if r.exists and r.readable and not split_leading(r.tags, triggers)[1]]
    lacking = [r.image for r in records if r.kind == "dataset" and r.exists and r.tags and triggers
               and [key_of(t) for t in r.tags[:len(triggers)]] != [key_of(t) for t in triggers]]
    out = []
    if refused:
        out.append(_finding("CAPTION_UNREADABLE", "error", [r.image for r in refused],
                            f"{len(refused)} caption file(s) were not read: " + "; ".join(
                                sorted({r.problem for r in refused})[:3]),
                            "Replace each with a regular text file of its caption (or delete it), then check "
                            "again.", action="fix_files"))
    if mismatch:
        out.append(_finding("CAPTION_EXT_MISMATCH", "error", mismatch,
                            f"{len(mismatch)} image(s) have a {other} caption but no {ext} one; sd-scripts reads "
                            f"only {ext}.", f"Use these captions: copy them to {ext} (or set the project's caption "
                            f"extension to {other}).", action="use_other_extension"))
    if untagged:
        classes = ", ".join(sorted({r.concept for r in untagged}))
        out.append(_finding("UNTAGGED_IMAGE", "warning", [r.image for r in untagged],
                            f"{len(untagged)} image(s) have no caption: sd-scripts trains them on the class token "
                            f"({classes}).", "Tag untagged images: run a tagger on them.", action="tag"))
    if empty:
        out.append(_finding("EMPTY_CAPTION", "warning", empty,
                            f"{len(empty)} caption(s) are empty or hold only the trigger words.",
                            "Tag these images: run a tagger with overwrite, or write their captions.", action="tag"))
    if lacking:
        words = ", ".join(triggers)
        out.append(_finding("TRIGGER_MISSING", "warning", lacking,
                            f"{len(lacking)} caption(s) do not start with the trigger words ({words}).",
                            f"Set the trigger word: puts {words} first in every dataset caption.",
                            action="set_trigger", op=CaptionOp(op="trigger", tags=tuple(triggers)).to_dict()))
    return out


def _overlong(records: Sequence[CaptionRecord], max_tokens: int) -> tuple[list[Finding], bool]:
    """Captions longer than `max_tokens` CLIP tokens (warning) or than 225, which no setting reads (error)."""
    warn: list[str] = []
    error: list[str] = []
    estimated = False
    longest = TOKEN_LIMITS[-1]
    for r in records:
        if not r.exists or not r.text:
            continue
        count = count_tokens(r.text)
        estimated = estimated or count.estimated
        if count.tokens > longest:
            error.append(r.image)
        elif count.tokens > max_tokens:
            warn.append(r.image)
    note = " (estimated: no CLIP vocabulary found)" if estimated else ""
    out = []
    if error:
        out.append(_finding("OVERLONG_CAPTION", "error", error,
                            f"{len(error)} caption(s) are longer than {longest} CLIP tokens{note}: no "
                            f"max_token_length reads past {longest}.",
                            "Shorten these captions: remove minor tags.", action="shorten", max_tokens=longest))
    if warn and max_tokens < longest:
        out.append(_finding("OVERLONG_CAPTION", "warning", warn,
                            f"{len(warn)} caption(s) are longer than {max_tokens} CLIP tokens{note}: the rest is cut.",
                            "Shorten these captions: remove minor tags, or raise max_token_length (150 or 225) in "
                            "the training settings.", action="shorten", max_tokens=max_tokens))
    return out, estimated


# --- same captions on different pictures ------------------------------------------------------------------------
def _identical(captions: Sequence[_Caption], settings: AuditSettings) -> list[Finding]:
    """Groups of visually different images (pHash further apart than the project's near-duplicate distance) whose
    tag sets, trigger words left out, are the same or nearly (Jaccard ≥ `near_identical`)."""
    by_set: dict[frozenset[str], list[int]] = defaultdict(list)
    for i, c in enumerate(captions):
        if c.phash is not None:
            by_set[c.content].append(i)
    sets = list(by_set)
    pairs = [(u, u) for u, s in enumerate(sets) if len(by_set[s]) > 1]
    pairs += _similar_sets(sets, settings.near_identical)
    parent = list(range(len(captions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for u, v in pairs:
        a, b = by_set[sets[u]], by_set[sets[v]]
        for i, j in _visually_different(captions, a, b, settings.near_duplicate_distance, same=u == v):
            parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(captions)):
        groups[find(i)].append(i)
    return [_identical_finding([captions[i] for i in members]) for members in groups.values() if len(members) > 1]


def _identical_finding(members: list[_Caption]) -> Finding:
    exact = len({c.content for c in members}) == 1
    example = members[0].record.text
    detail = (f"{len(members)} visually different images share the caption '{example}'" if exact else
              f"{len(members)} visually different images have nearly the same caption (e.g. '{example}')")
    return _finding("IDENTICAL_CAPTIONS", "warning", [c.record.image for c in members], detail + ".",
                    "Add tags to these images: what tells them apart (pose, hands, gaze, expression, setting).",
                    action="add_tags")


def _similar_sets(sets: Sequence[frozenset[str]], threshold: float) -> list[tuple[int, int]]:
    """Pairs (i, j) of distinct sets with Jaccard similarity ≥ `threshold`.

    Prefix filtering: with tags ordered rarest first, two sets that similar must share a tag among the first
    |s| − ⌈t·|s|⌉ + 1 of each, so only sets sharing such a tag are compared (not all n² pairs).
    """
    if threshold >= 1:
        return []
    freq = Counter(t for s in sets for t in s)
    index: dict[str, list[int]] = defaultdict(list)
    pairs = []
    for i in sorted(range(len(sets)), key=lambda k: len(sets[k])):
        s = sets[i]
        prefix = sorted(s, key=lambda t: (freq[t], t))[:len(s) - math.ceil(threshold * len(s) - 1e-9) + 1]
        candidates = {j for t in prefix for j in index[t]}
        for j in candidates:
            other = sets[j]
            if len(other) >= threshold * len(s) - 1e-9:
                shared = len(s & other)
                if shared / (len(s) + len(other) - shared) >= threshold - 1e-9:
                    pairs.append((min(i, j), max(i, j)))
        for t in prefix:
            index[t].append(i)
    return pairs


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _visually_different(captions: Sequence[_Caption], a: list[int], b: list[int], max_distance: int, *,
                        same: bool) -> Iterable[tuple[int, int]]:
    """Pairs from `a` × `b` (or within `a` when `same`) whose perceptual hashes differ by more than
    `max_distance` bits: not duplicates of one picture."""
    hb = np.array([captions[j].phash for j in b], dtype=np.uint64)
    for start in range(0, len(a), 256):
        rows = a[start:start + 256]
        ha = np.array([captions[i].phash for i in rows], dtype=np.uint64)
        x = ha[:, None] ^ hb[None, :]
        dist = _POPCOUNT[x.view(np.uint8)].reshape(x.shape + (8,)).sum(axis=-1)
        for r, c in zip(*np.nonzero(dist > max_distance), strict=True):
            i, j = rows[int(r)], b[int(c)]
            if not same or i < j:
                yield i, j


# --- per-concept statistics -------------------------------------------------------------------------------------
def _by_concept(captions: Sequence[_Caption]) -> dict[str, list[_Caption]]:
    out: dict[str, list[_Caption]] = defaultdict(list)
    for c in captions:
        out[c.record.concept].append(c)
    return out


def _spelling(members: Iterable[_Caption], key: str) -> str:
    """The most common spelling of a tag among these captions."""
    counts = Counter(t for c in members for t in c.record.tags if key_of(t) == key)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else key


def _dominant(captions: Sequence[_Caption], triggers: Sequence[str], settings: AuditSettings, *,
              skip: set[tuple[str, str]]) -> list[Finding]:
    """Non-trigger tags on at least `dominant_threshold` of a concept's captioned images."""
    out = []
    for concept, members in sorted(_by_concept(captions).items()):
        if len(members) < settings.min_images:
            continue
        counts = Counter(k for c in members for k in c.content)
        for key, n in sorted(counts.items()):
            if n / len(members) < settings.dominant_threshold or (concept, key) in skip:
                continue
            tag = _spelling(members, key)
            fix = (f"Prune into trigger: remove '{tag}' from these captions so the trigger word holds it, or vary "
                   "the dataset.")
            if not triggers:
                fix = "Set the trigger word, then " + fix[0].lower() + fix[1:]
            out.append(_finding("DOMINANT_TAG", "warning", [c.record.image for c in members if key in c.content],
                                f"'{tag}' is on {n} of {len(members)} captioned images of concept '{concept}' "
                                f"({n / len(members):.0%}) and is not a trigger word: it will bake into everything.",
                                fix, action="prune", concept=concept, tag=tag, tag_key=key,
                                op=CaptionOp(op="prune", tags=(tag,), concept=concept).to_dict()))
    return out


class _CategoryIndex:
    """Which categories a tag key belongs to, computed once per distinct tag."""

    def __init__(self, categories: Sequence[Category]):
        self.categories = list(categories)
        self._memo: dict[str, tuple[str, ...]] = {}

    def of(self, key: str) -> tuple[str, ...]:
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = tuple(c.name for c in self.categories if c.matches(key))
        return found


def _low_variety(captions: Sequence[_Caption], categories: Sequence[Category],
                 settings: AuditSettings) -> list[Finding]:
    """Variety categories where one value covers ≥ `low_variety_threshold` of a concept's images that have any tag
    of the category."""
    out = []
    for concept, members in sorted(_by_concept(captions).items()):
        for category in (c for c in categories if c.variety):
            having = [(c, c.by_category.get(category.name)) for c in members if not category.skips(c.keys)]
            having = [(c, keys) for c, keys in having if keys]
            if len(having) < settings.min_images:
                continue
            counts = Counter(k for _, keys in having for k in keys)
            key, n = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            if n / len(having) < settings.low_variety_threshold:
                continue
            tag = _spelling(members, key)
            out.append(_finding("LOW_VARIETY", "warning", [c.record.image for c, keys in having if key in keys],
                                f"'{tag}' is the {category.name} of {n} of the {len(having)} images of concept "
                                f"'{concept}' that have a {category.name} tag ({n / len(having):.0%}).",
                                f"Vary the dataset: add images with other {category.name}; or prune '{tag}' into "
                                "the trigger if it belongs to the subject.", action="vary_dataset", concept=concept,
                                category=category.name, tag=tag, tag_key=key))
    return out


def _missing_categories(captions: Sequence[_Caption], categories: Sequence[Category]) -> list[Finding]:
    """For each required category, the images with none of its tags (one finding per category)."""
    out = []
    for category in (c for c in categories if c.required):
        lacking = [c.record.image for c in captions
                   if category.name not in c.by_category and not category.skips(c.keys)]
        if lacking:
            examples = ", ".join(category.tags[:4])
            out.append(_finding("MISSING_CATEGORY", "info", lacking,
                                f"{len(lacking)} image(s) have no {category.name} tag (e.g. {examples}).",
                                f"Add tags to these images: their {category.name}.", action="add_tags",
                                category=category.name, examples=list(category.tags[:8])))
    return out

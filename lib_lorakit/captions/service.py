"""The caption steps the tab, the CLI and the HTTP API share: tagging a project, batch operations with undo,
per-image edits, the tag-frequency table and the audit. Each method makes one core call."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..dataset.captions_io import CaptionTooLong, check_caption_length, clean_caption_text
from ..errors import LorakitError, NotFound
from ..host import Host
from ..jobs import JobState, ProgressFn, job_manager
from ..paths import resolve_inside
from ..project import Project, Workspace
from ..schema import Field, Schema
from ..taggers.base import Tagger
from ..taggers.clip import CLIP_FIELDS
from ..taggers.combine import combined_caption
from ..taggers.wd14 import WD14_FIELDS
from .audit import AuditReport, Finding, audit, ensure_categories_file
from .ops import (
    CaptionDiff,
    CaptionOp,
    TagCount,
    check_storable,
    diff,
    execute,
    filter_records,
    frequency,
    plan,
    shown,
)
from .store import CaptionRecord, CaptionStore, HistoryEntry
from .tags import join_tags, split_tags, tag_key

if TYPE_CHECKING:
    from ..taggers.clip import ClipOptions
    from ..taggers.pipeline import TagOutcome
    from ..taggers.wd14 import WD14Options

TAGGER_CHOICES = ("wd14", "clip", "both", "deepbooru", "webui-clip")
FLUSH_EVERY = 32  # captions written (and added to the run's undo step) every this many images


# The tagging settings, declared once: the request's own, then the WD14 and CLIP taggers' (their defaults and
# reasons live with the taggers). The CLI's flags, the API's validation and the Captions panel's fields use it.
TAG_SCHEMA = Schema(noun="tagging option", groups=(("tag", "Tagging"), ("wd14", "WD14"), ("clip", "CLIP")), fields=(
    Field(name="tagger", type=str, default="wd14", choices=TAGGER_CHOICES, group="tag", label="Tagger",
          reason="WD14 writes booru tags; CLIP picks terms from the vocabularies; both writes the two; deepbooru and "
                 "webui-clip are the webui's interrogators."),
    Field(name="model", type=str, default="", group="tag", label="WD14 model",
          reason="A known WD14 model name, or a folder holding model.onnx and selected_tags.csv; empty: the "
                 "default model."),
    *WD14_FIELDS,
    *CLIP_FIELDS,
    Field(name="batch", type=int, default=0, minimum=0, maximum=256, group="tag", label="Batch (0: automatic)",
          reason="Images per model call; 0 picks what suits the device (8 on a GPU, 1 on a CPU)."),
    Field(name="overwrite", type=bool, default=False, group="tag", label="Overwrite existing captions",
          reason="Tags images that already have a caption too (undo restores them)."),
    Field(name="concept", type=str, default="", group="tag", label="Concept",
          reason="Only this concept's images; empty: the whole project."),
))
_TAG = TAG_SCHEMA.defaults()


@dataclass(frozen=True)
class TagRequest:
    """What to tag a project with. The field list is the schema the CLI, the API and the tab fill in."""

    tagger: str = _TAG["tagger"]
    model: str = _TAG["model"]  # WD14: a known model name or a folder holding model.onnx + selected_tags.csv
    general_threshold: float = _TAG["general_threshold"]
    character_threshold: float = _TAG["character_threshold"]
    include_rating: bool = _TAG["include_rating"]
    exclude: tuple[str, ...] = ()
    underscores_to_spaces: bool = _TAG["underscores_to_spaces"]
    escape_parentheses: bool = _TAG["escape_parentheses"]
    clip_model: str = _TAG["clip_model"]
    clip_pretrained: str = _TAG["clip_pretrained"]
    clip_top_k: int = _TAG["clip_top_k"]
    batch: int = _TAG["batch"]  # 0: what suits the device (8 on a GPU; 1 on a CPU, where batching gains nothing)
    overwrite: bool = _TAG["overwrite"]
    concept: str = _TAG["concept"]
    images: tuple[str, ...] = ()  # project-relative image paths; empty: every image of the concept or project

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TagRequest:
        if not isinstance(data, Mapping):
            raise LorakitError(f"tag: expected an object of options (e.g. {{\"tagger\": \"wd14\"}}), got "
                               f"{type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in set(data) - set(known))
        if unknown:
            raise LorakitError(f"tag: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        d = {k: v for k, v in data.items() if v is not None}
        for key in ("exclude", "images"):
            if key in d:
                value = d[key]
                if isinstance(value, str):
                    d[key] = tuple(split_tags(value))
                elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                    d[key] = tuple(value)
                else:
                    raise LorakitError(f"{key}: expected a list of strings (or one comma-separated string), got "
                                       f"{shown(value)}")
        for key, value in d.items():
            for text in value if isinstance(value, tuple) else (value,):
                check_storable(text, key)
        req = cls(**d)
        req.validate()
        return req

    def validate(self) -> None:
        """The request's own fields here; the taggers' options by the taggers' own validation (one set of rules
        and messages), so a bad threshold is refused before any job starts."""
        TAG_SCHEMA.validate({f.name: getattr(self, f.name) for f in TAG_SCHEMA.fields})
        self.wd14_options()
        self.clip_options(model=self.clip_model, pretrained=self.clip_pretrained)

    def wd14_options(self) -> WD14Options:
        from ..taggers.wd14 import WD14Options

        return WD14Options(general_threshold=self.general_threshold, character_threshold=self.character_threshold,
                           include_rating=self.include_rating, exclude=self.exclude,
                           underscores_to_spaces=self.underscores_to_spaces,
                           escape_parentheses=self.escape_parentheses)

    def clip_options(self, *, model: str, pretrained: str) -> ClipOptions:
        """CLIP's options, with the model and weights as resolved by the caller (files: inside allowed roots)."""
        from ..taggers.clip import ClipOptions

        return ClipOptions(model=model, pretrained=pretrained, top_k=self.clip_top_k)

    @property
    def tagger_names(self) -> tuple[str, ...]:
        return ("wd14", "clip") if self.tagger == "both" else (self.tagger,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exclude"], d["images"] = list(self.exclude), list(self.images)
        return d


@dataclass
class TagReport:
    tagged: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # skipped: a caption was there (no overwrite)
    failed: list[dict] = field(default_factory=list)  # {"image", "reason"}
    cancelled: bool = False
    device: str = ""
    images_per_second: float = 0.0
    entry: str = ""  # the undo step holding every caption this run wrote

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"Tagged {len(self.tagged)} image(s)"]
        if self.already:
            parts.append(f"{len(self.already)} already captioned (skipped; choose overwrite to tag them again)")
        if self.failed:
            parts.append(f"{len(self.failed)} not tagged (each with its reason)")
        if self.device:
            parts.append(f"on {self.device}")
        if self.cancelled:
            parts.append("cancelled: run it again to tag the rest")
        return "; ".join(parts) + "."


class CaptionFolders:
    """Where tagger models and the user-editable vocabularies live."""

    def __init__(self, host: Host):
        self.host = host

    @property
    def taggers(self) -> Path:
        return self.host.models_dir() / "train-style" / "taggers"

    @property
    def clip_cache(self) -> Path:
        return self.host.models_dir() / "train-style" / "clip"

    @property
    def vocabularies(self) -> Path:
        return self.host.projects_home() / "vocabularies"


def _needs_tags(text: str, triggers: Sequence[str]) -> bool:
    """Untagged: no caption, or one holding nothing but the trigger words."""
    keys = {tag_key(t) for t in triggers}
    return not [t for t in split_tags(text) if tag_key(t) not in keys]


class CaptionService:
    """Caption work on the projects of one Host."""

    def __init__(self, host: Host):
        self.host = host
        self.folders = CaptionFolders(host)

    def project(self, name: str) -> Project:
        return Workspace(self.host.projects_home()).open(name)

    def store(self, name: str) -> CaptionStore:
        return CaptionStore(self.project(name))

    # --- tagging ----------------------------------------------------------------------------------------------------
    def available_taggers(self) -> list[str]:
        """What the tab offers: ours everywhere, the webui's interrogators where the Host has them."""
        return ["wd14", "clip", "both", *self.host.interrogators()]

    def build_taggers(self, req: TagRequest) -> dict[str, Tagger]:
        """The taggers a request names, ready to load (WD14 is fetched here on first use, before any work)."""
        taggers: dict[str, Tagger] = {}
        for name in req.tagger_names:
            if name == "wd14":
                from ..taggers.models import DEFAULT_WD14, resolve_wd14_model
                from ..taggers.wd14 import WD14Tagger

                model = req.model or DEFAULT_WD14
                folder = resolve_wd14_model(self._wd14_location(model), self.folders.taggers)
                taggers[name] = WD14Tagger(folder, req.wd14_options(), name=Path(model).name)
            elif name == "clip":
                from ..taggers.clip import CLIPTagger, ensure_vocabularies

                vocab = ensure_vocabularies(self.folders.vocabularies / "clip")
                weights, model = req.clip_pretrained, req.clip_model
                roots = [*self.host.allowed_roots(), self.folders.clip_cache]
                if "/" in weights or "\\" in weights:  # a checkpoint file: only from the allowed folders
                    weights = str(resolve_inside(weights, roots))
                if "/" in model or "\\" in model:  # a model config file: the same
                    model = str(resolve_inside(model, roots))
                taggers[name] = CLIPTagger(req.clip_options(model=model, pretrained=weights), vocab_dir=vocab,
                                           cache_dir=self.folders.clip_cache)
            else:
                if name not in self.host.interrogators():
                    raise LorakitError(f"The {name!r} tagger exists only inside the webui.")
                from ..taggers.webui import WebuiTagger

                taggers[name] = WebuiTagger(self.host, name)
        return taggers

    def wd14_choices(self) -> list[str]:
        """The known WD14 models, then the user's own model folders placed in the taggers folder."""
        from ..taggers.models import KNOWN_WD14

        own = []
        if self.folders.taggers.is_dir():
            own = sorted(p.name for p in self.folders.taggers.iterdir()
                         if p.name not in KNOWN_WD14 and (p / "model.onnx").is_file())
        return [*KNOWN_WD14, *own]

    def _wd14_location(self, model: str) -> str:
        """A known name as it is; a folder in the taggers folder by its name; any other folder only inside the
        allowed roots (a path typed into the tab must not reach the rest of the server)."""
        from ..taggers.models import KNOWN_WD14

        if model.removeprefix("SmilingWolf/") in KNOWN_WD14:
            return model
        if "/" not in model and "\\" not in model and model not in (".", ".."):
            own = self.folders.taggers / model
            if own.is_dir():
                return str(own)
        return str(resolve_inside(model, [*self.host.allowed_roots(), self.folders.taggers]))

    def tag(self, name: str, req: TagRequest, *, progress: Optional[ProgressFn] = None,
            cancel: Optional[threading.Event] = None, taggers: Optional[dict[str, Tagger]] = None) -> TagReport:
        """Tag the project's images, writing each caption as its tags arrive (one undo step for the run).

        Images with a caption of their own are skipped unless `overwrite`, so running it again after a cancel or a
        restart resumes where it stopped. `taggers` replaces the models the request names (tests, benchmarks).
        """
        from ..taggers.pipeline import TagItem, tag_images

        # 1. what to tag
        project = self.project(name)
        store, settings = CaptionStore(project), project.settings
        records = store.records(kind="dataset", concept=req.concept or None)
        if req.images:
            wanted = set(req.images)
            missing = sorted(wanted - {r.image for r in records})
            if missing:
                raise NotFound(f"Not training images of {name!r}: {', '.join(missing[:5])}")
            records = [r for r in records if r.image in wanted]
        report = TagReport()
        todo = []
        for r in records:
            if not r.readable:  # a caption that is a link, or too long, is never overwritten
                report.failed.append({"image": r.image, "reason": r.problem})
            elif req.overwrite or _needs_tags(r.text, settings.trigger_words):
                todo.append(r)
            else:
                report.already.append(r.image)
        if not todo:
            return report
        # 2. the models, then the pipeline; captions are written in batches as one undo step
        taggers = taggers if taggers is not None else self.build_taggers(req)
        writer = _CaptionWriter(store, req, settings.trigger_words, todo)
        try:
            run = tag_images([TagItem(path=project.root / r.image, key=r.image) for r in todo], taggers,
                             batch_size=req.batch or None, max_pixels=settings.max_image_pixels,
                             background=settings.background_rgb, progress=progress, cancel=cancel,
                             on_result=writer.add)
        finally:
            writer.flush()
            for t in taggers.values():
                t.unload()
        report.tagged, report.entry = writer.written, writer.entry or ""
        report.failed += [{"image": key, "reason": reason} for key, reason in run.failed] + writer.failed
        report.cancelled, report.device = run.cancelled, run.device
        report.images_per_second = round(run.images_per_second, 3)
        return report

    def tag_jobs(self, name: str, *, active: bool = False) -> list[JobState]:
        """The project's tagging jobs, newest first (only running or queued ones with `active`)."""
        return [j for j in job_manager(self.host.projects_home()).list(name, limit=200)
                if j.kind == "tag" and (j.active or not active)]

    def start_tag(self, name: str, req: TagRequest) -> JobState:
        """The same tagging as a background job with progress and cancel (the tab and the API use this)."""
        self.project(name)
        busy = self.tag_jobs(name, active=True)
        if busy:
            raise LorakitError(f"Project {name!r} is already being tagged (job {busy[0].id}); wait or cancel it.")

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.tag(name, req, progress=progress, cancel=cancel).to_dict()

        title = f"Tag {name} with {' + '.join(req.tagger_names)}"
        return job_manager(self.host.projects_home()).start(kind="tag", project=name, title=title, work=work)

    # --- operations, edits, history ---------------------------------------------------------------------------------
    def preview(self, name: str, op: CaptionOp) -> list[CaptionDiff]:
        store = self.store(name)
        records = store.records()
        return diff(records, plan(records, op, trigger_words=store.project.settings.trigger_words))

    def apply(self, name: str, op: CaptionOp) -> HistoryEntry:
        return execute(self.store(name), op)

    def edit(self, name: str, image: str, text: str) -> HistoryEntry:
        """One image's caption, written as the user typed it (tags tidied: one space after each comma; control
        characters removed). A caption over MAX_CAPTION_CHARS is refused (CaptionTooLong)."""
        if not isinstance(text, str):
            raise LorakitError(f"text: expected the caption as text, got {shown(text)}")
        text = check_caption_length(clean_caption_text(text), what=f"The caption for {image}")
        store = self.store(name)
        record = store.record(image)
        return store.apply({record.image: join_tags(split_tags(text))}, label=f"Edit {record.image}",
                           op={"op": "edit", "images": [record.image]})

    def undo(self, name: str, *, force: bool = False) -> HistoryEntry:
        return self.store(name).undo(force=force)

    def redo(self, name: str, *, force: bool = False) -> HistoryEntry:
        return self.store(name).redo(force=force)

    def history(self, name: str, limit: int = 20) -> list[HistoryEntry]:
        return self.store(name).history(limit)

    def records(self, name: str, *, concept: str | None = None, with_all: Sequence[str] = (),
                without: Sequence[str] = (), with_any: Sequence[str] = ()) -> list[CaptionRecord]:
        return filter_records(self.store(name).records(concept=concept), with_all=with_all, without=without,
                              with_any=with_any)

    def frequency(self, name: str, **filters: Any) -> list[TagCount]:
        return frequency(self.records(name, **filters))

    # --- the audit --------------------------------------------------------------------------------------------------
    def categories_file(self) -> Path:
        return ensure_categories_file(self.folders.vocabularies / "categories.toml")

    def audit(self, name: str, **settings: Any) -> AuditReport:
        return audit(self.project(name), categories_file=self.categories_file(), **settings)


class _CaptionWriter:
    """Collects the pipeline's outcomes and writes captions in batches into one undo step.

    Images that share a caption file (`a.png` and `a.jpg`: sd-scripts reads one `a.txt` for both) wait for each
    other; the first of them in name order that could be tagged gets the caption, the others are reported.
    """

    def __init__(self, store: CaptionStore, req: TagRequest, triggers: Sequence[str], todo: Sequence[CaptionRecord]):
        self.store, self.req, self.triggers = store, req, triggers
        self.old = {r.image: r.text for r in todo}
        groups: dict[str, list[str]] = {}
        for r in todo:
            groups.setdefault(r.caption, []).append(r.image)
        self.shared = {image: sorted(images) for images in groups.values() if len(images) > 1 for image in images}
        self.waiting: dict[str, Optional[TagOutcome]] = {}
        self.pending: dict[str, str] = {}
        self.written: list[str] = []
        self.failed: list[dict] = []
        self.entry: str | None = None
        self.lock = threading.Lock()

    def add(self, outcome: TagOutcome) -> None:
        with self.lock:
            for ready in self._resolve(outcome):
                text = clean_caption_text(combined_caption(
                    ready.tags, trigger_words=self.triggers, old_text=self.old[ready.key],
                    overwrite=self.req.overwrite, escape=self.req.escape_parentheses))
                try:
                    self.pending[ready.key] = check_caption_length(text, what="The tagged caption")
                except CaptionTooLong as e:
                    self.failed.append({"image": ready.key, "reason": str(e)})
            if len(self.pending) >= FLUSH_EVERY:
                self._flush()

    def _resolve(self, outcome: TagOutcome) -> list[TagOutcome]:
        group = self.shared.get(outcome.key)
        if group is None:
            return [outcome] if outcome.tags else []
        self.waiting[outcome.key] = outcome
        if not all(image in self.waiting for image in group):
            return []
        tagged = [self.waiting[image] for image in group if self.waiting[image].tags]
        for other in tagged[1:]:
            self.failed.append({"image": other.key, "reason": f"shares the caption file of {tagged[0].key} "
                                "(sd-scripts reads one caption for both); rename one of them to caption it"})
        return tagged[:1]

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        label = f"Tag with {' + '.join(self.req.tagger_names)}"
        step = self.store.apply(self.pending, label=label, op={"op": "tag", **self.req.to_dict()}, entry=self.entry)
        self.entry = self.entry or step.id or None
        self.written += list(self.pending)
        self.pending = {}


def fix_finding(service: CaptionService, name: str, finding: Finding,
                tag_request: Optional[TagRequest] = None) -> HistoryEntry | JobState:
    """The one-click fix an audit finding offers: its caption op, tagging its images, or adopting captions written
    with the other extension. Findings that need the user's judgement (which tags to add) have none."""
    data = finding.data
    if data.get("op"):
        return service.apply(name, CaptionOp.from_dict(data["op"]))
    action = data.get("action")
    if action == "tag":
        base = tag_request or TagRequest()
        return service.start_tag(name, TagRequest.from_dict({**base.to_dict(), "images": list(finding.images),
                                                             "concept": ""}))
    if action == "use_other_extension":
        return service.store(name).adopt_other_extension(finding.images)
    raise LorakitError(f"{finding.code} has no one-click fix; {finding.fix}")

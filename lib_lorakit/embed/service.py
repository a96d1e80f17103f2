"""Embedding a project, as the tab, the CLI and the API ask for it: one request type, one service, a job."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError
from ..host import Host
from ..jobs import JobState, ProgressFn, job_manager
from ..paths import resolve_inside
from ..project import Project, Workspace
from ..schema import Field, Schema, text_list
from .models import DEFAULT_EMBEDDER, OpenClipEmbedder, parse_spec

EMBED_SCHEMA = Schema(noun="embedding option", groups=(("embed", "Embeddings"),), fields=(
    Field(name="embedder", type=str, default=DEFAULT_EMBEDDER, group="embed", label="Embedder",
          reason="open_clip MODEL:PRETRAINED (downloaded on first use into the models folder), or "
                 "path/to/config.json:path/to/weights."),
    Field(name="flipped", type=bool, default=False, group="embed", label="Mirrored",
          reason="Embed each image mirrored left-right (Direction uses both)."),
))


@dataclass(frozen=True)
class EmbedRequest:
    embedder: str = DEFAULT_EMBEDDER
    flipped: bool = False
    images: Optional[tuple[str, ...]] = None  # project-relative; None: every training image

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbedRequest:
        if not isinstance(data, Mapping):
            raise LorakitError(f"Expected the embedding options as an object, got {type(data).__name__}.")
        options = dict(data)
        images = options.pop("images", None)
        if images is not None:
            images = text_list(images, "images", "project-relative image paths")
        if options.get("embedder") in (None, ""):
            options.pop("embedder", None)
        chosen = EMBED_SCHEMA.from_dict(options)
        return cls(embedder=chosen["embedder"], flipped=chosen["flipped"],
                   images=None if images is None else tuple(images))

    def to_dict(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "flipped": self.flipped,
                "images": None if self.images is None else list(self.images)}


@dataclass
class EmbedReport:
    embedder: str
    images: int = 0  # with a vector now
    computed: int = 0
    reused: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    cancelled: bool = False
    device: str = ""
    images_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (f"{self.images} image(s) embedded with {self.embedder}: {self.computed} computed"
                f"{f' ({self.images_per_second:.1f} images/s on {self.device})' if self.computed else ''}, "
                f"{self.reused} already stored")
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        return text + ("; cancelled: run it again to embed the rest." if self.cancelled else ".")


class EmbedService:
    """Embeddings of the projects of one Host."""

    def __init__(self, host: Host):
        self.host = host

    @property
    def models_root(self) -> Path:
        """Shared with the CLIP tagger: weights fetched for one serve the other."""
        return self.host.models_dir() / "train-style" / "clip"

    def project(self, name: str) -> Project:
        return Workspace(self.host.projects_home()).open(name)

    def embedder(self, spec: str, *, download: bool = True) -> OpenClipEmbedder:
        """The embedder a spec names; files it names must lie inside the allowed folders (or the models folder)."""
        model, pretrained, config = parse_spec(spec)
        roots = [*self.host.allowed_roots(), self.models_root]
        if config is not None:
            config = resolve_inside(config, roots)
        if "/" in pretrained or "\\" in pretrained:
            pretrained = str(resolve_inside(pretrained, roots))
        return OpenClipEmbedder(model, pretrained, cache_dir=self.models_root, config_file=config, download=download)

    def embed(self, name: str, req: EmbedRequest, *, progress: Optional[ProgressFn] = None,
              cancel: Optional[threading.Event] = None, embedder: Any = None) -> EmbedReport:
        """Fill the project's store for `req` (only what is missing); `embedder` replaces the spec's (tests)."""
        from .store import fill

        project = self.project(name)
        embedder = embedder if embedder is not None else self.embedder(req.embedder)
        table, stats = fill(project, embedder, None if req.images is None else list(req.images),
                            flipped=req.flipped, progress=progress, cancel=cancel)
        return EmbedReport(embedder=embedder.id, images=len(table.images), computed=stats.computed,
                           reused=stats.reused, skipped=[{"image": i, "reason": r} for i, r in table.skipped],
                           cancelled=stats.cancelled, device=stats.device,
                           images_per_second=round(stats.images_per_second, 3))

    def start_embed(self, name: str, req: EmbedRequest) -> JobState:
        """The same as a background job with progress and cancel."""
        self.project(name)

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.embed(name, req, progress=progress, cancel=cancel).to_dict()

        return job_manager(self.host.projects_home()).start(kind="embed", project=name,
                                                            title=f"Embed {name} with {req.embedder}", work=work)

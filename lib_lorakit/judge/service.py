"""The judge over a grid: copying, style strength and adherence per cell, the recommended epoch × weight, the card.

`run` makes the judge's grid (off-dataset prompts and a few training captions, every chosen epoch × weight, weight 0
included as the base model) through `EvalService`, then `judge` scores it; `judge` also scores a grid made before.
The result is `eval/<grid id>/judge.json` (layout and units: `judge/__init__.py`), written atomically after each
stage, so a cancel or a crash leaves a report that says so. `apply` writes the recommendation into the card.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from ..embed.models import DEFAULT_EMBEDDER
from ..errors import LorakitError
from ..evaluate.service import GRID_SCHEMA, MAX_PROMPTS, CardChoice, EvalService, GridRequest
from ..host import Host
from ..jobs import JobState, job_manager
from ..progress import CancelFlag, ProgressFn
from ..schema import Field, InvalidSettings, Schema
from . import DEFAULT_DESCRIPTOR, DESCRIPTORS, Descriptor, OverfitReport

GOALS = ("style", "character")
GENERATION_FIELDS = ("negative", "steps", "cfg", "sampler", "width", "height")

JUDGE_SCHEMA = Schema(noun="judge setting", fields=(
    Field("descriptor", str, DEFAULT_DESCRIPTOR, choices=DESCRIPTORS, group="copying",
          reason="the copy-detection descriptor: sscd (downloaded once), clip, or perceptual (no download)"),
    Field("copy_threshold", float, 0.0, minimum=0.0, maximum=1.0, group="copying",
          reason="the similarity at or above which a sample counts as a copy; 0: the descriptor's own"),
    Field("max_copy_rate", float, 0.1, minimum=0.0, maximum=1.0, group="copying",
          reason="the share of a cell's samples that may copy a training image for it to be recommended"),
    Field("embedder", str, DEFAULT_EMBEDDER, group="scores",
          reason="the CLIP model for style strength and adherence (MODEL:PRETRAINED)"),
    Field("goal", str, "style", choices=GOALS, group="scores",
          reason="style: the strongest cell that still follows prompts; character: consistency first"),
    Field("min_adherence", float, 0.8, minimum=0.0, maximum=2.0, group="scores",
          reason="how well a cell must follow the off-dataset prompts, as a share of the base model's (1.0)"),
    Field("caption_samples", int, 4, minimum=0, maximum=16, group="axes",
          reason="how many training captions (with the trigger) to sample, beside the off-dataset prompts"),
    Field("weights", str, "0,0.4,0.6,0.8,1,1.2", group="axes",
          reason="LoRA weights to compare; 0 (the base model) is always added"),
    Field("epochs", str, "all", group="axes", reason="which saved files: all, last, or a list like 2,4,final"),
    Field("seeds", str, "1,2", group="axes", reason="the seeds of every prompt, separated by commas"),
    *(GRID_SCHEMA[name] for name in GENERATION_FIELDS),
), groups=(("copying", "Copying"), ("scores", "Scores"), ("axes", "Axes"), ("generation", "Generation")))

DEFAULT_OFF_PROMPTS = (
    "a cat riding a bicycle",
    "a lighthouse on a cliff at sunset",
    "a bowl of fruit on a wooden table",
    "a city street at night",
)


@dataclass(frozen=True)
class JudgeRequest:
    """What to judge and how: the settings (JUDGE_SCHEMA) and the off-dataset prompts (none: DEFAULT_OFF_PROMPTS).
    `from_dict` names every bad field."""

    prompts: tuple[str, ...] = DEFAULT_OFF_PROMPTS
    settings: Mapping[str, Any] = field(default_factory=JUDGE_SCHEMA.defaults)

    @classmethod
    def from_dict(cls, data: Any) -> JudgeRequest:
        from ..evaluate.grid import parse_weights
        from ..evaluate.service import _seeds, _texts

        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InvalidSettings([f"judge: expected an object, got {type(data).__name__}"])
        problems: list[str] = []
        prompts = _texts(data.get("prompts") or list(DEFAULT_OFF_PROMPTS), "prompts", MAX_PROMPTS, problems)
        try:
            settings = JUDGE_SCHEMA.from_dict({k: v for k, v in data.items() if k != "prompts"})
        except InvalidSettings as e:
            problems += e.problems
            settings = {}
        if settings:
            _seeds(settings["seeds"], problems)
            try:
                parse_weights(settings["weights"])
            except LorakitError as e:
                problems.append(str(e))
        if problems:
            raise InvalidSettings(problems)
        return cls(prompts=prompts, settings=settings)

    def to_dict(self) -> dict:
        return {"prompts": list(self.prompts), **dict(self.settings)}

    @property
    def seeds(self) -> tuple[int, ...]:
        from ..evaluate.service import _seeds

        return _seeds(self.settings["seeds"], [])


class JudgeService:
    """Judge the grids of one Host's projects."""

    def __init__(self, host: Host):
        self.host = host
        self.evals = EvalService(host)

    def grid_request(self, name: str, run: str, request: JudgeRequest) -> GridRequest:
        """The judge's grid: the off-dataset prompts and `caption_samples` training captions, each with the run's
        trigger words, over the chosen epochs × weights (0 added) × seeds."""
        raise NotImplementedError

    def run(self, name: str, run: str, request: JudgeRequest, *, generator=None,
            descriptor: Optional[Descriptor] = None, embedder=None, progress: Optional[ProgressFn] = None,
            cancel: Optional[CancelFlag] = None) -> dict:
        """The judge's grid made (EvalService.run), then judged; the judge.json dict."""
        raise NotImplementedError

    def start_run(self, name: str, run: str, request: JudgeRequest, *, generator=None) -> JobState:
        """`run` as a job."""
        raise NotImplementedError

    def judge(self, name: str, grid_id: str, request: JudgeRequest, *, descriptor: Optional[Descriptor] = None,
              embedder=None, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> dict:
        """Score a grid on disk; writes and returns its judge.json."""
        raise NotImplementedError

    def start_judge(self, name: str, grid_id: str, request: JudgeRequest) -> JobState:
        """`judge` as a job."""
        raise NotImplementedError

    def show(self, name: str, grid_id: str) -> dict:
        """judge.json as it stands (NotFound when the grid has none); a "running" report of a process that is gone
        reads "interrupted"."""
        raise NotImplementedError

    def list(self, name: str) -> list[dict]:
        """The grids that have a judge.json, newest first (a short summary each)."""
        raise NotImplementedError

    def apply(self, name: str, grid_id: str) -> CardChoice:
        """The recommendation into the card: its weight as the preferred weight, the reasons in the note."""
        raise NotImplementedError

    def overfit(self, name: str, request: Any, *, descriptor: Optional[Descriptor] = None, local_user: bool = False,
                progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> OverfitReport:
        """`overfit PROJECT --samples DIR`: judge.memorise.overfit with this Host's folders."""
        raise NotImplementedError


_ = (threading, job_manager)

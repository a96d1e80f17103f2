"""Two-stage ("differential") training, after seeds/004: learn a character without the look of its images.

Stage 1 trains a *base* LoRA on concepts that carry the look to remove (e.g. 3D renders of varied characters on
white). Stage 2 trains the target concepts on the model with that LoRA merged in (sd-scripts `--base_weights
<stage 1 final file> --base_weights_multiplier 1.0`): what the base already produces is no difference, so the
new LoRA holds the character and not the look. Use the stage-2 LoRA alone at weight 1.0.

Both stages are ordinary runs of the project, created together: stage 2's files already name stage 1's final
LoRA (`<stage 1 run>/<name>.safetensors`), and its meta says `depends_on: <stage 1 run>`. The queue keeps stage 2
waiting until stage 1 has succeeded, and fails it with the reason if stage 1 fails, is stopped or disappears
(`TrainQueue._dependency`); resuming stage 1 and then stage 2 picks the chain up again.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..errors import LorakitError
from ..paths import check_name
from ..project import Project
from ..schema import InvalidSettings
from .config import SampleSettings
from .distributed import AccelerateOptions
from .queue import TrainQueue
from .runner import Runs, RunSnapshot
from .service import TrainingService, TrainPlan, TrainRequest, read_overrides, read_request

PLACEHOLDER_RUN = "(stage 1)"  # depends_on while planning, before stage 1 has a run id


@dataclass(frozen=True)
class DifferentialRequest:
    project: str
    preset: str
    base_model: str
    target_concepts: tuple[str, ...]
    stage1_concepts: tuple[str, ...] = ()  # empty: every concept that is not a target
    overrides: Mapping[str, Any] = field(default_factory=dict)  # both stages
    stage1_overrides: Mapping[str, Any] = field(default_factory=dict)  # stage 1 only, over `overrides`
    output_name: Optional[str] = None  # stage 2's; stage 1's is `<name>-base`
    samples: Optional[SampleSettings] = None
    accept_missing_captions: bool = False
    dry_run: bool = False
    accelerate: AccelerateOptions = field(default_factory=AccelerateOptions)  # both stages, multi-GPU / multi-node
    extra_args: Mapping[str, Any] = field(default_factory=dict)  # both stages, extra sd-scripts arguments

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, project: str) -> DifferentialRequest:
        """The request from plain data: a training request's fields (service.REQUEST_KEYS) and `target_concepts`,
        `stage1_concepts` (lists of names, or "A,B"), `stage1_overrides`; all problems at once, each naming its
        field."""
        values, problems = read_request(data, more_keys=DIFFERENTIAL_KEYS)
        if isinstance(data, Mapping):
            values["target_concepts"] = _concept_list(data.get("target_concepts"), "target_concepts", problems)
            values["stage1_concepts"] = _concept_list(data.get("stage1_concepts"), "stage1_concepts", problems)
            values["stage1_overrides"] = read_overrides(data.get("stage1_overrides"), "stage1_overrides", problems)
        if problems:
            raise InvalidSettings(problems)
        return cls(project=project, **values)


DIFFERENTIAL_KEYS = ("target_concepts", "stage1_concepts", "stage1_overrides")


def _concept_list(value: Any, key: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key}: expected a list of concept names, got {value!r}")
        return ()
    return _names(value)


@dataclass(frozen=True)
class DifferentialRuns:
    stage1: RunSnapshot
    stage2: RunSnapshot

    def to_dict(self) -> dict:
        return {"stage1": self.stage1.to_dict(), "stage2": self.stage2.to_dict()}


def stage_concepts(project: Project, req: DifferentialRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stage 1 concepts, target concepts), checked: both non-empty, known, and not overlapping."""
    names = [c.name for c in project.concepts("dataset")]
    targets = _names(req.target_concepts)
    if not targets:
        raise LorakitError("Choose the target concepts (what stage 2 learns).")
    stage1 = _names(req.stage1_concepts) or tuple(n for n in names if n not in targets)
    unknown = [n for n in (*stage1, *targets) if n not in names]
    if unknown:
        raise LorakitError(f"Project {project.name!r} has no concept named {', '.join(map(repr, unknown))} "
                           f"(have: {', '.join(names) or 'none yet'}).")
    if not stage1:
        raise LorakitError("Stage 1 needs at least one concept besides the targets: the images that carry the look "
                           "to remove (e.g. renders of varied characters on white).")
    both = sorted(set(stage1) & set(targets))
    if both:
        raise LorakitError(f"{', '.join(both)} would be in both stages; stage 2 would then learn nothing from it.")
    return stage1, targets


def _names(items: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        for name in str(item).split(","):
            if name.strip() and name.strip() not in out:
                out.append(name.strip())
    return tuple(out)


def stage_requests(project: Project, req: DifferentialRequest, stage1_final: Optional[str] = None,
                   stage1_run: str = PLACEHOLDER_RUN) -> tuple[TrainRequest, TrainRequest]:
    """The two runs' requests; stage 2 merges `stage1_final` (stage 1's final LoRA; while planning, where it will
    be: inside the project's runs) and waits for `stage1_run`."""
    if req.output_name is not None:
        check_name(req.output_name, what="output name")  # before anything else: it names files of both runs
    stage1, targets = stage_concepts(project, req)
    name = req.output_name or project.name
    if stage1_final is None:
        stage1_final = str(project.root / "runs" / PLACEHOLDER_RUN / f"{name}-base.safetensors")
    common = dict(project=req.project, preset=req.preset, base_model=req.base_model, samples=req.samples,
                  accept_missing_captions=req.accept_missing_captions, dry_run=req.dry_run, accelerate=req.accelerate,
                  extra_args=req.extra_args)
    first = TrainRequest(**common, overrides={**req.overrides, **req.stage1_overrides}, output_name=f"{name}-base",
                         concepts=stage1, meta={"differential": {"stage": 1, "of": name}})
    second = TrainRequest(**common, overrides=dict(req.overrides), output_name=name, concepts=targets,
                          base_weights=((stage1_final, 1.0),), depends_on=stage1_run,
                          meta={"differential": {"stage": 2, "base_run": stage1_run}})
    return first, second


def plan(service: TrainingService, project: Project, req: DifferentialRequest) -> tuple[TrainPlan, TrainPlan]:
    first, second = stage_requests(project, req)
    return service.plan(project, first), service.plan(project, second)


def create(service: TrainingService, project: Project, req: DifferentialRequest, *,
           queue: bool = True) -> DifferentialRuns:
    """Both runs, stage 2 waiting for stage 1; nothing is queued unless both could be created. A dry run (or
    `queue=False`) leaves both unqueued."""
    plans = plan(service, project, req)
    problems = [f"stage {i}: {f.message}" + (f" Fix: {f.fix}" if f.fix else "")
                for i, p in enumerate(plans, 1) for f in p.findings if f.severity == "error"]
    if problems:
        raise LorakitError("Cannot train yet:\n" + "\n".join(f"- {p}" for p in problems))
    first, _ = stage_requests(project, req)
    one = service.create_run(project, first, queue=False)
    try:
        final = one.dir / f"{Runs(project).launch(one.id)['output_name']}.safetensors"
        _, second = stage_requests(project, req, stage1_final=str(final), stage1_run=one.id)
        second = replace(second, meta={"differential": {"stage": 2, "base_run": one.id, "base_lora": str(final)}})
        two = service.create_run(project, second, queue=False)
    except BaseException:
        shutil.rmtree(one.dir, ignore_errors=True)  # no stage 1 without its stage 2
        raise
    if queue and not req.dry_run:
        q = TrainQueue(service.host)
        q.add(project.name, one.id)
        q.add(project.name, two.id)
    return DifferentialRuns(Runs(project).get(one.id), Runs(project).get(two.id))

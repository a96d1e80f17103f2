"""The operations the tab, the CLI and the HTTP API share, bound to one Host: the one door.

Each method validates at the edge (names, paths against the allowed roots) and makes one core call, so the
three front ends behave and word their errors identically. Projects, concepts, imports and what the panels show
are methods here; captions go through `captions` (a CaptionService), training through `training(...)` (a
TrainingDoor). A front end builds requests with their `from_dict` and never constructs a core service itself.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .captions.audit import Finding
from .captions.service import CaptionService, TagRequest, fix_finding
from .captions.store import CaptionRecord, HistoryEntry
from .dataset.balance import RepeatChange, plan_balance
from .dataset.importer import (
    ImportReport,
    Verdict,
    import_paths,
    import_sources,
    remove_copies,
    sources_from_uploads,
)
from .dataset.report import DatasetReport, build_report
from .errors import LorakitError, PathNotAllowed
from .host import Host
from .jobs import JobManager, JobState, ProgressFn, job_manager
from .paths import resolve_inside
from .project import Concept, ConceptKind, Project, ProjectListing, ProjectSettings, Workspace

if TYPE_CHECKING:  # training is imported when a caller asks for it: the tagging and import commands start faster
    from .autopilot.service import AutopilotService
    from .crop.bucket_preview import BucketReport, BucketRequest
    from .crop.service import CropService
    from .direction.service import DirectionService
    from .direction.sorter import SortService
    from .doctor import DoctorReport
    from .embed.service import EmbedService
    from .evaluate.inspect import InspectResult
    from .evaluate.reg import RegService
    from .evaluate.service import EvalService
    from .judge.service import JudgeService
    from .next_step import ProjectStatus
    from .results.lora_info import LoraInfo
    from .train.door import Start, TrainingDoor
    from .views import CaptionView, DatasetView, Thumb

GALLERY_LIMIT = 120  # images a panel's gallery shows (views.GALLERY_LIMIT)

MAX_SERVER_PATHS = 10_000  # files or folders in one import (a folder counts once, whatever it holds)
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux


class Studio:
    def __init__(self, host: Host):
        self.host = host

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.host.projects_home())

    @property
    def captions(self) -> CaptionService:
        return CaptionService(self.host)

    @property
    def crop(self) -> CropService:
        from .crop.service import CropService

        return CropService(self.host)

    @property
    def direction(self) -> DirectionService:
        from .direction.service import DirectionService

        return DirectionService(self.host)

    @property
    def embeddings(self) -> EmbedService:
        from .embed.service import EmbedService

        return EmbedService(self.host)

    @property
    def reg(self) -> RegService:
        """Regularisation sets made by the Host's generator (evaluate/reg.py)."""
        from .evaluate.reg import RegService

        return RegService(self.host)

    @property
    def evaluate(self) -> EvalService:
        """Grids over a run's epochs × weights × prompts, the eval/ store, and cards set from a grid."""
        from .evaluate.service import EvalService

        return EvalService(self.host)

    @property
    def judge(self) -> JudgeService:
        """Copy detection, style strength and adherence over a grid; the recommended epoch × weight (judge/)."""
        from .judge.service import JudgeService

        return JudgeService(self.host)

    @property
    def autopilot(self) -> AutopilotService:
        """From a folder to a judged, registered LoRA in one chain that resumes after a restart (autopilot/)."""
        from .autopilot.service import AutopilotService

        return AutopilotService(self)

    @property
    def sorter(self) -> SortService:
        from .direction.sorter import SortService

        return SortService(self.host)

    def training(self, *, local_user: bool = False, trainer_python: Optional[str] = None,
                 tokenizer_cache_dir: Optional[Path] = None, start: Start = "later") -> TrainingDoor:
        """Training, presets and results for one caller: `local_user=True` only for the machine's own user (the
        CLI), who may train from any model file; the tab and the API leave it False (train.model_path)."""
        from .train.door import TrainingDoor

        return TrainingDoor(self.host, local_user=local_user, trainer_python=trainer_python,
                            tokenizer_cache_dir=tokenizer_cache_dir, start=start)

    @property
    def jobs(self) -> JobManager:
        return job_manager(self.host.projects_home())

    # --- projects -------------------------------------------------------------------------------------------------
    def projects(self) -> list[Project]:
        return self.workspace.list()

    def listing(self) -> list[ProjectListing]:
        """Every project; one whose project.toml cannot be read is listed with the reason, not an error."""
        return self.workspace.listing()

    def project(self, name: str) -> Project:
        return self.workspace.open(name)

    def create_project(self, name: str, **settings: Any) -> Project:
        return self.workspace.create(name, **settings)

    def update_settings(self, name: str, **changes: Any) -> ProjectSettings:
        return self.project(name).update_settings(**changes)

    def settings(self, name: str) -> ProjectSettings:
        return self.project(name).settings

    def report(self, name: str) -> DatasetReport:
        return build_report(self.project(name))

    def buckets(self, name: str, request: BucketRequest) -> BucketReport:
        """Each training image's sd-scripts bucket, resized size and the part its centre crop keeps."""
        from .crop.bucket_preview import bucket_preview

        return bucket_preview(self.project(name), request, models_dir=self.host.models_dir())

    def status(self, name: str) -> ProjectStatus:
        """The training concepts' images, captions and repeats as sd-scripts will see them."""
        from .next_step import project_status

        return project_status(self.project(name))

    def stamp(self, name: str) -> str:
        """A cheap string that changes when the project's images, captions, settings or runs do."""
        from .next_step import change_stamp

        return change_stamp(self.project(name))

    # --- what the panels show (views.py) --------------------------------------------------------------------------
    def dataset_view(self, name: str, *, limit: int = GALLERY_LIMIT) -> DatasetView:
        """The report, the gallery's thumbnails, the status and the change stamp, read in one go."""
        from .views import dataset_view

        return dataset_view(self.project(name), limit=limit)

    def caption_view(self, name: str, *, concept: Optional[str] = None, with_all: Sequence[str] = (),
                     without: Sequence[str] = (), with_any: Sequence[str] = (),
                     limit: int = GALLERY_LIMIT) -> CaptionView:
        """The captions (all, and those the filters keep), their thumbnails, tag counts, history and status."""
        from .views import caption_view

        return caption_view(self.captions, name, concept=concept, with_all=with_all, without=without,
                            with_any=with_any, limit=limit)

    def thumbnails(self, name: str, images: Sequence[str], *, limit: int = GALLERY_LIMIT) -> list[Thumb]:
        from .views import thumbnails

        return thumbnails(self.project(name), images, limit=limit)

    # --- captions beyond the service's own --------------------------------------------------------------------------
    def caption(self, name: str, image: str) -> CaptionRecord:
        """One training image's caption (`image` project-relative)."""
        return self.captions.store(name).record(image)

    def fix_finding(self, name: str, finding: Finding,
                    tag_request: Optional[TagRequest] = None) -> Union[HistoryEntry, JobState]:
        """The one-click fix of an audit finding: a caption op (an undo step) or a tagging job."""
        return fix_finding(self.captions, name, finding, tag_request)

    # --- files and checks -----------------------------------------------------------------------------------------
    def lora_info(self, path: str | Path, *, local_user: bool = False) -> LoraInfo:
        """How a LoRA was made (its metadata). The machine's own user (the CLI) may name any file; a web request
        only one inside the allowed folders or the Lora folder."""
        from .results.lora_info import read_lora_info

        target = Path(path) if local_user else resolve_inside(str(path), [*self.host.allowed_roots(),
                                                                          self.host.lora_dir()])
        return read_lora_info(target)

    def inspect(self, path: str | Path, *, local_user: bool = False) -> InspectResult:
        """PNG Info that knows our LoRAs: how an image was made, its LoRAs resolved to files, ours to their run. The
        machine's own user (the CLI) may name any file; a web request only one inside the allowed folders, the Lora
        folder or the projects home."""
        from .evaluate.inspect import inspect_image

        roots = [*self.host.allowed_roots(), self.host.lora_dir(), self.host.projects_home()]
        target = Path(path) if local_user else resolve_inside(str(path), roots)
        return inspect_image(target, lora_dir=self.host.lora_dir(), projects_home=self.host.projects_home())

    def inspect_upload(self, data: bytes, *, name: str) -> InspectResult:
        """As `inspect`, for a file's bytes sent by a client (`name`: the file's own name)."""
        from .evaluate.inspect import inspect_bytes

        return inspect_bytes(data, name=name, lora_dir=self.host.lora_dir(), projects_home=self.host.projects_home())

    def doctor(self, *, trainer_python: Optional[str] = None, tokenizer_cache_dir: Optional[Path] = None,
               config_file: Optional[Path] = None) -> DoctorReport:
        """Every set-up check with its fix (`trainer_python`, `tokenizer_cache_dir`: the command line's flags)."""
        from .doctor import run_doctor

        return run_doctor(self.host, trainer_python=trainer_python, tokenizer_cache_dir=tokenizer_cache_dir,
                          config_file=config_file)

    # --- import ---------------------------------------------------------------------------------------------------
    def check_server_paths(self, paths: Sequence[str]) -> list[Path]:
        """Refuse the whole request if server-side import is off, the list is too long, or any path lies outside
        the allowed roots; the resolved paths, each once."""
        refusal = self.host.folder_import_refusal()
        if refusal:
            raise PathNotAllowed(refusal)
        if not paths:
            raise PathNotAllowed("No folder or file was given.")
        if len(paths) > MAX_SERVER_PATHS:
            raise LorakitError(f"{len(paths):,} paths were given; at most {MAX_SERVER_PATHS:,} are taken at once. "
                               f"Give their folder instead: a folder is imported with everything inside it.")
        unique = list(dict.fromkeys(paths))
        for p in unique:
            if not isinstance(p, str) or len(p) > MAX_PATH_CHARS:
                shown = f"{len(p):,} characters long" if isinstance(p, str) else f"a {type(p).__name__}"
                raise LorakitError(f"A path is {shown}; a path is text of at most {MAX_PATH_CHARS:,} characters.")
        roots = self.host.allowed_roots()
        return list(dict.fromkeys(resolve_inside(p, roots) for p in unique))

    def import_paths(self, name: str, paths: Sequence[str], *, concept: str = "", repeats: int | None = None,
                     kind: ConceptKind = "dataset", progress: Optional[ProgressFn] = None,
                     cancel: Optional[threading.Event] = None) -> ImportReport:
        project = self.project(name)
        checked = [str(p) for p in self.check_server_paths(paths)]  # resolved, each once: what was checked is walked
        return import_paths(project, checked, self.host.allowed_roots(), concept=concept, repeats=repeats, kind=kind,
                            progress=progress, cancel=cancel)

    def import_uploads(self, name: str, files: Sequence[tuple[Path, str]], *, concept: str = "",
                       repeats: int | None = None, kind: ConceptKind = "dataset",
                       progress: Optional[ProgressFn] = None,
                       cancel: Optional[threading.Event] = None) -> ImportReport:
        """Files the server received by upload (temporary path, the name the user's file had)."""
        project = self.project(name)
        report = import_sources(project, sources_from_uploads(files), concept=concept, repeats=repeats, kind=kind,
                                progress=progress, cancel=cancel)
        for i, verdict in enumerate(report.skipped):
            if verdict.text.startswith("empty file"):  # gradio sends empty files when Import beats the upload
                report.skipped[i] = Verdict(verdict.source, verdict.text + ": if it is not empty on your computer, "
                                            "the upload had not finished; import it again")
        return report

    def start_import(self, name: str, *, paths: Sequence[str] = (), uploads: Sequence[tuple[Path, str]] = (),
                     concept: str = "", repeats: int | None = None, kind: ConceptKind = "dataset") -> JobState:
        """The same imports as a background job (the UI and `background: true` in the API use this)."""
        self.project(name)
        if paths:
            self.check_server_paths(paths)

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            report = ImportReport()
            if uploads:
                report = self.import_uploads(name, uploads, concept=concept, repeats=repeats, kind=kind,
                                             progress=progress, cancel=cancel)
            if paths and not cancel.is_set():
                more = self.import_paths(name, paths, concept=concept, repeats=repeats, kind=kind,
                                         progress=progress, cancel=cancel)
                report = _merge(report, more)
            return report.to_dict()

        count = len(uploads) + len(paths)
        return self.jobs.start(kind="import", project=name, title=f"Import {count} item(s) into {name}", work=work)

    # --- concepts -------------------------------------------------------------------------------------------------
    def concepts(self, name: str, kind: Optional[ConceptKind] = None) -> list[Concept]:
        return self.project(name).concepts(kind)

    def add_concept(self, name: str, concept: str, *, repeats: int = 1, kind: ConceptKind = "dataset") -> Concept:
        return self.project(name).add_concept(concept, repeats, kind)

    def rename_concept(self, name: str, old: str, new: str, *, kind: ConceptKind = "dataset") -> Concept:
        """Renames the folder; crop steps, labels and import records follow it (image_state)."""
        from .image_state import rename_concept

        return rename_concept(self.project(name), old, new, kind)

    def set_repeats(self, name: str, concept: str, repeats: int, *, kind: ConceptKind = "dataset") -> Concept:
        return self.project(name).set_repeats(concept, repeats, kind)

    def remove_concept(self, name: str, concept: str, *, kind: ConceptKind = "dataset") -> Path:
        """Moves the concept's folder to the project's trash; the folder's new place."""
        return self.project(name).remove_concept(concept, kind)

    def remove_exact_duplicates(self, name: str) -> list[str]:
        """Every extra copy of an exactly duplicated training image moved to the trash (the first stays)."""
        project = self.project(name)
        extra = [img for g in build_report(project).duplicates if g.kind == "exact" for img in g.images[1:]]
        return remove_copies(project, extra)

    def balance_plan(self, name: str, target: int | None = None, kind: ConceptKind = "dataset") -> list[RepeatChange]:
        project = self.project(name)
        report = build_report(project)
        rows = [(c.name, c.images, c.repeats) for c in report.concepts if c.kind == kind]
        return plan_balance(rows, target)

    def apply_balance(self, name: str, plan: Sequence[RepeatChange], kind: ConceptKind = "dataset") -> None:
        project = self.project(name)
        for change in plan:
            if change.new_repeats != change.repeats:
                project.set_repeats(change.concept, change.new_repeats, kind)


def _merge(a: ImportReport, b: ImportReport) -> ImportReport:
    return ImportReport(imported=a.imported + b.imported, already=a.already + b.already,
                        skipped=a.skipped + b.skipped, warnings=a.warnings + b.warnings,
                        duplicates=a.duplicates + [g for g in b.duplicates if g not in a.duplicates],
                        cancelled=a.cancelled or b.cancelled)

"""The operations the tab, the CLI and the HTTP API share, bound to one Host.

Each method validates at the edge (names, paths against the allowed roots) and makes one core call, so the
three front ends behave and word their errors identically.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .captions.service import CaptionService
from .dataset.balance import RepeatChange, plan_balance
from .dataset.importer import ImportReport, Verdict, import_paths, import_sources, sources_from_uploads
from .dataset.report import DatasetReport, build_report
from .errors import LorakitError, PathNotAllowed
from .host import Host
from .jobs import JobManager, JobState, ProgressFn, job_manager
from .paths import resolve_inside
from .project import ConceptKind, Project, ProjectSettings, Workspace

if TYPE_CHECKING:  # training is imported when a caller asks for it: the tagging and import commands start faster
    from .crop.bucket_preview import BucketReport, BucketRequest
    from .crop.service import CropService
    from .direction.service import DirectionService
    from .train.door import Start, TrainingDoor

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
    def direction(self) -> DirectionService:
        from .direction.service import DirectionService

        return DirectionService(self.host)

    @property
    def crop(self) -> CropService:
        from .crop.service import CropService

        return CropService(self.host)

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

    def project(self, name: str) -> Project:
        return self.workspace.open(name)

    def create_project(self, name: str, **settings: Any) -> Project:
        return self.workspace.create(name, **settings)

    def update_settings(self, name: str, **changes: Any) -> ProjectSettings:
        return self.project(name).update_settings(**changes)

    def report(self, name: str) -> DatasetReport:
        return build_report(self.project(name))

    def buckets(self, name: str, request: BucketRequest) -> BucketReport:
        """Each training image's sd-scripts bucket, resized size and the part its centre crop keeps."""
        from .crop.bucket_preview import bucket_preview

        return bucket_preview(self.project(name), request, models_dir=self.host.models_dir())

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

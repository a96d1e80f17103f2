"""Per-image state follows its concept when the concept is renamed.

Import records, crop/flip steps (`crop/derive.py`), direction labels and sort labels are kept by
`<dataset|reg>/<concept name>/…` — so that a change of repeats (the folder's number) or of a file's extension keeps
them — which means a rename of the concept must carry them along. Without it, the next derivation of a renamed
concept's image would find no original and adopt the (possibly cropped) training copy as its own original, and the
labels the user gave would silently vanish. One call, under the project's lock, re-keys every store.
"""

from __future__ import annotations

from collections.abc import Callable

from .crop import derive
from .dataset.importer import rename_concept_records
from .direction.sorter import SortState
from .direction.state import DirectionState
from .project import KIND_FOLDERS, Concept, ConceptKind, Project


def rename_concept(project: Project, old: str, new: str, kind: ConceptKind = "dataset") -> Concept:
    """Rename the concept's folder and re-key every per-image record that names it; returns the concept."""
    with project.lock():
        before = project.concept(old, kind)
        concept = project.rename_concept(old, new, kind)
        if concept.name == old:
            return concept
        moved = _renamer(KIND_FOLDERS[kind], old, new)
        rename_concept_records(project, moved, before.folder.name, concept.folder.name)
        derive.rekey(project, moved)
        DirectionState(project).rekey(moved)
        SortState(project).rekey(moved)
        return concept


def _renamer(folder_kind: str, old: str, new: str) -> Callable[[str], str]:
    prefix, replacement = f"{folder_kind}/{old}/", f"{folder_kind}/{new}/"

    def moved(key: str) -> str:
        return replacement + key[len(prefix):] if key.startswith(prefix) else key

    return moved

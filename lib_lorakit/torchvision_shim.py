"""Make `import torchvision` work when its compiled operators cannot load (a CUDA wheel beside a CPU-only torch).

PyPI's torchvision wheels are CUDA builds. Against a CPU-only torch their `_C` library cannot load; torchvision
then registers fake kernels for operators that were never defined and `import torchvision` fails with
"operator torchvision::nms does not exist". Defining the two operator schemas before torchvision is first
imported lets the import succeed. `torchvision.transforms` (what open_clip and sd-scripts use) works; the
detection operators stay unavailable.

This file is used twice: Train Style imports it before open_clip, and the trainer setup writes its source into
sd-scripts' venv as a `.pth`-activated module (see `lib_lorakit.train.environment.SHIM_SOURCE`). It must
therefore stay self-contained: standard library only at import time, torch imported only when needed, and no
import of lib_lorakit.
"""

import importlib.abc
import importlib.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # must stay alive, or torch drops the definitions


def ensure_torchvision_importable() -> bool:
    """Define torchvision's missing operator schemas if (and only if) its `_C` library cannot load.

    Returns True when the schemas were defined by this call. Idempotent; does nothing when torchvision is absent,
    already imported, or its compiled operators load normally.
    """
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    if _operators_exist(torch) or _load_compiled_operators(torch, spec.submodule_search_locations):
        return False
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _library = library
    logger.info("torchvision's compiled operators cannot load here; defined %s so it imports",
                ", ".join(s.split("(")[0] for s in _SCHEMAS))
    return True


def _operators_exist(torch) -> bool:
    """Whether `torchvision::nms` is already defined (by torchvision itself or by another copy of this shim)."""
    try:
        return torch.ops.torchvision.nms is not None
    except (AttributeError, RuntimeError):
        return False


def _load_compiled_operators(torch, folders) -> bool:
    """Try torchvision's own `_C` library, as torchvision would; True when it loaded."""
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith("_C.") and name.endswith((".so", ".pyd")):
                try:
                    torch.ops.load_library(os.path.join(folder, name))
                    return True
                except (ImportError, OSError, RuntimeError):
                    pass
    return False


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `ensure_torchvision_importable` once, just before torchvision's first import, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            ensure_torchvision_importable()
        except Exception as e:  # never break the import itself; torchvision's own error will follow if any
            logger.warning("torchvision workaround failed: %s: %s", type(e).__name__, e)
        return None


def install_import_hook() -> None:
    """Apply the workaround lazily, at torchvision's first import (what the trainer venv's `.pth` line runs)."""
    if "torchvision" in sys.modules or any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _BeforeTorchvision())

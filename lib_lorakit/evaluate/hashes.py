"""Model and LoRA hashes as the webui computes them, for infotext (`Model hash`, `Lora hashes`).

- a checkpoint: the sha256 of the whole file; infotext shows its first 10 hex digits (`Model hash`);
- a LoRA: `sshs_model_hash` from its metadata, else the sha256 of the file after its header
  (results/lora_info.py); infotext shows the first 12 (`Lora hashes`).

Hashing a 2–7 GB checkpoint takes seconds, so each result is kept in a JSON file keyed by the file's absolute path
and reused while its size and modification time are unchanged (as the webui's own cache.json does).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Optional

from ..dataset.index import file_sha256
from ..fsutil import atomic_write_json, read_json
from ..results.lora_info import read_header, webui_hash

logger = logging.getLogger(__name__)
MODEL_SHORT = 10
LORA_SHORT = 12


class FileHashes:
    """sha256 hashes of model files, cached in `file` (None: kept in memory only)."""

    def __init__(self, file: Optional[Path] = None):
        self.file = Path(file) if file else None
        self._lock = threading.Lock()
        self._entries: Optional[dict] = None

    @classmethod
    def under(cls, home: Path) -> FileHashes:
        return cls(Path(home) / ".cache" / "file-hashes.json")

    def checkpoint(self, path: Path) -> str:
        """The sha256 of the whole file (the webui's checkpoint hash; `Model hash` is its first 10 digits)."""
        return self._cached("checkpoint", Path(path), file_sha256)

    def lora(self, path: Path) -> str:
        """`sshs_model_hash` from the LoRA's metadata, else the sha256 after its header (the webui's LoRA hash)."""
        return self._cached("lora", Path(path), _lora_sha256)

    def _cached(self, kind: str, path: Path, compute) -> str:
        key = f"{kind}:{os.path.abspath(path)}"
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        with self._lock:
            entry = self._load().get(key)
            if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
                return entry["sha256"]
        sha = compute(path)
        with self._lock:
            self._load()[key] = {"stamp": stamp, "sha256": sha}
            self._save()
        return sha

    def _load(self) -> dict:
        if self._entries is None:
            data = None
            if self.file is not None:
                try:
                    data = read_json(self.file, {})
                except (OSError, ValueError) as e:
                    logger.warning("Train Style: ignoring the damaged hash cache %s: %s", self.file, e)
            self._entries = data if isinstance(data, dict) else {}
        return self._entries

    def _save(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.file, self._entries)
        except OSError as e:  # a read-only home only costs hashing again next time
            logger.warning("Train Style: cannot keep file hashes in %s: %s", self.file, e)




def _lora_sha256(path: Path) -> str:
    header, n = read_header(path)
    meta = header.get("__metadata__")
    given = meta.get("sshs_model_hash") if isinstance(meta, dict) else None
    return given if isinstance(given, str) and given else webui_hash(path, n)

"""Atomic writes: every file Train Style writes appears whole or not at all."""

from __future__ import annotations

import io
import itertools
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Optional

from .errors import LorakitError

try:
    import fcntl
except ImportError:  # Windows: only the in-process lock
    fcntl = None  # type: ignore[assignment]


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """An open temporary file beside `path`; on success it is flushed to disk and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path.parent, prefix=f".{path.name[:40]}.")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` so that `path` holds either its old content or all of `data`, never a part."""
    with _atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (an undecodable file name): JSON's \u escapes keep it exactly
        raw = (json.dumps(data, indent=2, ensure_ascii=True, sort_keys=False) + "\n").encode("ascii")
    atomic_write_bytes(path, raw)


def create_temp(folder: Path | str, *, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """A new, empty file in `folder` opened for writing: (descriptor, path). Its permissions are those of any new
    file (0666 minus the umask), not `mkstemp`'s 0600, so files renamed into place from it read like the rest of
    the user's files."""
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{os.getpid()}-{next(_temp_counter)}-{secrets.token_hex(4)}{suffix}")
        try:  # O_EXCL also refuses a symbolic link planted under this name
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy `src` byte for byte to `dst` through a temporary file; `src` is only read."""
    with _atomic_file(dst) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)


def atomic_save_image(image: Any, path: Path, **save_args: Any) -> None:
    """Save a PIL image through a temporary file; the format comes from `path`'s suffix."""
    with _atomic_file(path) as f:
        image.save(f, format=_pil_format(Path(path)), **save_args)


def encoded_image(image: Any, **save_args: Any) -> bytes:
    """A PIL image encoded in memory (`format=` in `save_args`), e.g. for a data URI: no file is written."""
    buffer = io.BytesIO()
    image.save(buffer, **save_args)
    return buffer.getvalue()


def _pil_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix.lower()]


def readable_name(text: str) -> str:
    """A file name or path as text that can be written anywhere (JSON, UTF-8 files, a terminal): the bytes of a name
    that is not UTF-8 (which Python holds as lone surrogates) appear as `\\xff` escapes, other lone surrogates as
    `\\udxxx`; anything else is unchanged."""
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    return "".join(f"\\x{ord(c) - 0xdc00:02x}" if "\udc80" <= c <= "\udcff" else
                   f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in text)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file written by `atomic_write_json`; a missing file gives `default`."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def pid_alive(pid: int | None) -> bool:
    """Whether a process runs (a zombie, finished but not yet reaped, counts as gone); used to tell a job or a
    run that died unwatched from one still working."""
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


# --- many files at once, and a lock shared with other processes -------------------------------------------------
# Up to this many files a batch fsyncs each one in turn; above, a few threads write and fsync them together.
SYNC_EACH_UP_TO = 32
FSYNC_THREADS = 8

_temp_counter = itertools.count()  # temporary names of one batch, unique in this process


class NothingWritten(OSError):
    """Writing a batch failed before any file was replaced (e.g. the disk is full): every file is as it was."""


_lock_depth = threading.local()


@contextmanager
def process_lock(path: Path, timeout: float = 120.0, busy: str | None = None) -> Iterator[None]:
    """An exclusive lock on `path` shared with other processes (POSIX `flock`; where there is none, only the
    thread lock holds). Re-entrant within a thread; after `timeout` seconds of waiting a clear error (`busy`, or
    one about captions)."""
    held = getattr(_lock_depth, "held", None)
    if held is None:
        held = _lock_depth.held = {}
    key = str(path)
    if held.get(key) or fcntl is None:
        held[key] = held.get(key, 0) + 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LorakitError(busy or "Another Train Style process (the webui, the app or the command line) "
                                       "has been changing this project's captions for two minutes; try again when "
                                       "it has finished.") from None
                time.sleep(0.05)
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def replace_files(files: Mapping[str, Optional[bytes]]) -> None:
    """Replace many files at once, each atomically: write (bytes) or delete (None), by absolute path.

    Every new content goes to a temporary file beside its target and is fsynced there; only when all are on disk
    is each renamed over its target, so a reader, or the disk after a power cut, sees each file old or new, never
    empty or half-written. Large batches write and fsync from a few threads at once: the journal then commits
    many files together (one by one, 10,000 captions cost seconds here), and unlike `os.sync()` nothing waits for
    other programs' writes (a training run saving a checkpoint). The renames are made durable by fsyncing their
    folders. New files get the usual permissions (0666 minus the umask), like files a user's editor writes.
    """
    writes = [(path, data) for path, data in files.items() if data is not None]
    staged: list[tuple[str, str]] = []
    folders: set[str] = set()
    try:
        try:
            staged = _stage_all(writes)
        except OSError as e:
            raise NothingWritten(e.errno, f"no caption was changed: {e.strerror or e}") from e
        for tmp, path in staged:
            os.replace(tmp, path)
            folders.add(os.path.dirname(path))
        staged = []
    finally:
        for tmp, _ in staged:
            _unlink_quietly(tmp)
    for path, data in files.items():
        if data is None and _unlink_quietly(path):
            folders.add(os.path.dirname(path))
    for folder in folders:
        _fsync_folder(folder)


def _stage_all(writes: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(temporary file, target) for every write, each written and fsynced; on any failure none is left behind.
    Large batches are split into a few runs of files, one per thread (one task per file costs more in the
    thread pool's locking than the writes themselves)."""
    if len(writes) <= SYNC_EACH_UP_TO:
        return _stage_run(writes)
    runs = [writes[i::FSYNC_THREADS] for i in range(FSYNC_THREADS)]
    with ThreadPoolExecutor(max_workers=FSYNC_THREADS, thread_name_prefix="caption-write") as pool:
        futures = [pool.submit(_stage_run, run) for run in runs if run]
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    done = [staged for f in futures if f.exception() is None for staged in f.result()]
    if failed is not None:
        for tmp, _ in done:
            _unlink_quietly(tmp)
        raise failed
    return done


def _stage_run(writes: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    staged: list[tuple[str, str]] = []
    try:
        for path, data in writes:
            staged.append((_stage(path, data, fsync=True), path))
    except BaseException:
        for tmp, _ in staged:
            _unlink_quietly(tmp)
        raise
    return staged


def _stage(path: str, data: bytes, *, fsync: bool) -> str:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name[:40]}.{os.getpid()}-{next(_temp_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        _write_fully(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _fsync_folder(folder: str) -> None:
    """Make renames in `folder` durable (POSIX; Windows cannot open folders and commits renames itself)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

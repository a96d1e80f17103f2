"""Child processes, done one way: started without a shell in a process group of their own, stopped politely and
then firmly, their output cut into lines (tqdm redraws with `\\r`), teed to a log while a callback sees each line.

    start(argv, env=…)                     the child in its own group (POSIX: its own session), stdin closed
    stop_group(proc, grace_s=…)            TERM to the whole group, a bounded wait, then KILL to what is left
    LineSplitter / pump(stream, …)         bytes → lines on `\\n`, `\\r\\n` and `\\r`; undecodable bytes replaced
    run_logged(argv, env=…, on_line=…)     a command whose output goes to a log file and, line by line, to a callback
    run_captured(argv, env=…, timeout_s=…) a short command's exit code and output; its group is killed on timeout

The environment is always passed in full by the caller: nothing here decides what a child inherits.
"""

from __future__ import annotations

import codecs
import os
import queue
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional, Union

from . import clock
from .errors import Cancelled, LorakitError
from .progress import CancelFlag

LineFn = Callable[[str], None]
POSIX = os.name != "nt"
_BREAK = re.compile(r"\r\n|\r|\n")
MAX_LINE = 1 << 20  # a child writing this much without a line break still gets its text shown, in pieces
_POLL_S = 0.05


# --- starting and stopping -----------------------------------------------------------------------------------

def start(argv: Sequence[Union[str, os.PathLike]], *, env: Mapping[str, str], cwd: Optional[Path] = None,
          stdout: Union[int, IO, None] = subprocess.PIPE, stderr: Union[int, IO, None] = subprocess.STDOUT
          ) -> subprocess.Popen:
    """Start `argv` (no shell) in a process group of its own, so that a stop reaches everything it starts and a
    signal to our own group (Ctrl+C in a terminal) does not reach it. `env` is the child's whole environment."""
    flags = 0 if POSIX else getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    return subprocess.Popen([str(a) for a in argv], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=stderr, start_new_session=POSIX, creationflags=flags)


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group `pgid` (a child from `start` leads the group named by its pid); False when
    there is no such group or it is not ours to signal."""
    try:
        if POSIX:
            os.killpg(pgid, sig)
        else:  # no groups to signal: TerminateProcess on the child
            os.kill(pgid, signal.SIGTERM)
    except OSError:  # no such group (ProcessLookupError), not ours (PermissionError)
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (a zombie, finished but not yet reaped, counts as gone)."""
    if not POSIX:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _live_member_in_proc(pgid)


def _live_member_in_proc(pgid: int) -> bool:
    """Linux: a member of `pgid` that is not a zombie; elsewhere (no /proc) the group counts as alive."""
    try:
        entries = os.scandir("/proc")
    except OSError:
        return True
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue  # ended meanwhile
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
    return False


def stop_group(proc: subprocess.Popen, *, grace_s: float = 10.0) -> int:
    """Stop a child started by `start` and everything in its group: TERM, then KILL to whatever still runs after
    `grace_s` seconds (the leader, or a grandchild that outlived it). Returns the child's exit code."""
    if not POSIX:
        proc.terminate()
        try:
            return proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    signal_group(proc.pid, signal.SIGTERM)
    if not wait_group(proc, timeout_s=grace_s):
        signal_group(proc.pid, signal.SIGKILL)
    return proc.wait()


def wait_group(proc: subprocess.Popen, *, timeout_s: float) -> bool:
    """Wait until the child and every process of its group have ended; False when some still run after
    `timeout_s` seconds."""
    deadline = clock.monotonic() + timeout_s
    while True:
        if proc.poll() is not None and not group_alive(proc.pid):  # the leader gone is not enough
            return True
        if clock.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def kill_group(proc: subprocess.Popen) -> None:
    """KILL the child and its whole group at once (a command past its time limit)."""
    if POSIX:
        signal_group(proc.pid, signal.SIGKILL)
    else:
        proc.kill()


# --- output as lines ---------------------------------------------------------------------------------------

class LineSplitter:
    """Cuts a stream into lines at `\\n`, `\\r\\n` and `\\r` (progress bars redraw with carriage returns).

    Feed it bytes (decoded as UTF-8, an undecodable byte becomes U+FFFD, a character cut between two reads is
    kept whole) or text; it returns the lines completed so far, without their line breaks. `flush()` returns the
    last unfinished line at the end of the stream."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: Union[bytes, str]) -> list[str]:
        text = self._pending + (self._decoder.decode(data) if isinstance(data, bytes) else data)
        held = "\r" if text.endswith("\r") else ""  # it may be the first half of a `\r\n` cut between two reads
        parts = _BREAK.split(text[:-1] if held else text)
        self._pending = parts.pop() + held
        if len(self._pending) > MAX_LINE:
            parts.append(self._pending)
            self._pending = ""
        return parts

    def flush(self) -> list[str]:
        text, self._pending = self._pending + self._decoder.decode(b"", final=True), ""
        parts = _BREAK.split(text)
        return parts if parts[-1] else parts[:-1]


def split_lines(data: Union[bytes, str]) -> list[str]:
    """A whole text (a log file's end, say) as `LineSplitter` cuts it."""
    splitter = LineSplitter()
    return splitter.feed(data) + splitter.flush()


def pump(stream: IO[bytes], *, on_line: LineFn, tee: Optional[IO[bytes]] = None) -> None:
    """Read `stream` to its end: every byte goes to `tee` as it came (`\\r` included), every line that is not
    blank to `on_line`, without its trailing whitespace."""
    splitter = LineSplitter()
    fd = stream.fileno()
    while chunk := os.read(fd, 65536):
        if tee is not None:
            tee.write(chunk)
            tee.flush()
        for line in splitter.feed(chunk):
            _deliver(line, on_line)
    for line in splitter.flush():
        _deliver(line, on_line)


def _deliver(line: str, on_line: LineFn) -> None:
    line = line.rstrip()
    if line:
        on_line(line)


# --- running commands ----------------------------------------------------------------------------------------

def run_logged(argv: Sequence[Union[str, os.PathLike]], *, env: Mapping[str, str], on_line: LineFn,
               log_file: Optional[Path] = None, cwd: Optional[Path] = None, cancel: Optional[CancelFlag] = None,
               cancel_message: str = "Cancelled.", grace_s: float = 10.0) -> int:
    """Run `argv` (see `start`) to its end and return its exit code. Its output is appended to `log_file` as it
    comes and each line is passed to `on_line` on the caller's thread, after a first line `$ argv (in cwd)`.
    A set `cancel` stops the group (`stop_group`), logs "cancelled" and raises Cancelled(`cancel_message`)."""
    argv = [str(a) for a in argv]
    sink = open(log_file, "ab") if log_file else None
    try:
        _note(f"$ {shown_command(argv)}" + (f"   (in {cwd})" if cwd else ""), on_line, sink)
        try:
            proc = start(argv, env=env, cwd=cwd)
        except OSError as e:
            raise LorakitError(f"Cannot start {argv[0]}: {e}. Check that it is installed and can run.") from e
        lines: queue.Queue[Optional[str]] = queue.Queue()
        reader = threading.Thread(target=_pump_to, args=(proc.stdout, lines, sink), name="procs-pump", daemon=True)
        reader.start()
        while (line := _next(lines, cancel)) is not None:
            if line:
                on_line(line)
            if cancel is not None and cancel.is_set():
                stop_group(proc, grace_s=grace_s)
                reader.join(grace_s)
                _note("cancelled", on_line, sink)
                raise Cancelled(cancel_message)
        return proc.wait()
    finally:
        if sink:
            sink.close()


def shown_command(argv: Sequence[str]) -> str:
    """A command as one line a person can read and paste into a POSIX shell (line breaks in it shown as `\\n`)."""
    return shlex.join(argv).replace("\r", "\\r").replace("\n", "\\n")


def _pump_to(stream: IO[bytes], lines: queue.Queue, sink: Optional[IO[bytes]]) -> None:
    try:
        pump(stream, on_line=lines.put, tee=sink)
    finally:
        lines.put(None)


def _next(lines: queue.Queue, cancel: Optional[CancelFlag]) -> Optional[str]:
    """The next line; "" when none came for a moment (so a cancel is noticed while the child is silent)."""
    try:
        return lines.get(timeout=None if cancel is None else 0.2)
    except queue.Empty:
        return ""


def _note(line: str, on_line: LineFn, sink: Optional[IO[bytes]]) -> None:
    if sink:
        sink.write(line.encode("utf-8") + b"\n")
        sink.flush()
    on_line(line)


@dataclass(frozen=True)
class Captured:
    """What a short command left: its exit code and its output, decoded as UTF-8 (undecodable bytes replaced)."""

    returncode: int
    stdout: str
    stderr: str


def run_captured(argv: Sequence[Union[str, os.PathLike]], *, env: Mapping[str, str], timeout_s: float,
                 cwd: Optional[Path] = None) -> Captured:
    """Run a short command (see `start`) and capture its output. Past `timeout_s` seconds its whole group is
    killed and subprocess.TimeoutExpired raised; OSError when it cannot start."""
    proc = start(argv, env=env, cwd=cwd, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        try:
            proc.communicate(timeout=5)  # a descendant that left the group may still hold the pipes
        except subprocess.TimeoutExpired:
            pass
        raise
    return Captured(returncode=proc.returncode, stdout=_text(out), stderr=_text(err))


def _text(data: Optional[bytes]) -> str:
    return (data or b"").decode("utf-8", "replace")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container or `taskset` may allow fewer than the
    machine has), at least 1. Thread pools that decode, hash or derive images are sized from it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

"""procs on real processes: a child with a grandchild, a child that ignores SIGTERM, tqdm-style output, bytes that
are not UTF-8, and the log file a logged run leaves."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lib_lorakit import procs
from lib_lorakit.errors import Cancelled, LorakitError
from lib_lorakit.train.progress import LogReader

pytestmark = pytest.mark.skipif(os.name == "nt", reason="process groups are POSIX here")
ENV = dict(os.environ)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _first_line(proc) -> str:
    return proc.stdout.readline().decode().strip()


# A child that starts a grandchild (which also ignores nothing and sleeps), prints the grandchild's pid, then sleeps.
PARENT = """
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(kid.pid, flush=True)
time.sleep(120)
"""
# A child whose grandchild ignores SIGTERM and outlives its parent, which exits at once on SIGTERM.
STUBBORN_GRANDCHILD = """
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"])
time.sleep(1)
print(kid.pid, flush=True)
time.sleep(120)
"""
IGNORES_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


def test_stop_ends_the_child_and_its_grandchild():
    proc = procs.start([sys.executable, "-c", PARENT], env=ENV)
    grandchild = int(_first_line(proc))
    assert _alive(grandchild)
    procs.stop_group(proc, grace_s=10)
    assert proc.returncode is not None
    assert not procs.group_alive(proc.pid)
    deadline = time.monotonic() + 5  # the grandchild's reaper (init) may take a moment
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_child_that_ignores_sigterm_is_killed_after_the_bound():
    proc = procs.start([sys.executable, "-c", IGNORES_TERM], env=ENV)
    assert _first_line(proc) == "ready"
    rc = procs.stop_group(proc, grace_s=1)
    assert rc == -9  # SIGKILL: SIGTERM was ignored


def test_a_grandchild_that_ignores_sigterm_is_killed_though_its_parent_obeyed():
    proc = procs.start([sys.executable, "-c", STUBBORN_GRANDCHILD], env=ENV)
    assert _first_line(proc) == "ready"
    grandchild = int(_first_line(proc))
    procs.stop_group(proc, grace_s=1)
    assert proc.returncode == -15  # the child ended on SIGTERM
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_the_child_gets_the_environment_it_is_given_and_no_shell():
    got = procs.run_captured([sys.executable, "-c", "import os, sys; print(os.environ.get('PROCS_T')); "
                              "print(sys.argv[1])", "$(echo hi); rm -rf /nonexistent"],
                             env={**ENV, "PROCS_T": "given"}, timeout_s=60)
    assert got.returncode == 0
    assert got.stdout.splitlines() == ["given", "$(echo hi); rm -rf /nonexistent"]
    missing = procs.run_captured([sys.executable, "-c", "import os; print(os.environ.get('HOME', 'none'))"],
                                 env={"PATH": ENV.get("PATH", "")}, timeout_s=60)
    assert missing.stdout.strip() == "none"


def test_carriage_return_progress_arrives_as_lines():
    script = ("import sys, time\n"
              "for i in range(1, 4):\n"
              "    sys.stderr.write(f'\\rsteps: {i}/3'); sys.stderr.flush(); time.sleep(0.05)\n"
              "sys.stderr.write('\\r\\nsaved\\r\\nend-without-newline')\n")
    lines: list[str] = []
    rc = procs.run_logged([sys.executable, "-c", script], env=ENV, on_line=lines.append)
    assert rc == 0
    assert lines[1:] == ["steps: 1/3", "steps: 2/3", "steps: 3/3", "saved", "end-without-newline"]
    assert lines[0].startswith("$ ")


def test_splitting_does_not_depend_on_where_reads_break():
    data = "é\r\nsteps: 1/2\rsteps: 2/2\r\nok\n\nlast".encode() + b"\xff"
    whole = procs.split_lines(data)
    assert whole == ["é", "steps: 1/2", "steps: 2/2", "ok", "", "last\ufffd"]
    for size in (1, 2, 3):
        splitter = procs.LineSplitter()
        pieces = [data[i:i + size] for i in range(0, len(data), size)]
        assert [ln for p in pieces for ln in splitter.feed(p)] + splitter.flush() == whole


def test_bytes_that_are_not_utf8_do_not_crash_a_run_or_the_progress_reader(tmp_path):
    script = ("import sys; out = sys.stdout.buffer\n"
              "out.write(b'bad \\xff\\xfe byte\\n'); out.write(b'half \\xc3'); out.flush()\n"
              "out.write(b'\\xa9 char\\n')\n"
              "out.write(b'steps:  50%|##| 1/2 [00:01<00:01, 1.00s/it, avr_loss=0.5]\\r')\n")
    lines: list[str] = []
    rc = procs.run_logged([sys.executable, "-c", script], env=ENV, on_line=lines.append, log_file=tmp_path / "l.log")
    assert rc == 0
    assert lines[1] == "bad \ufffd\ufffd byte" and lines[2] == "half é char"
    reader = LogReader()
    reader.feed(b"bad \xff\n" + lines[3].encode() + b"\r")
    reader.flush()
    assert (reader.progress.step, reader.progress.total, reader.progress.loss) == (1, 2, 0.5)


def test_the_log_file_gets_every_line_as_the_child_wrote_it(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"earlier run\n")
    script = "import sys\nfor i in range(2000): print(f'line {i}')\nsys.stdout.write('bar 1\\rbar 2\\r')\n"
    seen: list[str] = []
    assert procs.run_logged([sys.executable, "-c", script], env=ENV, on_line=seen.append, log_file=log,
                            cwd=tmp_path) == 0
    text = log.read_text()
    assert text.startswith("earlier run\n$ ")  # appended, after the command it ran
    assert "range(2000)" in text.splitlines()[1]  # the command on one line
    assert [f"line {i}" for i in range(2000)] == text.splitlines()[2:2002]
    assert log.read_bytes().endswith(b"line 1999\nbar 1\rbar 2\r")  # teed as written, carriage returns included
    assert seen[1:] == [f"line {i}" for i in range(2000)] + ["bar 1", "bar 2"]


def test_cancel_stops_a_logged_run_and_its_group(tmp_path):
    cancel = threading.Event()
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line.isdigit():
            cancel.set()

    with pytest.raises(Cancelled, match="stopped by the test"):
        procs.run_logged([sys.executable, "-c", PARENT], env=ENV, on_line=on_line, log_file=tmp_path / "c.log",
                         cancel=cancel, cancel_message="stopped by the test", grace_s=5)
    grandchild = int(next(ln for ln in seen if ln.isdigit()))
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
    assert (tmp_path / "c.log").read_text().splitlines()[-1] == "cancelled"


def test_a_command_that_cannot_start_is_a_clear_error(tmp_path):
    with pytest.raises(LorakitError, match="Cannot start .*no-such-program"):
        procs.run_logged([tmp_path / "no-such-program"], env=ENV, on_line=lambda _: None)


def test_a_captured_command_past_its_time_is_killed_with_its_group(tmp_path):
    script = PARENT.replace("print(kid.pid, flush=True)", "open(sys.argv[1], 'w').write(str(kid.pid))")
    with pytest.raises(subprocess.TimeoutExpired):
        procs.run_captured([sys.executable, "-c", script, tmp_path / "pid"], env=ENV, timeout_s=3)
    grandchild = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


# --- one way to do each: a static check over the package -------------------------------------------------------

PACKAGE = Path(procs.__file__).resolve().parent
# module attribute → the one module allowed to use it, and what to use instead
_ONE_PLACE = {
    ("subprocess", "Popen"): ("procs.py", "procs.start / run_logged / run_captured"),
    ("subprocess", "run"): ("procs.py", "procs.run_captured or procs.run_logged"),
    ("subprocess", "call"): ("procs.py", "procs.run_captured"),
    ("subprocess", "check_call"): ("procs.py", "procs.run_captured"),
    ("subprocess", "check_output"): ("procs.py", "procs.run_captured"),
    ("os", "killpg"): ("procs.py", "procs.stop_group / signal_group"),
    ("os", "setsid"): ("procs.py", "procs.start"),
    ("datetime", "now"): ("clock.py", "clock.now_iso / clock.stamp"),
    ("datetime", "utcnow"): ("clock.py", "clock.now_iso"),
    ("time", "strftime"): ("clock.py", "clock.stamp"),
}
_PROGRESS_ALIAS = re.compile(r"Callable\[\[int, int, str\], None\]")


def _offences(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    found = []
    tree = ast.parse(source)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
            owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
            rule = _ONE_PLACE.get((owner, node.attr))
            if node.attr == "Popen" and id(node) not in called:
                continue  # `subprocess.Popen` as a type
            if rule and path.name != rule[0]:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {owner}.{node.attr} (use {rule[1]})")
    if path.name != "progress.py" or path.parent != PACKAGE:
        for m in _PROGRESS_ALIAS.finditer(source):
            line = source.count("\n", 0, m.start()) + 1
            found.append(f"{path.relative_to(PACKAGE)}:{line}: a progress callback type of its own "
                         "(use lib_lorakit.progress.ProgressFn)")
    return found


def test_processes_clocks_and_progress_callbacks_have_one_home_each():
    offences = [o for path in sorted(PACKAGE.rglob("*.py")) for o in _offences(path)]
    assert not offences, "\n".join(offences)

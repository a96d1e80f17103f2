"""What the runner adds per training step: the same recorded sd-scripts output, replayed as fast as possible,
(a) drained by a bare pipe reader and (b) through Train Style's supervisor (tee to train.log, parse progress,
write run.json).

    python bench/bench_runner.py [--copies 300]

Prints both times, the ratio and the overhead per step; a real step takes seconds, so anything in
milliseconds is noise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_lorakit.project import Workspace  # noqa: E402
from lib_lorakit.train.progress import LogReader  # noqa: E402
from lib_lorakit.train.runner import Runs, RunSpec  # noqa: E402

LOG = ROOT / "tests" / "data" / "sd_scripts_lora_run.log"
REPLAY = "import sys; data = open(sys.argv[1], 'rb').read(); [sys.stderr.buffer.write(data) for _ in range({n})]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=300)
    n = ap.parse_args().copies
    reader = LogReader()
    reader.feed(LOG.read_text(errors="replace"))
    steps = reader.progress.total * n
    code = REPLAY.format(n=n)
    # (a) baseline: the child's output read and thrown away
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(LOG)], stderr=subprocess.PIPE, check=True)
    bare = time.perf_counter() - t
    # (b) the runner: supervisor process, tee, parse, state writes
    with tempfile.TemporaryDirectory() as tmp:
        project = Workspace(Path(tmp)).create("bench")
        runs = Runs(project)
        run_dir = runs.new_dir("bench")
        (run_dir / "bench.safetensors").write_bytes(b"x")
        spec = RunSpec(argv=(sys.executable, "-c", code, str(LOG)), cwd=str(run_dir), output_name="bench")
        snap = runs.create(run_dir, spec, files={}, meta={})
        t = time.perf_counter()
        runs.start(snap.id)
        final = runs.wait(snap.id, poll=0.01)
        full = time.perf_counter() - t
        assert final.state == "succeeded", final
    print(f"{steps} steps of recorded output ({n} copies): bare pipe {bare:.2f} s, through the runner {full:.2f} s, "
          f"ratio {full / bare:.1f}x, overhead {1000 * (full - bare) / steps:.2f} ms per step")


if __name__ == "__main__":
    main()

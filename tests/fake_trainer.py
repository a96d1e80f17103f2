"""A stand-in for sd-scripts in runner tests: a real process that replays a recorded sd-scripts log.

    python fake_trainer.py MODE LOG OUT_DIR NAME [DELAY]

MODE: success (replays LOG, writes the step files named in its "saving checkpoint" lines and the final
file), crash (replays half, prints an out-of-memory traceback, exits 1), nofile (replays, exits 0 without
the final file), hang (replays half, then waits to be stopped). Runner mechanics (process groups, signals,
log tee, state files) are real; only the training is replayed.
"""

import re
import sys
import time
from pathlib import Path


def main() -> int:
    mode, log, out, name = sys.argv[1:5]
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.01
    out = Path(out)
    data = Path(log).read_bytes()
    chunks = re.split(rb"(?<=[\r\n])", data)
    if mode in ("crash", "hang"):
        chunks = chunks[: len(chunks) // 2]
    for chunk in chunks:
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        m = re.search(rb"saving checkpoint: (\S+\.safetensors)", chunk)
        if m and mode != "nofile":
            (out / Path(m.group(1).decode()).name).write_bytes(b"fake lora")
        time.sleep(delay)
    if mode == "crash":
        sys.stderr.write("Traceback (most recent call last):\n  File \"train_network.py\", line 1\n"
                         "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
        return 1
    if mode == "hang":
        while True:
            time.sleep(0.1)
    if mode == "success":
        (out / f"{name}.safetensors").write_bytes(b"fake lora")
    return 0


if __name__ == "__main__":
    sys.exit(main())

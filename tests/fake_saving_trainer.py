"""A stand-in for sd-scripts that saves training states the way accelerate does, slowly enough to stop mid-save.

    python fake_saving_trainer.py OUT_DIR NAME SAVE_SECONDS SLOW_STEP [STEPS]

It trains STEPS steps (default 4, a bar line each), and every 2 steps saves like train_network.py with
`--save_state`: it prints sd-scripts' lines, writes `<NAME>-step<N>.safetensors`, then the state folder file by
file in accelerate's order — train_state.json, model.safetensors, optimizer.bin (a zip as torch.save writes it,
written in pieces, over SAVE_SECONDS at step SLOW_STEP, so a kill leaves it truncated), scheduler.bin,
random_states_0.pkl — and
finally `<NAME>.safetensors`. SIGTERM ends it at once, as it does sd-scripts. The files are real formats (a
safetensors header with data, zips with a data.pkl entry); their content means nothing and is never unpickled.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import time
import zipfile
from pathlib import Path


def safetensors_bytes(n: int = 4) -> bytes:
    header = {f"w{i}": {"dtype": "F32", "shape": [4], "data_offsets": [16 * i, 16 * i + 16]} for i in range(n)}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(16 * n)


def torch_zip(payload: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")  # an empty dict as pickle bytes; nobody loads it
        z.writestr("archive/data/0", bytes(payload))
    return buf.getvalue()


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def slow_write(path: Path, data: bytes, seconds: float) -> None:
    pieces = 20
    size = -(-len(data) // pieces)
    with open(path, "wb") as f:
        for i in range(pieces):
            f.write(data[i * size:(i + 1) * size])
            f.flush()
            time.sleep(seconds / pieces)


def save_state(out: Path, name: str, step: int, seconds: float) -> None:
    folder = out / f"{name}-step{step:08d}-state"
    say(f"saving state at step {step}")
    say(f"Saving current state to {folder}")
    folder.mkdir(exist_ok=True)
    (folder / "train_state.json").write_text(json.dumps({"current_epoch": 1, "current_step": step}))
    say(f"save train state to {folder}/train_state.json at epoch 1 step {step}")
    (folder / "model.safetensors").write_bytes(safetensors_bytes())
    say(f"Model weights saved in {folder}/model.safetensors")
    slow_write(folder / "optimizer.bin", torch_zip(400_000), seconds)
    say(f"Optimizer state saved in {folder}/optimizer.bin")
    (folder / "scheduler.bin").write_bytes(torch_zip(100))
    say(f"Scheduler state saved in {folder}/scheduler.bin")
    (folder / "random_states_0.pkl").write_bytes(torch_zip(200))
    say(f"Random states saved in {folder}/random_states_0.pkl")


def main() -> int:
    out, name, seconds, slow = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    for step in range(1, steps + 1):
        time.sleep(0.3)
        say(f"steps: {100 * step // steps:3d}%|#| {step}/{steps} [00:0{step}<00:01, 1.00s/it, avr_loss=0.5]")
        if step % 2 == 0:
            say(f"\nsaving checkpoint: {out}/{name}-step{step:08d}.safetensors")
            (out / f"{name}-step{step:08d}.safetensors").write_bytes(safetensors_bytes())
            save_state(out, name, step, seconds if step == slow else 0.05)
    say(f"saving checkpoint: {out}/{name}.safetensors")
    (out / f"{name}.safetensors").write_bytes(safetensors_bytes())
    say("model saved.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

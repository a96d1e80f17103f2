"""A stand-in for sd-scripts in runner tests: a real process that replays a recorded sd-scripts log.

    python fake_trainer.py MODE LOG OUT_DIR NAME [DELAY]

MODE: success (replays LOG, writes the step files named in its "saving checkpoint" lines and the final
file), crash (replays half, prints an out-of-memory traceback, exits 1), nofile (replays, exits 0 without
the final file), hang (replays half, then waits to be stopped). Runner mechanics (process groups, signals,
log tee, state files) are real; only the training is replayed.

When `args.toml` in the working folder (the run's folder) sets validation_split above 0, each epoch ends with
sd-scripts' epoch-validation bar (train_network.py: 4 timesteps, `\r` redraws, postfix `val_epoch_avg_loss=…,
timestep=…`): before every `epoch N/M` line after the first, and before the last epoch's final save. The losses
are FAKE_TRAINER_VAL_LOSSES (comma-separated, one per epoch, the last repeated), else a slowly falling curve.
"""

import os
import re
import sys
import time
from pathlib import Path

import tomllib

TIMESTEPS = (200, 400, 600, 800)  # np.linspace(0, 1000, 6, dtype=int)[1:-1], as train_network.py validates


def validation_split() -> float:
    try:
        with open("args.toml", "rb") as f:
            sections = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return 0.0
    flat = {k: v for body in sections.values() if isinstance(body, dict) for k, v in body.items()}
    return float(flat.get("validation_split") or 0.0)


def validation_bar(epoch: int) -> tuple[bytes, bytes]:
    """One check as tqdm draws this nested bar in sd-scripts v0.10.1 (each redraw "\\n\\r<bar>\\x1b[A"): empty, then
    per timestep update(1) with the postfix before and set_postfix with the running average. Also its closing
    redraw, which sd-scripts' output shows only when the next check's bar replaces it."""
    given = [float(x) for x in os.environ.get("FAKE_TRAINER_VAL_LOSSES", "").split(",") if x.strip()]
    loss = given[min(epoch, len(given)) - 1] if given else 0.2 - 0.01 * epoch
    n = len(TIMESTEPS)

    def draw(i: int, post: str) -> str:
        rate = "?it/s" if i == 0 else "1.02s/it"
        left = "?" if i == 0 else f"00:0{n - i}"
        return (f"epoch validation steps: {100 * i // n:3d}%|{('█' * round(10 * i / n)).ljust(10)}| {i}/{n} "
                f"[00:0{i}<{left}, {rate}{post}]")

    out, post, total = [draw(0, "")], "", 0.0
    for i, (t, factor) in enumerate(zip(TIMESTEPS, (0.6, 0.9, 1.1, 1.4), strict=True), 1):
        total += loss * factor
        out.append(draw(i, post))
        post = f", val_epoch_avg_loss={total / i:.3g}, timestep={t}"
        out.append(draw(i, post))
    check = "".join(f"\n\r{line}\x1b[A" for line in out)
    return check.encode(), f"\r{out[-1]}\n".encode()


def with_validation(chunks: list[bytes], name: str) -> list[bytes]:
    """The log's chunks with a validation check at the end of every epoch."""
    final_save = re.compile(rb"saving last state|saving checkpoint: \S*" + re.escape(name.encode())
                            + rb"\.safetensors")
    out, epoch, last_done, closing = [], 0, False, b""

    def check(of_epoch: int) -> None:
        nonlocal closing
        drawn, close = validation_bar(of_epoch)
        first_draw = drawn.index(b"\x1b[A") + 3
        out.extend([drawn[:first_draw], closing, drawn[first_draw:], b"\n"])  # the last check's bar closes now
        closing = close

    for chunk in chunks:
        m = re.match(rb"\s*epoch (\d+)/(\d+)", chunk)
        if m and epoch:  # the end of the epoch before (a resumed run starts at a later epoch, checked by none)
            check(epoch)
        if m:
            epoch = int(m.group(1))
        elif epoch and not last_done and final_save.search(chunk):
            check(epoch)
            last_done = True
        out.append(chunk)
    return out


def main() -> int:
    mode, log, out, name = sys.argv[1:5]
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.01
    out = Path(out)
    data = Path(log).read_bytes()
    chunks = re.split(rb"(?<=[\r\n])", data)
    if validation_split() > 0:
        chunks = with_validation(chunks, name)
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

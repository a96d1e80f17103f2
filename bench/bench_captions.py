"""How fast batch caption operations are on 10,000 captions, against a straightforward per-file loop.

    python bench/bench_captions.py [--captions 10000] [--baseline-files 10000]

For each operation: plan (the preview), apply (write the changed captions + the undo step) and undo, on caption
files in a temporary project. The baseline does what a simple script would: for each file read, change, write
atomically with an fsync, with the undo record kept in memory and saved once. The floor is the bare file-system
work of any atomic rewrite of that many files (create, sync, rename), for scale. Prints seconds and the ratio.
Pass --dir to run on another file system (e.g. /dev/shm, to see the CPU part alone).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_lorakit.captions.audit import AuditSettings, load_categories, run_audit  # noqa: E402
from lib_lorakit.captions.ops import CaptionOp, plan  # noqa: E402
from lib_lorakit.captions.store import CaptionStore  # noqa: E402
from lib_lorakit.captions.tags import join_tags, split_tags, tag_key  # noqa: E402
from lib_lorakit.dataset.index import IndexEntry  # noqa: E402
from lib_lorakit.fsutil import atomic_write_json, atomic_write_text  # noqa: E402
from lib_lorakit.project import Workspace  # noqa: E402

TRIGGER = "bench style"


def build(root: Path, n: int, seed: int = 0):
    """A project with `n` images (never decoded here) and a caption each: the trigger word and ~25 tags drawn
    from 2,000 with a long tail, like tagger output."""
    project = Workspace(root).create("bench", trigger_words=[TRIGGER])
    rng = random.Random(seed)
    vocab = [f"tag {i}" for i in range(2000)] + ["long hair", "smile", "1girl", "looking at viewer"]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    folders = [project.add_concept(f"c{k}", repeats=1).folder for k in range(4)]
    for i in range(n):
        folder = folders[i % len(folders)]
        tags = list(dict.fromkeys(rng.choices(vocab, weights, k=28)))[:25]
        (folder / f"{i:05d}.png").write_bytes(b"not decoded")
        (folder / f"{i:05d}.txt").write_text(join_tags([TRIGGER, *tags]) + "\n", encoding="utf-8")
    return project


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_ops(project) -> list[dict]:
    store = CaptionStore(project)
    _, cold = timed(store.records)
    records, warm = timed(store.records)
    print(f"load {len(records)} captions: {cold:.3f} s first, {warm:.3f} s again")
    ops = [CaptionOp(op="prune", tags=("smile", "long hair")), CaptionOp(op="add", tags=("outdoors",)),
           CaptionOp(op="replace", target="tag 3", replacement=("tag three", "tag 3b")),
           CaptionOp(op="reorder", order="frequency"), CaptionOp(op="trigger", tags=("new style",))]
    rows = []
    for op in ops:
        records = store.records()
        changes, t_plan = timed(lambda op=op, records=records: plan(records, op, trigger_words=(TRIGGER,)))
        settings = {"trigger_words": list(op.tags)} if op.op == "trigger" else None
        _, t_apply = timed(lambda op=op, changes=changes, settings=settings: store.apply(
            changes, label=op.describe(), op=op.to_dict(), settings=settings))
        undone, t_undo = timed(store.undo)
        assert undone.written == len(changes) and not undone.conflicts
        rows.append({"op": op.describe(), "changed": len(changes), "plan": t_plan, "apply": t_apply,
                     "undo": t_undo})
    return rows


def baseline(project, limit: int) -> tuple[int, float]:
    """Add a tag to every caption the simple way: read, change, write with fsync per file; undo kept in memory."""
    files = sorted(project.root.glob("dataset/*/*.txt"))[:limit]
    start = time.perf_counter()
    history = {}
    for path in files:
        before = path.read_text(encoding="utf-8")
        tags = split_tags(before)
        if tag_key("outdoors") not in {tag_key(t) for t in tags}:
            after = join_tags([*tags, "outdoors"]) + "\n"
            atomic_write_text(path, after)
            history[str(path)] = {"before": before, "after": after}
    atomic_write_json(project.state_dir / "baseline-history.json", history)
    return len(history), time.perf_counter() - start


def floor(root: Path, n: int) -> float:
    """The least any atomic batch rewrite of `n` small files costs on this disk: create `n` temporary files, one
    sync, `n` renames over existing files — no reading, no Python logic."""
    folder = root / "floor"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i}.txt").write_bytes(b"old, caption\n")
    os.sync()
    start = time.perf_counter()
    for i in range(n):
        fd = os.open(folder / f".{i}.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.write(fd, b"new, caption, tags\n")
        os.close(fd)
    os.sync()
    for i in range(n):
        os.replace(folder / f".{i}.tmp", folder / f"{i}.txt")
    return time.perf_counter() - start


def bench_audit(project) -> float:
    """The audit's caption analysis on the in-memory records (the image scan it starts with is benched apart)."""
    records = CaptionStore(project).records()
    rng = random.Random(1)
    entries = {r.image: IndexEntry(path=r.image, size=1, mtime_ns=1, phash=f"{rng.getrandbits(64):016x}")
               for r in records}
    settings = AuditSettings()
    _, seconds = timed(lambda: run_audit(records, entries=entries, triggers=(TRIGGER,),
                                         categories=load_categories(), settings=settings))
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=10_000)
    ap.add_argument("--baseline-files", type=int, default=10_000)
    ap.add_argument("--dir", default=None, help="where to build the temporary project (default: the system's)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        project = build(Path(tmp), args.captions)
        rows = bench_ops(project)
        print(f"{'operation':52} {'changed':>7} {'plan':>7} {'apply':>7} {'undo':>7} {'total':>7}")
        for r in rows:
            total = r["plan"] + r["apply"]
            print(f"{r['op'][:52]:52} {r['changed']:7d} {r['plan']:7.3f} {r['apply']:7.3f} {r['undo']:7.3f} "
                  f"{total:7.3f}")
        floor_s = floor(Path(tmp), args.captions)
        print(f"floor: create {args.captions} temporary files + sync + rename each over an existing file: "
              f"{floor_s:.3f} s")
        audit_s = bench_audit(project)
        print(f"audit of {args.captions} captions (no image scan): {audit_s:.3f} s")
        changed, base_s = baseline(project, args.baseline_files)
        add = next(r for r in rows if r["op"].startswith("Add"))
        ours = (add["plan"] + add["apply"]) * changed / max(add["changed"], 1)
        print(f"baseline (per-file read/change/write + fsync, {changed} files): {base_s:.3f} s; "
              f"ours for the same files (plan + apply): {ours:.3f} s; ratio {base_s / ours:.1f}x")
        if args.json:
            print(json.dumps({"ops": rows, "floor": floor_s, "audit": audit_s, "baseline": base_s,
                              "baseline_files": changed}))


if __name__ == "__main__":
    main()

"""The training commands of `python -m lib_lorakit`: presets, train, runs, run, register, trainer."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError
from ..studio import Studio
from ..train.distributed import ACCELERATE_SCHEMA
from ..train.door import TrainingDoor
from ..train.environment import setup_trainer
from ..train.options import FLAGS, parse_set
from ..train.options import SCHEMA as OPTIONS_SCHEMA
from ..train.runner import RunSnapshot
from ..train.service import set_items

DEFAULT_TORCH = "2.13.0"
BASE_MODEL_HELP = "the checkpoint to train on (.safetensors; a .ckpt is unpickled, so only from a source you trust)"
Result = tuple[int, Any, str]
SET_HELP = ("override a preset option, or pass any other sd-scripts argument (e.g. tokenizer_cache_dir=DIR), "
            "checked by sd-scripts' own parser before the run; repeat a NAME for a list")
WITHOUT_TRIGGER_HELP = "also sample each prompt without the trigger words (default: yes)"



def _run_args(p: argparse.ArgumentParser, *, set_help: str, output_help: Optional[str], dry_run_help: str,
              wait_help: str) -> None:
    """The arguments `train` and `train-differential` share."""
    p.add_argument("project")
    p.add_argument("--preset", required=True)
    p.add_argument("--base-model", required=True, help=BASE_MODEL_HELP)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help=set_help)
    p.add_argument("--output-name", help=output_help)
    p.add_argument("--sample", action="append", default=[], metavar="PROMPT", help="a sample prompt (repeatable)")
    p.add_argument("--without-trigger", action=argparse.BooleanOptionalAction, default=None,
                   help=WITHOUT_TRIGGER_HELP)
    p.add_argument("--accept-missing-captions", action="store_true")
    p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    p.add_argument("--wait", action="store_true", help=wait_help)
    OPTIONS_SCHEMA.add_arguments(p.add_argument_group("training options with a flag (any option: --set)"),
                                 names=FLAGS)
    add_accelerate_args(p)

def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    pr = sub.add_parser("presets", parents=[common], help="list, show or save training presets")
    pr.add_argument("action", nargs="?", choices=("list", "show", "save"), default="list")
    pr.add_argument("name", nargs="?", help="show: the preset; save: the new preset's name")
    pr.add_argument("--from", dest="source", help="save: the preset to start from")
    pr.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="save: an override")
    pr.add_argument("--summary", default="")
    q = sub.add_parser("queue", parents=[common], help="the training queue: list, or move a run up or down")
    q.add_argument("action", choices=("list", "up", "down"), nargs="?", default="list")
    q.add_argument("project", nargs="?")
    q.add_argument("run", nargs="?")
    t = sub.add_parser("train", parents=[common], help="train a LoRA on a project")
    _run_args(t, set_help=SET_HELP, output_help=None,
              dry_run_help="write the TOMLs and print the command; start nothing",
              wait_help="stay until the run ends, showing progress")
    d = sub.add_parser("train-differential", parents=[common],
                       help="two-stage training: a base LoRA on some concepts, then the targets with it merged in")
    _run_args(d, set_help=SET_HELP + "; both stages", output_help="stage 2's LoRA name (stage 1's is NAME-base)",
              dry_run_help="write both runs' TOMLs and print the commands",
              wait_help="stay until both runs end, showing progress")
    d.add_argument("--target-concepts", required=True, metavar="A,B", help="what stage 2 learns")
    d.add_argument("--stage1-concepts", default="", metavar="A,B",
                   help="what stage 1 learns, the look to remove (default: every other concept)")
    d.add_argument("--stage1-set", action="append", default=[], metavar="OPTION=VALUE",
                   help="override for stage 1 only")
    r = sub.add_parser("runs", parents=[common], help="list a project's runs")
    r.add_argument("project")
    run = sub.add_parser("run", parents=[common], help="status, stop or resume one run")
    run.add_argument("action", choices=("status", "stop", "resume", "export", "import"),
                     help="export: a bundle to train elsewhere; import: bring a trained bundle's LoRAs back")
    run.add_argument("project")
    run.add_argument("run", help="the run id (import: the trained bundle, a .zip or its folder)")
    run.add_argument("--out", type=Path, help="export: the bundle file to write (default: <project>/exports/)")
    run.add_argument("--include-model", action="store_true", help="export: put the base model in the bundle too")
    run.add_argument("--wait", action="store_true")
    reg = sub.add_parser("register", parents=[common], help="put a run's LoRAs in the Lora folder with cards")
    reg.add_argument("project")
    reg.add_argument("run")
    tr = sub.add_parser("trainer", parents=[common], help="set up or check sd-scripts' own environment")
    tr.add_argument("action", choices=("setup", "doctor"))
    tr.add_argument("--torch-version", default=DEFAULT_TORCH, help="the webui's torch version, to reuse its wheel")
    tr.add_argument("--torch-index-url", help="e.g. the PyTorch CUDA wheel index for your GPU")
    for p in (t, d, run, tr):
        p.add_argument("--trainer-python", help="use an existing environment's python instead of ours")
        p.add_argument("--tokenizer-cache-dir", type=Path, help="offline tokenizers for sd-scripts")


def add_accelerate_args(p: argparse.ArgumentParser) -> None:
    ACCELERATE_SCHEMA.add_arguments(p.add_argument_group("multi-GPU / multi-node (accelerate launch)"))


def door(studio: Studio, args: argparse.Namespace) -> TrainingDoor:
    # the command line runs with its user's own rights: any model file, a pickle with a warning (model_path)
    return studio.training(local_user=True, trainer_python=getattr(args, "trainer_python", None),
                           tokenizer_cache_dir=getattr(args, "tokenizer_cache_dir", None), start="now")


def request_data(args: argparse.Namespace) -> dict[str, Any]:
    """The training request as plain data (TrainRequest.from_dict), from the command line."""
    overrides, extra = set_items(args.set)
    overrides.update({n: getattr(args, n) for n in FLAGS if getattr(args, n, None) is not None})
    data: dict[str, Any] = {"preset": args.preset, "base_model": args.base_model, "overrides": overrides,
                            "extra_args": extra, "output_name": args.output_name, "samples": list(args.sample),
                            "accept_missing_captions": args.accept_missing_captions, "dry_run": args.dry_run}
    if args.without_trigger is not None:
        data["without_trigger"] = args.without_trigger
    data.update({f.name: getattr(args, f.name) for f in ACCELERATE_SCHEMA.fields
                 if getattr(args, f.name, None) is not None})
    return data


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    return {"presets": _presets_cmd, "queue": _queue, "train": _train, "train-differential": _train_differential,
            "runs": _runs, "run": _run, "register": _register,
            "trainer": _trainer}[args.command](studio, args)


def _presets_cmd(studio: Studio, args: argparse.Namespace) -> Result:
    training = door(studio, args)
    if args.action == "show":
        resolved = training.preset_settings(args.name or "")
        rows = resolved.explain()
        return 0, {"preset": resolved.preset, "settings": rows}, "\n".join(
            f"{r['name']:<28} {r['value']!s:<14} {r['source']}" for r in rows)
    if args.action == "save":
        if not args.name or not args.source:
            raise LorakitError("presets save NAME --from PRESET [--set option=value]...")
        path = training.save_preset(args.name, source=args.source, overrides=parse_set(args.set),
                                    summary=args.summary, override_source="--set")
        return 0, {"saved": str(path)}, f"Saved preset {args.name} in {path}"
    rows = [p.to_dict() for p in training.presets()]
    text = "\n".join(f"{r['name']:<24} {r['base']:<5} {r['network']:<5} {r['task']}" for r in rows)
    return 0, {"presets": rows}, text


def _queue(studio: Studio, args: argparse.Namespace) -> Result:
    training = door(studio, args)
    if args.action in ("up", "down"):
        if not (args.project and args.run):
            raise LorakitError("queue up|down PROJECT RUN")
        rows = training.queue_move(args.project, args.run, -1 if args.action == "up" else 1)
    else:
        rows = training.queue_listing()
    text = "\n".join(f"{i + 1}. {r['project']} {r['run']} ({r['state']})" for i, r in enumerate(rows))
    return 0, {"queue": rows}, text or "The training queue is empty."


def _train(studio: Studio, args: argparse.Namespace) -> Result:
    training = door(studio, args)
    made = training.train(args.project, request_data(args))
    plan, snap = made.plan, made.snapshot
    for f in plan.findings:
        print(f"{f.severity}: {f.message}" + (f" Fix: {f.fix}" if f.fix else ""), file=sys.stderr)
    s = plan.steps
    print(f"{s.train_images} images, {s.epoch_images} images × repeats per epoch, {s.epochs} epochs, batch "
          f"{s.batch_size} → {s.total_steps} steps ({s.steps_per_image:.0f} per image)", file=sys.stderr)
    for w in s.warnings:
        print(f"{w.level}: {w.message}", file=sys.stderr)
    data = {"run": snap.id, "dir": str(snap.dir), "argv": made.argv, "plan": plan.to_dict()}
    if args.dry_run:
        return 0, data, "Dry run: wrote " + str(snap.dir) + "\n" + " ".join(made.argv)
    if not args.wait:
        return 0, data, f"Queued run {snap.id}; follow it with `run status {args.project} {snap.id}`."
    final = _follow(training, args.project, snap.id)
    data["final"] = final.to_dict()
    return (0 if final.state == "succeeded" else 1), data, _describe(final)


def _train_differential(studio: Studio, args: argparse.Namespace) -> Result:
    training = door(studio, args)
    data = request_data(args)
    data.update(target_concepts=[args.target_concepts], stage1_concepts=[args.stage1_concepts],
                stage1_overrides=_stage1_overrides(args.stage1_set))
    made = training.train_differential(args.project, data)
    for stage, plan in enumerate(made.plans, 1):
        s = plan.steps
        print(f"stage {stage}: {s.train_images} images, {s.epochs} epochs, batch {s.batch_size} → {s.total_steps} "
              "steps", file=sys.stderr)
        for f in plan.findings:
            print(f"stage {stage} {f.severity}: {f.message}" + (f" Fix: {f.fix}" if f.fix else ""), file=sys.stderr)
    one, two = made.runs.stage1, made.runs.stage2
    out: dict[str, Any] = {"stage1": one.id, "stage2": two.id, "dirs": [str(one.dir), str(two.dir)],
                           "argv": list(made.argv), "plans": [p.to_dict() for p in made.plans]}
    if args.dry_run:
        return 0, out, (f"Dry run: wrote {one.dir} and {two.dir}\n" + "\n".join(" ".join(a) for a in made.argv))
    if not args.wait:
        return 0, out, (f"Queued stage 1 {one.id} and stage 2 {two.id} (starts when stage 1 has succeeded); follow "
                        f"them with `runs {args.project}`.")
    finals = [_follow(training, args.project, one.id), _follow(training, args.project, two.id)]
    out["final"] = [f.to_dict() for f in finals]
    ok = all(f.state == "succeeded" for f in finals)
    return (0 if ok else 1), out, "\n".join(_describe(f) for f in finals)


def _stage1_overrides(items: list[str]) -> dict[str, str]:
    """`--stage1-set OPTION=VALUE` as text by option (only declared options; from_dict types and checks them)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise LorakitError(f"--stage1-set {item!r}: expected OPTION=VALUE, e.g. max_train_epochs=10")
        out[name.strip()] = text.strip()
    return out


def _follow(training: TrainingDoor, project: str, run_id: str) -> RunSnapshot:
    while True:
        training.tick()
        snap = training.run(project, run_id)
        print(f"\r{snap.display.text}   ", end="", file=sys.stderr, flush=True)
        if snap.state not in ("queued", "starting", "running"):
            print(file=sys.stderr)
            return snap
        time.sleep(1)


def _describe(snap: Any) -> str:
    lines = [f"Run {snap.id}: {snap.display.text}"]
    lines += [f"  saved {f}" for f in snap.files]
    if snap.val_losses:
        lines.append("  validation loss: " + ", ".join(f"epoch {e} {v:.4g}" for e, _, v in snap.val_losses))
    for text in (snap.notice, snap.meta.get("resume_note"), sign.message if (sign := snap.memorising) else ""):
        if text:
            lines.append(f"  {text}")
    if snap.error:
        lines.append(f"  {snap.error}")
    if snap.advice:
        lines.append(f"  advice: {snap.advice}")
    if snap.state == "failed":
        lines += ["  log tail:"] + [f"    {line}" for line in snap.log_tail[-12:]]
    return "\n".join(lines)


def _runs(studio: Studio, args: argparse.Namespace) -> Result:
    snaps = door(studio, args).runs(args.project)
    text = "\n".join(f"{s.id}  {s.state:<11} step {s.progress.get('step', 0)}/{s.progress.get('total', '?')}"
                     for s in snaps) or "No runs yet."
    return 0, {"runs": [s.to_dict() for s in snaps]}, text


def _run(studio: Studio, args: argparse.Namespace) -> Result:
    training = door(studio, args)
    if args.action == "stop":
        training.stop(args.project, args.run)
        snap = training.wait(args.project, args.run, timeout=60)
    elif args.action == "resume":
        snap = training.resume(args.project, args.run)
        snap = _follow(training, args.project, args.run) if args.wait else snap
    elif args.action == "export":
        path = training.export(args.project, args.run, out=args.out, include_model=args.include_model)
        return 0, {"bundle": str(path)}, f"Wrote {path}\n(unzip it on the training machine and read README.md)"
    elif args.action == "import":
        snap = training.import_bundle(args.project, Path(args.run))
        return 0, snap.to_dict(), _describe(snap) + f"\nRegister it with `register {args.project} {snap.id}`."
    else:
        snap = training.run(args.project, args.run)
    return 0, snap.to_dict(), _describe(snap)


def _register(studio: Studio, args: argparse.Namespace) -> Result:
    done = door(studio, args).register(args.project, args.run)
    return 0, {"registered": [d.to_dict() for d in done]}, "\n".join(f"registered {d.lora}" for d in done)


def _trainer(studio: Studio, args: argparse.Namespace) -> Result:
    training = door(studio, args)
    env = training.trainer
    if args.action == "setup":
        if getattr(args, "trainer_python", None):
            raise LorakitError("--trainer-python names an existing environment; setup makes our own.")
        report = setup_trainer(env.venv_dir, env.sd_scripts_dir, torch_version=args.torch_version,
                               torch_index_url=args.torch_index_url, log=lambda line: print(line, file=sys.stderr))
        return 0, {"ran": report.ran, "skipped": report.skipped, "warnings": report.warnings}, \
            f"Trainer ready in {env.venv_dir} ({len(report.ran)} steps ran, {len(report.skipped)} already done)."
    rep = training.trainer_report(refresh=True)  # probes again, and keeps the answer for `train`
    lines = [f"python {rep.python_version} torch {rep.torch_version} cuda {rep.cuda_available} "
             f"{rep.device_name or ''} vram {rep.vram_free_mb}/{rep.vram_total_mb} MB",
             f"sd-scripts {rep.sd_scripts_commit} (pinned {rep.sd_scripts_pinned}), lycoris {rep.lycoris_version}, "
             f"bitsandbytes {'ok' if rep.bitsandbytes_ok else 'missing'}, sdpa {rep.sdpa_available}"]
    lines += [f"{p.severity}: {p.what} Fix: {p.fix}" for p in rep.problems]
    return (0 if rep.ok else 1), rep.to_dict() if hasattr(rep, "to_dict") else asdict(rep), "\n".join(lines)

"""`python -m lib_lorakit`: the same steps as the tab, from a terminal.

With `--json`, results go to stdout as JSON and human messages to stderr; exit status 0 means success.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError
from ..host import StandaloneHost
from ..project import ProjectSettings
from ..studio import Studio
from .output import progress_printer as _progress_printer
from .output import say, terminal_safe

log = logging.getLogger("lib_lorakit")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    return p


# The commands each capability module adds (`add_parsers`) and answers (`handle`): only the module of the command
# given is imported, so `tag` does not pay for importing training, grids or crop (a test checks this table against
# what the modules add).
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(("train", "train-differential", "runs", "run", "queue", "presets", "register", "trainer"),
                    "train"),
    **dict.fromkeys(("tag", "caption", "tags", "check"), "captions"),
    **dict.fromkeys(("grid", "card"), "grid"),
    **{name: name for name in ("buckets", "crop", "direction", "sort", "embed", "inspect", "reg", "autopilot",
                                   "overfit", "judge")},
}
CAPABILITIES = ("train", "reg", "crop", "buckets", "captions", "direction", "sort", "embed", "grid", "inspect",
                "autopilot", "overfit", "judge")


def _modules_for(command: Optional[str]) -> list[Any]:
    """The capability modules to build the parser from: the command's own, or every one (help, a typo)."""
    import importlib

    names = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else list(CAPABILITIES)
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def _command_in(argv: Sequence[str]) -> Optional[str]:
    """The command named in `argv` (the first word that is not an option or an option's value), if any."""
    valued = {"--home", "--lora-dir", "--models-dir", "--config"}
    words = iter(argv)
    for word in words:
        if word in valued:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole parser, or with `command` given only the capability module that command belongs to."""
    common = _common()
    p = argparse.ArgumentParser(prog="python -m lib_lorakit", parents=[common],
                                description="Train Style: prepare datasets and train LoRAs of your own style.")
    p.add_argument("--home", help="projects folder (default: ~/train-style or the config file's `home`)")
    p.add_argument("--lora-dir", help="where LoRAs are registered (default: <models>/Lora)")
    p.add_argument("--models-dir", help="models folder with Stable-diffusion/ checkpoints")
    p.add_argument("--config", type=Path, help="config file (default: ~/.config/train-style/config.toml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ui = sub.add_parser("ui", parents=[common], help="start the standalone app in a browser tab")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ui.add_argument("--port", type=int, default=7861)
    ui.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                    help="a folder the app may import from (repeatable); the projects home is always allowed")
    ui.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                    help="require this login for the page and the API (repeatable); needed with a --host other "
                         "than this machine. TRAIN_STYLE_AUTH=USER:PASS in the environment keeps it out of `ps`")
    ui.add_argument("--auth-file", type=Path, metavar="FILE", help="USER:PASS lines, as --auth")
    ui.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                    help="another name the browser may use to reach the app, e.g. behind a reverse proxy "
                         "(repeatable); other Host names are refused")

    proj = sub.add_parser("project", parents=[common], help="create and list projects")
    psub = proj.add_subparsers(dest="action", required=True)
    new = psub.add_parser("new", parents=[common], help="create a project")
    new.add_argument("name")
    new.add_argument("--trigger", action="append", default=[], help="a trigger word (repeatable)")
    psub.add_parser("list", parents=[common], help="list projects")
    pset = psub.add_parser("set", parents=[common], help="change settings (e.g. max_image_pixels=50000000)")
    pset.add_argument("name")
    pset.add_argument("assignments", nargs="+", metavar="KEY=VALUE")

    imp = sub.add_parser("import", parents=[common], help="import images (files or folders, recursively)")
    imp.add_argument("project")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--concept", default="", help="concept folder to import into (default: the project's name)")
    imp.add_argument("--repeats", type=int, help="repeats for the concept (default: 1 for a new concept)")
    imp.add_argument("--reg", action="store_true", help="import as a regularisation set")

    info = sub.add_parser("lora-info", parents=[common], help="how a LoRA was made (its safetensors metadata)")
    info.add_argument("file", type=Path)

    doc = sub.add_parser("doctor", parents=[common], help="check the whole set-up (folders, trainer, sd-scripts, GPU, "
                         "tokenizers, tagger models, disk, the webui's packages); each problem with its fix; exit "
                         "status 1 when a check finds an error")
    doc.add_argument("--trainer-python", help="check this trainer python instead of the configured one")
    doc.add_argument("--tokenizer-cache-dir", type=Path, help="the tokenizer folder a run would get")

    for module in _modules_for(command):
        module.add_parsers(sub, common)

    rep = sub.add_parser("report", parents=[common], help="the dataset report")
    rep.add_argument("project")

    con = sub.add_parser("concept", parents=[common], help="add, rename, remove, set repeats, balance")
    con.add_argument("project")
    csub = con.add_subparsers(dest="action", required=True)
    for action, args, help_ in (("add", ["name"], "add a concept"), ("rename", ["old", "new"], "rename a concept"),
                                ("remove", ["name"], "move a concept's folder to the project's trash"),
                                ("repeats", ["name", "n"], "set a concept's repeats"),
                                ("balance", [], "even out images × repeats across concepts")):
        a = csub.add_parser(action, parents=[common], help=help_)
        for arg in args:
            a.add_argument(arg, type=int if arg == "n" else str)
        a.add_argument("--reg", action="store_true", help="act on regularisation sets")
        if action == "add":
            a.add_argument("--repeats", type=int, default=1)
        if action == "balance":
            a.add_argument("--target", type=int, help="images × repeats per concept (default: the largest now)")
            a.add_argument("--apply", action="store_true", help="rename the folders (without it: show the plan)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    as_json = getattr(args, "json", False)
    try:
        if args.command == "ui":
            return _ui(args)
        host = StandaloneHost.from_options(home=args.home, lora_dir=args.lora_dir, models_dir=args.models_dir,
                                           allow_roots=[os.path.abspath(os.sep)], config=args.config)
        handler: Callable[[Studio, argparse.Namespace], tuple[int, Any, str]] = {
            "project": _project, "import": _import, "report": _report, "concept": _concept,
            "lora-info": _lora_info, "doctor": _doctor,
        }.get(args.command) or _modules_for(args.command)[0].handle
        code, data, text = handler(Studio(host), args)
    except LorakitError as e:
        say(f"error: {e}", file=sys.stderr)
        if as_json:
            print(terminal_safe(json.dumps({"error": str(e)}), json_escapes=True))
        return 1
    if as_json:
        print(terminal_safe(json.dumps(data, indent=2, ensure_ascii=False), json_escapes=True))
    elif text:
        say(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def _ui(args: argparse.Namespace) -> int:
    from .. import websec

    credentials = websec.gather_credentials(auth=args.auth, auth_file=args.auth_file)
    os.environ.pop(websec.AUTH_ENV, None)  # read once; the trainer and other children need not inherit it
    refusal = websec.exposure_refusal(args.host, credentials)
    if refusal:  # before gradio is imported: a refusal is instant
        raise LorakitError(refusal)
    from ..ui.app import serve  # gradio is imported only for the app

    host = StandaloneHost.from_options(home=args.home, lora_dir=args.lora_dir, models_dir=args.models_dir,
                                       allow_roots=args.allow_root, config=args.config,
                                       exposed=not websec.is_loopback(args.host))
    serve(host, host_name=args.host, port=args.port, credentials=credentials, allowed_hosts=args.allowed_host)
    return 0


def _project(studio: Studio, args: argparse.Namespace) -> tuple[int, Any, str]:
    if args.action == "new":
        p = studio.create_project(args.name, trigger_words=tuple(args.trigger))
        return 0, {"name": p.name, "path": str(p.root)}, f"Created project {p.name} in {p.root}"
    if args.action == "set":
        changes = dict(ProjectSettings.parse_assignment(a) for a in args.assignments)
        settings = studio.update_settings(args.name, **changes)
        return 0, settings.to_dict(), "\n".join(f"{k} = {v!r}" for k, v in settings.to_dict().items())
    home = studio.host.projects_home()
    rows = [{**p.to_dict(), "path": str(home / p.name)} for p in studio.listing()]
    text = "\n".join(r["name"] + (f"  ({r['broken']})" if "broken" in r else "") for r in rows) \
        or f"No projects yet in {home}."
    return 0, {"projects": rows}, text


def _import(studio: Studio, args: argparse.Namespace) -> tuple[int, Any, str]:
    paths = [os.path.abspath(p) for p in args.paths]
    report = studio.import_paths(args.project, paths, concept=args.concept, repeats=args.repeats,
                                 kind="reg" if args.reg else "dataset",
                                 progress=_progress_printer() if sys.stderr.isatty() else None)
    lines = [f"skipped {v.source}: {v.text}" for v in report.skipped]
    lines += [f"note {v.source}: {v.text}" for v in report.warnings]
    lines += [f"{g.kind} duplicates: {', '.join(g.images)}" for g in report.duplicates]
    for line in lines:
        say(line, file=sys.stderr)
    if not report.ok:
        print("error: nothing could be imported" + (" (see the reasons above)" if report.skipped else
                                                    ": no image files were found"), file=sys.stderr)
        return 1, report.to_dict(), ""
    return 0, report.to_dict(), report.summary()


def _lora_info(studio: Studio, args: argparse.Namespace) -> tuple[int, Any, str]:
    info = studio.lora_info(args.file, local_user=True)  # the machine's own user: any file
    lines = [f"{info.path.name}: {info.network} dim {info.dim} alpha {info.alpha}, base {info.base_model or '?'}, "
             f"resolution {info.resolution or '?'}",
             f"  hash {info.short_hash} (sha256 {info.sha256})", f"  output name {info.output_name}"]
    lines += [f"  dataset {d['dir']}: {d['images']} images × {d['repeats']}" for d in info.datasets]
    if info.training_seconds is not None:
        lines.append(f"  trained {info.steps} steps in {info.training_seconds / 60:.1f} min")
    if info.top_tags():
        lines.append("  tags: " + ", ".join(f"{t} ({n})" for t, n in info.top_tags(15)))
    return 0, info.to_dict(), "\n".join(lines)


def _doctor(studio: Studio, args: argparse.Namespace) -> tuple[int, Any, str]:
    report = studio.doctor(trainer_python=args.trainer_python, tokenizer_cache_dir=args.tokenizer_cache_dir,
                           config_file=args.config)
    if not getattr(args, "json", False):
        say(report.text())  # on stdout whatever it finds: it is the report asked for, not an error message
    return report.exit_code, report.to_dict(), ""


def _report(studio: Studio, args: argparse.Namespace) -> tuple[int, Any, str]:
    report = studio.report(args.project)
    lines = [f"Project {report.project}: {report.total_images} images, {report.images_x_repeats} images × repeats"]
    for c in report.concepts:
        label = "reg " if c.kind == "reg" else ""
        lines.append(f"  {label}{c.folder}: {c.images} images × {c.repeats} = {c.images_x_repeats}; "
                     f"{len(c.missing_captions)} without captions, {len(c.small_images)} below "
                     f"{report.resolution}px, resolutions {c.resolutions}")
        lines += [f"    {m}: in a subfolder, which sd-scripts does not read" for m in c.nested_images]
        lines += [f"    {m}: its caption has the wrong extension (the project uses {report.caption_extension})"
                  for m in c.extension_mismatches]
    lines += [f"  {g.kind} duplicates: {', '.join(g.images)}" for g in report.duplicates]
    lines += [f"  sd-scripts will skip {s}: its name lacks the '<repeats>_' prefix" for s in report.stray_folders]
    return 0, report.to_dict(), "\n".join(lines)


def _concept(studio: Studio, args: argparse.Namespace) -> tuple[int, Any, str]:
    name, kind = args.project, "reg" if args.reg else "dataset"
    if args.action == "balance":
        plan = studio.balance_plan(name, args.target, kind)
        if args.apply:
            studio.apply_balance(name, plan, kind)
        rows = [c.to_dict() for c in plan]
        verb = "Applied" if args.apply else "Plan (run again with --apply to rename the folders)"
        text = "\n".join([f"{verb}:"] + [f"  {c.concept}: {c.images} images × {c.repeats} = {c.steps}  →  "
                                         f"× {c.new_repeats} = {c.new_steps}" for c in plan])
        return 0, {"applied": bool(args.apply), "plan": rows}, text
    if args.action == "add":
        c = studio.add_concept(name, args.name, repeats=args.repeats, kind=kind)
    elif args.action == "rename":
        c = studio.rename_concept(name, args.old, args.new, kind=kind)
    elif args.action == "repeats":
        c = studio.set_repeats(name, args.name, args.n, kind=kind)
    else:
        trash = studio.remove_concept(name, args.name, kind=kind)
        return 0, {"removed": args.name, "trash": str(trash)}, f"Moved {args.name} to {trash}"
    return 0, {"name": c.name, "repeats": c.repeats, "folder": c.relpath}, f"{c.relpath}"


if __name__ == "__main__":
    sys.exit(main())

"""`grid` and `card`: evaluation grids over a run's epochs × weights × prompts, and the card set from one.

    grid PROJECT RUN [--epochs all|LIST] [--weights SPEC] [--prompt TEXT]... [--with-and-without-trigger]
         [--checkpoint NAME|same-version]... [--seeds LIST] [--steps N] [--cfg F] [--sampler NAME] [--size WxH]
         [--webui-url URL [--webui-auth USER:PASS]] --json
    grid PROJECT list | show ID | resume ID
    card PROJECT RUN --weight W [--epoch N] [--grid ID] [--unregister-others]
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Optional

from ..errors import LorakitError
from ..evaluate import Generator
from ..evaluate.service import GRID_SCHEMA, SAME_VERSION, GridRequest
from ..studio import Studio

Result = tuple[int, Any, str]
ACTIONS = ("list", "show", "resume")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    g = sub.add_parser("grid", parents=[common], help="a grid over a run's epochs × weights × prompts (× checkpoints "
                                                      "× seeds) into eval/<id>/; or list, show, resume grids")
    g.add_argument("project")
    g.add_argument("target", metavar="RUN|list|show|resume", help="the run to evaluate, or what to do with grids")
    g.add_argument("grid_id", nargs="?", metavar="ID", help="the grid (show, resume)")
    g.add_argument("--epochs", help=GRID_SCHEMA["epochs"].reason)
    g.add_argument("--weights", metavar="SPEC", help=GRID_SCHEMA["weights"].reason)
    g.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeatable)")
    g.add_argument("--with-and-without-trigger", action="store_true",
                   help=GRID_SCHEMA["with_and_without_trigger"].reason)
    g.add_argument("--caption-prompts", type=int, metavar="N", help=GRID_SCHEMA["caption_prompts"].reason)
    g.add_argument("--checkpoint", action="append", default=[], metavar="NAME",
                   help=f"a base model to compare (repeatable); '{SAME_VERSION}': every checkpoint of the run's SD "
                        "version")
    g.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 1,2,3 (default 1)")
    g.add_argument("--negative", metavar="TEXT", help=GRID_SCHEMA["negative"].reason)
    g.add_argument("--steps", type=int, metavar="N", help=GRID_SCHEMA["steps"].reason)
    g.add_argument("--cfg", type=float, metavar="F", help=GRID_SCHEMA["cfg"].reason)
    g.add_argument("--sampler", metavar="NAME", help=GRID_SCHEMA["sampler"].reason)
    g.add_argument("--size", metavar="WxH", help="image size, e.g. 512x768 (default 512x512)")
    g.add_argument("--webui-url", metavar="URL", help="generate through a webui started with --api at this address")
    g.add_argument("--webui-auth", metavar="USER:PASS", help="its --api-auth login")

    c = sub.add_parser("card", parents=[common], help="set a LoRA's card from a grid: its preferred weight and a "
                                                      "note; optionally unregister the run's other files")
    c.add_argument("project")
    c.add_argument("run")
    c.add_argument("--weight", type=float, required=True, help="the preferred weight (0 to 2)")
    c.add_argument("--epoch", help="the chosen file: an epoch number, stepN or final (default: the last saved)")
    c.add_argument("--grid", metavar="ID", help="the grid it was chosen from (named in the card's notes)")
    c.add_argument("--unregister-others", action="store_true",
                   help="take the run's other files out of the Lora folder (they stay in the run)")


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    if args.command == "card":
        return _card(studio, args)
    if args.target in ACTIONS:
        return _ACTIONS[args.target](studio, args)
    if args.grid_id:
        raise LorakitError(f"grid: unexpected {args.grid_id!r} after the run; ID goes with list, show or resume.")
    req = GridRequest.from_dict(request_data(args))
    report = studio.evaluate.run(args.project, req, generator=_generator(args), progress=_progress())
    return (0 if report["state"] == "done" else 1), report, _summary(report)


def request_data(args: argparse.Namespace) -> dict:
    """The command line as the request's plain data (what the API's body holds)."""
    data: dict[str, Any] = {"run": args.target, "prompts": list(args.prompt), "checkpoints": list(args.checkpoint)}
    if args.seeds is not None:
        data["seeds"] = args.seeds
    if args.with_and_without_trigger:
        data["with_and_without_trigger"] = True
    for key in ("epochs", "weights", "caption_prompts", "negative", "steps", "cfg", "sampler"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.size:
        data["width"], data["height"] = parse_size(args.size)
    return data


def parse_size(text: str) -> tuple[int, int]:
    """`--size 512x768` as (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m:
        raise LorakitError(f"--size: expected WIDTHxHEIGHT, e.g. 512x768, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _generator(args: argparse.Namespace) -> Optional[Generator]:
    if not args.webui_url:
        if args.webui_auth:
            raise LorakitError("--webui-auth goes with --webui-url.")
        return None
    try:
        from ..evaluate.remote import remote_generator
    except ImportError as e:
        raise LorakitError(f"--webui-url: generating through a webui by URL is not available in this version ({e})."
                           ) from e
    return remote_generator(args.webui_url, auth=args.webui_auth or None)


def _progress():
    from .output import progress_printer

    return progress_printer() if sys.stderr.isatty() else None


def _summary(report: dict) -> str:
    lines = [f"Grid {report['id']} of run {report['run']}: {report['made']} of {len(report['cells'])} images, "
             f"{report['state']} ({report.get('generator')})."]
    if report.get("grid"):
        lines.append(f"  grid: {report['grid']}")
    if report.get("error"):
        lines.append(f"  {report['error']}")
    if report["made"] < len(report["cells"]):
        lines.append(f"  grid {report['project']} resume {report['id']} makes the rest.")
    return "\n".join(lines)


def _list(studio: Studio, args: argparse.Namespace) -> Result:
    grids = studio.evaluate.list(args.project)
    text = "\n".join(f"{g['id']}  {g.get('state')}  {g.get('made')}/{g.get('cells')} images  run {g.get('run')}"
                     for g in grids) or f"No grids yet in {args.project}: grid {args.project} RUN --prompt TEXT"
    return 0, {"grids": grids}, text


def _need_id(args: argparse.Namespace) -> str:
    if not args.grid_id:
        raise LorakitError(f"grid {args.target}: give the grid's ID (grid {args.project} list shows them).")
    return args.grid_id


def _show(studio: Studio, args: argparse.Namespace) -> Result:
    report = studio.evaluate.show(args.project, _need_id(args))
    return 0, report, _summary(report)


def _resume(studio: Studio, args: argparse.Namespace) -> Result:
    report = studio.evaluate.resume(args.project, _need_id(args), generator=_generator(args), progress=_progress())
    return (0 if report["state"] == "done" else 1), report, _summary(report)


def _card(studio: Studio, args: argparse.Namespace) -> Result:
    choice = studio.evaluate.choose(args.project, args.run, weight=args.weight, epoch=args.epoch, grid=args.grid,
                                    unregister_others=args.unregister_others)
    lines = [f"{choice.card}: preferred weight {choice.weight:g}", f"  note: {choice.note}"]
    lines += [f"  unregistered {p}" for p in choice.unregistered]
    return 0, choice.to_dict(), "\n".join(lines)


_ACTIONS = {"list": _list, "show": _show, "resume": _resume}

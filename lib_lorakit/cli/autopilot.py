"""`autopilot`: from a folder to a judged, registered LoRA in one command, resumable.

    autopilot PROJECT --from FOLDER --preset NAME --base-model PATH [--trigger WORD] [--accept-warnings]
              [--pause-after STEP] [--set OPTION=VALUE]... [--tag-set K=V]... [--judge-set K=V]... --json
    autopilot PROJECT list | show [ID] | resume [ID] [--accept-warnings] | continue [ID] [--pause-after STEP]

The project is created when it does not exist. ID defaults to the project's newest chain.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..autopilot.service import AUTOPILOT_SCHEMA, STEPS, AutopilotRequest
from ..captions.service import TAG_SCHEMA
from ..errors import LorakitError
from ..judge.service import JUDGE_SCHEMA
from ..studio import Studio
from ..train.service import set_items

Result = tuple[int, Any, str]
ACTIONS = ("list", "show", "resume", "continue")
NEW_ONLY = ("source", "preset", "base_model", "trigger", "concept", "repeats", "retag")


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    a = sub.add_parser("autopilot", parents=[common], help="import a folder, tag, audit, train, register, judge and "
                                                           "set the card in one go; or list, show, resume, continue")
    a.add_argument("project")
    a.add_argument("action", nargs="?", choices=ACTIONS, help="what to do with an existing chain")
    a.add_argument("chain_id", nargs="?", metavar="ID", help="the chain (default: the project's newest)")
    a.add_argument("--from", dest="source", metavar="FOLDER", help=AUTOPILOT_SCHEMA["folder"].reason)
    a.add_argument("--preset", help=AUTOPILOT_SCHEMA["preset"].reason)
    a.add_argument("--base-model", metavar="PATH", help=AUTOPILOT_SCHEMA["base_model"].reason)
    a.add_argument("--trigger", metavar="WORD", help=AUTOPILOT_SCHEMA["trigger"].reason)
    a.add_argument("--concept", help=AUTOPILOT_SCHEMA["concept"].reason)
    a.add_argument("--repeats", type=int, help=AUTOPILOT_SCHEMA["repeats"].reason)
    a.add_argument("--accept-warnings", action="store_true", help=AUTOPILOT_SCHEMA["accept_warnings"].reason)
    a.add_argument("--retag", action="store_true", help=AUTOPILOT_SCHEMA["retag"].reason)
    a.add_argument("--pause-after", choices=STEPS, metavar="STEP",
                   help=AUTOPILOT_SCHEMA["pause_after"].reason + f" ({', '.join(STEPS)})")
    a.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a training option of the preset, or another sd-scripts argument (repeatable)")
    a.add_argument("--tag-set", action="append", default=[], metavar="NAME=VALUE",
                   help="a tagging option, e.g. general_threshold=0.4 (repeatable)")
    a.add_argument("--judge-set", action="append", default=[], metavar="NAME=VALUE",
                   help="a judge setting, e.g. weights=0,0.6,1 or descriptor=perceptual (repeatable)")
    a.add_argument("--judge-prompt", action="append", default=[], metavar="TEXT",
                   help="an off-dataset prompt for the judge (repeatable; default: the judge's own)")


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    autopilot = studio.autopilot
    if args.action is None:
        if args.chain_id:
            raise LorakitError(f"autopilot: unexpected {args.chain_id!r}; ID goes with show, resume or continue.")
        request = AutopilotRequest.from_dict(request_data(args))
        record = autopilot.run(args.project, request, local_user=True, progress=_progress())
        return _result(record)
    given = [f"--{k.replace('_', '-')}" for k in NEW_ONLY if getattr(args, k) not in (None, False)]
    if given:
        raise LorakitError(f"autopilot {args.action}: {', '.join(given)} only go with a new chain (--from …).")
    if args.action == "list":
        chains = autopilot.list(args.project)
        text = "\n".join(f"{c['id']}  {c['state']:<11} {c.get('current') or ''}" for c in chains) or \
            f"No autopilot chains in {args.project} yet."
        return 0, {"chains": chains}, text
    if args.action == "show":
        record = autopilot.show(args.project, args.chain_id)
        return 0, record, describe(record)
    if args.action == "continue" and autopilot.show(args.project, args.chain_id)["state"] != "paused":
        raise LorakitError("autopilot continue: the chain is not paused; `resume` goes on after a stop or a restart.")
    record = autopilot.resume(args.project, args.chain_id, accept_warnings=args.accept_warnings or None,
                              pause_after=args.pause_after, local_user=True, progress=_progress())
    return _result(record)


def request_data(args: argparse.Namespace) -> dict:
    """The command line as the request's plain data (what the API's body holds)."""
    data: dict[str, Any] = {"folder": args.source or "", "preset": args.preset or "",
                            "base_model": args.base_model or "", "accept_warnings": args.accept_warnings,
                            "retag": args.retag}
    for key in ("trigger", "concept", "repeats", "pause_after"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    overrides, extra = set_items(args.set)
    data.update(overrides=overrides, extra_args=extra, tag=TAG_SCHEMA.parse_set(args.tag_set),
                judge=JUDGE_SCHEMA.parse_set(args.judge_set))
    if args.judge_prompt:
        data["judge"]["prompts"] = list(args.judge_prompt)
    return data


def _result(record: dict) -> Result:
    ok = record["state"] in ("done", "paused")
    return (0 if ok else 1), record, describe(record)


def describe(record: dict) -> str:
    """The chain in words: one line per step, then what to do next."""
    lines = [f"Autopilot {record['id']} of {record['project']}: {record['state']}"]
    for s in record["steps"]:
        detail = _detail(s)
        lines.append(f"  {s['name']:<9} {s['state']:<11} {detail}".rstrip())
        if s.get("error"):
            lines.append(f"            {s['error']}")
    hint = {"paused": f"Look, edit, then `autopilot {record['project']} continue {record['id']}`.",
            "failed": f"Fix what is said above, then `autopilot {record['project']} resume {record['id']}`.",
            "cancelled": f"`autopilot {record['project']} resume {record['id']}` goes on.",
            "interrupted": f"`autopilot {record['project']} resume {record['id']}` goes on."}.get(record["state"])
    if hint:
        lines.append(hint)
    return "\n".join(lines)


def _detail(step: dict) -> str:
    r = step.get("result") or {}
    if step["name"] in ("import", "tag") and r.get("summary"):
        return r["summary"]
    if step["name"] == "train" and r.get("run"):
        return f"run {r['run']}" + (f", resumed {r['resumed']}×" if r.get("resumed") else "")
    if step["name"] == "judge" and r.get("grid"):
        rec = r.get("recommendation")
        return f"grid {r['grid']}" + (f": {rec['epoch']} at weight {rec['weight']}" if rec else "")
    if step["name"] == "card" and r.get("card"):
        return f"{r['card']}: preferred weight {r.get('weight')}"
    return step.get("message") or ""


def _progress():
    from .output import progress_printer

    return progress_printer() if sys.stderr.isatty() else None

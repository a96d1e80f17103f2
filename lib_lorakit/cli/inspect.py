"""`inspect FILE [--json]`: how an image was made (PNG Info) with its LoRAs resolved, ours to project/run/epoch;
a LoRA file (.safetensors) is shown as `lora-info` shows it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..studio import Studio

Result = tuple[int, Any, str]


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("inspect", parents=[common], help="PNG Info: how a PNG/JPEG/WebP was made (webui infotext, "
                       "ComfyUI, sd-scripts) and which of your LoRAs and epochs made it; a .safetensors: lora-info")
    p.add_argument("file", type=Path)


def handle(studio: Studio, args: argparse.Namespace) -> Result:
    from ..evaluate.inspect import inspect_summary

    if args.file.suffix.lower() == ".safetensors":
        info = studio.lora_info(args.file, local_user=True)
        return 0, {"kind": "lora", **info.to_dict()}, (f"{info.path.name}: {info.network}, base "
                                                       f"{info.base_model or '?'}, hash {info.short_hash} (see "
                                                       "lora-info for more)")
    result = studio.inspect(args.file, local_user=True)  # the machine's own user: any file
    return 0, result.to_dict(), inspect_summary(result)

"""A stand-in for sd-scripts' gen_img.py in generator tests: plumbing only, no model.

It takes gen_img.py's command line, reads the prompts file as gen_img.py v0.10.1 does (lines split by
str.splitlines, blank lines and lines starting with `#` skipped, ` --d SEED` cut out, escaped braces restored
(and, as there, a line with escaped braces but no `{x}` variant fails),
options split at ` --`), writes one PNG per line named by its `--f` (size from `--w`/`--h`, colour from the seed
and the LoRA weights) and appends what it understood, one JSON object per process, to `$FAKE_GEN_RECORD`.

FAKE_GEN_MODE: "ok" (default), "fail" (prints an error and exits 1 after the first image), "hang" (makes the
first image, then waits to be stopped), "stall" (waits to be stopped before making any), "skip" (exits 0 without
making the last image); "MODE:TEXT" applies MODE only to a process whose --ckpt contains TEXT.
"""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from PIL import Image


def parse_args(argv):
    p = argparse.ArgumentParser()
    for flag in ("--v1", "--v2", "--sdxl", "--fp16", "--bf16", "--sdpa", "--xformers", "--no_half_vae"):
        p.add_argument(flag, action="store_true")
    for opt in ("--ckpt", "--outdir", "--from_file", "--sampler", "--tokenizer_cache_dir"):
        p.add_argument(opt)
    for opt in ("--images_per_prompt", "--batch_size", "--max_embeddings_multiples", "--clip_skip"):
        p.add_argument(opt, type=int)
    p.add_argument("--network_module", nargs="*")
    p.add_argument("--network_weights", nargs="*")
    p.add_argument("--network_mul", nargs="*", type=float)
    return p.parse_args(argv)


def parse_line(raw):
    seed = None
    m = re.search(r" --d ([\d+,]+)", raw)
    if m:
        seed = int(m.group(1).split(",")[0])
        raw = raw[: m.start()] + raw[m.end():]
    variants = re.findall(r"(?<!\\)\{[^{}|]+\}", raw)  # single-choice {x} variants (all the generator writes)
    if ("\\{" in raw or "\\}" in raw) and not variants:
        raise UnboundLocalError("cannot access local variable 'enumerating'")  # as gen_img.py v0.10.1 fails
    if variants:  # the variants pass expands {x} to x and restores escaped braces
        raw = re.sub(r"(?<!\\)\{([^{}|]+)\}", r"\1", raw).replace("\\{", "{").replace("\\}", "}")
    prompt, *options = raw.strip().split(" --")
    item = {"prompt": prompt, "negative": "", "seed": seed}
    for opt in options:
        key, _, value = opt.partition(" ")
        item[{"n": "negative", "w": "width", "h": "height", "s": "steps", "l": "scale", "am": "muls",
              "f": "file"}.get(key, key)] = value
    return item


def main():
    args = parse_args(sys.argv[1:])
    mode, _, only = os.environ.get("FAKE_GEN_MODE", "ok").partition(":")
    if only and only not in args.ckpt:
        mode = "ok"
    lines = Path(args.from_file).read_text(encoding="utf-8").splitlines()
    items = [parse_line(d) for d in lines if d.strip() and d[0] != "#"]
    record = {"argv": sys.argv[1:], "args": vars(args), "items": items, "cwd": os.getcwd(), "pid": os.getpid()}
    if os.environ.get("FAKE_GEN_RECORD"):
        with open(os.environ["FAKE_GEN_RECORD"], "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    print("INFO     SDXL: False  load StableDiffusion checkpoint", flush=True)
    while mode == "stall":
        time.sleep(0.1)
    for n, item in enumerate(items):
        if mode == "skip" and n == len(items) - 1:
            break
        muls = [float(v) for v in item.get("muls", "").split(",") if v]
        colour = (item["seed"] % 256, int(sum(muls) * 100) % 256, int(item["steps"]) % 256)
        Image.new("RGB", (int(item["width"]), int(item["height"])), colour).save(Path(args.outdir) / item["file"])
        print(f"INFO     prompt {n + 1}/{len(items)}: {item['prompt']}", flush=True)
        print(f"100%|##########| {item['steps']}/{item['steps']} [00:00<00:00]", flush=True)
        if mode == "fail":
            print("RuntimeError: mat1 and mat2 shapes cannot be multiplied (fake)", flush=True)
            return 1
        if mode == "hang":
            while True:
                time.sleep(0.1)
    print("INFO     done!", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The run files: dataset and args TOML for every built-in preset against golden files, checked against
sd-scripts' own argument and dataset-schema declarations, and, where a trainer environment exists, parsed by
sd-scripts itself.

Golden files live in tests/golden/train/<preset>.{args,dataset}.toml with machine paths replaced by <PROJECT>
and <RUN>. After a deliberate change, regenerate them with

    TRAIN_STYLE_REGOLD=1 /work/venv/bin/python -m pytest tests/test_train_config.py

and review the diff. To let sd-scripts parse the files with its own code (argparse + `read_config_from_file`,
`config_util.ConfigSanitizer`/`BlueprintGenerator`), point TRAIN_STYLE_TRAINER_PYTHON at the trainer
environment's python (torch, voluptuous, toml, … installed from sd-scripts' requirements.txt).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from test_train_options import SD_SCRIPTS, needs_sd_scripts, sd_scripts_arguments

from lib_lorakit.errors import LorakitError
from lib_lorakit.project import Project
from lib_lorakit.tomlio import tomllib
from lib_lorakit.train import config as cf
from lib_lorakit.train import options as opts
from lib_lorakit.train.presets import BUILTIN, resolve

GOLDEN = Path(__file__).resolve().parent / "golden" / "train"
REGOLD = os.environ.get("TRAIN_STYLE_REGOLD") == "1"
MODEL = "/models/base.safetensors"


@pytest.fixture
def small_project(workspace) -> Project:
    """Two concepts and one regularisation set, two trigger words, a few (fake) images in each."""
    p = workspace.create("lynn", trigger_words=["lynn3-style", "lnn"])
    for name, repeats, kind, images in (("portraits", 10, "dataset", 3), ("scenes", 5, "dataset", 2),
                                        ("woman", 1, "reg", 4)):
        c = p.add_concept(name, repeats, kind=kind)
        for i in range(images):
            (c.folder / f"{i}.png").write_bytes(b"not decoded here")
            (c.folder / f"{i}.txt").write_text(f"lynn3-style, lnn, tag{i}")
    return p


def build(project: Project, preset: str, run: str = "r1", **kw) -> cf.RunFiles:
    base = BUILTIN[preset].base
    return cf.build_run_files(project, resolve(preset), run_dir=project.root / "runs" / run,
                              pretrained_model=MODEL, base_arch=base,
                              tokenizer_cache_dir=project.root / "runs" / run / "tokenizers", **kw)


def placeholders(text: str, project: Project) -> str:
    run = str((project.root / "runs" / "r1").resolve())
    return text.replace(run, "<RUN>").replace(str(project.root.resolve()), "<PROJECT>")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGOLD:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run with TRAIN_STYLE_REGOLD=1 to make it"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed: review, then TRAIN_STYLE_REGOLD=1"


@pytest.mark.parametrize("preset", sorted(BUILTIN))
def test_golden_files_for_every_builtin(small_project, preset):
    files = build(small_project, preset)
    check_golden(f"{preset}.args.toml", placeholders(files.args_toml(), small_project))
    check_golden(f"{preset}.dataset.toml", placeholders(files.dataset_toml(), small_project))
    assert files.script == ("sdxl_train_network.py" if BUILTIN[preset].base == "SDXL" else "train_network.py")


def test_golden_sample_prompts(small_project):
    files = build(small_project, "style-sd15-loha")
    check_golden("style-sd15-loha.sample_prompts.txt", files.sample_prompts)
    assert [(s.index, s.with_trigger) for s in files.samples] == [(0, True), (1, False), (2, True), (3, False)]


# --- what the files must say ---------------------------------------------------------------------------------------

def flat(args: dict) -> dict:
    """The args TOML as sd-scripts sees it: sections flattened (train_util.read_config_from_file)."""
    out: dict = {}
    for key, value in args.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            assert k not in out, f"{k} appears twice; sd-scripts would keep only the last"
            out[k] = v
    return out


def test_args_are_explicit(small_project):
    files = build(small_project, "style-sd15-loha")
    a = flat(files.args)
    run = (small_project.root / "runs" / "r1").resolve()
    assert a["pretrained_model_name_or_path"] == MODEL
    assert a["dataset_config"] == str(run / "dataset.toml")
    assert (a["output_dir"], a["output_name"], a["save_model_as"]) == (str(run), "lynn", "safetensors")
    assert (a["caption_extension"], a["console_log_simple"], a["seed"]) == (".txt", True, 42)
    assert a["tokenizer_cache_dir"] == str(run / "tokenizers") and a["logging_dir"] == str(run / "logs")
    assert a["sample_prompts"] == str(run / "sample_prompts.txt")
    assert a["network_args"] == ["conv_dim=4", "conv_alpha=1", "algo=loha"]
    assert a["max_data_loader_n_workers"] <= 2
    assert "resolution" not in a  # sd-scripts would call .split() on an int; it lives in the dataset TOML
    assert "max_train_steps" not in a and "text_encoder_lr" not in a  # None is left out
    assert files.output_name == "lynn"


def test_dataset_subsets_are_explicit(small_project):
    d = build(small_project, "character-sd15-lora").dataset
    assert d["general"]["caption_extension"] == ".txt" and d["general"]["batch_size"] == 1
    subsets = d["datasets"][0]["subsets"]
    assert [(s["class_tokens"], s["num_repeats"], s["is_reg"], s["keep_tokens"]) for s in subsets] == [
        ("portraits", 10, False, 2), ("scenes", 5, False, 2), ("woman", 1, True, 0)]
    for s in subsets:
        assert Path(s["image_dir"]).is_absolute() and Path(s["image_dir"]).is_dir()
        assert s["caption_extension"] == ".txt"


def test_project_caption_extension_and_keep_tokens_override(small_project):
    small_project.update_settings(caption_extension=".caption", trigger_words=[])
    files = cf.build_run_files(small_project, resolve("style-sd15-lora", {"keep_tokens": 3}),
                               run_dir=small_project.root / "r", pretrained_model=MODEL, base_arch="sd1")
    assert flat(files.args)["caption_extension"] == ".caption"
    assert {s["caption_extension"] for s in files.dataset["datasets"][0]["subsets"]} == {".caption"}
    assert {s["keep_tokens"] for s in files.dataset["datasets"][0]["subsets"]} == {3}
    assert [s.prompt for s in files.samples] == ["portraits", "scenes"]  # no triggers: no doubles


def test_sampling_off_leaves_sample_keys_out(small_project):
    r = resolve("style-sd15-lora", {"sample_every_n_epochs": None})
    files = cf.build_run_files(small_project, r, run_dir=small_project.root / "r", pretrained_model=MODEL,
                               base_arch="SD1")
    assert files.sample_prompts is None and files.samples == ()
    assert not any(k.startswith("sample") for k in flat(files.args))


def test_sample_settings_and_prompt_lines(small_project):
    spec = cf.SampleSettings(prompts=("a cat on a chair",), negative="lowres, blurry", width=64, height=96,
                             seed=3, cfg=5.0, steps=4)
    files = build(small_project, "style-sd15-lora", samples=spec)
    assert files.sample_prompts == (
        "lynn3-style, lnn, a cat on a chair --n lowres, blurry --w 64 --h 96 --d 3 --l 5 --s 4\n"
        "a cat on a chair --n lowres, blurry --w 64 --h 96 --d 3 --l 5 --s 4\n")
    with pytest.raises(LorakitError, match="one line without ' --'"):
        cf.sample_prompt_line("a cat --s 5", width=1, height=1, seed=1, cfg=1, steps=1)
    with pytest.raises(LorakitError, match="one line"):
        cf.sample_prompt_line("a\ncat", width=1, height=1, seed=1, cfg=1, steps=1)


def test_refusals(small_project, workspace):
    with pytest.raises(LorakitError, match="Preset 'style-sdxl-lora' is for SDXL models, but the base model is SD1"):
        cf.build_run_files(small_project, resolve("style-sdxl-lora"), run_dir=small_project.root / "r",
                           pretrained_model=MODEL, base_arch="SD1")
    with pytest.raises(LorakitError, match="base model type: expected SD1 or SDXL \\(Pony is SDXL\\), got 'SD3'"):
        cf.script_for("SD3")
    empty = workspace.create("empty")
    with pytest.raises(LorakitError, match="has no concepts"):
        cf.build_run_files(empty, resolve("style-sd15-lora"), run_dir=empty.root / "r", pretrained_model=MODEL,
                           base_arch="SD1")
    empty.add_concept("nothing", 3)
    with pytest.raises(LorakitError, match="has no training images in dataset/3_nothing"):
        cf.build_run_files(empty, resolve("style-sd15-lora"), run_dir=empty.root / "r", pretrained_model=MODEL,
                           base_arch="SD1")
    with pytest.raises(LorakitError, match="network_dim: expected an integer"):
        cf.build_run_files(small_project, {"network_dim": 0}, run_dir=empty.root / "r", pretrained_model=MODEL,
                           base_arch="SD1")


def test_script_for():
    assert cf.script_for("SD1") == cf.script_for("sd_v1") == "train_network.py"
    assert cf.script_for("SDXL") == cf.script_for("Pony") == "sdxl_train_network.py"


def test_write_run_files_round_trips(small_project):
    run = small_project.root / "runs" / "r1"
    files = build(small_project, "character-sdxl-loha")
    paths = cf.write_run_files(files, run)
    assert tomllib.loads(paths.args_toml.read_text()) == files.args
    assert tomllib.loads(paths.dataset_toml.read_text()) == files.dataset
    assert paths.sample_prompts.read_text() == files.sample_prompts
    assert Path(flat(files.args)["dataset_config"]) == paths.dataset_toml.resolve()


# --- sd-scripts' own declarations (no torch needed) ------------------------------------------------------------

def _schema_keys() -> dict[str, dict[str, str]]:
    """The dict-literal schemas of config_util.ConfigSanitizer: {schema name: {key: type name or ''}}."""
    tree = ast.parse((SD_SCRIPTS / "library" / "config_util.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ConfigSanitizer")
    out = {}
    for node in cls.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            keys = {}
            for k, v in zip(node.value.keys, node.value.values, strict=True):
                key = k.args[0].value if isinstance(k, ast.Call) else k.value  # Required("image_dir")
                keys[key] = v.id if isinstance(v, ast.Name) else ""
            out[node.targets[0].id] = keys
    return out


def _check_against(table: dict, mapping: dict, where: str) -> None:
    types = {"bool": bool, "int": int, "str": str, "float": float, "dict": dict}
    for key, value in mapping.items():
        assert key in table, f"{where}: {key} is not in sd-scripts' dataset schema"
        if table[key]:
            assert type(value) is types[table[key]], f"{where}.{key}: {value!r} is not {table[key]}"


@needs_sd_scripts
@pytest.mark.parametrize("preset", sorted(BUILTIN))
def test_files_match_sd_scripts_declarations(small_project, preset):
    files = build(small_project, preset)
    known = sd_scripts_arguments(sdxl=BUILTIN[preset].base == "SDXL")
    for key, value in flat(files.args).items():
        assert key in known, f"{key} is not an argument of {files.script}"
        if known[key]["choices"]:
            assert value in known[key]["choices"], key
    s = _schema_keys()
    dropout, db = s["DO_SUBSET_ASCENDABLE_SCHEMA"], s["DB_SUBSET_ASCENDABLE_SCHEMA"]
    general = {**s["DATASET_ASCENDABLE_SCHEMA"], **s["SUBSET_ASCENDABLE_SCHEMA"], **db, **dropout}
    subset = {**s["SUBSET_ASCENDABLE_SCHEMA"], **s["DB_SUBSET_DISTINCT_SCHEMA"], **db, **dropout}
    _check_against(general, files.dataset["general"], "general")
    assert set(files.dataset["datasets"][0]) == {"subsets"}
    for i, sub in enumerate(files.dataset["datasets"][0]["subsets"]):
        _check_against(subset, sub, f"subsets[{i}]")


# --- sd-scripts itself, where its environment exists ---------------------------------------------------------------

PARSE_WITH_SD_SCRIPTS = textwrap.dedent("""
    import importlib, json, sys
    from library import config_util, train_util
    results = {}
    for script, args_toml in json.loads(sys.argv[1]):
        parser = importlib.import_module(script[:-3]).setup_parser()
        sys.argv = [script, "--config_file", args_toml]  # read_config_from_file parses sys.argv again
        args = train_util.read_config_from_file(parser.parse_args(), parser)
        train_util.prepare_dataset_args(args, True)
        user_config = config_util.load_user_config(args.dataset_config)
        sanitizer = config_util.ConfigSanitizer(True, True, args.masked_loss, True)
        blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
        dataset = blueprint.dataset_group.datasets[0]
        results[args_toml] = {
            "subsets": [[s.params.class_tokens, s.params.num_repeats, s.params.is_reg, s.params.caption_extension,
                         s.params.keep_tokens] for s in dataset.subsets],
            "resolution": list(dataset.params.resolution), "network_args": args.network_args,
            "network_dim": args.network_dim, "learning_rate": args.learning_rate, "output_name": args.output_name}
    try:
        from lycoris.wrapper import network_module_dict
        results["lycoris_algos"] = sorted(network_module_dict)
    except ImportError:
        results["lycoris_algos"] = None
    print(json.dumps(results))
""")


def trainer_python() -> str | None:
    """TRAIN_STYLE_TRAINER_PYTHON, else the python of TRAIN_STYLE_TRAINER_VENV; opt-in, since the imports alone
    take seconds."""
    if os.environ.get("TRAIN_STYLE_TRAINER_PYTHON"):
        return os.environ["TRAIN_STYLE_TRAINER_PYTHON"]
    if not os.environ.get("TRAIN_STYLE_TRAINER_VENV"):
        return None
    venv = Path(os.environ["TRAIN_STYLE_TRAINER_VENV"])
    return str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))


@needs_sd_scripts
def test_sd_scripts_parses_the_files_of_every_builtin(small_project):
    """One trainer process (imports take ~10 s) parses all twelve presets' files with sd-scripts' own code."""
    python = trainer_python()
    if not python:
        pytest.skip("sd-scripts' trainer environment is absent (set TRAIN_STYLE_TRAINER_PYTHON to its python)")
    jobs, expected = [], {}
    for preset in sorted(BUILTIN):
        files = build(small_project, preset, run=preset)
        paths = cf.write_run_files(files, small_project.root / "runs" / preset)
        jobs.append([files.script, str(paths.args_toml)])
        expected[str(paths.args_toml)] = files
    done = subprocess.run([python, "-c", PARSE_WITH_SD_SCRIPTS, json.dumps(jobs)], cwd=SD_SCRIPTS,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    if results["lycoris_algos"] is not None:
        assert set(opts.LYCORIS_ALGOS) <= set(results["lycoris_algos"])
    for args_toml, files in expected.items():
        got, a = results[args_toml], flat(files.args)
        assert got["subsets"] == [["portraits", 10, False, ".txt", 2], ["scenes", 5, False, ".txt", 2],
                                  ["woman", 1, True, ".txt", 0]]
        side = files.dataset["general"]["resolution"]
        assert got["resolution"] == [side, side]
        assert (got["network_args"], got["network_dim"]) == (a.get("network_args"), a["network_dim"])
        assert (got["learning_rate"], got["output_name"]) == (a["learning_rate"], "lynn")

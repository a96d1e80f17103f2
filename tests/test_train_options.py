"""Training options as data: names and choices are sd-scripts' own, validation names the option and what it
allows, old names still load, `--set` text is typed from the declaration, and the UI description is JSON.

`sd_scripts_arguments()` reads sd-scripts' argparse declarations from its source (no torch needed) and is shared
with test_train_config.py.
"""

from __future__ import annotations

import ast
import json
import logging
import warnings
from functools import lru_cache
from pathlib import Path

import pytest

from lib_lorakit.errors import LorakitError
from lib_lorakit.train import options as opts
from lib_lorakit.train.options import InvalidOption, parse_set, validate

SD_SCRIPTS = Path(__file__).resolve().parents[1] / "sd-scripts"
# the functions train_network.setup_parser() and sdxl_train_network.setup_parser() call, by file
PARSER_FUNCTIONS = {
    "library/utils.py": {"add_logging_arguments"},
    "library/train_util.py": {"add_sd_models_arguments", "add_dataset_arguments", "add_training_arguments",
                              "add_masked_loss_arguments", "add_optimizer_arguments"},
    "library/sai_model_spec.py": {"add_model_spec_arguments"},
    "library/deepspeed_utils.py": {"add_deepspeed_arguments"},
    "library/config_util.py": {"add_config_arguments"},
    "library/custom_train_functions.py": {"add_custom_train_arguments"},
    "train_network.py": {"setup_parser"},
}
SDXL_PARSER_FUNCTIONS = {"library/sdxl_train_util.py": {"add_sdxl_training_arguments"}}

needs_sd_scripts = pytest.mark.skipif(not (SD_SCRIPTS / "train_network.py").is_file(),
                                      reason="the sd-scripts submodule is not checked out")


@lru_cache(maxsize=2)
def sd_scripts_arguments(sdxl: bool = False) -> dict[str, dict]:
    """`{name: {"choices": [...] | None}}` for every `--name` the training script's parser declares."""
    found: dict[str, dict] = {}
    tables = {**PARSER_FUNCTIONS, **(SDXL_PARSER_FUNCTIONS if sdxl else {})}
    for rel, functions in tables.items():
        with warnings.catch_warnings():  # sd-scripts' help strings hold invalid escapes
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse((SD_SCRIPTS / rel).read_text(encoding="utf-8"))
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in functions):
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                if getattr(call.func, "attr", "") != "add_argument" or not call.args:
                    continue
                first = call.args[0]
                if isinstance(first, ast.Constant) and str(first.value).startswith("--"):
                    kw = {k.arg: k.value for k in call.keywords}
                    choices = ast.literal_eval(kw["choices"]) if "choices" in kw else None
                    found[first.value[2:]] = {"choices": choices}
    return found


# --- the declarations are sd-scripts' ----------------------------------------------------------------------------

@needs_sd_scripts
def test_every_args_option_is_an_sd_scripts_argument_with_the_same_choices():
    known = sd_scripts_arguments()
    assert len(known) > 150  # the walk found the parser
    for o in opts.OPTIONS:
        if o.where == "network_args":
            continue
        assert o.name in known, f"{o.name} is not an argument of train_network.py"
        theirs = known[o.name]["choices"]
        if theirs is not None:
            assert set(o.choices) <= set(theirs) - {None}, o.name


def test_declarations_are_complete_and_consistent():
    for o in opts.OPTIONS:
        assert o.reason and "\n" not in o.reason, o.name
        assert o.group in opts.GROUPS, o.name
        assert o.where in ("args", "dataset", "network_args", "subset"), o.name
        if o.default is not None:
            assert o.check(o.default) == o.default, o.name
    assert len(opts.OPTION_MAP) == len(opts.OPTIONS)
    assert not set(opts.ALIASES) & set(opts.OPTION_MAP)
    assert set(opts.ALIASES.values()) <= set(opts.OPTION_MAP)
    assert validate(opts.defaults(), complete=True)["network_dim"] == 16


def test_describe_is_json_for_the_ui():
    rows = json.loads(json.dumps(opts.describe()))
    assert [r["name"] for r in rows] == [o.name for o in opts.OPTIONS]
    dim = next(r for r in rows if r["name"] == "network_dim")
    assert dim["minimum"] == 1 and dim["maximum"] == 1024 and dim["type"] == "int" and dim["reason"]
    batch = next(r for r in rows if r["name"] == "train_batch_size")
    assert batch["where"] == "dataset" and batch["key"] == "batch_size"


# --- validation names the option and what it allows ------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"network_dim": 0}, "network_dim: expected an integer from 1 to 1024, got 0"),
    ({"network_dim": 8.5}, "network_dim: expected an integer from 1 to 1024, got 8.5"),
    ({"network_dim": True}, "network_dim: expected an integer from 1 to 1024, got True"),
    ({"learning_rate": -1}, "learning_rate: expected a number from 0 to 10, got -1"),
    ({"caption_dropout_rate": 1.5}, "caption_dropout_rate: expected a number from 0 to 1, got 1.5"),
    ({"cache_latents": "yes"}, "cache_latents: expected true or false, got 'yes'"),
    ({"mixed_precision": "fp8"}, "mixed_precision: expected one of no, fp16, bf16, got 'fp8'"),
    ({"min_snr_gamma": -1}, "min_snr_gamma: expected a number from 0 to 100 (or none), got -1"),
    ({"seed": None}, "seed: expected an integer from 0 to 4294967295, got None"),
])
def test_bad_values_name_the_option_and_what_is_allowed(values, message):
    with pytest.raises(InvalidOption) as e:
        validate(values)
    assert str(e.value) == message
    assert isinstance(e.value, LorakitError)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(InvalidOption, match=r"unknown option 'network_dimm' \(did you mean network_dim"):
        validate({"network_dimm": 8})
    with pytest.raises(InvalidOption, match=r"^unknown option 'zzz'$"):
        validate({"zzz": 1})


def test_all_problems_are_reported_together():
    with pytest.raises(InvalidOption) as e:
        validate({"network_dim": 0, "optimizer_type": "adam", "bogus": 1})
    assert len(e.value.problems) == 3
    assert e.value.problems[1].startswith("optimizer_type: expected one of AdamW, AdamW8bit,")


def test_values_come_back_canonical():
    got = validate({"optimizer_type": "adamw8bit", "network_alpha": 8, "learning_rate": 1})
    assert got == {"network_alpha": 8.0, "optimizer_type": "AdamW8bit", "learning_rate": 1.0}
    assert isinstance(got["network_alpha"], float)


@pytest.mark.parametrize("change, fragment", [
    ({"sdpa": True, "xformers": True}, "sdpa and xformers: choose one"),
    ({"algo": "loha"}, "algo: only network_module lycoris.kohya reads it; network_module is networks.lora"),
    ({"network_module": "lycoris.kohya"}, "algo: lycoris.kohya needs one of lora, locon, loha"),
    ({"max_train_epochs": None}, "max_train_epochs and max_train_steps: set one of them"),
    ({"lr_warmup_steps": 100}, "lr_warmup_steps: the constant scheduler takes no warm-up (got 100)"),
    ({"resolution": 64}, "min_bucket_reso: expected at most resolution 64, got 256"),
    ({"resolution": 1536}, "max_bucket_reso: expected at least resolution 1536, got 1024"),
    ({"min_bucket_reso": 300}, "min_bucket_reso: expected a multiple of bucket_reso_steps 64, got 300"),
])
def test_combinations_sd_scripts_would_reject(change, fragment):
    with pytest.raises(InvalidOption, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        validate(change, complete=True)


def test_buckets_off_lifts_the_bucket_checks():
    assert validate({"resolution": 64, "enable_bucket": False}, complete=True)["resolution"] == 64
    assert validate({"lr_warmup_steps": 100, "lr_scheduler": "cosine"}, complete=True)["lr_warmup_steps"] == 100


# --- old names ---------------------------------------------------------------------------------------------------

def test_old_names_map_to_new_ones_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="lib_lorakit.train.options"):
        got = validate({"batch_size": 2, "use_cp": True})
    assert got == {"use_tucker": True, "train_batch_size": 2}
    assert "'batch_size' is an old name; use 'train_batch_size'" in caplog.text
    assert "'use_cp' is an old name; use 'use_tucker'" in caplog.text


def test_old_and_new_name_together_is_an_error():
    with pytest.raises(InvalidOption, match="both 'batch_size' and 'train_batch_size' are given"):
        validate({"train_batch_size": 1, "batch_size": 2})


# --- --set ---------------------------------------------------------------------------------------------------------

def test_parse_set_types_from_the_declaration():
    got = parse_set(["max_train_steps=4", "resolution=64", "learning_rate=2e-4", "flip_aug=yes", "sdpa=off",
                     "optimizer_type=adamw", "max_train_epochs=none", "seed=1_000", " network_alpha = 8 "])
    assert got == {"max_train_steps": 4, "resolution": 64, "learning_rate": 2e-4, "flip_aug": True, "sdpa": False,
                   "optimizer_type": "AdamW", "max_train_epochs": None, "seed": 1000, "network_alpha": 8.0}
    assert parse_set(["epoch=3"]) == {"max_train_epochs": 3}


@pytest.mark.parametrize("item, message", [
    ("resolution", "'resolution': expected NAME=VALUE, e.g. max_train_epochs=10"),
    ("=3", "'=3': expected NAME=VALUE, e.g. max_train_epochs=10"),
    ("network_dim=big", "network_dim: expected an integer from 1 to 1024, got 'big'"),
    ("network_dim=2.5", "network_dim: expected an integer from 1 to 1024, got '2.5'"),
    ("network_dim=none", "network_dim: expected an integer from 1 to 1024, got 'none'"),
    ("flip_aug=maybe", "flip_aug: expected true or false, got 'maybe'"),
    ("learning_rate=nan", "learning_rate: expected a number from 0 to 10, got nan"),
    ("netwrk_dim=4", "unknown option 'netwrk_dim' (did you mean network_dim"),
])
def test_parse_set_errors(item, message):
    with pytest.raises(InvalidOption) as e:
        parse_set([item])
    assert str(e.value).startswith(message)

"""Grid maths: the weight-range syntax, a run's epoch files, prompt twins, the cells, and the X/Y/Z expression that
the webui's own script replays into exactly our cells (two and three Prompt S/R axes at once)."""

from __future__ import annotations

import csv
import itertools
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest

from lib_lorakit.errors import LorakitError, NotFound
from lib_lorakit.evaluate.grid import (
    MAX_VALUES,
    SR,
    GridPlan,
    PromptChoice,
    csv_values,
    epoch_files,
    parse_weights,
    prompt_axis,
    select_epochs,
)


@pytest.mark.parametrize("spec, expected", [
    ("0-1.2 (+0.2)", ("0", "0.2", "0.4", "0.6", "0.8", "1", "1.2")),
    ("0,0.4,0.8,1", ("0", "0.4", "0.8", "1")),
    ("1-3 [5]", ("1", "1.5", "2", "2.5", "3")),
    ("0-1 [4]", ("0", "0.3333", "0.6667", "1")),
    ("1-0 (-0.25)", ("1", "0.75", "0.5", "0.25", "0")),
    ("-1-1 (+0.5)", ("-1", "-0.5", "0", "0.5", "1")),
    ("0.1-0.35 (+0.1)", ("0.1", "0.2", "0.3")),  # the end is not on a step: not passed
    ("0-0.4 (+0.2), 1, 0.2", ("0", "0.2", "0.4", "1")),  # mixed items, each value once
    (" 0.50 , 1.0 ", ("0.5", "1")),
    ("0-2", ("0", "1", "2")),  # no step: 1, as the webui's X/Y/Z reads it
    ("0.7-0.7 [1]", ("0.7",)),
])
def test_weight_specs(spec, expected):
    assert parse_weights(spec) == expected


@pytest.mark.parametrize("start, stop, step", list(itertools.product(
    ["0", "0.1", "0.3", "-0.7"], ["1.2", "2", "0.9"], ["0.1", "0.2", "0.3", "0.05", "0.15"])))
def test_every_stepped_value_is_exact_to_its_step(start, stop, step):
    """Property: each value is start + k·step written with no more decimals than start and step hold, so binary
    floating point (0.6000000000000001) never shows; the list ends at the last step not past the end."""
    values = parse_weights(f"{start}-{stop} (+{step})")
    places = max(len(start.partition(".")[2]), len(step.partition(".")[2]))
    for k, text in enumerate(values):
        assert Decimal(text) == Decimal(start) + k * Decimal(step)
        assert len(text.partition(".")[2]) <= places
    assert Decimal(values[-1]) <= Decimal(stop) < Decimal(values[-1]) + Decimal(step)


@pytest.mark.parametrize("spec, words", [
    ("", "empty"), ("abc", "'abc' is not a number"), ("0-1 (+0)", "step of 0"),
    ("0-1 (-0.2)", "steps away"), ("0-100 (+0.01)", "values"), ("0-1 [0]", "1 to"),
    ("20", "outside -10 to 10"), ("0.123456", "more than 4 decimals"), ("0-1 (+0.2", "not a number"),
])
def test_bad_weight_specs_say_what_is_wrong(spec, words):
    with pytest.raises(LorakitError, match=words.replace("(", r"\(").replace("+", r"\+")):
        parse_weights(spec)


def test_too_many_values_over_several_items_is_refused():
    with pytest.raises(LorakitError, match=f"more than {MAX_VALUES}"):
        parse_weights(",".join(["0-1 (+0.05)"] * 4) + ", 2-3 (+0.05), 4-5 (+0.05), 6-7 (+0.05)")


def test_epoch_files_are_ordered_and_selected_by_number_step_and_final(tmp_path):
    names = ["s.safetensors", "s-000010.safetensors", "s-000002.safetensors", "s-step00000050.safetensors",
             "notes.txt"]
    files = epoch_files(tmp_path, names)
    assert [f.label for f in files] == ["epoch 2", "epoch 10", "step 50", "final"]
    assert [f.name for f in select_epochs(files, "10,final")] == ["s-000010", "s"]
    assert [f.name for f in select_epochs(files, "all")] == ["s-000002", "s-000010", "s-step00000050", "s"]
    assert [f.name for f in select_epochs(files, "last")] == ["s"]
    assert [f.name for f in select_epochs(files, "step50, 2")] == ["s-step00000050", "s-000002"]
    with pytest.raises(NotFound, match="no '3'; it has 2, 10, step50, final"):
        select_epochs(files, "3")
    with pytest.raises(NotFound, match="saved no LoRA"):
        select_epochs([], "all")


def test_prompts_with_and_without_the_trigger_as_samples_make_them():
    axis = prompt_axis(["a cat", "zqx, a dog", "zqx"], ["zqx"], with_and_without=True)
    assert [p.text for p in axis] == ["zqx, a cat", "a cat", "zqx, a dog", "a dog", "zqx"]
    assert axis[1].label == "a cat (without trigger)"
    assert [p.text for p in prompt_axis(["a cat"], ["zqx"])] == ["a cat"]
    with pytest.raises(LorakitError, match="none given"):
        prompt_axis(["  "], [])


def _plan(epochs=("s-000001", "s-000002", "s"), weights="0,0.5,1", prompts=("a cat",), triggers=("zq",),
          twins=True, seeds=(1,), checkpoints=(None,), negative="") -> GridPlan:
    files = epoch_files(Path("/run"), [f"{e}.safetensors" for e in epochs])
    return GridPlan(epochs=tuple(files), weights=parse_weights(weights),
                    prompts=tuple(prompt_axis(prompts, triggers, with_and_without=twins)), seeds=tuple(seeds),
                    checkpoints=tuple(checkpoints), negative=negative)


def test_cells_run_weight_fastest_and_the_layout_matches():
    plan = _plan(seeds=(1, 2))
    cells = plan.cells()
    assert len(cells) == plan.size == 3 * 3 * 2 * 2
    assert [c.weight for c in cells[:4]] == ["0", "0.5", "1", "0"]
    assert [c.epoch.name for c in cells[:4]] == ["s-000001"] * 3 + ["s-000002"]
    cols, rows = plan.layout()
    assert cols == ["0", "0.5", "1"]
    assert len(rows) == len(cells) // 3
    for row, first in zip(rows, cells[::3], strict=True):  # each row's label names its cells' other values
        assert row == " · ".join([first.epoch.label, first.prompt.label, str(first.seed)])
    assert cells[5].full_prompt == "zq, a cat <lora:s-000002:1>"


def _replay(xyz, negative=""):
    """What the webui's X/Y/Z script does with our axes: values read back from the CSV text, then per cell (X
    fastest) each Prompt S/R replaces its first value in the prompt and the negative prompt, refusing a search
    string that is not there."""
    out = []
    axes = [(label, [v.strip() for v in next(csv.reader(StringIO(csv_values(values)), skipinitialspace=True))])
            for label, values in xyz.axes]
    for combo in itertools.product(*reversed([range(len(v)) for _, v in axes])):
        prompt, neg = xyz.base_prompt, negative
        for (label, values), i in zip(axes, reversed(combo), strict=True):
            if label == SR:
                assert values[0] in prompt or values[0] in neg, f"Prompt S/R did not find {values[0]}"
                prompt, neg = prompt.replace(values[0], values[i]), neg.replace(values[0], values[i])
        out.append((prompt, neg))
    return out


@pytest.mark.parametrize("kw", [
    {},  # plain weights would hit the 0 and 1 in the file names: the weight axis searches ':0>' instead
    {"epochs": ("s", "s-000001"), "weights": "0.25,0.75"},  # the final file's name is a prefix of the others
    {"prompts": ("1girl, 0.5 smile, s-000001",), "weights": "0.5,1"},  # the search texts also occur in the prompt
    {"prompts": ("a cat", "a dog"), "seeds": (3, 4)},  # four varying axes: epoch × weight fold into one
    {"prompts": ('say "hi", then, go',), "negative": "bad, ugly"},  # quotes and commas survive the CSV
])
def test_the_xyz_expression_makes_exactly_our_cells(kw):
    plan = _plan(**kw)
    xyz = plan.xyz()
    assert xyz is not None and 1 <= len(xyz.axes) <= 3
    made = _replay(xyz, plan.negative)
    cells = plan.cells()
    assert [p for p, _ in made] == [cells[i].full_prompt for i in xyz.cells]
    assert all(n == plan.negative for _, n in made)
    assert sorted(xyz.cells) == list(range(len(cells)))  # every cell once


def test_two_sr_axes_work_together_where_plain_values_would_clash():
    plan = _plan(prompts=("a cat",), twins=False)
    xyz = plan.xyz()
    labels = [label for label, _ in xyz.axes]
    assert labels == [SR, SR]
    weights, epochs = (values for _, values in xyz.axes)
    assert weights == (":0>", ":0.5>", ":1>")  # '0' alone also occurs in 's-000001'
    assert epochs == ("s-000001", "s-000002", "s")
    assert xyz.base_prompt == "a cat <lora:s-000001:0>"


def test_plain_weights_when_they_are_unambiguous():
    plan = _plan(epochs=("style-a", "style-b"), weights="0.25,0.75", twins=False)
    assert [v for _, v in plan.xyz().axes] == [("0.25", "0.75"), ("style-a", "style-b")]


def test_checkpoint_and_seed_axes_use_the_scripts_own_types():
    plan = _plan(epochs=("s",), weights="1", twins=False, checkpoints=("a.safetensors", "b.safetensors"),
                 seeds=(7, 8))
    assert [(label, v) for label, v in plan.xyz().axes] == [
        ("Checkpoint name", ("a.safetensors", "b.safetensors")), ("Seed", ("7", "8"))]


def test_no_expression_beyond_three_axes():
    plan = _plan(epochs=("s",), weights="0.5,1", prompts=("a", "b"), twins=False, seeds=(1, 2),
                 checkpoints=("x", "y"))
    assert plan.xyz() is None


def test_a_grid_too_large_is_refused_with_what_to_do():
    with pytest.raises(LorakitError, match="at most 1,024. Choose fewer"):
        _plan(weights="0-6.3 (+0.1)", prompts=tuple(f"p{i}" for i in range(9)))


def test_csv_values_quote_only_what_needs_it():
    assert csv_values(["a", "b, c", 'say "x"', " pad"]) == 'a, "b, c", "say ""x""", " pad"'
    assert PromptChoice("x", "x").text == "x"

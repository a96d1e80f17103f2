"""Pony Diffusion V6 XL presets: SDXL training, with Pony's conventions where they differ (score tags first in every
sample prompt, never in the captions; clip skip 2 left to the webui), each value saying where it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_config import build, check_golden, placeholders, small_project  # noqa: F401 (fixture)

from lib_lorakit.train import config as cf
from lib_lorakit.train import presets as pr

PONY = [f"{t}-pony-{n}" for t in ("style", "character") for n in ("lora", "locon", "loha")]
SCORE = "score_9, score_8_up, score_7_up"


@pytest.fixture
def lynn(request):
    """test_train_config's small project: two concepts, a reg set, trigger words lynn3-style and lnn."""
    return request.getfixturevalue("small_project")


def test_six_pony_presets_are_sdxl_with_their_own_reasons():
    listed = {p.name: p for p in pr.presets()}
    for name in PONY:
        info = listed[name]
        assert info.base == "SDXL" and info.builtin and "Pony Diffusion V6 XL" in info.summary
        twin = pr.resolve(name.replace("-pony-", "-sdxl-"))
        r = pr.resolve(name)
        assert dict(r.values) == dict(twin.values)  # same training; what differs is prompting
        assert r.sample_tags == ("score_9", "score_8_up", "score_7_up") and twin.sample_tags == ()
        assert "Pony's model card convention is clip skip 2" in r.sources["clip_skip"]
        assert r.sources["sample_sampler"].startswith(f"preset {name}: seeds/001")
        assert "Pony's model card convention" in pr.BUILTIN[name].sample_tags.reason


def test_pony_samples_start_with_the_score_tags_and_captions_stay_as_tagged(lynn):
    files = build(lynn, "style-pony-lora", samples=cf.SampleSettings(
        prompts=("a cat", "score_9, lnn, a dog")))
    assert files.script == "sdxl_train_network.py"
    assert [s.prompt for s in files.samples] == [
        f"{SCORE}, lynn3-style, lnn, a cat", f"{SCORE}, a cat",
        "score_8_up, score_7_up, lynn3-style, score_9, lnn, a dog", "score_8_up, score_7_up, score_9, a dog"]
    assert [s.with_trigger for s in files.samples] == [True, False, True, False]
    twin = build(lynn, "style-sdxl-lora")
    assert files.dataset == twin.dataset  # no score tags added to the captions
    assert "score_9" not in files.dataset_toml() and "score_9" not in files.args_toml()
    assert not any("score_9" in s.prompt for s in twin.samples)


def test_golden_pony_sample_prompts(lynn):
    files = build(lynn, "style-pony-lora")
    check_golden("style-pony-lora.sample_prompts.txt", files.sample_prompts)
    assert all(line.startswith(f"{SCORE}, ") for line in files.sample_prompts.splitlines())
    assert placeholders(files.args_toml(), lynn).count("style-pony-lora") == 1  # the training comment


@pytest.mark.parametrize("name", PONY)
def test_pony_golden_files_exist(name):
    """test_train_config checks every built-in against its golden files; the Pony ones must be there too."""
    for kind in ("args", "dataset"):
        assert (Path(__file__).parent / "golden" / "train" / f"{name}.{kind}.toml").is_file()

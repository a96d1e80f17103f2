"""Presets: the built-ins (values and sources), resolving layers with provenance, and user presets on disk."""

from __future__ import annotations

import logging

import pytest

from lib_lorakit.errors import AlreadyExists, LorakitError, NotFound
from lib_lorakit.train import presets as pr
from lib_lorakit.train.options import InvalidOption
from lib_lorakit.train.presets import get_preset, load_user_presets, resolve, save_user_preset
from lib_lorakit.train.steps import plan_steps


def values(name: str) -> dict:
    return {n: v.value for n, v in pr.BUILTIN[name].values.items()}


def test_twelve_builtins_named_task_base_network():
    listed = [p for p in pr.presets() if "-pony-" not in p.name]  # the six Pony presets: test_train_pony.py
    assert len(listed) == 12 and all(p.builtin for p in listed)
    assert {(p.task, p.base, p.network) for p in listed} == {
        (t, b, n) for t in ("style", "character") for b in ("SD1", "SDXL") for n in ("LoRA", "LoCon", "LoHa")}
    assert "style-sd15-loha" in pr.BUILTIN and "character-sdxl-locon" in pr.BUILTIN
    assert listed[0].to_dict()["name"] == "style-sd15-lora"
    assert all("Pony" in p.summary for p in listed if p.base == "SDXL")


def test_style_sd15_loha_is_the_seeds_003_default_setup():
    """seeds/003: loha net dim 8, conv dim 4, alpha 1; lr 2e-4 constant; Adam8bit; resolution 512; clip skip 1."""
    v = values("style-sd15-loha")
    assert {k: v[k] for k in ("network_module", "algo", "network_dim", "conv_dim", "network_alpha", "conv_alpha",
                              "learning_rate", "lr_scheduler", "optimizer_type", "resolution", "clip_skip")} == {
        "network_module": "lycoris.kohya", "algo": "loha", "network_dim": 8, "conv_dim": 4, "network_alpha": 1.0,
        "conv_alpha": 1.0, "learning_rate": 2e-4, "lr_scheduler": "constant", "optimizer_type": "AdamW8bit",
        "resolution": 512, "clip_skip": 1}
    assert v["text_encoder_lr"] is None  # style: the text encoder at the full rate (seeds/003)
    reasons = pr.BUILTIN["style-sd15-loha"].values
    for key in ("network_dim", "conv_dim", "network_alpha", "learning_rate", "optimizer_type", "clip_skip"):
        assert reasons[key].reason.startswith("seeds/003"), key


def test_lora_and_locon_dims():
    lora, locon = values("style-sd15-lora"), values("character-sdxl-locon")
    assert (lora["network_module"], lora["network_dim"], lora["network_alpha"]) == ("networks.lora", 16, 8.0)
    assert "algo" not in lora and "conv_dim" not in lora
    assert (locon["network_module"], locon["algo"]) == ("lycoris.kohya", "locon")
    assert (locon["network_dim"], locon["network_alpha"], locon["conv_dim"], locon["conv_alpha"]) == (16, 8.0, 8, 4.0)


@pytest.mark.parametrize("name", sorted(pr.BUILTIN))
def test_every_builtin_resolves_and_says_why(name):
    p = pr.BUILTIN[name]
    assert all(v.reason for v in p.values.values())
    r = resolve(name)
    assert r.values["min_snr_gamma"] == 5.0 and r.values["max_train_epochs"] == 10
    assert r.values["save_every_n_epochs"] == 1 and r.values["flip_aug"] is False
    if p.base == "SDXL":
        assert (r.values["resolution"], r.values["gradient_checkpointing"]) == (1024, True)
        assert r.values["clip_skip"] is None
        assert r.values["network_train_unet_only"] and r.values["no_half_vae"]
    else:
        assert (r.values["resolution"], r.values["clip_skip"]) == (512, 1)
    if p.base == "SDXL":
        assert r.values["text_encoder_lr"] is None  # U-Net only
    elif p.task == "character":
        assert r.values["text_encoder_lr"] == r.values["learning_rate"] / 2
    assert set(r.sources) == set(r.values)


def test_sources_say_preset_default_or_user():
    r = resolve("style-sd15-loha", {"seed": 7})
    assert r.sources["network_dim"].startswith("preset style-sd15-loha: seeds/003")
    assert r.sources["max_grad_norm"] == "default"
    assert r.sources["seed"] == "yours"
    assert r.values["seed"] == 7
    rows = r.explain()
    assert rows[0] == {"name": "network_module", "value": "lycoris.kohya",
                       "source": r.sources["network_module"]}


def test_steps_override_switches_the_presets_epochs_off():
    r = resolve("style-sd15-lora", {"max_train_steps": 4, "resolution": 64, "min_bucket_reso": 64})
    assert r.values["max_train_steps"] == 4 and r.values["max_train_epochs"] is None
    assert r.sources["max_train_epochs"] == "yours (set max_train_steps, so max_train_epochs is off)"
    assert plan_steps([(3, 1)], epochs=r.values["max_train_epochs"],
                      max_train_steps=r.values["max_train_steps"]).total_steps == 4
    x = resolve("style-sd15-lora", {"xformers": True}, override_source="UI")
    assert (x.values["xformers"], x.values["sdpa"]) == (True, False)
    assert x.sources["sdpa"] == "UI (set xformers, so sdpa is off)"


def test_bad_overrides_fail_with_the_option_named():
    with pytest.raises(InvalidOption, match="network_dim: expected an integer from 1 to 1024, got 0"):
        resolve("style-sd15-lora", {"network_dim": 0})
    with pytest.raises(InvalidOption, match="min_bucket_reso: expected at most resolution 64"):
        resolve("style-sd15-lora", {"resolution": 64})
    with pytest.raises(NotFound, match="No preset named 'nope' \\(have: style-sd15-lora, "):
        get_preset("nope")


# --- user presets --------------------------------------------------------------------------------------------------

def test_user_preset_round_trip(tmp_path):
    path = save_user_preset(tmp_path, "my style", {"network_dim": 32, "conv_dim": 16, "algo": "loha",
                                                   "network_module": "lycoris.kohya", "max_train_epochs": None,
                                                   "max_train_steps": 3000},
                            task="style", base="SD1", network="LoHa", summary="bigger LoHa",
                            reasons={"network_dim": "seeds/003: dim 32/16 did better backgrounds"})
    assert path == tmp_path / "my style.toml"
    assert 'max_train_epochs = "none"' in path.read_text()
    p = get_preset("my style", tmp_path)
    assert not p.builtin and p.values["max_train_epochs"].value is None
    r = resolve("my style", user_dir=tmp_path)
    assert (r.values["network_dim"], r.values["max_train_steps"], r.values["max_train_epochs"]) == (32, 3000, None)
    assert r.sources["network_dim"] == "user preset my style: seeds/003: dim 32/16 did better backgrounds"
    assert r.sources["conv_dim"] == "user preset my style: saved value"
    assert [i.name for i in pr.presets(tmp_path)][-1] == "my style"


def test_user_presets_are_validated_on_save(tmp_path):
    with pytest.raises(InvalidOption, match="network_dim: expected an integer from 1 to 1024, got 0"):
        save_user_preset(tmp_path, "x", {"network_dim": 0}, task="style", base="SD1", network="LoRA")
    with pytest.raises(LorakitError, match="base: expected one of SD1, SDXL, got 'SD2'"):
        save_user_preset(tmp_path, "x", {}, task="style", base="SD2", network="LoRA")
    with pytest.raises(LorakitError, match="preset name"):
        save_user_preset(tmp_path, "../x", {}, task="style", base="SD1", network="LoRA")
    assert list(tmp_path.iterdir()) == []


def test_user_presets_cannot_shadow_builtins(tmp_path, caplog):
    with pytest.raises(AlreadyExists, match="'style-sd15-loha' is a built-in preset"):
        save_user_preset(tmp_path, "style-sd15-loha", {}, task="style", base="SD1", network="LoHa")
    (tmp_path / "style-sd15-loha.toml").write_text('task = "style"\nbase = "SD1"\nnetwork = "LoHa"\n'
                                                   "[values]\nnetwork_dim = 64\n")
    with caplog.at_level(logging.WARNING):
        loaded = load_user_presets(tmp_path)
    assert loaded.presets == () and "may not take the built-in name 'style-sd15-loha'" in loaded.problems[0]
    assert "User preset skipped" in caplog.text
    assert get_preset("style-sd15-loha", tmp_path).values["network_dim"].value == 8


def test_overwrite_is_explicit(tmp_path):
    kw = {"task": "character", "base": "SDXL", "network": "LoRA"}
    save_user_preset(tmp_path, "mine", {"network_dim": 8}, **kw)
    with pytest.raises(AlreadyExists):
        save_user_preset(tmp_path, "mine", {"network_dim": 4}, **kw)
    save_user_preset(tmp_path, "mine", {"network_dim": 4}, overwrite=True, **kw)
    assert get_preset("mine", tmp_path).values["network_dim"].value == 4


def test_bad_user_files_are_reported_not_hidden(tmp_path, caplog):
    (tmp_path / "broken.toml").write_text("task = [")
    (tmp_path / "wrong.toml").write_text('task = "style"\nbase = "SD1"\nnetwork = "LoRA"\n[values]\nnetwork_dim = 0\n')
    (tmp_path / "extra.toml").write_text('task = "style"\nbase = "SD1"\nnetwork = "LoRA"\ncolour = "red"\n')
    (tmp_path / "old.toml").write_text('task = "style"\nbase = "SD1"\nnetwork = "LoRA"\n[values]\nbatch_size = 2\n'
                                       '[reasons]\nbatch_size = "fits my GPU"\n')
    loaded = load_user_presets(tmp_path)
    assert [p.name for p in loaded.presets] == ["old"]
    assert loaded.presets[0].values["train_batch_size"] == pr.PresetValue(2, "fits my GPU")
    text = "\n".join(loaded.problems)
    assert "broken.toml" in text and "not valid TOML" in text
    assert "wrong.toml: network_dim: expected an integer from 1 to 1024, got 0" in text
    assert "extra.toml: unknown key(s) colour" in text
    assert "'batch_size' is an old name" in caplog.text
    assert load_user_presets(tmp_path / "missing").presets == ()

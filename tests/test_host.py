"""The standalone Host: folders from flags and the config file; checkpoint types read from tensor names."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from lib_lorakit.host import StandaloneHost, checkpoint_arch, resolve_server_path

TEXT_ENCODERS = {
    "SD1": "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    "SD2": "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    "SDXL": "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
}


def write_safetensors(path: Path, names: list[str]) -> None:
    """A real safetensors file: 8-byte header length, JSON header, then the (tiny) tensor data."""
    header = {n: {"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]} for i, n in enumerate(names)}
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0" * len(names))


def test_checkpoint_types_from_their_keys(tmp_path):
    models = tmp_path / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    for arch, key in TEXT_ENCODERS.items():
        write_safetensors(models / f"{arch.lower()}.safetensors", ["model.diffusion_model.out.0.weight", key])
    (models / "old.ckpt").write_bytes(b"PK\x03\x04 a pickle we never open")
    (models / "broken.safetensors").write_bytes(b"\x05")
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    found = {c.name: c.arch for c in host.checkpoints()}
    assert found == {"sd1.safetensors": "SD1", "sd2.safetensors": "SD2", "sdxl.safetensors": "SDXL",
                     "old.ckpt": "Unknown", "broken.safetensors": "Unknown"}
    assert checkpoint_arch(models / "missing.safetensors") == "Unknown"


def test_flags_override_the_config_file(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'home = "{tmp_path / "cfg-home"}"\nallowed_roots = ["{tmp_path / "pictures"}"]\n')
    host = StandaloneHost.from_options(config=cfg)
    assert host.projects_home() == tmp_path / "cfg-home"
    assert host.lora_dir() == tmp_path / "cfg-home" / "models" / "Lora"
    assert host.allowed_roots() == [tmp_path / "cfg-home", tmp_path / "pictures"]
    host = StandaloneHost.from_options(home=str(tmp_path / "flag-home"), lora_dir=str(tmp_path / "L"), config=cfg)
    assert host.projects_home() == tmp_path / "flag-home" and host.lora_dir() == tmp_path / "L"


def test_exposed_host_without_roots_refuses_server_paths(tmp_path):
    import pytest

    from lib_lorakit.errors import LorakitError

    host = StandaloneHost(home=tmp_path, lora=tmp_path, models=tmp_path, exposed=True)
    with pytest.raises(LorakitError, match="Upload the images instead"):
        resolve_server_path(host, str(tmp_path))
    host.extra_roots.append(tmp_path / "ok")
    (tmp_path / "ok").mkdir()
    assert resolve_server_path(host, str(tmp_path / "ok")) == (tmp_path / "ok").resolve()

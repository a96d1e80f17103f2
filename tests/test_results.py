"""LoRA metadata as the webui reads it, and registration into the Lora folder with cards."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from lib_lorakit.errors import LorakitError
from lib_lorakit.host import StandaloneHost
from lib_lorakit.results.lora_info import read_lora_info
from lib_lorakit.results.registry import register_files

TAGS = {"1_demo": {"sks": 3, " red hair": 2, "smile": 1}, "1_reg": {"smile": 4}}


def write_lora(path: Path, metadata: dict[str, str], n_tensors: int = 3) -> bytes:
    """A real safetensors LoRA file: header with `__metadata__`, then fp16 tensor bytes. Returns the data part."""
    header = {f"lora_unet_down_{i}.lora_up.weight": {"dtype": "F16", "shape": [2, 2],
                                                      "data_offsets": [8 * i, 8 * i + 8]} for i in range(n_tensors)}
    header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    data = bytes(range(8 * n_tensors))
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return data


def sd_scripts_metadata(**extra: str) -> dict[str, str]:
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0",
            "ss_base_model_version": "sd_v1", "ss_resolution": "(64, 64)", "ss_output_name": "demo",
            "ss_tag_frequency": json.dumps(TAGS), "ss_training_started_at": "1000.5",
            "ss_training_finished_at": "1060.5", "ss_steps": "4", "ss_epoch": "2",
            "ss_dataset_dirs": json.dumps({"1_demo": {"n_repeats": 1, "img_count": 3}})}
    meta.update(extra)
    return meta


def test_info_reads_network_dataset_tags_and_time(tmp_path):
    lora = tmp_path / "demo.safetensors"
    data = write_lora(lora, sd_scripts_metadata())
    info = read_lora_info(lora)
    assert (info.network, info.dim, info.alpha, info.base_model) == ("LoRA", 4, 2.0, "sd_v1")
    assert info.datasets == [{"dir": "1_demo", "images": 3, "repeats": 1}]
    assert info.top_tags()[:2] == [("smile", 5), ("sks", 3)]
    assert info.training_seconds == 60.0 and info.steps == 4 and info.tensors == 3
    # the webui hashes the bytes after the header when the metadata has no sshs_model_hash
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.short_hash == info.sha256[:12]


def test_metadata_hash_wins_and_lycoris_is_named(tmp_path):
    lora = tmp_path / "x.safetensors"
    write_lora(lora, sd_scripts_metadata(sshs_model_hash="ab" * 32, ss_network_module="lycoris.kohya",
                                         ss_network_args=json.dumps({"algo": "loha", "conv_dim": "4"})))
    info = read_lora_info(lora)
    assert info.sha256 == "ab" * 32 and info.network == "LoHa" and info.network_args["conv_dim"] == "4"


@pytest.mark.parametrize("content,message", [(b"", "too short"), (b"\xff" * 8 + b"{}", "header claims"),
                                             (struct.pack("<Q", 4) + b"nope", "not JSON")])
def test_not_a_safetensors_file_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    with pytest.raises(LorakitError, match=message):
        read_lora_info(bad)


class RecordingHost(StandaloneHost):
    refreshed = 0

    def refresh_loras(self) -> None:
        self.refreshed += 1


def test_register_links_files_writes_cards_and_refreshes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    files = [run / "demo-step00000002.safetensors", run / "demo.safetensors"]
    for f in files:
        write_lora(f, sd_scripts_metadata())
    sample = run / "sample.png"
    sample.write_bytes(b"\x89PNG\r\n\x1a\n fake")
    host = RecordingHost(home=tmp_path / "home", lora=tmp_path / "Lora", models=tmp_path / "models")
    done = register_files(files, lora_dir=host.lora_dir(), project="demo", trigger_words=["sks", "flat colours"],
                          description="style-sd15-lora, 4 steps, 3 images", preview=sample, host=host)
    assert [d.lora.name for d in done] == [f.name for f in files]
    for d, src in zip(done, files, strict=True):
        assert d.lora.parent == tmp_path / "Lora" / "train-style" / "demo"
        assert d.lora.read_bytes() == src.read_bytes()
        card = json.loads(d.card.read_text())
        assert card["activation text"] == "sks, flat colours" and card["sd version"] == "SD1"
        assert 0 < card["preferred weight"] <= 2 and "4 steps" in card["description"]
        assert d.preview.read_bytes() == sample.read_bytes() and d.preview.name.endswith(".preview.png")
    assert host.refreshed == 1
    register_files(files, lora_dir=host.lora_dir(), project="demo", trigger_words=[], description="", host=host)
    assert len(list((tmp_path / "Lora" / "train-style" / "demo").glob("*.safetensors"))) == 2  # no duplicates


def test_lora_info_from_the_cli_and_the_api(tmp_path):
    import os
    import subprocess
    import sys

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lorakit import api

    lora = tmp_path / "home" / "demo.safetensors"
    lora.parent.mkdir()
    write_lora(lora, sd_scripts_metadata())
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "lib_lorakit", "lora-info", str(lora), "--json"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["network"] == "LoRA" and data["top_tags"][0] == ["smile", 5]
    human = subprocess.run([sys.executable, "-m", "lib_lorakit", "lora-info", str(lora)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=60)
    assert "LoRA dim 4 alpha 2.0" in human.stdout and data["short_hash"] in human.stdout

    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "Lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    r = client.get("/train-style/v1/lora-info", params={"path": str(lora)})
    assert r.status_code == 200 and r.json()["sha256"] == data["sha256"]
    outside = tmp_path / "elsewhere.safetensors"
    write_lora(outside, sd_scripts_metadata())
    assert client.get("/train-style/v1/lora-info", params={"path": str(outside)}).status_code == 403

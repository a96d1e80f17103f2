"""Build a random-weight, full-size SDXL checkpoint and the two offline CLIP tokenizers for sd-scripts tests.

Run with the trainer's python (it needs torch, diffusers, transformers and sd-scripts' `library`):

    python tests/sdxl_builder.py OUT_DIR [--bpe bpe_simple_vocab_16e6.txt.gz] [--seed 0]

writes OUT_DIR/sdxl-random.safetensors (fp16, the SGM key layout of Stability's single-file SDXL checkpoints, which
sd-scripts' `sdxl_model_util.load_models_from_sdxl_checkpoint` and the webuis load) and, under OUT_DIR/tokenizers,
`openai_clip-vit-large-patch14` and `laion_CLIP-ViT-bigG-14-laion2B-39B-b160k` (pass OUT_DIR/tokenizers as
`--tokenizer_cache_dir`). Components: the diffusers SDXL UNet (sd-scripts' DIFFUSERS_SDXL_UNET_CONFIG), CLIP ViT-L/14
and OpenCLIP ViT-bigG/14 text encoders (sd-scripts' configs), the SD/SDXL VAE; each seeded with --seed.

Memory: the model is built one component at a time, each turned to fp16 in place before the next, and the file is
written one tensor at a time, so the peak is the fp32 UNet (~10 GB) rather than the whole model twice. No network.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from pathlib import Path

from sd15_builder import build_tokenizer, find_bpe

BIGG_TOKENIZER_DIR = "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"
CHECKPOINT = "sdxl-random.safetensors"
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat": both SDXL tokenizers share the CLIP BPE


def _sd_scripts():
    try:
        from library import model_util, sdxl_model_util  # sd-scripts, installed in its venv with `pip install -e .`
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sd-scripts"))
        from library import model_util, sdxl_model_util
    return model_util, sdxl_model_util


def build_tokenizers(bpe: Path, out_dir: Path) -> tuple[Path, Path]:
    """ViT-L/14's tokenizer, and bigG's: the same vocabulary and merges with `!` (id 0) as the pad token, as the
    laion repository has it (sd-scripts sets pad id 0 for it anyway)."""
    from transformers import CLIPTokenizer

    vit_l = build_tokenizer(bpe, out_dir)
    big_g = CLIPTokenizer.from_pretrained(vit_l, pad_token="!")
    ids = big_g("a photo of a cat")["input_ids"]
    assert ids == CAT_IDS and big_g.pad_token_id == 0, (ids, big_g.pad_token_id)
    target = out_dir / BIGG_TOKENIZER_DIR
    big_g.save_pretrained(target)
    return vit_l, target


def _unet(seed: int) -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    _, sdxl = _sd_scripts()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sdxl.DIFFUSERS_SDXL_UNET_CONFIG).half()
    sd = sdxl.convert_diffusers_unet_state_dict_to_sdxl(unet.state_dict())
    return {f"model.diffusion_model.{k}": v for k, v in sd.items()}


def _text_encoders(seed: int) -> dict:
    import math

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    _, sdxl = _sd_scripts()
    common = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-05, pad_token_id=1, bos_token_id=0,
                  eos_token_id=2)
    torch.manual_seed(seed)
    te1 = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                       num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768,
                                       **common)).half()
    out = {f"conditioner.embedders.0.transformer.{k}": v for k, v in te1.state_dict().items()
           if not k.endswith("position_ids")}
    del te1
    torch.manual_seed(seed)
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                     num_attention_heads=20, hidden_act="gelu", projection_dim=1280,
                                                     **common)).half()
    sd2 = sdxl.convert_text_encoder_2_state_dict_to_sdxl(te2.state_dict(), torch.tensor(math.log(100.0)))
    out.update({f"conditioner.embedders.1.model.{k}": v.half() for k, v in sd2.items()})
    return out


def _vae(seed: int) -> dict:
    import torch
    from diffusers import AutoencoderKL

    model_util, _ = _sd_scripts()
    torch.manual_seed(seed)
    vae = AutoencoderKL(**model_util.create_vae_diffusers_config()).half()
    return {f"first_stage_model.{k}": v for k, v in model_util.convert_vae_state_dict(vae.state_dict()).items()}


def write_safetensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """The safetensors format written one tensor at a time (header, then each tensor's bytes), atomically: no
    second in-memory copy of a 7 GB model."""
    import torch

    names = sorted(tensors)
    dtypes = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name in names:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in names:
            f.write(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random SDXL (UNet, two text encoders, VAE) as one fp16 safetensors file in the SGM layout."""
    import gc

    tensors: dict = {}
    for part in (_unet, _text_encoders, _vae):
        tensors.update(part(seed))
        gc.collect()
        print(f"  {part.__name__.strip('_')}: {len(tensors)} tensors so far", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, tensors)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--bpe", help="path to bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-only", action="store_true")
    args = parser.parse_args(argv)
    for target in build_tokenizers(find_bpe(args.bpe), args.out_dir / "tokenizers"):
        print("tokenizer:", target, flush=True)
    if not args.tokenizer_only:
        print("checkpoint:", build_checkpoint(args.out_dir / CHECKPOINT, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build a random-weight, full-size SD1.5 checkpoint and an offline CLIP tokenizer for sd-scripts tests.

Run with the trainer's python (it needs torch, diffusers, transformers, safetensors and sd-scripts' `library`):

    python tests/sd15_builder.py OUT_DIR [--bpe bpe_simple_vocab_16e6.txt.gz] [--seed 0]

writes OUT_DIR/sd15-random.safetensors (fp16, the original SD/ldm key layout that sd-scripts and the webui load)
and OUT_DIR/tokenizers/openai_clip-vit-large-patch14 (pass OUT_DIR/tokenizers as `--tokenizer_cache_dir`).
sd-scripts hard-codes the SD1.5 UNet size (library/original_unet.py), so the model must be full size: building it
takes ~45 s and ~9 GB of RAM on a CPU; the same seed gives bit-identical weights. No network is used.

The tokenizer comes from the CLIP BPE file that open_clip (and OpenAI's `clip`) ship: pass it with `--bpe`, or set
LORAKIT_CLIP_BPE, or have open_clip/clip importable by this python.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

TOKENIZER_DIR = "openai_clip-vit-large-patch14"
CHECKPOINT = "sd15-random.safetensors"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat" with openai/clip-vit-large-patch14

UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
VAE_CONFIG = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0, pad_token_id=1,
    eos_token_id=2,
)


def find_bpe(explicit: str | None = None) -> Path:
    """The CLIP BPE vocabulary: an explicit path, $LORAKIT_CLIP_BPE, or the copy inside open_clip / clip."""
    candidates = [explicit, os.environ.get("LORAKIT_CLIP_BPE")]
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            candidates += [os.path.join(loc, BPE_NAME) for loc in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    raise SystemExit(f"{BPE_NAME} not found: pass --bpe PATH or set LORAKIT_CLIP_BPE")


def _bytes_to_unicode() -> dict[int, str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_tokenizer(bpe: Path, out_dir: Path) -> Path:
    """Write the CLIP ViT-L/14 tokenizer (49,408 tokens) where sd-scripts' `--tokenizer_cache_dir` looks for it."""
    from transformers import CLIPTokenizer

    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1:48895]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    target = out_dir / TOKENIZER_DIR
    with tempfile.TemporaryDirectory() as td:
        vocab_file, merges_file = os.path.join(td, "vocab.json"), os.path.join(td, "merges.txt")
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
        with open(merges_file, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer(vocab_file, merges_file, model_max_length=77, pad_token="<|endoftext|>")
        ids = tokenizer("a photo of a cat")["input_ids"]
        assert ids == CAT_IDS, ids
        tokenizer.save_pretrained(target)
    return target


def build_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random SD1.5 (UNet, CLIP ViT-L/14 text encoder, VAE) saved as one fp16 safetensors in the ldm layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    try:
        from library import model_util  # sd-scripts, installed in its venv with `pip install -e .`
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sd-scripts"))
        from library import model_util

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.safetensors")
    model_util.save_stable_diffusion_checkpoint(False, str(tmp), text_encoder, unet, None, 0, 0,
                                                {"format": "pt"}, save_dtype=torch.float16, vae=vae)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--bpe", help=f"path to {BPE_NAME}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-only", action="store_true")
    args = parser.parse_args(argv)
    tokenizers = args.out_dir / "tokenizers"
    print("tokenizer:", build_tokenizer(find_bpe(args.bpe), tokenizers), flush=True)
    if not args.tokenizer_only:
        print("checkpoint:", build_checkpoint(args.out_dir / CHECKPOINT, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

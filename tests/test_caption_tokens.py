"""CLIP token counts of captions: our own BPE against open_clip's tokenizer, and the estimate without a vocabulary."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib_lorakit.captions.tokens import (
    TokenCount,
    count_tokens,
    estimate_tokens,
    find_vocab,
    get_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]

CAPTIONS = [
    "a photo of a cat",
    "zz style, 1girl, solo, long_hair, looking at viewer, smile, :d, ^_^, >_<",
    r"smile \(happy\), (masterpiece:1.2), [blue eyes], {extra}",
    "Café crème, naïve — “quotes” and ‘single’, 日本語のテスト, Ünïcödé, emoji 😀👍🏽",
    "score_9, score_8_up, 3.14159, 1990s (style), 2girls, 100%, #hashtag, @user",
    "&amp; &lt;b&gt; &#39;html&#39; entities",
    "  multiple    spaces\tand\nnew lines\r\n and tabs ",
    "don't, it's, they're, I'll, we've, I'm, she'd, DON'T, It'S",
    "½ ² ٣ ⅷ numbers 12345 00 ٠١٢",
    "ÆØÅ æøå ß ẞ İstanbul ǅ ﬁ ligature",
    "mojibake: cafÃ© NaÃ¯ve",
    "supercalifragilisticexpialidocious, antidisestablishmentarianism, " * 3,
    "x" * 120,
    "",
    ",,,",
]


@pytest.fixture(scope="module")
def reference():
    """open_clip's own SimpleTokenizer, loaded from its file (the open_clip package imports torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip is not installed")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def test_a_photo_of_a_cat_has_the_ids_from_facts():
    tok = get_tokenizer()
    assert tok is not None, "open_clip's vocabulary should be found in the test environment"
    assert [tok.start_id, *tok.encode("a photo of a cat"), tok.end_id] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert count_tokens("a photo of a cat") == TokenCount(tokens=5, estimated=False)


@pytest.mark.parametrize("text", CAPTIONS)
def test_token_ids_match_open_clip(reference, text):
    assert get_tokenizer().encode(text) == reference.encode(text)


def test_long_captions_match_open_clip(reference):
    tags = [f"tag number {i}, detailed background {i % 7}, holding sword" for i in range(40)]
    text = ", ".join(tags)
    ours = count_tokens(text)
    assert ours.tokens == len(reference.encode(text)) > 225 and not ours.estimated


def test_vocabulary_is_found_without_importing_open_clip(tmp_path):
    probe = ("import json, sys; from lib_lorakit.captions.tokens import count_tokens, find_vocab; "
             "c = count_tokens('a photo of a cat'); "
             "print(json.dumps([str(find_vocab()), c.tokens, c.estimated, 'open_clip' in sys.modules, "
             "'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    vocab, tokens, estimated, open_clip_loaded, torch_loaded = json.loads(out.stdout)
    assert vocab.endswith("open_clip/bpe_simple_vocab_16e6.txt.gz")
    assert (tokens, estimated, open_clip_loaded, torch_loaded) == (5, False, False, False)


def test_a_vocabulary_path_may_be_given_as_file_or_folder(tmp_path):
    vocab = find_vocab()
    assert find_vocab(vocab) == vocab and find_vocab(vocab.parent) == vocab
    assert find_vocab(tmp_path) is None
    assert count_tokens("a photo of a cat", vocab=vocab.parent) == TokenCount(5, False)


@pytest.mark.parametrize("text", [c for c in CAPTIONS[:9] if c.strip(" ,")])
def test_without_a_vocabulary_the_count_is_an_estimate_in_the_right_range(tmp_path, text):
    exact = count_tokens(text).tokens
    guess = count_tokens(text, vocab=tmp_path / "missing.txt.gz")
    assert guess.estimated is True
    assert guess.tokens == estimate_tokens(text)
    assert exact / 2 <= guess.tokens <= exact * 2

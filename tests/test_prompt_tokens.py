"""The pseudo-prompt's token ids, checked against the real CLIP BPE vocabulary file.

The vocabulary is rebuilt from OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (shipped inside the open_clip_torch wheel,
installed without its dependencies) the way CLIP defines it: the 256 byte symbols, the same with ``</w>``, one entry
per merge, then the two special tokens. transformers' CLIPTokenizer is then run on that vocabulary as a second,
independent tokenizer implementation.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

import pytest

from arc2face_core.identity import prompt_tokens as tok

CLIP_MERGES = 49152 - 256 - 2   # the merges CLIP's tokenizer uses (the file holds more)


def _bpe_file() -> Path | None:
    spec = importlib.util.find_spec("open_clip")
    if spec and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    return None


def _byte_symbols() -> list[str]:
    """CLIP's reversible byte → printable-unicode table, in vocabulary order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@pytest.fixture(scope="module")
def clip_vocab_files(tmp_path_factory):
    bpe = _bpe_file()
    if bpe is None:
        pytest.skip("open_clip_torch (for its CLIP vocabulary file) is not installed; .ci/run installs it")
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1]]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = tmp_path_factory.mktemp("clip_vocab")
    (folder / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return folder, {w: i for i, w in enumerate(vocab)}


def test_vocabulary_has_the_sd1_size(clip_vocab_files):
    _, vocab = clip_vocab_files
    assert len(vocab) == 49408


def test_each_word_of_the_pseudo_prompt(clip_vocab_files):
    _, vocab = clip_vocab_files
    words = ["photo", "of", "a", "id", "person"]
    assert tuple(vocab[w + "</w>"] for w in words) == tok.PSEUDO_PROMPT_IDS[1:-1]
    assert vocab["id</w>"] == tok.ID_TOKEN
    assert (vocab["<|startoftext|>"], vocab["<|endoftext|>"]) == (tok.BOS, tok.EOS)


def test_transformers_tokenizer_gives_the_same_ids(clip_vocab_files):
    transformers = pytest.importorskip("transformers")
    folder, _ = clip_vocab_files
    tokenizer = transformers.CLIPTokenizer.from_pretrained(os.fspath(folder), model_max_length=77)
    ids = tokenizer(tok.PSEUDO_PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    assert ids == tok.padded_ids(tok.PSEUDO_PROMPT_IDS).tolist()
    assert ids.index(tok.ID_TOKEN) == tok.ID_POSITION
    empty = tokenizer("", padding="max_length", max_length=77).input_ids
    assert empty == tok.padded_ids(tok.EMPTY_PROMPT_IDS).tolist()


def test_padding_and_pooling_positions():
    ids = tok.padded_ids(tok.PSEUDO_PROMPT_IDS)
    assert ids.shape == (77,) and ids[6:].eq(tok.EOS).all() and ids[tok.ID_POSITION] == tok.ID_TOKEN
    assert tok.first_eos_position(tok.PSEUDO_PROMPT_IDS) == 6
    assert tok.first_eos_position(tok.EMPTY_PROMPT_IDS) == 1

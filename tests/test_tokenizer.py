"""Tokenizers: trained BPE and offline GPT-2 BPE, both loadable by transformers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lfr.config import TokenizerConfig
from lfr.tokenizer import (
    batch_encoder,
    load_hf_tokenizer,
    prepare_tokenizer,
    token_byte_lengths,
    token_bytes,
)

SAMPLE = "The quick brown fox jumps over the lazy dog.\n\tdef f(x): return x ** 2  # émoji 🦊"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt2") / "tok"
    prepare_tokenizer(TokenizerConfig(kind="gpt2"), tmp_path_factory.mktemp("x") / "unused", out)
    return out


def test_trained_bpe_has_the_configured_vocab(prepared):
    _, root = prepared
    tok = load_hf_tokenizer(root / "tokenizer")
    assert len(tok) == 512
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE


def test_gpt2_bpe_offline_matches_openai_ids(gpt2_dir):
    tok = load_hf_tokenizer(gpt2_dir)
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert tok.encode("hello world") == [31373, 995]  # OpenAI's GPT-2 ids
    encode = batch_encoder(gpt2_dir)  # tiktoken
    assert encode([SAMPLE, "hello world"]) == [tok.encode(SAMPLE), [31373, 995]]


def test_gpt2_token_bytes_are_tiktokens(gpt2_dir):
    """The bytes read from tokenizer.json against tiktoken's own bytes of every GPT-2 token."""
    import tiktoken

    from lfr.tokenizer import _gpt2_tiktoken

    enc: tiktoken.Encoding = _gpt2_tiktoken()
    expected = [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab - 1)] + [b""]  # EOT
    assert token_bytes(gpt2_dir) == expected
    assert token_byte_lengths(gpt2_dir).tolist() == [len(b) for b in expected]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_bpe_round_trips_arbitrary_unicode(prepared_tok, text):
    encode, tok, byte_lengths = prepared_tok
    ids = encode([text])[0]
    assert tok.decode(ids) == text
    assert byte_lengths[ids].sum() == len(text.encode())  # the bytes of val_bpb (lfr/tokenize.py)


@pytest.fixture(scope="module")
def prepared_tok(prepared):
    _, root = prepared
    return (batch_encoder(root / "tokenizer"), load_hf_tokenizer(root / "tokenizer"),
            token_byte_lengths(root / "tokenizer"))


def test_too_small_corpus_for_vocab_fails_clearly(tmp_path):
    import pandas as pd

    pd.DataFrame({"doc_id": ["a"], "domain": [None], "text": ["tiny text"]}).to_parquet(
        tmp_path / "train.parquet")
    with pytest.raises(ValueError, match="lower it"):
        prepare_tokenizer(TokenizerConfig(vocab_size=5000), tmp_path / "train.parquet", tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_padded_tokenizer_encodes_the_same_ids_and_pads_are_unused(gpt2_dir, tmp_path):
    out = tmp_path / "padded"
    meta = prepare_tokenizer(TokenizerConfig(kind="gpt2"), tmp_path / "unused", out, pad_to=50304)
    assert meta["vocab_size"] == 50304 and len(load_hf_tokenizer(out)) == 50304
    assert batch_encoder(out)([SAMPLE]) == batch_encoder(gpt2_dir)([SAMPLE])
    lengths, plain = token_byte_lengths(out), token_byte_lengths(gpt2_dir)
    assert lengths.shape == (50304,) and (lengths[:50257] == plain).all() and not lengths[50257:].any()
    with pytest.raises(ValueError, match="pad_to=50000 is smaller than the tokenizer's 50257"):
        prepare_tokenizer(TokenizerConfig(kind="gpt2"), tmp_path / "unused", tmp_path / "t", pad_to=50000)

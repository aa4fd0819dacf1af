"""Reference models' val_bpb (lfr/reference_bpb.py) on our validation text with their own tokenizer,
offline: local HF folders stand in for the released models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lfr.reference_bpb import block_pieces, reference_bpb


@pytest.fixture(scope="module")
def zero_gpt2(tmp_path_factory):
    """A 'released model' with GPT-2's tokenizer whose weights are all 0: every logit is 0, so every
    token costs exactly ln 50257 nats. Its context of 16 makes a block take rolling windows."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lfr.config import TokenizerConfig
    from lfr.tokenizer import load_hf_tokenizer, prepare_tokenizer

    out = tmp_path_factory.mktemp("ref")
    prepare_tokenizer(TokenizerConfig(kind="gpt2"), out / "unused", out / "tok")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=16, n_embd=8, n_layer=1, n_head=1))
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    model.save_pretrained(out / "model")
    load_hf_tokenizer(out / "tok").save_pretrained(out / "model")
    return out / "model"


def test_a_uniform_reference_costs_log2_vocab_bits_per_own_token(prepared, zero_gpt2, tmp_path):
    """By hand: nats = (GPT-2 tokens of each block's pieces, by tiktoken, + an EOS between pieces)
    x ln 50257, over the blocks' UTF-8 bytes, which are our target bytes (no character is cut at
    a block edge in this English text)."""
    from lfr.data import target_bytes
    from lfr.tokenizer import _gpt2_tiktoken
    from lfr.train import val_subset

    cfg, root = prepared
    info = reference_bpb(cfg, str(zero_gpt2), root / "data", root / "tokenizer", tmp_path / "bpb.json")
    ids = val_subset(len(target_bytes(root / "data", "val")), cfg.train.eval_blocks)
    pieces = block_pieces(root / "data", root / "tokenizer", ids)
    enc = _gpt2_tiktoken()
    tokens = sum(len(enc.encode_ordinary(p)) + 1 for block in pieces for p in block) - len(pieces)
    assert info["tokens"] == tokens and info["blocks"] == len(ids) == 32
    assert info["bytes"] == info["our_target_bytes"] == target_bytes(root / "data", "val")[ids].sum()
    assert info["val_bpb"] == pytest.approx(tokens * math.log2(50257) / info["bytes"], rel=1e-6)
    assert json.loads((tmp_path / "bpb.json").read_text()) == info


def test_our_own_model_as_a_reference_nearly_matches_its_run(trained, tmp_path):
    """The same model on the same blocks: only the first target of each block differs, predicted
    from EOS instead of the block's first input token, so 1 of T = 32 targets costs more: the
    reference's val_bpb is higher, by less than 2% (measured: 1.3%)."""
    cfg, root, out, summary = trained
    info = reference_bpb(cfg, str(out / "model"), root / "data", root / "tokenizer", tmp_path / "b.json")
    assert info["tokens"] == cfg.train.eval_blocks * cfg.data.block_size  # the same tokens again
    assert 0 < info["val_bpb"] - summary["val_bpb"] < 0.02 * summary["val_bpb"]


def test_pieces_are_the_documents_text_cut_at_eot(prepared):
    """Every validation block's pieces, rejoined with EOT, are its targets decoded."""
    from lfr.data import BlockStore
    from lfr.tokenizer import load_hf_tokenizer

    _, root = prepared
    store = BlockStore.open(root / "data", "val")
    ids = np.arange(store.num_blocks)
    tok = load_hf_tokenizer(root / "tokenizer")
    decoded = [tok.decode(y) for y in store.batch(ids)[1]]
    pieces = block_pieces(root / "data", root / "tokenizer", ids)
    same = ["<|endoftext|>".join(p) == d for p, d in zip(pieces, decoded, strict=True)]
    assert np.mean(same) > 0.9  # the others: a character cut at the block's edge (U+FFFD there)
    assert all(s or "\ufffd" in d for s, d in zip(same, decoded, strict=True))

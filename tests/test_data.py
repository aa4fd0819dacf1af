"""Token files and fixed blocks: layout, targets, block table, dtypes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lfr.config import DataConfig
from lfr.data import BlockStore, token_dtype
from lfr.tokenizer import batch_encoder


def test_blocks_tile_the_token_stream(prepared):
    cfg, root = prepared
    meta = json.loads((root / "data/meta.json").read_text())
    T = cfg.data.block_size
    store = BlockStore.open(root / "data", "train")
    assert store.num_blocks == meta["train_blocks"] == (meta["train_tokens"] - 1) // T
    x, y = store.batch(np.array([0, 1, store.num_blocks - 1]))
    assert x.shape == y.shape == (3, T) and x.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    np.testing.assert_array_equal(y[0, -1], x[1, 0])  # block i's last target = block i+1's first input
    assert x.max() < meta["vocab_size"]


def test_documents_are_separated_by_eot(prepared):
    _, root = prepared
    docs = pd.read_parquet(root / "corpus/train.parquet")
    tokens = np.memmap(root / "data/train.bin", dtype=np.uint16, mode="r")
    first = batch_encoder(root / "tokenizer")([docs.text.iloc[0]])[0]
    np.testing.assert_array_equal(tokens[: len(first)], first)
    assert tokens[len(first)] == 0  # EOT
    assert (tokens == 0).sum() == len(docs)


def test_block_table_carries_domain_and_document(prepared):
    cfg, root = prepared
    blocks = pd.read_parquet(root / "data/train_blocks.parquet")
    assert list(blocks.columns) == ["block_id", "offset", "domain", "doc_id"]
    assert (blocks.offset == blocks.block_id * cfg.data.block_size).all()
    docs = pd.read_parquet(root / "corpus/train.parquet").set_index("doc_id")
    assert set(blocks.domain) <= set(docs.domain)
    assert (docs.loc[blocks.doc_id, "domain"].to_numpy() == blocks.domain.to_numpy()).all()


@pytest.mark.parametrize(("setting", "vocab", "dtype"), [
    ("auto", 8192, np.uint16), ("auto", 50257, np.uint16), ("auto", 100_000, np.uint32),
    ("uint32", 512, np.uint32),
])
def test_token_dtype(setting, vocab, dtype):
    assert token_dtype(DataConfig(token_dtype=setting), vocab) == dtype

"""The input pipeline: one vectorised read per step, this rank's rows, prepared ahead."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfr.data import BlockStore
from lfr.loader import BatchLoader, StepBatch


def test_a_batch_is_each_blocks_window_of_t_plus_one_tokens(prepared):
    _, root = prepared
    store = BlockStore.open(root / "data", "train")
    T = store.block_size
    ids = np.array([store.num_blocks - 1, 0, 5, 5, 3])  # the last block, a repeat
    x, y = store.batch(ids)
    rows = np.stack([np.asarray(store.tokens[i * T : i * T + T + 1], dtype=np.int64) for i in ids])
    assert x.dtype == y.dtype == np.int64 and x.shape == (5, T)
    np.testing.assert_array_equal(x, rows[:, :-1])
    np.testing.assert_array_equal(y, rows[:, 1:])


def test_the_loader_hands_each_rank_its_rows_in_order(prepared):
    _, root = prepared
    store = BlockStore.open(root / "data", "train")
    rng = np.random.default_rng(0)
    loader = BatchLoader(store, rows_per_rank=4, rank=1, device=torch.device("cpu"))
    try:
        with pytest.raises(AssertionError, match="prefetch"):
            loader.get()
        steps = [rng.integers(0, store.num_blocks, 8) for _ in range(3)]
        weights = [None, rng.uniform(0, 2, 8).astype(np.float32), None]
        got = []
        for ids, w in zip(steps, weights, strict=True):
            loader.prefetch(ids, w)
            with pytest.raises(AssertionError, match="get"):
                loader.prefetch(ids, w)  # one step ahead at most
            got.append(loader.get())
    finally:
        loader.close()
    for ids, w, batch in zip(steps, weights, got, strict=True):
        want = StepBatch.load(store, ids[4:8], None if w is None else w[4:8])
        assert batch.ids is ids
        torch.testing.assert_close(batch.x, want.x, rtol=0, atol=0)
        torch.testing.assert_close(batch.y, want.y, rtol=0, atol=0)
        assert (batch.w is None) == (w is None)
        if w is not None:
            np.testing.assert_array_equal(batch.w.numpy(), w[4:8])

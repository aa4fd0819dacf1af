"""`infobatch` (lfr/sampling/infobatch.py): pruning rule, weights, anneal, equal tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import fixed_losses, random_tokens, run_train, tiny_config
from test_sampling import make


def test_infobatch_expected_gradient_weight_is_one():
    """Over 20 seeds x 200 epochs, E[included x weight] of each below-mean block is 1 (within
    0.08: 4000 draws of 0 or 2 have a std of 0.016 per block), and exactly n_low per epoch;
    above-mean blocks are in every epoch with weight 1."""
    N, loss = 101, fixed_losses(101)
    low = loss < loss.mean()
    total = np.zeros(N)
    for seed in range(20):
        s = make("infobatch", N, 10, seed=seed)
        s.score[:] = loss
        for epoch in range(200):
            order, weight, pruned = s.epoch_set(epoch, anneal=False)
            assert len(np.unique(order)) == len(order) == N - len(pruned)
            contrib = np.zeros(N)
            contrib[order] = weight
            assert np.all(contrib[~low] == 1.0)  # above-mean: always kept, weight 1
            assert set(pruned) <= set(np.flatnonzero(low))
            assert len(pruned) == low.sum() - round(0.5 * low.sum())
            assert contrib[low].sum() == pytest.approx(low.sum(), rel=1e-6)  # unbiased each epoch
            total += contrib
    mean = total / 4000
    assert np.abs(mean[low] - 1).max() < 0.08, np.abs(mean[low] - 1).max()
    assert np.all(mean[~low] == 1)


def test_infobatch_prunes_then_anneals_at_equal_tokens():
    N, B = 100, 10
    loss = fixed_losses(N)
    s = make("infobatch", N, B, epochs=8, delta=0.5)
    assert s.num_steps() == make("random", N, B, epochs=8).num_steps() == 80
    starts, weights, served = [], [], []
    for step in range(s.num_steps()):
        ids, w = s.batch_ids(step)
        weights.append(w)
        served.append(ids)
        starts.append(s.epoch_start)
        s.observe(step, ids, loss[ids] + 0.01 * step)
        if s.phase(step) == "anneal":
            assert np.all(w == 1.0), step  # no pruning and no reweighting in the tail
    assert s.phase(39) == "prune" and s.phase(40) == "anneal"
    prune_w = np.concatenate(weights[:40])
    assert prune_w.max() == pytest.approx(len(np.flatnonzero(loss < loss.mean())) /
                                          round(0.5 * np.sum(loss < loss.mean())))
    # epoch 0 is full (nothing scored yet); later pruned epochs are shorter, so more than the 4
    # epochs of random fit into the first 400 draws
    assert sorted(np.concatenate(served[:10]).tolist()) == list(range(N))
    assert len(set(starts[:40])) > 4
    # the anneal starts a fresh epoch at step 40; each is a full permutation of all blocks
    assert starts[40] == 400
    tail = np.concatenate(served[40:])
    for k in range(4):
        assert sorted(tail[k * N : (k + 1) * N].tolist()) == list(range(N))


def test_infobatch_never_prunes_unseen_blocks():
    s = make("infobatch", 50, 10)
    s.score[:25] = np.linspace(1, 3, 25)  # half scored
    for epoch in range(50):
        order, _w, pruned = s.epoch_set(epoch, anneal=False)
        assert pruned.size and pruned.max() < 25 and set(range(25, 50)) <= set(order)


@pytest.mark.slow
def test_infobatch_prunes_and_anneals_through_the_loop_at_equal_tokens(prepared, tmp_path):
    """1.2 epochs with delta 0.95: a full first epoch, pruned (weighted) draws, then the anneal;
    the run matches random's token count. (Exact resume is the sampler round-trip above plus the
    loop's own resume test in test_train.py.)"""
    _, root = prepared
    cfg = tiny_config(train={"epochs": 1.2, "eval_every": 1000},
                      method_options={"infobatch": {"delta": 0.95}})
    summary = run_train(cfg, "infobatch", root, tmp_path)
    assert summary["tokens"] == random_tokens(cfg, root) and np.isfinite(summary["val_loss"])
    metrics = pd.read_parquet(tmp_path / "metrics.parquet")
    assert set(metrics.phase) == {"prune", "anneal"}
    assert np.isfinite(metrics.train_loss.dropna()).all()

"""`selective-backprop` (lfr/sampling/selective_backprop.py): candidates kept with probability
p^beta, p their loss's percentile among the recent losses."""

from __future__ import annotations

import numpy as np
import pytest
from test_sampling import check_resume, make, step_ids

from lfr.config import ConfigError
from lfr.sampling import validated_options
from lfr.sampling.selective_backprop import percentiles


def brute_percentiles(losses, window):
    """p_i = share of the last `window` losses up to and including loss i that are <= it."""
    return np.array([np.mean(losses[max(0, i + 1 - window) : i + 1] <= x) for i, x in enumerate(losses)])


def test_percentile_counts_the_window_and_the_loss_itself():
    assert percentiles(np.array([1, 2, 3], np.float32), np.array([2.5, 0.5, 3], np.float32), 3).tolist() == [
        2 / 3, 1 / 3, 1.0]  # windows [2, 3, 2.5], [3, 2.5, 0.5], [2.5, 0.5, 3]
    losses = np.random.default_rng(0).integers(0, 5, 300).astype(np.float32)  # many ties
    s = make("selective-backprop", 50, 5, history=40)
    p = np.concatenate([s.add_to_history(losses[i : i + 7]) for i in range(0, 300, 7)])
    np.testing.assert_array_equal(p, brute_percentiles(losses, 40))
    np.testing.assert_array_equal(s.history, losses[-40:])
    s = make("selective-backprop", 50, 5, history=10**6)  # compared 4 at a time (memory bound)
    np.testing.assert_array_equal(s.add_to_history(losses), brute_percentiles(losses, 10**6))


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_keep_rate_is_p_to_the_beta(beta):
    """20,000 iid losses in chunks of 50: the keep rate overall and in each fifth of p is the
    mean of p^beta within 4 standard errors (beta ignored, or p inverted, is off by >= 0.09)."""
    s = make("selective-backprop", 10**6, 50, history=500, beta=beta)
    losses = np.random.default_rng(1).normal(3, 1, 20_000).astype(np.float32)
    ids = np.arange(len(losses))  # distinct labels, so the queue tells which were kept
    for i in range(0, len(ids), 50):
        s.observe_candidates(0, ids[i : i + 50], losses[i : i + 50])
    kept = np.isin(ids, s.queue)
    assert np.all(np.diff(s.queue) > 0)  # in arrival order
    target = brute_percentiles(losses, 500) ** beta
    assert abs(kept.mean() - target.mean()) < 4 * 0.5 / np.sqrt(len(ids))
    assert target.mean() == pytest.approx(1 / (beta + 1), abs=0.01)
    assert s.kept_fraction() == kept.mean() and s.scored == len(ids)
    p = brute_percentiles(losses, 500)
    for lo in np.arange(0, 1, 0.2):
        bin_ = (p > lo) & (p <= lo + 0.2)
        assert abs(kept[bin_].mean() - target[bin_].mean()) < 4 * 0.5 / np.sqrt(bin_.sum()), lo


def test_steps_train_the_kept_candidates_in_order():
    """Chunks of a batch until the queue holds one; each step pops the queue's head, the rest
    waits; the stream is uniform passes over all blocks."""
    s = make("selective-backprop", 103, 8, epochs=4)
    loss = lambda ids, step: (2 + np.sin(ids * 1.3 + 0.1 * step)).astype(np.float32)  # noqa: E731
    stream, trained = [], []
    for step in range(s.num_steps()):
        before, kept_before = len(s.queue), s.kept
        (ids, _), scored = step_ids(s, step, loss)
        assert all(len(c) == 8 for c in scored)
        assert (before >= 8) == (not scored)  # leftovers enough: no scoring
        assert len(s.queue) == before + s.kept - kept_before - 8 < 8  # scored until a batch, no more
        stream += scored
        trained.append(ids)
    stream, trained = np.concatenate(stream), np.concatenate(trained)
    for e in range(len(stream) // 103):
        assert sorted(stream[e * 103 : (e + 1) * 103].tolist()) == list(range(103))
    kept = np.concatenate([trained, s.queue])
    assert len(kept) == s.kept
    it = iter(stream.tolist())  # the kept ids, trained or still queued, are a subsequence of the stream
    assert all(k in it for k in kept.tolist())
    assert 0.4 < s.kept_fraction() < 0.6  # ~1/(beta + 1)


def test_selective_backprop_resumes_exactly(tmp_path):
    loss = lambda ids, step: (2 + np.sin(ids * 1.3 + 0.1 * step)).astype(np.float32)  # noqa: E731
    new = lambda: make("selective-backprop", 97, 8, epochs=5, history=100)  # noqa: E731
    for cut in (1, 29, 57):
        check_resume(new, loss, cut, tmp_path / str(cut))


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match="beta"):
        validated_options("selective-backprop", {"beta": -1})
    with pytest.raises(ConfigError, match="history"):
        validated_options("selective-backprop", {"history": 0})

"""`loss-prop` (lfr/sampling/loss_prop.py): loss-proportional draws and importance weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sampling import make


def formula(loss: np.ndarray, alpha: float, eps: float = 0.01) -> np.ndarray:
    """p over all blocks as the module docstring defines it, in O(N): the implementation before
    the segment trees."""
    seen = ~np.isnan(loss)
    prio = np.ones(len(loss))
    if seen.any():
        prio[seen] = (loss[seen].astype(np.float64) + eps) ** alpha
        prio[~seen] = prio[seen].max()
    return prio / prio.sum()


def test_loss_prop_frequencies_and_weights_follow_the_formula():
    from scipy import stats

    N, B = 20, 100
    loss = np.linspace(1, 5, N).astype(np.float32)
    s = make("loss-prop", N, B, epochs=10_000, alpha=1.0, beta0=0.4, eps=0.01)
    s.load_state_dict({"loss": loss})
    p = (loss.astype(np.float64) + 0.01) / (loss.astype(np.float64) + 0.01).sum()
    np.testing.assert_allclose(s.probabilities(), p, rtol=1e-6)
    counts = np.zeros(N)
    for step in range(2000):  # 200k draws; losses held fixed (no observe)
        ids, w = s.batch_ids(step)
        counts += np.bincount(ids, minlength=N)
        beta = 0.4 + 0.6 * step / (s.num_steps() - 1)
        np.testing.assert_allclose(w, (N * p[ids]) ** -beta / (N * p.min()) ** -beta, rtol=1e-5)
    rel = np.abs(counts / counts.sum() - p) / p
    assert rel.max() < 0.05, rel.max()
    assert stats.chisquare(counts, counts.sum() * p).pvalue > 1e-3
    assert s.beta(0) == pytest.approx(0.4) and s.beta(s.num_steps() - 1) == pytest.approx(1.0)
    assert s.num_steps() == make("random", N, B, epochs=10_000).num_steps()


def test_loss_prop_unseen_blocks_get_the_largest_priority():
    s = make("loss-prop", 10, 2, alpha=2.0)
    np.testing.assert_allclose(s.probabilities(), 0.1)  # nothing seen: uniform
    s.observe(0, np.arange(4), np.array([1, 2, 3, 4], dtype=np.float32))
    prio = (np.array([1, 2, 3, 4]) + 0.01) ** 2
    p = s.probabilities()
    np.testing.assert_allclose(p[:4] / p[4:].max(), prio / prio.max())
    assert np.all(p[4:] == p[3])
    s.observe(1, np.array([3]), np.array([0.5], dtype=np.float32))  # the largest falls: now block 2's
    p = s.probabilities()
    assert np.all(p[4:] == p[2]) and p[3] < p[0]
    np.testing.assert_allclose(p, formula(s.loss, 2.0), rtol=1e-12)


losses = st.lists(st.one_of(st.none(), st.floats(0, 12, width=32)), min_size=1, max_size=70)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(loss=losses, alpha=st.sampled_from([0.0, 0.5, 1.0, 3.0]), step=st.integers(0, 9))
def test_loss_prop_draws_invert_the_exact_distribution(loss, alpha, step):
    """K positions spread evenly over [0, 1) land on each block K p_i times, +-2: a draw is the
    formula's distribution exactly, for any N (any tree shape) and any blocks seen or unseen; the
    weights are (p_i / min p)^-beta."""
    loss = np.array([np.nan if x is None else x for x in loss], dtype=np.float32)
    N, K = len(loss), 100_000
    s = make("loss-prop", N, 4, epochs=10, alpha=alpha)
    s.load_state_dict({"loss": loss})
    p = formula(loss, alpha)
    np.testing.assert_allclose(s.probabilities(), p, rtol=1e-12)
    counts = np.bincount(s.draw((np.arange(K) + 0.5) / K), minlength=N)
    assert len(counts) == N and np.abs(counts - K * p).max() <= 2
    np.testing.assert_allclose(s.weights(np.arange(N), step), (p / p.min()) ** -s.beta(step), rtol=1e-6)


def test_loss_prop_trees_follow_observe_exactly():
    """Over many steps (ids repeated within a step, NaN losses that make a block unseen again) the
    weights of every step follow the formula, and the trees equal those a resume rebuilds from
    the losses, bit for bit."""
    N, B = 53, 16
    s = make("loss-prop", N, B, epochs=100, alpha=1.5)
    rng = np.random.default_rng(0)
    for step in range(300):
        ids, w = s.batch_ids(step)
        p = formula(s.loss, 1.5)
        np.testing.assert_allclose(w, (p[ids] / p.min()) ** -s.beta(step), rtol=1e-6)
        losses = rng.uniform(0, 8, B).astype(np.float32)
        losses[(rng.random(B) < 0.02) | (step == 299)] = np.nan  # the last step: unseen blocks left
        s.observe(step, ids, losses)
    assert 0 < np.isnan(s.loss).sum() < N
    resumed = make("loss-prop", N, B, epochs=100, alpha=1.5)
    resumed.load_state_dict(s.state_dict())
    for tree in ("prio_sum", "unseen", "loss_min", "loss_max"):
        np.testing.assert_array_equal(getattr(resumed, tree), getattr(s, tree), err_msg=tree)
    np.testing.assert_allclose(s.probabilities(), formula(s.loss, 1.5), rtol=1e-12)
    np.testing.assert_array_equal(resumed.batch_ids(300).ids, s.batch_ids(300).ids)

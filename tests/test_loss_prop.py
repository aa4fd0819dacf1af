"""`loss-prop` (lfr/sampling/loss_prop.py): loss-proportional draws and importance weights."""

from __future__ import annotations

import numpy as np
import pytest
from test_sampling import make


def test_loss_prop_frequencies_and_weights_follow_the_formula():
    from scipy import stats

    N, B = 20, 100
    loss = np.linspace(1, 5, N).astype(np.float32)
    s = make("loss-prop", N, B, epochs=10_000, alpha=1.0, beta0=0.4, eps=0.01)
    s.loss[:] = loss
    p = (loss.astype(np.float64) + 0.01) / (loss.astype(np.float64) + 0.01).sum()
    np.testing.assert_allclose(s.probabilities(), p, rtol=1e-6)
    counts = np.zeros(N)
    for step in range(2000):  # 200k draws; losses held fixed (no observe)
        ids = s.batch_ids(step)
        counts += np.bincount(ids, minlength=N)
        w = s.loss_weights(ids)
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
    s.loss[:4] = [1, 2, 3, 4]
    prio = (np.array([1, 2, 3, 4]) + 0.01) ** 2
    p = s.probabilities()
    np.testing.assert_allclose(p[:4] / p[4:].max(), prio / prio.max())
    assert np.all(p[4:] == p[3])

"""`rho-loss` (lfr/sampling/rho_loss.py): the candidates with the largest reducible loss."""

from __future__ import annotations

import numpy as np
import pytest
from test_sampling import check_resume, make, step_ids

from lfr.config import ConfigError
from lfr.sampling import BlockScores, validated_options

# 12 blocks, 0 and 1 in the reference shard; the pool 2..11 with irreducible and training losses
IRREDUCIBLE = [3.0, 1.0, 2.0, 5.0, 0.5, 2.0, 4.0, 1.0, 3.0, 2.5]
TRAIN_LOSS = [4.0, 4.0, 2.5, 5.5, 1.0, 4.5, 4.0, 2.0, 6.0, 3.0]
# reducible:  1.0  3.0  0.5  0.5  0.5  2.5  0.0  1.0  3.0  0.5  (ids 2..11)


def hand_scores():
    score = np.array([np.nan, np.nan, *IRREDUCIBLE], dtype=np.float32)
    reference = np.arange(12) < 2
    return BlockScores(score, reference, reference_train_tokens=640, scoring_tokens=10 * 16,
                       reference_flops_per_token=1234.0)


def train_loss(ids, step):
    return np.array([np.nan, np.nan, *TRAIN_LOSS], dtype=np.float32)[ids]


@pytest.mark.parametrize(("batch", "pool_factor", "expected"), [
    (2, 5, [3, 10]),           # the two 3.0s, the lower id first
    (5, 2, [3, 10, 7, 2, 9]),  # then 2.5, then the 1.0s by id; not the 0.5s (4, 5, 6, 11)
])
def test_rho_loss_trains_on_the_largest_reducible_loss(batch, pool_factor, expected):
    """pool_factor x batch = 10 candidates: each step scores the whole pool (one pass)."""
    s = make("rho-loss", 12, batch, epochs=3, block_scores=hand_scores(), pool_factor=pool_factor)
    for step in range(3):
        (ids, _), scored = step_ids(s, step, train_loss)
        assert len(scored) == 1 and sorted(scored[0].tolist()) == list(range(2, 12))  # never the shard
        assert ids.tolist() == expected
        assert s.candidate_ids(step) is None  # scored once per step
    assert s.num_steps() == make("random", 12, batch, epochs=3).num_steps()  # equal tokens
    assert s.kept_fraction() == 10 / 12  # the pool's share of the blocks
    from lfr.train import reference_charges

    assert reference_charges(s.run.block_scores) == {"reference_train_tokens": 640,
                                                     "reference_scoring_tokens": 160,
                                                     "reference_flops_per_token": 1234.0}


def test_rho_loss_candidates_are_uniform_passes_over_the_pool():
    s = make("rho-loss", 103, 4, epochs=3, pool_factor=3)
    pool = np.flatnonzero(np.arange(103) % 10 != 0)  # test_sampling's shard: every 10th block
    loss = lambda ids, step: np.sin(ids * 0.7 + step).astype(np.float32)  # noqa: E731
    cands = np.concatenate([step_ids(s, step, loss)[1][0] for step in range(s.num_steps())])
    assert len(cands) == 12 * s.num_steps()  # pool_factor x batch per step
    for e in range(len(cands) // len(pool)):  # each pass a permutation of the pool
        assert sorted(cands[e * len(pool) : (e + 1) * len(pool)].tolist()) == pool.tolist()
    assert not np.array_equal(cands[: len(pool)], cands[len(pool) : 2 * len(pool)])  # fresh orders


def test_rho_loss_resumes_exactly(tmp_path):
    loss = lambda ids, step: (2 + np.sin(ids * 1.3 + 0.1 * step)).astype(np.float32)  # noqa: E731
    new = lambda: make("rho-loss", 97, 8, epochs=5, pool_factor=4)  # noqa: E731
    ref = check_resume(new, loss, 23, tmp_path)
    assert len({tuple(ids) for ids in ref}) > 50  # the steps differ


def test_rho_loss_needs_scores_and_a_valid_pool_factor():
    from lfr.sampling import RunFacts, build_sampler

    with pytest.raises(ValueError, match="rho-loss needs reference-model scores"):
        build_sampler("rho-loss", RunFacts(20, 2, 16, 0, 1.0), {})
    with pytest.raises(ConfigError, match="pool_factor"):
        validated_options("rho-loss", {"pool_factor": 0})
    s = make("rho-loss", 12, 2, block_scores=hand_scores())
    with pytest.raises(RuntimeError, match="before its candidates"):
        s.batch_ids(0)

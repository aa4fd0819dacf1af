"""The sampler contract, checked for every registered method, and the registry's errors."""

from __future__ import annotations

import numpy as np
import pytest

from lfr.sampling import SAMPLERS, BlockScores, RunFacts, build_sampler


def synthetic_scores(num_blocks, seed=0):
    """Reference scores for methods that need them: seeded losses, every 10th block the shard."""
    score = np.random.default_rng([seed, 99]).uniform(2, 6, num_blocks).astype(np.float32)
    reference = np.arange(num_blocks) % 10 == 0
    score[reference] = np.nan
    return BlockScores(score, reference, reference_train_tokens=1000, scoring_tokens=3000)


def make(name, num_blocks, batch_blocks, seed=0, epochs=1.0, block_scores=None, **options):
    if block_scores is None and SAMPLERS.get(name) and SAMPLERS[name].needs_block_scores:
        block_scores = synthetic_scores(num_blocks)
    facts = RunFacts(num_blocks, batch_blocks, 16, seed, epochs, block_scores)
    return build_sampler(name, facts, options)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract(name):
    a, b = make(name, 103, 8, seed=3, epochs=2), make(name, 103, 8, seed=3, epochs=2)
    steps = a.num_steps()
    assert steps > 0
    for step in range(steps):
        ids = a.batch_ids(step)
        assert ids.dtype == np.int64 and len(ids) == 8
        assert ids.min() >= 0 and ids.max() < 103
        np.testing.assert_array_equal(ids, b.batch_ids(step))
        losses = (ids % 7).astype(np.float32)
        a.observe(step, ids, losses)
        b.observe(step, ids, losses)
        if step == steps // 2:  # a state round-trip mid-run changes nothing
            c = make(name, 103, 8, seed=3, epochs=2)
            c.load_state_dict(a.state_dict())
            a = c


def test_unknown_method_and_option_fail_clearly():
    with pytest.raises(ValueError, match="choose from"):
        make("nope", 10, 2)
    with pytest.raises(ValueError, match="epochz"):
        make("random", 10, 2, epochz=1)

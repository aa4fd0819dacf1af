"""The sampler contract, checked for every registered method, and the registry's errors."""

from __future__ import annotations

import numpy as np
import pytest

from lfr.sampling import SAMPLERS, BlockScores, RunFacts, Sampler, build_sampler


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


def step_ids(sampler, step, loss_of):
    """The loop's calls for step `step`'s batch: score the candidates the method proposes with
    loss_of(ids, step) (float32) until it has a batch, then batch_ids; the scored candidates
    come back in the second value."""
    scored = []
    while (c := sampler.candidate_ids(step)) is not None:
        assert c.dtype == np.int64 and len(c) > 0
        sampler.observe_candidates(step, c, loss_of(c, step).astype(np.float32))
        scored.append(c)
    return sampler.batch_ids(step), scored


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract(name):
    a, b = make(name, 103, 8, seed=3, epochs=2), make(name, 103, 8, seed=3, epochs=2)
    steps = a.num_steps()
    assert steps > 0 and a.observes in ("none", "now", "late")
    scorer = type(a).candidate_ids is not Sampler.candidate_ids  # proposes candidates
    candidate_loss = lambda ids, step: 2 + np.cos(ids + 0.3 * step)  # noqa: E731
    scored_ids: set[int] = set()
    for step in range(steps):
        (ids, w), scored = step_ids(a, step, candidate_loss)
        (ids_b, w_b), scored_b = step_ids(b, step, candidate_loss)
        assert ids.dtype == np.int64 and len(ids) == 8
        assert (w is None and w_b is None) or (w.dtype == np.float32 and np.array_equal(w, w_b)
                                               and len(w) == 8 and (w > 0).all())
        assert ids.min() >= 0 and ids.max() < 103
        np.testing.assert_array_equal(ids, ids_b)
        assert len(scored) == len(scored_b) and all(map(np.array_equal, scored, scored_b))
        scored_ids.update(np.concatenate(scored or [np.zeros(0, np.int64)]).tolist())
        if scorer:  # it trains on blocks scored for this step or an earlier one
            assert set(ids.tolist()) <= scored_ids
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


def check_resume(new, loss_of, cut, ckpt_dir):
    """Sampler new() through its whole plan, and again cut after step cut - 1 with its state
    through a checkpoint round trip (lfr.checkpoint, as the loop: after the update, before the
    next step's candidates) into a fresh new(): every later step's ids and the final state's
    digest agree. Returns the uninterrupted run's ids per step."""
    from lfr.checkpoint import load_latest, save
    from lfr.train import state_digest

    def run(sampler, steps):
        out = []
        for step in steps:
            (ids, _), _ = step_ids(sampler, step, loss_of)
            if sampler.observes != "none":
                sampler.observe(step, ids, loss_of(ids, step).astype(np.float32))
            out.append(ids)
        return out

    full = new()
    ref = run(full, range(full.num_steps()))
    a = new()
    run(a, range(cut))
    save(ckpt_dir, cut, {"sampler": a.state_dict()})
    b = new()
    b.load_state_dict(load_latest(ckpt_dir)["sampler"])
    for step, ids in zip(range(cut, b.num_steps()), run(b, range(cut, b.num_steps())), strict=True):
        np.testing.assert_array_equal(ids, ref[step], err_msg=f"cut {cut}, step {step}")
    assert state_digest(b.state_dict()) == state_digest(full.state_dict())
    return ref

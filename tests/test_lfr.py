"""LFR: the schedule, the selection rule, the controls and resumability, on synthetic losses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_sampling import make

from lfr.config import ConfigError
from lfr.grid import validate_config
from lfr.sampling import RunFacts, build_sampler


def drive(sampler, loss_of, until=None):
    """Run the sampler's whole plan, reporting loss_of(ids, step); return ids per step."""
    served = []
    for step in range(sampler.num_steps() if until is None else until):
        ids = sampler.batch_ids(step).ids
        sampler.observe(step, ids, loss_of(ids, step).astype(np.float32))
        served.append(ids)
    return served


def phase_ids(sampler, served, name):
    return np.concatenate([ids for step, ids in enumerate(served) if sampler.phase(step) == name])


def test_paper_v1_plan_and_step_count():
    s = make("lfr", 100, 10, epochs=4, reps=5)
    assert [(p.kind, p.active_size, p.num_steps) for p in s.plan] == [
        ("learn", 100, 10), ("focus", 50, 5), ("review", 100, 10)] + [("focus", 30, 3)] * 5
    assert s.num_steps() == 40  # 4.0 epochs of all blocks, as random with epochs=4
    served = drive(s, lambda ids, step: ids * 1.0)
    assert len(served) == 40 and sum(len(i) for i in served) == 400


def test_a_budget_scales_every_phase():
    """Budget 2 doubles every phase (2 x random's 4 epochs). Budget 0.5 at scale 0.5 would plan
    too few draws (its learn phase scores half of the blocks, and focus keeps a share of those),
    so the scale is solved for: the phases keep their order and drops and fill random's steps."""
    double = build_sampler("lfr", RunFacts(100, 10, 16, 0, 4.0, budget=2.0), {"reps": 5})
    assert [(p.kind, p.active_size, p.num_steps) for p in double.plan] == [
        ("learn", 100, 20), ("focus", 50, 10), ("review", 100, 20)] + [("focus", 30, 6)] * 5
    assert double.num_steps() == 80 == build_sampler(
        "random", RunFacts(100, 10, 16, 0, 4.0, budget=2.0), {}).num_steps()
    half = build_sampler("lfr", RunFacts(1000, 10, 16, 0, 4.0, budget=0.5), {"reps": 5})
    assert [p.kind for p in half.plan] == [p.kind for p in double.plan]
    assert half.num_steps() == 200 == make("random", 1000, 10, epochs=2).num_steps()
    learn, focus, review = half.plan[:3]
    assert learn.num_steps == review.num_steps > 50 and focus.active_size < 500  # scale > 0.5
    served = drive(half, lambda ids, step: ids * 1.0)
    scored = len(np.unique(phase_ids(half, served, "0:learn")))
    assert scored == learn.num_steps * 10 and focus.active_size == scored // 2


def test_the_last_phase_absorbs_the_rounding():
    """The shape of an earlier demo: 1336 blocks, 16 a step. Every phase but the last rounds up;
    the run is random's floor(4 x 1336 / 16) = 334 steps, and the last phase takes the rest."""
    s = make("lfr", 1336, 16, epochs=4, reps=5)
    # keep 1336 - round(0.5 * 1336) = 668 and 1336 - round(0.7 * 1336) = 401 blocks
    assert [p.active_size for p in s.plan] == [1336, 668, 1336] + [401] * 5
    # ceil(1336/16) = 84, ceil(668/16) = 42, ceil(401/16) = 26: 84 + 42 + 84 + 4 * 26 = 314 steps
    assert [p.num_steps for p in s.plan] == [84, 42, 84, 26, 26, 26, 26, 20]
    assert [p.start_step for p in s.plan] == [0, 84, 126, 210, 236, 262, 288, 314]
    assert s.num_steps() == 334 == make("random", 1336, 16, epochs=4).num_steps()
    served = drive(s, lambda ids, step: ids * 1.0)
    assert len(served) == 334 and set(phase_ids(s, served, "2:review")) == set(range(1336))


@pytest.mark.parametrize(("num_blocks", "batch_blocks", "lfr_plan"), [
    # 128 blocks, 8 a step: keeps 64 and 128 - round(89.6) = 38: 128 + 64 + 128 + 5 * 38 = 510
    # draws, within a step of random's 4 * 128 = 512, so paper-v1 keeps its lengths and the last
    # phase ends at random's 64th step
    (128, 8, [16, 8, 16, 5, 5, 5, 5, 4]),
    # the demo: 1728 blocks, 16 a step, 6910 planned draws; random's 432 steps
    (1728, 16, [108, 54, 108, 33, 33, 33, 33, 30]),
])
def test_paper_v1_ends_at_randoms_step(num_blocks, batch_blocks, lfr_plan):
    s = make("lfr", num_blocks, batch_blocks, epochs=4, reps=5)
    assert [p.num_steps for p in s.plan] == lfr_plan
    assert s.num_steps() == sum(lfr_plan) == make("random", num_blocks, batch_blocks, epochs=4).num_steps()


def test_a_schedule_that_cannot_fit_randoms_steps_is_refused():
    """Each phase trains at least one step: random's 6 steps of 60 of 100 blocks cannot hold
    paper-v1's 8 phases. At 30 a step (13 steps) the phases shrink until they fit."""
    with pytest.raises(ValueError, match="8 phases need more than the 6 steps of 60 blocks"):
        make("lfr", 100, 60, epochs=4, reps=5)
    assert make("lfr", 100, 30, epochs=4, reps=5).num_steps() == 13


def test_extreme_phase_lengths_plan_at_once():
    """Phases far shorter than a block, or far longer than the run, are scaled like any other
    (planning once hung on both: a scale that never grew, and every draw of a huge phase listed)."""
    tiny = [{"kind": "learn", "tokens": 1}, {"kind": "focus", "drop": 0.5, "tokens": 1}]
    s = make("lfr", 200, 3, epochs=1, schedule=tiny)
    assert s.num_steps() == make("random", 200, 3, epochs=1).num_steps() == 66
    huge = make("lfr", 200, 3, epochs=1, schedule=[{"kind": "learn", "epochs": 1e6}])
    assert [p.num_steps for p in huge.plan] == [66]
    with pytest.raises(ValueError, match="keeps no block"):  # 1 block, half of it dropped
        make("lfr", 1, 1, epochs=4, schedule=[{"kind": "learn", "epochs": 1},
                                               {"kind": "focus", "drop": 0.6, "epochs": 1}])


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(st.integers(2, 3000), st.integers(1, 64), st.integers(1, 5), st.sampled_from([1, 2, 4]),
       st.sampled_from([0.25, 0.5, 1.0, 2.0]), st.sampled_from(["lfr", "lfr-random-drop"]),
       st.sampled_from(["active", "full"]))
def test_every_schedule_trains_randoms_steps(num_blocks, batch_blocks, reps, epochs, budget, name,
                                             epoch_unit):
    """Equal budget is equal tokens: whatever train.epochs, reps and the budget, LFR and its
    controls train exactly random's steps, or refuse a run too short for their phases."""
    facts = RunFacts(num_blocks, batch_blocks, 16, 0, float(epochs), budget=budget)
    steps = build_sampler("random", facts, {}).num_steps()
    assume(steps >= 1)  # random itself has nothing to train (the loop refuses it)
    try:
        s = build_sampler(name, facts, {"reps": reps, "epoch_unit": epoch_unit})
    except ValueError as err:  # too short for a step per phase, or for a focus to keep a block
        assert f"more than the {steps} steps" in str(err) or "keeps no block" in str(err)
        assert steps < 8 or num_blocks * budget * epochs < 40
        return
    assert s.num_steps() == steps
    assert all(p.num_steps >= 1 for p in s.plan)
    assert [p.start_step for p in s.plan] == [0, *np.cumsum([p.num_steps for p in s.plan[:-1]])]


@pytest.mark.parametrize("epochs", [1, 2, 4])
@pytest.mark.parametrize("reps", [1, 5])
def test_the_schedule_keeps_its_shares_of_randoms_run(epochs, reps):
    """Scaled to random's run, each phase keeps about its share of the schedule: the last phase
    absorbs only rounding, not the difference between the schedule's length and random's."""
    s = make("lfr", 2000, 8, epochs=epochs, reps=reps)
    natural = make("lfr", 2000, 8, epochs=2.5 + 0.3 * reps, reps=reps)  # paper-v1's own length
    assert s.num_steps() == make("random", 2000, 8, epochs=epochs).num_steps()
    share = [p.num_steps / s.num_steps() for p in s.plan]
    if epochs >= natural.num_steps() * 8 / 2000:  # scored in full: the shares are the schedule's
        assert share == pytest.approx([p.num_steps / natural.num_steps() for p in natural.plan], abs=0.01)
    assert share[-1] < 2 * share[-2] + 0.01  # the last phase is a repeat of the one before


def test_focus_keeps_exactly_the_hardest_fraction():
    s = make("lfr", 100, 10, epochs=3.1, reps=2)
    served = drive(s, lambda ids, step: (ids % 10) + ids / 1000)  # hardest: ids ending in 9, 8, ...
    focus = set(phase_ids(s, served, "1:focus"))
    expected = set(np.argsort(-((np.arange(100) % 10) + np.arange(100) / 1000))[:50])
    assert focus == expected
    assert set(phase_ids(s, served, "2:review")) == set(range(100))  # review restores all blocks
    assert set(phase_ids(s, served, "3:focus")) == set(np.arange(100)[np.arange(100) % 10 >= 7])


def test_ties_are_broken_by_block_id():
    s = make("lfr", 20, 5, epochs=1.5, schedule=[{"kind": "learn", "epochs": 1},
                                                 {"kind": "focus", "drop": 0.5, "epochs": 1}])
    served = drive(s, lambda ids, step: np.ones(len(ids)))
    assert set(phase_ids(s, served, "1:focus")) == set(range(10, 20))


@pytest.mark.parametrize(("name", "kept"), [("lfr", range(50, 100)), ("lfr-reverse", range(50))])
def test_drop_rules(name, kept):
    s = make(name, 100, 10, epochs=1.5, schedule=[{"kind": "learn", "epochs": 1},
                                      {"kind": "focus", "drop": 0.5, "epochs": 1}])
    served = drive(s, lambda ids, step: ids * 1.0)
    assert set(phase_ids(s, served, "1:focus")) == set(kept)


def test_random_drop_control_drops_the_same_number_at_random():
    sched = [{"kind": "learn", "epochs": 1}, {"kind": "focus", "drop": 0.5, "epochs": 1}]
    kept = []
    for seed in (0, 1):
        s = make("lfr-random-drop", 100, 10, seed=seed, epochs=1.5, schedule=sched)
        kept.append(set(phase_ids(s, drive(s, lambda ids, step: ids * 1.0), "1:focus")))
    assert len(kept[0]) == len(kept[1]) == 50
    assert kept[0] != kept[1] and kept[0] != set(range(50, 100))
    assert 10 < len(kept[0] & set(range(50, 100))) < 40  # not loss-driven


def test_scores_mean_vs_last_and_rescore():
    sched = [{"kind": "learn", "epochs": 2}, {"kind": "focus", "drop": 0.5, "epochs": 1, "repeats": 2}]
    # epoch 0: loss = id; epoch 1: loss = 100 - id. mean is flat (ties -> by id), last is reversed.
    loss = lambda ids, step: np.where(step < 10, ids, 100 - ids) * 1.0  # noqa: E731
    for score, kept in (("mean", range(50, 100)), ("last", range(50))):
        s = make("lfr", 100, 10, epochs=3, schedule=sched, score=score)
        assert set(phase_ids(s, drive(s, loss), "1:focus")) == set(kept)
    s = make("lfr", 100, 10, epochs=3, schedule=sched, score="last", rescore=True)
    served = drive(s, lambda ids, step: np.where(step < 20, 100 - ids, -ids) * 1.0)
    assert set(phase_ids(s, served, "1:focus")) == set(range(50))
    # the second repeat re-selects: blocks 0-49 were re-scored during focus (now -id <= 0, easy),
    # blocks 50-99 keep their learn scores (100 - id >= 1), so the hard half is now 50-99
    assert set(phase_ids(s, served, "2:focus")) == set(range(50, 100))


def test_epoch_unit_and_token_lengths():
    s = make("lfr", 100, 10, epochs=2, epoch_unit="full", schedule=[
        {"kind": "learn", "epochs": 1}, {"kind": "focus", "drop": 0.5, "epochs": 1}])
    assert [p.num_steps for p in s.plan] == [10, 10]  # a full-size epoch over half the blocks
    s = make("lfr", 100, 10, epochs=0.6, schedule=[{"kind": "learn", "tokens": 16 * 35},
                                       {"kind": "focus", "drop": 0.5, "epochs": 1}])
    assert [p.active_size for p in s.plan] == [100, 20]  # 40 blocks scored (4 steps), keep half


def test_resume_mid_phase_gives_the_same_order():
    loss = lambda ids, step: np.sin(ids * 1.0 + step)  # noqa: E731
    full = drive(make("lfr", 100, 10, epochs=3.1, reps=2), loss)
    for cut in (3, 12, 17, 26):
        a = make("lfr", 100, 10, epochs=3.1, reps=2)
        served = drive(a, loss, until=cut)
        b = make("lfr", 100, 10, epochs=3.1, reps=2)
        b.load_state_dict(a.state_dict())
        for step in range(cut, b.num_steps()):
            ids = b.batch_ids(step).ids
            b.observe(step, ids, loss(ids, step).astype(np.float32))
            served.append(ids)
        assert all(np.array_equal(x, y) for x, y in zip(full, served, strict=True)), cut


def test_phase_records_are_emitted_at_each_boundary():
    s = make("lfr", 100, 10, epochs=2.8, reps=1)
    tables = {}
    for step in range(s.num_steps()):
        ids = s.batch_ids(step).ids
        s.observe(step, ids, ids * 1.0)
        tables |= s.records()
    assert list(tables) == ["phase00_learn", "phase01_focus", "phase02_review", "phase03_focus", "final"]
    focus = tables["phase01_focus"]
    assert list(focus.columns) == ["block_id", "phase", "visits", "score", "last_loss", "last_step", "kept"]
    assert focus.kept.sum() == 50 and (focus.visits == 1).all()
    assert focus[focus.kept].score.min() > focus[~focus.kept].score.max()


def test_schedule_written_only_in_yaml_validates():
    cfg = validate_config({"methods": ["random", "lfr"], "method_options": {"lfr": {"schedule": [
        {"kind": "learn", "epochs": 1}, {"kind": "focus", "drop": 0.3, "epochs": 1},
        {"kind": "review", "epochs": 1}, {"kind": "focus", "drop": 0.5, "epochs": 1, "repeats": 2}]}}})
    s = make("lfr", 100, 10, epochs=4.2, **cfg.method_options["lfr"])
    assert [p.active_size for p in s.plan] == [100, 70, 100, 50, 50]


@pytest.mark.parametrize(("options", "message"), [
    ({"schedule": []}, "schedule is empty"),
    ({"schedule": [{"kind": "focus", "drop": 0.5, "epochs": 1}]}, "before any learn"),
    ({"schedule": [{"kind": "learn", "epochs": 1}, {"kind": "focus", "drop": 1.0, "epochs": 1}]},
     "less than 1"),
    ({"schedule": [{"kind": "learn"}]}, "exactly one of"),
    ({"schedule": [{"kind": "review", "drop": 0.2, "epochs": 1}]}, "focus phases only"),
])
def test_bad_schedules_fail_in_config_validation(options, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({"methods": ["lfr"], "method_options": {"lfr": options}})


def test_focus_rounds_half_of_a_block_up_in_what_it_drops():
    """drop x n dropped blocks, halves rounded up (not Python's round-half-even): 5 at 0.5 drop 3."""
    from lfr.sampling.lfr import num_kept

    assert [num_kept(5, 0.5), num_kept(3, 0.5), num_kept(4, 0.5), num_kept(10, 0.25)] == [2, 1, 2, 7]
    assert num_kept(7, 0.5) == 3 and num_kept(1, 0.5) == 0

"""`leitner` (lfr/sampling/leitner.py): Leitner boxes, due reviews, new and stale blocks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sampling import make

from lfr.sampling import RunFacts
from lfr.sampling.base import Batch, Sampler, epoch_permutation
from lfr.sampling.leitner import NEVER, LeitnerOptions


class ReferenceLeitner(Sampler):
    """The implementation before the per-box queues (O(N) a step): the queues must draw exactly
    its ids and leave exactly its state."""

    def __init__(self, run: RunFacts, options: LeitnerOptions) -> None:
        super().__init__(run, options)
        N = self.num_blocks
        scale = N / self.batch_blocks if options.unit == "epochs" else 1.0
        self.interval = np.array([max(1, math.ceil(i * scale)) for i in options.intervals], np.int64)
        self.new_order = epoch_permutation(N, self.seed, 0)
        self.rank = np.empty(N, dtype=np.int64)
        self.rank[self.new_order] = np.arange(N)
        self.box = np.full(N, -1, dtype=np.int8)
        self.due = np.full(N, NEVER, dtype=np.int64)
        self.last_seen = np.full(N, -1, dtype=np.int64)
        self.last_loss = np.full(N, np.nan, dtype=np.float32)
        self.next_new = 0
        self.ema = np.nan

    def _smallest(self, candidates: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
        k = min(k, len(candidates))
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        combined = key * self.num_blocks + self.rank[candidates]
        part = np.argpartition(combined, k - 1)[:k] if k < len(combined) else np.arange(len(combined))
        return candidates[part[np.argsort(combined[part])]].astype(np.int64)

    def batch_ids(self, step: int) -> Batch:
        B = self.batch_blocks
        due = np.flatnonzero(self.due <= step)
        picked = self._smallest(due, self.due[due], B)
        new = self.new_order[self.next_new : self.next_new + B - len(picked)]
        self.next_new += len(new)
        stale = np.zeros(0, dtype=np.int64)
        if len(picked) + len(new) < B:
            eligible = self.box >= 0
            eligible[picked] = False
            eligible[new] = False
            candidates = np.flatnonzero(eligible)
            stale = self._smallest(candidates, self.last_seen[candidates], B - len(picked) - len(new))
        ids = np.concatenate([picked, new, stale]).astype(np.int64)
        if len(ids) < B:
            ids = np.resize(ids, B)
        return Batch(ids)

    def transition(self, ids: np.ndarray, losses: np.ndarray) -> None:
        prev, box = self.last_loss[ids], self.box[ids].astype(np.int64)
        first = box < 0
        forgot = ~first & (losses > prev * (1 + self.options.forget_tol))
        recalled = ~forgot & (losses < self.options.promote_below * self.ema)
        box = np.where(first, 0, box)
        box = np.where(forgot, 0, np.where(recalled, np.minimum(box + 1, len(self.interval) - 1), box))
        self.box[ids] = box

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        ids, first = np.unique(ids, return_index=True)
        losses = losses[first].astype(np.float32)
        mean = float(losses.mean())
        self.ema = mean if np.isnan(self.ema) else self.options.ema_decay * self.ema + (
            1 - self.options.ema_decay) * mean
        self.transition(ids, losses)
        self.last_loss[ids] = losses
        self.last_seen[ids] = step
        self.due[ids] = step + self.interval[self.box[ids]]

    def state_dict(self) -> dict[str, Any]:
        arrays = {k: getattr(self, k).copy() for k in ("box", "due", "last_seen", "last_loss")}
        return {**arrays, "next_new": self.next_new, "ema": self.ema}


def assert_same_state(a: Sampler, b: Sampler, msg: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{key} {msg}")


def run_both(num_blocks: int, batch: int, seed: int, epochs: float, options: dict, loss_seed: int,
             max_steps: int, stray: float = 0.0) -> int:
    """Drive the queues and the reference side by side with the same random losses (ties
    included); a `stray` fraction of steps observes other ids than the drawn ones. The queued
    sampler is resumed from its state halfway. Returns the steps that drew stale blocks."""
    run = RunFacts(num_blocks, batch, 16, seed, epochs)
    new = make("leitner", num_blocks, batch, seed=seed, epochs=epochs, **options)
    ref = ReferenceLeitner(run, LeitnerOptions(**options))
    rng = np.random.default_rng(loss_seed)
    steps = min(new.num_steps(), max_steps)
    stale_steps = 0
    for step in range(steps):
        if step == steps // 2:
            resumed = make("leitner", num_blocks, batch, seed=seed, epochs=epochs, **options)
            resumed.load_state_dict(new.state_dict())
            new = resumed
        due = int((ref.due <= step).sum())
        ids = new.batch_ids(step).ids
        np.testing.assert_array_equal(ids, ref.batch_ids(step).ids, err_msg=f"step {step}")
        stale_steps += ref.next_new == num_blocks and due < batch
        if rng.random() < stray:
            ids = rng.integers(0, num_blocks, batch)
        losses = rng.choice([rng.uniform(1, 4), 2.0, 3.0], size=batch).astype(np.float32)
        new.observe(step, ids, losses)
        ref.observe(step, ids, losses)
        assert_same_state(new, ref, f"after step {step}")
    return stale_steps


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(num_blocks=st.integers(1, 60), batch=st.integers(1, 12), seed=st.integers(0, 3),
       unit=st.sampled_from(["steps", "epochs"]),
       intervals=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       promote_below=st.sampled_from([0.8, 1.0, 1.3]), forget_tol=st.sampled_from([0.0, 0.2]),
       ema_decay=st.sampled_from([0.0, 0.9]), epochs=st.sampled_from([2.0, 5.0]),
       loss_seed=st.integers(0, 2**16), stray=st.sampled_from([0.0, 0.0, 0.2]))
def test_leitner_queues_draw_the_reference_ids(num_blocks, batch, seed, unit, intervals, promote_below,
                                               forget_tol, ema_decay, epochs, loss_seed, stray):
    """Every step's ids and the whole state equal the O(N) reference's: due, new and stale
    blocks, fewer blocks than a batch, intervals in steps or epochs, a resume halfway, and
    observed ids that are not the drawn ones."""
    options = {"unit": unit, "intervals": [i / 4 for i in intervals] if unit == "epochs" else intervals,
               "promote_below": promote_below, "forget_tol": forget_tol, "ema_decay": ema_decay}
    run_both(num_blocks, batch, seed, epochs, options, loss_seed, max_steps=150, stray=stray)


def test_leitner_queues_draw_the_reference_ids_at_a_larger_size():
    """3,000 blocks, 64 a step: every step equals the reference, through many stale steps."""
    stale = run_both(3000, 64, 1, 3.0, {"unit": "steps", "intervals": [40, 80, 160]}, 0, max_steps=140)
    assert stale > 50


def test_leitner_box_transitions_on_a_hand_made_sequence():
    """N=4, B=2, boxes reviewed every 1, 2, 4 steps; the threshold is the step's mean loss
    (ema_decay=0). New blocks come in the seeded order new_order = [a, b, c, d]."""
    s = make("leitner", 4, 2, epochs=100, unit="steps", intervals=[1, 2, 4], ema_decay=0.0)
    a, b, c, d = s.new_order.tolist()
    box = lambda *ids: [int(s.box[i]) for i in ids]  # noqa: E731

    def step(n, expected_ids, losses):
        ids = s.batch_ids(n).ids
        assert ids.tolist() == expected_ids, n
        s.observe(n, ids, np.array(losses, dtype=np.float32))

    step(0, [a, b], [1.0, 3.0])  # new; mean 2: a is below -> box 1 (due 2), b box 0 (due 1)
    assert box(a, b) == [1, 0] and s.due[[a, b]].tolist() == [2, 1]
    step(1, [b, c], [2.0, 4.0])  # b due; c new. mean 3: b (2 < its 3, below 3) -> box 1 (due 3)
    assert box(b, c) == [1, 0] and s.due[[b, c]].tolist() == [3, 2]
    step(2, [a, c], [0.5, 5.0])  # a and c due (a first by rank or due). a below mean 2.75 -> box 2;
    # c: 5.0 > its previous 4.0: forgotten -> box 0 (it was already there), due 3
    assert box(a, c) == [2, 0] and s.due[[a, c]].tolist() == [6, 3]
    step(3, [b, c], [2.5, 1.0])  # b: 2.5 > its 2.0: forgotten -> box 0; c: 1.0 < mean 1.75 -> box 1
    assert box(b, c) == [0, 1] and s.due[[b, c]].tolist() == [4, 5]
    step(4, [b, d], [2.0, 2.0])  # b due, d new; mean 2: b not below -> stays box 0; d box 0
    assert box(b, d) == [0, 0]
    step(5, [b, c], [1.0, 1.0])  # b, c, d all due at 5: the 2 lowest ranks; none below mean 1
    assert box(b, c) == [0, 1]


def test_leitner_reviews_due_blocks_on_schedule():
    """Constant losses, promotion off: every block stays in box 0 (interval 3 steps) and is drawn
    exactly every 3 steps; and at every step of a busier run, all due blocks are drawn when they
    fit, else the most overdue ones."""
    s = make("leitner", 6, 2, epochs=10, unit="steps", intervals=[3], promote_below=1e-9)
    seen_at = {i: [] for i in range(6)}
    for n in range(s.num_steps()):
        ids = s.batch_ids(n).ids
        for i in ids:
            seen_at[int(i)].append(n)
        s.observe(n, ids, np.ones(2, dtype=np.float32))
    for steps in seen_at.values():
        assert np.all(np.diff(steps) == 3) and steps[0] < 3

    s = make("leitner", 50, 4, epochs=6, unit="steps", intervals=[2, 4, 8])
    rng = np.random.default_rng(0)
    for n in range(s.num_steps()):
        due = np.flatnonzero(s.due <= n)
        ids = s.batch_ids(n).ids
        if len(due) <= 4:
            assert set(due) <= set(ids), n
        else:
            most_overdue = sorted(due, key=lambda i: (s.due[i], s.rank[i]))[:4]
            assert ids.tolist() == most_overdue, n
        s.observe(n, ids, rng.uniform(1, 3, 4).astype(np.float32))
    assert {0, 1, 2} <= set(np.unique(s.box).tolist())  # blocks moved through every box


def test_leitner_fills_with_new_then_least_recently_seen():
    s = make("leitner", 10, 5, epochs=4, unit="steps", intervals=[3])  # reviews every 3 steps
    first = s.batch_ids(0).ids
    assert first.tolist() == s.new_order[:5].tolist()
    s.observe(0, first, np.full(5, 2.0, np.float32))
    second = s.batch_ids(1).ids
    assert second.tolist() == s.new_order[5:].tolist()  # new blocks before anything seen
    s.observe(1, second, np.full(5, 2.0, np.float32))
    assert s.due.min() == 3  # nothing due at step 2: the batch is the 5 least recently seen,
    assert sorted(s.batch_ids(2).ids.tolist()) == sorted(first.tolist())  # i.e. step 0's blocks

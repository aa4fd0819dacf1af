"""`leitner` (lfr/sampling/leitner.py): Leitner boxes, due reviews, new and stale blocks."""

from __future__ import annotations

import numpy as np
from test_sampling import make


def test_leitner_box_transitions_on_a_hand_made_sequence():
    """N=4, B=2, boxes reviewed every 1, 2, 4 steps; the threshold is the step's mean loss
    (ema_decay=0). New blocks come in the seeded order new_order = [a, b, c, d]."""
    s = make("leitner", 4, 2, epochs=100, unit="steps", intervals=[1, 2, 4], ema_decay=0.0)
    a, b, c, d = s.new_order.tolist()
    box = lambda *ids: [int(s.box[i]) for i in ids]  # noqa: E731

    def step(n, expected_ids, losses):
        ids = s.batch_ids(n)
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
        ids = s.batch_ids(n)
        for i in ids:
            seen_at[int(i)].append(n)
        s.observe(n, ids, np.ones(2, dtype=np.float32))
    for steps in seen_at.values():
        assert np.all(np.diff(steps) == 3) and steps[0] < 3

    s = make("leitner", 50, 4, epochs=6, unit="steps", intervals=[2, 4, 8])
    rng = np.random.default_rng(0)
    for n in range(s.num_steps()):
        due = np.flatnonzero(s.due <= n)
        ids = s.batch_ids(n)
        if len(due) <= 4:
            assert set(due) <= set(ids), n
        else:
            most_overdue = sorted(due, key=lambda i: (s.due[i], s.rank[i]))[:4]
            assert ids.tolist() == most_overdue, n
        s.observe(n, ids, rng.uniform(1, 3, 4).astype(np.float32))
    assert {0, 1, 2} <= set(np.unique(s.box).tolist())  # blocks moved through every box


def test_leitner_fills_with_new_then_least_recently_seen():
    s = make("leitner", 10, 5, epochs=4)  # intervals in epochs: box 0 every 2 steps, box 1 every 4
    first = np.concatenate([s.batch_ids(0)])
    assert first.tolist() == s.new_order[:5].tolist()
    s.observe(0, first, np.full(5, 2.0, np.float32))
    second = s.batch_ids(1)
    assert second.tolist() == s.new_order[5:].tolist()  # new blocks before anything seen
    s.observe(1, second, np.full(5, 2.0, np.float32))
    s.due[:] = 100  # nothing due: the batch is the 5 least recently seen, i.e. step 0's blocks
    assert sorted(s.batch_ids(2).tolist()) == sorted(first.tolist())

"""`leitner`: a spaced-repetition sampler with Leitner boxes (Amiri, Miller & Savova, EMNLP 2017
"Repeat before Forgetting"; the Leitner-queue variant of Amiri et al., NAACL 2019).

Every seen block sits in a box k = 0..K-1; box k is reviewed every `intervals[k]` units (default
1, 2, 4, 8 epochs, an epoch being num_blocks / batch_blocks steps; `unit: steps` for steps). Each
step is filled, deterministically, in this order:
1. the blocks that are due (next review step <= this step), most overdue first, up to the batch;
2. then new (never-seen) blocks, in a fixed seeded order;
3. then, when no new block is left, the least recently seen blocks.
Ties break by a fixed seeded rank per block (not by id, which follows the corpus order).

After a block is trained, its box is updated from its loss (taken before the update):
- a block seen for the first time enters box 0;
- **forgotten** (demote to box 0): its loss is above its previous loss x (1 + `forget_tol`),
  i.e. it got worse since its last review (a forgetting event, as in Toneva et al. 1812.05159);
- **recalled** (promote to the next box, capped at the last): otherwise, if its loss is below
  `promote_below` x the running mean training loss (an exponential moving average of the step's
  mean loss, decay `ema_decay`), i.e. easier than a typical block now; every box uses this
  threshold;
- otherwise it stays in its box.
It is then due `intervals[box]` later. The run lasts as many steps as `random` (equal tokens).

A step costs O(K B log(K B)) for K boxes, whatever N: each box keeps its blocks in a FIFO queue in
the order they were last seen (one step's blocks by rank). A block's due step is its last-seen
step plus its box's interval, so within a box the due order is the queue order: the due blocks
are a prefix of each queue, and once they are all drawn, the least recently seen blocks lead the
queues too. A step merges the K queue heads by (due or last seen, rank) and moves the blocks it
trains to the tails of their new boxes' queues. The queues derive from the per-block arrays
(sorted when a state is loaded), so a checkpoint holds only those arrays.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from lfr.sampling.base import (
    Batch,
    Epochs,
    RunFacts,
    RunLengthOptions,
    Sampler,
    epoch_permutation,
)

NEVER = np.iinfo(np.int64).max  # `due` of a block never seen


class Fifo:
    """A FIFO queue of at most `capacity` block ids in a fixed ring buffer (it never reallocates)."""

    def __init__(self, capacity: int, items: np.ndarray) -> None:
        self.buf = np.empty(max(1, capacity), dtype=np.int32 if capacity < 2**31 else np.int64)
        self.head = self.size = 0
        self.push(items)

    def peek(self, start: int, count: int) -> np.ndarray:
        """Items [start, start + count) from the head (fewer where the queue ends)."""
        count = max(0, min(count, self.size - start))
        return self.buf[(self.head + start + np.arange(count)) % len(self.buf)]

    def pop(self, count: int) -> None:
        self.head, self.size = (self.head + count) % len(self.buf), self.size - count

    def push(self, items: np.ndarray) -> None:
        self.buf[(self.head + self.size + np.arange(len(items))) % len(self.buf)] = items
        self.size += len(items)

    def remove(self, items: np.ndarray) -> None:
        rest = self.peek(0, self.size)
        self.head = self.size = 0
        self.push(rest[~np.isin(rest, items)])


class LeitnerOptions(RunLengthOptions):
    intervals: Annotated[tuple[Epochs, ...], Field(min_length=1)] = (1, 2, 4, 8)
    """Review interval of box k, in `unit`s; one box per entry."""
    unit: Literal["epochs", "steps"] = "epochs"
    """Unit of `intervals`: an epoch is num_blocks / batch_blocks steps."""
    promote_below: Annotated[float, Field(gt=0, le=1000)] = 1.0
    """Promote a block whose loss is below this times the running mean training loss (at most 1000:
    far above, every block is promoted already, and the float32 product overflows)."""
    forget_tol: Annotated[float, Field(ge=0, le=1000)] = 0.0
    """Demote to box 0 when the loss exceeds the block's previous loss by more than this fraction
    (at most 1000, as promote_below)."""
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """Decay of the running mean of the step's mean training loss."""


class LeitnerSampler(Sampler):
    Options = LeitnerOptions
    options: LeitnerOptions

    def __init__(self, run: RunFacts, options: LeitnerOptions) -> None:
        super().__init__(run, options)
        N = self.num_blocks
        scale = N / self.batch_blocks if options.unit == "epochs" else 1.0
        self.interval = np.array([max(1, math.ceil(i * scale)) for i in options.intervals], np.int64)
        self.new_order = epoch_permutation(N, self.seed, 0)  # new blocks enter as random's epoch 0
        self.rank = np.empty(N, dtype=np.int64)
        self.rank[self.new_order] = np.arange(N)  # the fixed tie-break
        self.box = np.full(N, -1, dtype=np.int8)  # -1: never seen
        self.due = np.full(N, NEVER, dtype=np.int64)
        self.last_seen = np.full(N, -1, dtype=np.int64)
        self.last_loss = np.full(N, np.nan, dtype=np.float32)
        self.next_new = 0  # new_order[next_new:] are the blocks never seen
        self.ema = np.nan
        self._build_queues()

    def _first(self, heads: list[np.ndarray], key: np.ndarray, k: int) -> np.ndarray:
        """The k blocks with the smallest (key, rank) among the queue heads, in that order."""
        candidates = np.concatenate(heads)
        order = np.lexsort((self.rank[candidates], key[candidates]))[:k]
        return candidates[order].astype(np.int64)

    def batch_ids(self, step: int) -> Batch:
        B = self.batch_blocks
        heads = [q.peek(0, B) for q in self.queues]  # a step draws at most B from one box
        due = [h[: np.searchsorted(self.due[h], step, side="right")] for h in heads]
        picked = self._first(due, self.due, B)
        new = self.new_order[self.next_new : self.next_new + B - len(picked)]
        self.next_new += len(new)
        stale = np.zeros(0, dtype=np.int64)
        if (rest := B - len(picked) - len(new)) > 0:  # every due block is in `picked`
            after = [q.peek(len(d), rest) for q, d in zip(self.queues, due, strict=True)]
            stale = self._first(after, self.last_seen, rest)
        ids = np.concatenate([picked, new, stale]).astype(np.int64)
        if len(ids) < B:  # fewer blocks than a batch: repeat (only in toy settings)
            ids = np.resize(ids, B)
        return Batch(ids)

    def transition(self, ids: np.ndarray, losses: np.ndarray) -> None:
        """New boxes of the blocks just trained, from their losses (see the module docstring)."""
        prev, box = self.last_loss[ids], self.box[ids].astype(np.int64)
        first = box < 0
        forgot = ~first & (losses > prev * (1 + self.options.forget_tol))
        recalled = ~forgot & (losses < self.options.promote_below * self.ema)
        box = np.where(first, 0, box)
        box = np.where(forgot, 0, np.where(recalled, np.minimum(box + 1, len(self.interval) - 1), box))
        self.box[ids] = box

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        ids, first = np.unique(ids, return_index=True)  # a block appears once per step (toy sizes aside)
        losses = losses[first].astype(np.float32)
        mean = float(losses.mean())
        self.ema = mean if np.isnan(self.ema) else self.options.ema_decay * self.ema + (
            1 - self.options.ema_decay) * mean
        self._dequeue(ids)
        self.transition(ids, losses)
        self.last_loss[ids] = losses
        self.last_seen[ids] = step
        self.due[ids] = step + self.interval[self.box[ids]]
        ids = ids[np.argsort(self.rank[ids])]  # queue order: last seen, then rank
        box = self.box[ids]
        for k, queue in enumerate(self.queues):
            queue.push(ids[box == k])

    def _dequeue(self, ids: np.ndarray) -> None:
        """Take the seen blocks among `ids` (sorted) out of their boxes' queues: a prefix of each
        queue when they are the blocks the last batch_ids drew, else a search (O(N))."""
        box = self.box[ids]
        for k, queue in enumerate(self.queues):
            mine = ids[box == k]
            if np.array_equal(np.sort(queue.peek(0, len(mine))), mine):
                queue.pop(len(mine))
            else:
                queue.remove(mine)

    def _build_queues(self) -> None:
        """Each box's queue from the arrays: its blocks by (last seen, rank)."""
        self.queues: list[Fifo] = []
        for k in range(len(self.interval)):
            members = np.flatnonzero(self.box == k)
            order = np.lexsort((self.rank[members], self.last_seen[members]))
            self.queues.append(Fifo(self.num_blocks, members[order]))

    def state_dict(self) -> dict[str, Any]:
        arrays = {k: getattr(self, k).copy() for k in ("box", "due", "last_seen", "last_loss")}
        return {**arrays, "next_new": self.next_new, "ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value.copy() if isinstance(value, np.ndarray) else value)
        self._build_queues()

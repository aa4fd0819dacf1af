"""`selective-backprop`: backpropagate the candidates whose loss is high among the recent losses
(Jiang et al. 2019, arXiv 1910.00762, "Accelerating Deep Learning by Focusing on the Biggest
Losers").

Candidates stream in chunks of batch_blocks ids, uniform seeded passes over all blocks; the loop
scores each chunk with the model being trained (a no-grad forward after the previous update).
Each candidate's loss joins the history of the last `history` losses seen (the paper's K), and
the candidate is kept with probability p^beta, p = the loss's CDF in that history, its own loss
included as in the paper: the share of the history at or below it, so the largest recent loss
has p = 1 and the very first candidate is kept. Kept ids queue up in order; the loop is asked
for chunks until the queue holds a batch, and each step trains on the queue's first batch_blocks
ids (the rest wait for the next step). The run lasts as many steps as `random` (equal tokens).

A chunk's keep draws come from a generator seeded by (seed, stream position), so the state is
the stream position, the history, the queue and two counters, and a resume is exact. A step
scores ~1/E[p^beta] = beta + 1 batches (2 at beta 1), which the loop charges as forward-only
tokens. `kept_fraction` is the share of the candidates scored so far that were kept.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from lfr.sampling.base import (
    Batch,
    EpochOrder,
    RunFacts,
    RunLengthOptions,
    Sampler,
    epoch_draws,
)

STREAM = 0x5B  # the candidate passes' and keep draws' RNG key, apart from other methods' passes


class SelectiveBackpropOptions(RunLengthOptions):
    beta: Annotated[float, Field(ge=0, le=100)] = 1.0
    """Selectivity: keep a candidate with probability p^beta (the paper's default 1 keeps ~1/2;
    0 keeps all). At most 100: a step scores ~beta + 1 batches."""
    history: Annotated[int, Field(ge=1, le=10**6)] = 5000
    """The percentile's window: the last this many candidate losses (the paper's K = 5000); at
    most 1e6 (a chunk's percentiles take batch_blocks x history comparisons)."""


def percentiles(history: np.ndarray, losses: np.ndarray, window: int) -> np.ndarray:
    """The CDF of each of `losses` (in arrival order) among the last `window` losses up to and
    including it, `history` (oldest first) before them: the share of that window <= it."""
    seq = np.concatenate([history, losses])
    at = len(history) + np.arange(len(losses))  # each loss's own position in seq
    lo = np.maximum(at + 1 - window, 0)
    pos = np.arange(len(seq))
    inside = (pos >= lo[:, None]) & (pos <= at[:, None])
    below = inside & (seq <= losses[:, None])
    return below.sum(1) / inside.sum(1)


class SelectiveBackpropSampler(Sampler):
    Options = SelectiveBackpropOptions
    options: SelectiveBackpropOptions
    observes = "none"  # it reads the candidates' losses only

    def __init__(self, run: RunFacts, options: SelectiveBackpropOptions) -> None:
        super().__init__(run, options)
        self.blocks = np.arange(self.num_blocks, dtype=np.int64)
        self.order = EpochOrder(self.num_blocks, self.seed, STREAM)
        self.position = 0  # candidates streamed so far
        self.history = np.zeros(0, np.float32)  # the last `history` losses, oldest first
        self.queue = np.zeros(0, np.int64)  # kept ids, not yet trained
        self.scored = self.kept = 0

    def candidate_ids(self, step: int) -> np.ndarray | None:
        if len(self.queue) >= self.batch_blocks:
            return None
        return epoch_draws(self.blocks, self.position, self.position + self.batch_blocks, self.order)

    def observe_candidates(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        # NaN (a diverged model) counts as the largest loss: kept, so the loop meets it in
        # training, where p = 0 for all would make it score chunks forever
        losses = np.asarray(losses, np.float32)
        losses = np.where(np.isnan(losses), np.float32(np.inf), losses)
        p = self.add_to_history(losses)
        u = np.random.default_rng([self.seed, STREAM, self.position]).random(len(ids))
        keep = u < p**self.options.beta
        self.queue = np.concatenate([self.queue, np.asarray(ids, np.int64)[keep]])
        self.position += len(ids)
        self.scored, self.kept = self.scored + len(ids), self.kept + int(keep.sum())

    def add_to_history(self, losses: np.ndarray) -> np.ndarray:
        """The percentile p of each of `losses` (float32, in arrival order), which join the history."""
        window = self.options.history
        chunk = max(1, (1 << 22) // window)  # losses compared at once: <= 4M pairs in memory
        p = np.empty(len(losses))
        for i in range(0, len(losses), chunk):
            part = losses[i : i + chunk]
            p[i : i + chunk] = percentiles(self.history, part, window)
            self.history = np.concatenate([self.history, part])[-window:]
        return p

    def batch_ids(self, step: int) -> Batch:
        if len(self.queue) < self.batch_blocks:
            raise RuntimeError(f"selective-backprop: batch_ids({step}) before its candidates "
                               "filled the queue")
        ids, self.queue = self.queue[: self.batch_blocks], self.queue[self.batch_blocks :]
        return Batch(ids)

    def kept_fraction(self) -> float:
        return self.kept / self.scored if self.scored else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "history": self.history.copy(),
                "queue": self.queue.copy(), "scored": self.scored, "kept": self.kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position, self.scored, self.kept = (int(state[k]) for k in ("position", "scored", "kept"))
        self.history = state["history"].astype(np.float32)
        self.queue = state["queue"].astype(np.int64)

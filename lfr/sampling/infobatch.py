"""`infobatch`: InfoBatch (Qin et al., ICLR 2024, arXiv 2303.04947), on fixed data blocks.

Each epoch (a pass over that epoch's kept set) starts from every block's score, its loss at its
last visit. Of the blocks scoring below the mean score (the well-learned ones), a random fraction
`prune_ratio` is left out of the epoch; the kept below-mean blocks get the loss weight
n_low / n_kept (= 1/(1-prune_ratio) up to rounding), so each block's expected gradient weight
per epoch is exactly 1. Above-mean blocks are always kept with weight 1. Blocks not seen yet have
no score: they are never pruned and do not enter the mean (as if their score were +inf; the
reference code initialises scores to 3.0, a high loss, to the same end). The last `1 - delta`
of the optimizer steps are the "anneal": full, unweighted epochs (the pruned epoch running at
that boundary is cut there).

Equal tokens: the run lasts as many steps as `random` (`epochs`, default train.epochs, passes'
worth of draws over all blocks), fixed before step 0 for the LR schedule; pruned epochs are
shorter, so InfoBatch fits more of them into that budget. Epoch sets are built when the epoch's
first draw is needed, from (seed, epoch) and the scores observed so far, so every rank builds
the same ones; the epoch being served is part of the state, so resume is exact.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from lfr.sampling.base import Batch, RunFacts, RunLengthOptions, Sampler


class InfoBatchOptions(RunLengthOptions):
    prune_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """r: fraction of the below-mean blocks left out of each pruned epoch."""
    delta: Annotated[float, Field(ge=0, le=1)] = 0.875
    """Prune during the first `delta` of the steps; the rest is the full-data anneal."""


class InfoBatchSampler(Sampler):
    Options = InfoBatchOptions
    options: InfoBatchOptions

    def __init__(self, run: RunFacts, options: InfoBatchOptions) -> None:
        super().__init__(run, options)
        self.anneal_step = round(options.delta * self.num_steps())
        self.score = np.full(self.num_blocks, np.nan, dtype=np.float32)  # last loss; NaN = unseen
        self.epoch = -1
        self.epoch_start = 0  # draw position of the current epoch's first draw
        self.order = np.zeros(0, dtype=np.int64)  # the current epoch's draws, in order
        self.weight = np.zeros(0, dtype=np.float32)  # their loss weights
        self.pruned = np.zeros(0, dtype=np.int64)  # ids left out of the current epoch (sorted)

    def phase(self, step: int) -> str:
        return "prune" if step < self.anneal_step else "anneal"

    def epoch_set(self, epoch: int, anneal: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids in draw order, their weights, pruned ids) of an epoch, from the current scores."""
        rng = np.random.default_rng([self.seed, epoch])
        seen = ~np.isnan(self.score)
        weight = np.ones(self.num_blocks, dtype=np.float32)
        pruned = np.zeros(0, dtype=np.int64)
        if not anneal and self.options.prune_ratio > 0 and seen.any():
            low = np.flatnonzero(seen & (self.score < self.score[seen].mean()))
            if len(low):  # keep round((1-r) n_low), at least one (the weight stays finite)
                n_kept = max(1, math.floor((1 - self.options.prune_ratio) * len(low) + 0.5))
                kept_low = rng.choice(low, size=n_kept, replace=False)
                pruned = np.setdiff1d(low, kept_low, assume_unique=True)
                weight[kept_low] = len(low) / n_kept
        ids = np.setdiff1d(np.arange(self.num_blocks), pruned, assume_unique=True)
        order = ids[rng.permutation(len(ids))]
        return order, weight[order], pruned

    def _next_epoch(self, position: int) -> None:
        anneal_pos = self.anneal_step * self.batch_blocks
        anneal = position >= anneal_pos
        order, weight, pruned = self.epoch_set(self.epoch + 1, anneal)
        if not anneal and position + len(order) > anneal_pos:  # cut at the anneal boundary
            order, weight = order[: anneal_pos - position], weight[: anneal_pos - position]
        self.epoch, self.epoch_start = self.epoch + 1, position
        self.order, self.weight, self.pruned = order, weight, pruned

    def batch_ids(self, step: int) -> Batch:
        """The step's draws and their weights (per draw, not per id: an id may repeat across an
        epoch boundary with a different weight)."""
        pos, end = step * self.batch_blocks, (step + 1) * self.batch_blocks
        assert pos >= self.epoch_start, "steps are requested in order"
        ids, weights = [], []
        while pos < end:
            if pos >= self.epoch_start + len(self.order):
                self._next_epoch(pos)
            a = pos - self.epoch_start
            b = min(len(self.order), a + end - pos)
            ids.append(self.order[a:b])
            weights.append(self.weight[a:b])
            pos += b - a
        return Batch(np.concatenate(ids), np.concatenate(weights))

    def kept_fraction(self) -> float:
        return 1 - len(self.pruned) / self.num_blocks

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        self.score[ids] = losses

    def state_dict(self) -> dict[str, Any]:
        return {"score": self.score.copy(), "epoch": self.epoch,
                "epoch_start": self.epoch_start, "order": self.order.copy(),
                "weight": self.weight.copy(), "pruned": self.pruned.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score, self.order = state["score"].copy(), state["order"].copy()
        self.weight, self.pruned = state["weight"].copy(), state["pruned"].copy()
        self.epoch, self.epoch_start = int(state["epoch"]), int(state["epoch_start"])

"""`rho-loss`: train on the candidates with the largest reducible loss (Mindermann et al., ICML
2022, arXiv 2206.07137, "Prioritized Training on Points that are Learnable, Worth Learning, and
Not Yet Learnt").

A block's reducible holdout loss is approximated by its training loss under the current model
minus its *irreducible* loss, the loss of a small model trained on held-out data. That model is
ppl-prune's reference (lfr/sampling/ppl_prune.py, the `score_reference` stage): trained on a
seeded shard (`reference_fraction`), it scores every other block once before training, as the
paper precomputes the irreducible losses; the shard stays out of this method's pool.

Each step proposes `pool_factor` x batch_blocks candidates (the paper's n_B = 10 n_b), drawn
uniformly without replacement in back-to-back seeded passes over the pool. The loop scores them
with the model being trained (a no-grad forward after the previous update) and the step trains
on the batch_blocks candidates with the largest training loss - irreducible loss, in that order,
ties broken by the lower id (a NaN loss ranks last). Candidates that span two passes may hold a
block twice, which may then train twice in the step, as at a pass boundary of `random`. The run
lasts as many steps as `random` (equal tokens).

Compute: the candidates' forward passes, which the loop charges as forward-only tokens
(pool_factor x the training tokens), plus the reference model's training and scoring pass, as
ppl-prune's (`reference_train_tokens`, `forward_only_tokens` = `reference_scoring_tokens`).
`kept_fraction` is the pool's share of all blocks (the batch is always 1/pool_factor of its
candidates).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from lfr.sampling.base import Batch, EpochOrder, RunFacts, Sampler, epoch_draws
from lfr.sampling.ppl_prune import ReferenceOptions, reference_pool

CANDIDATE_STREAM = 0x4B0  # the candidate passes' RNG key, apart from other methods' passes


class RhoLossOptions(ReferenceOptions):
    pool_factor: Annotated[int, Field(ge=1, le=1000)] = 10
    """Candidates scored per step, as a multiple of the batch (the paper's n_B / n_b = 10); 1
    trains on every candidate (uniform sampling of the pool)."""


class RhoLossSampler(Sampler):
    Options = RhoLossOptions
    options: RhoLossOptions
    needs_block_scores: ClassVar[bool] = True
    observes = "none"  # it reads the candidates' losses only

    def __init__(self, run: RunFacts, options: RhoLossOptions) -> None:
        super().__init__(run, options)
        scores, self.pool = reference_pool(run, "rho-loss")
        self.irreducible = scores.score  # float32 per block, NaN in the shard
        self.num_candidates = options.pool_factor * self.batch_blocks
        self.order = EpochOrder(len(self.pool), self.seed, CANDIDATE_STREAM)
        self.scored_step = -1  # the step whose candidates' losses are in hand
        self.ids, self.losses = np.zeros(0, np.int64), np.zeros(0, np.float64)

    def candidate_ids(self, step: int) -> np.ndarray | None:
        if self.scored_step == step:
            return None
        start = step * self.num_candidates
        return epoch_draws(self.pool, start, start + self.num_candidates, self.order)

    def observe_candidates(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        self.scored_step, self.ids = step, np.array(ids, dtype=np.int64)  # a copy: the loop may reuse
        self.losses = np.array(losses, dtype=np.float64)

    def batch_ids(self, step: int) -> Batch:
        if self.scored_step != step:
            raise RuntimeError(f"rho-loss: batch_ids({step}) before its candidates were scored")
        reducible = self.losses - self.irreducible[self.ids].astype(np.float64)
        return Batch(self.ids[np.lexsort((self.ids, -reducible))[: self.batch_blocks]])

    def kept_fraction(self) -> float:
        return len(self.pool) / self.num_blocks

    def state_dict(self) -> dict[str, Any]:
        # a checkpoint comes between steps: the candidates follow from the step, nothing is pending
        return {"pool": self.pool.copy()}  # derived from the score file: a resume check

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not np.array_equal(state["pool"], self.pool):
            raise ValueError("the checkpoint's pool differs from the one of these block scores")

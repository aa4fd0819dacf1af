"""`loss-prop`: loss-proportional prioritized sampling with importance weights, as in
prioritized experience replay (Schaul et al., arXiv 1511.05952; Loshchilov & Hutter, arXiv
1511.06343; Katharopoulos & Fleuret, arXiv 1803.00942).

Block i's priority is (loss_i + eps)^alpha, loss_i its training loss at its last visit; blocks
not seen yet get the largest priority of the seen ones (1 before any is seen), so they are
drawn early. Each step draws `batch_blocks` ids with replacement from p_i = priority_i / sum,
with a generator seeded by (seed, step). The bias is corrected by the importance weights
w_i = (N p_i)^-beta, normalised by the largest weight over all N blocks, (N min_j p_j)^-beta, so
that weights are at most 1 (PER's convention); beta rises linearly from `beta0` at step 0 to 1
at the last step. The run lasts as many steps as `random` (equal tokens). The selection costs
O(N) per step (the priorities of all blocks).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from lfr.sampling.base import RunFacts, RunLengthOptions, Sampler, equal_token_steps


class LossPropOptions(RunLengthOptions):
    alpha: Annotated[float, Field(ge=0, le=10)] = 1.0
    """Priority exponent: 0 is uniform sampling, 1 is proportional to the loss. At most 10: larger
    powers of a fresh model's losses overflow float64 and the run fails mid-training (NaN p)."""
    beta0: Annotated[float, Field(ge=0, le=1)] = 0.4
    """Importance-weight exponent at step 0 (PER's default); annealed linearly to 1."""
    eps: Annotated[float, Field(gt=0, le=1)] = 0.01
    """Added to every loss so that no block's probability is 0; at most 1 (more flattens the
    priorities towards uniform, and its power, like alpha's, must stay in float64's range)."""


class LossPropSampler(Sampler):
    Options = LossPropOptions
    options: LossPropOptions

    def __init__(self, run: RunFacts, options: LossPropOptions) -> None:
        super().__init__(run, options)
        self.steps = equal_token_steps(run, options.epochs)
        self.loss = np.full(self.num_blocks, np.nan, dtype=np.float32)  # last loss; NaN = unseen
        self._step_weights: np.ndarray | None = None

    def num_steps(self) -> int:
        return self.steps

    def beta(self, step: int) -> float:
        b0 = self.options.beta0
        return b0 + (1 - b0) * min(1.0, step / max(1, self.steps - 1))

    def probabilities(self) -> np.ndarray:
        """p_i over all blocks (float64, sums to 1), from the losses observed so far."""
        seen = ~np.isnan(self.loss)
        prio = np.ones(self.num_blocks)
        if seen.any():
            prio[seen] = (self.loss[seen].astype(np.float64) + self.options.eps) ** self.options.alpha
            prio[~seen] = prio[seen].max()
        return prio / prio.sum()

    def weights(self, p: np.ndarray, ids: np.ndarray, step: int) -> np.ndarray:
        """w_i = (N p_i)^-beta / max_j (N p_j)^-beta = (p_i / min_j p_j)^-beta."""
        return ((p[ids] / p.min()) ** -self.beta(step)).astype(np.float32)

    def batch_ids(self, step: int) -> np.ndarray:
        p = self.probabilities()
        rng = np.random.default_rng([self.seed, step])
        ids = rng.choice(self.num_blocks, size=self.batch_blocks, replace=True, p=p).astype(np.int64)
        self._step_weights = self.weights(p, ids, step)
        return ids

    def loss_weights(self, ids: np.ndarray) -> np.ndarray | None:
        return self._step_weights

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        self.loss[ids] = losses

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss = state["loss"].copy()

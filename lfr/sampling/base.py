"""The contract between the training loop and a data-selection method (a *sampler*).

The loop knows nothing else about methods: it asks for the global block ids of each optimizer
step, trains on them, and reports back each block's training loss from that same forward pass
(taken before the update, so recording costs no extra FLOPs). Samplers are numpy-only and own
their RNG, which goes into the checkpoint with the rest of their state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

MAX_EPOCHS = 1e6
"""Bound of every length in epochs: far beyond any run, and the step count (epochs x blocks) stays
finite and an integer that numpy takes."""
Epochs = Annotated[float, Field(gt=0, le=MAX_EPOCHS)]


class SamplerOptions(BaseModel):
    """Options of one sampler; plug-ins subclass this. Unknown keys are errors, and so are inf and
    NaN (YAML's `.inf` passes `gt=0`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class RunFacts:
    """What a sampler may know about the run it plans."""

    num_blocks: int
    """Training blocks in the corpus."""
    batch_blocks: int
    """Blocks per optimizer step, summed over micro-batches and ranks."""
    block_size: int
    """Tokens per block."""
    seed: int
    epochs: float
    """train.epochs: the run length of methods that have no schedule of their own."""
    block_scores: BlockScores | None = None
    """Reference-model scores of every block, for methods with `needs_block_scores`."""


@dataclass(frozen=True)
class BlockScores:
    """Static per-block scores from a reference model (the `score-reference` stage)."""

    score: np.ndarray
    """float32 per training block: the reference model's mean token loss; NaN where not scored."""
    reference: np.ndarray
    """bool per training block: in the reference model's training shard (not in the pool)."""
    reference_train_tokens: int = 0
    """Optimizer-step tokens of the reference model's training."""
    scoring_tokens: int = 0
    """Tokens of the no-grad scoring pass over the pool."""


class Sampler(ABC):
    """Decides which training blocks make up each optimizer step."""

    Options: ClassVar[type[SamplerOptions]] = SamplerOptions
    needs_block_scores: ClassVar[bool] = False
    """The workflow trains and scores a reference model first and passes `RunFacts.block_scores`."""
    forward_only_tokens: int = 0
    """Tokens this method runs through a model outside training steps (scoring passes)."""
    reference_train_tokens: int = 0
    """Optimizer-step tokens spent training a reference model for this method."""

    def __init__(self, run: RunFacts, options: SamplerOptions):
        self.run, self.options = run, options
        self.num_blocks, self.batch_blocks, self.seed = run.num_blocks, run.batch_blocks, run.seed

    @abstractmethod
    def num_steps(self) -> int:
        """Optimizer steps in the whole plan; fixed before step 0 (the LR schedule spans it)."""

    @abstractmethod
    def batch_ids(self, step: int) -> np.ndarray:
        """Global block ids (int64, length batch_blocks) of optimizer step `step`.

        Steps are requested in order 0, 1, ...; every DDP rank gets the same ids and takes its
        own slice.
        """

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        """Per-block training losses (mean token CE) of the blocks just trained. Default: ignore."""

    def loss_weights(self, ids: np.ndarray) -> np.ndarray | None:
        """Per-block loss weights for the next step; None means all ones."""
        return None

    def phase(self, step: int) -> str:
        """Name of the phase that step `step` belongs to (a column of the metrics log)."""
        return "train"

    def records(self) -> dict[str, Any]:
        """Tables (name -> DataFrame) to save now, e.g. per-block state at a phase boundary.

        The loop calls this after every step and writes what it gets; default: nothing.
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


def epoch_draws(pool: np.ndarray, start: int, stop: int,
                order: Callable[[int], np.ndarray]) -> np.ndarray:
    """Draws [start, stop) of back-to-back passes over `pool`; pass e visits pool[order(e)]."""
    epochs, slots = np.divmod(np.arange(start, stop), len(pool))
    out = np.empty(stop - start, dtype=np.int64)
    for epoch in np.unique(epochs):
        mask = epochs == epoch
        out[mask] = pool[order(int(epoch))[slots[mask]]]
    return out


def epoch_permutation(num_blocks: int, seed: int, epoch: int) -> np.ndarray:
    """The block order of one epoch: a permutation fixed by (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(num_blocks)


def equal_token_steps(run: RunFacts, epochs: float | None) -> int:
    """Steps of `epochs` passes' worth of draws over all blocks (default train.epochs): the run
    length of `random`, which methods without a schedule of their own match (equal tokens)."""
    return int((epochs or run.epochs) * run.num_blocks) // run.batch_blocks

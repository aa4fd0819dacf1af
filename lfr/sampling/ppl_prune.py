"""`ppl-prune`: static perplexity pruning with a reference model (Marion et al. 2023, arXiv
2309.04564, "When Less is More"; Ankner et al., ICLR 2025, arXiv 2405.20541, "Perplexed by
Perplexity").

The workflow first trains a small reference model (`reference_size`, default the smallest
configured model) on a seeded shard of the training blocks (`reference_fraction`), for
`reference_epochs` passes over the shard (`ShardSampler`), then scores every other block with it
(no-grad forward, the block's mean token loss: ranking by loss = ranking by perplexity). That is
the `score_reference` rule (`python -m lfr score-reference`, lfr/score_reference.py). The shard is excluded
from this method's pool, so the pruned model never trains on the reference's data. Of the pool,
the band `band` (low, middle or high scores) of a fraction `keep` is kept, and training samples
uniformly within it: a fresh seeded permutation of the kept set each pass, for as many steps as
`random` (equal tokens), so kept blocks repeat ~1/keep times as often. The reference model's
training tokens and the scoring pass are this method's extra compute, which the loop reads from
the block scores (run.json's `reference_train_tokens`, and `forward_only_tokens` =
`reference_scoring_tokens`), at the reference's own FLOPs per token (`reference_flops_per_token`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from lfr.sampling.base import (
    BlockScores,
    Epochs,
    PoolSampler,
    RunFacts,
    RunLengthOptions,
    SamplerOptions,
)

SHARD_STREAM = 0x5EF  # keeps the shard's generator apart from the epoch permutations


class ReferenceOptions(RunLengthOptions):
    """Options of a method with `needs_block_scores`: its reference model, which the
    `score_reference` stage trains and scores the other blocks with."""

    reference_size: str | None = None
    """Model size of the reference model; default: the smallest size in `models`."""
    reference_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    """Fraction of the training blocks (seeded) the reference trains on; excluded from the pool."""
    reference_epochs: Epochs | None = None
    """Passes of the reference model over its shard; default train.epochs."""


class PplPruneOptions(ReferenceOptions):
    keep: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Fraction of the pool kept."""
    band: Literal["low", "middle", "high"] = "middle"
    """Which scores to keep: the lowest, the middle (Marion et al.'s best) or the highest."""


def band_ids(score: np.ndarray, pool: np.ndarray, keep: float, band: str) -> np.ndarray:
    """Sorted ids of the kept band: `pool` ranked by (score, id), round(keep * n) of them (>= 1)
    from the bottom (low), the top (high) or centred (middle, the odd one out goes to the top)."""
    n = len(pool)
    n_keep = max(1, math.floor(keep * n + 0.5))
    ranked = pool[np.lexsort((pool, score[pool]))]
    start = {"low": 0, "middle": (n - n_keep) // 2, "high": n - n_keep}[band]
    return np.sort(ranked[start : start + n_keep])


def reference_shard(num_blocks: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted ids of the reference model's training shard: round(fraction * N) blocks (>= 1)."""
    size = max(1, int(np.floor(fraction * num_blocks + 0.5)))
    return np.sort(np.random.default_rng([seed, SHARD_STREAM]).permutation(num_blocks)[:size])


def reference_pool(run: RunFacts, method: str) -> tuple[BlockScores, np.ndarray]:
    """The run's block scores, checked against the corpus, and the sorted ids of the blocks the
    reference model scored (outside its shard). The loop charges the run with the reference's
    compute that the scores hold."""
    scores = run.block_scores
    if scores is None:
        raise ValueError(f"{method} needs reference-model scores: the workflow's score_reference "
                         "rule writes them; by hand pass `python -m lfr train --block-scores FILE`")
    if len(scores.score) != run.num_blocks:
        raise ValueError(f"the block scores cover {len(scores.score)} blocks, the corpus has "
                         f"{run.num_blocks}: they come from another tokenization")
    scored = np.flatnonzero(~scores.reference & ~np.isnan(scores.score))
    if not len(scored):
        raise ValueError("no scored block outside the reference shard")
    return scores, scored


class ShardSampler(PoolSampler):
    """The reference model's training: uniform passes over its shard (not a registered method)."""

    order_key = (SHARD_STREAM,)

    def __init__(self, run: RunFacts, shard: np.ndarray, epochs: float) -> None:
        super().__init__(run, SamplerOptions())
        self.pool, self.epochs = shard, epochs

    def num_steps(self) -> int:
        return max(1, int(self.epochs * len(self.pool)) // self.batch_blocks)


class PplPruneSampler(PoolSampler):
    Options = PplPruneOptions
    options: PplPruneOptions
    needs_block_scores: ClassVar[bool] = True

    def __init__(self, run: RunFacts, options: PplPruneOptions) -> None:
        super().__init__(run, options)
        scores, scored = reference_pool(run, "ppl-prune")
        self.kept = self.pool = band_ids(scores.score, scored, options.keep, options.band)

    def phase(self, step: int) -> str:
        return f"band:{self.options.band}"

    def kept_fraction(self) -> float:
        return len(self.pool) / self.num_blocks

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.kept.copy()}  # derived from the score file: a resume check

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not np.array_equal(state["kept"], self.kept):
            raise ValueError("the checkpoint's kept band differs from the one of these block scores")

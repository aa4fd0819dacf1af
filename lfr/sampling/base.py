"""The contract between the training loop and a data-selection method (a *sampler*).

The loop knows nothing else about methods: it asks for the global block ids (and loss weights)
of each optimizer step, trains on them, and reports back each block's training loss from that
same forward pass (taken before the update, so recording costs no extra FLOPs). Samplers see
only block ids, losses and the run's facts (no torch, no model); they own their RNG, which goes
into the checkpoint with the rest of their state. docs/adding-a-method.md walks through a new one.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from lfr.files import write_json, write_parquet

MAX_EPOCHS = 1e6
"""Bound of every length in epochs: far beyond any run, and the step count (epochs x blocks) stays
finite and an integer that numpy takes."""
Epochs = Annotated[float, Field(gt=0, le=MAX_EPOCHS)]


class SamplerOptions(BaseModel):
    """Options of one sampler; plug-ins subclass this. Unknown keys are errors, and so are inf and
    NaN (YAML's `.inf` passes `gt=0`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)  # docs/configuration.md shows them


class RunLengthOptions(SamplerOptions):
    """Options of a method without a schedule of its own: it runs as long as `random`."""

    epochs: Epochs | None = None
    """Run length in passes' worth of draws over all blocks; default train.epochs, random's (equal
    tokens). Another value trains other tokens than random's: the config check says so and the
    tables leave the method out of the equal-budget comparison."""


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
    """Reference-model scores of every block, for methods with `needs_block_scores`; they also
    hold the reference's compute, which the run is charged with."""
    budget: float = 1.0
    """Multiple of the method's default run length (a sweep's run): a method without a schedule
    runs budget x epochs passes' worth of draws; LFR scales every phase."""


@dataclass(frozen=True)
class BlockScores:
    """Static per-block scores from a reference model (the `score-reference` stage), which writes
    them with `write` (block_scores.parquet, with reference.json beside it); `read` reads them."""

    score: np.ndarray
    """float32 per training block: the reference model's mean token loss; NaN where not scored."""
    reference: np.ndarray
    """bool per training block: in the reference model's training shard (not in the pool)."""
    reference_train_tokens: int = 0
    """Optimizer-step tokens of the reference model's training."""
    scoring_tokens: int = 0
    """Tokens of the no-grad scoring pass over the pool."""
    reference_flops_per_token: float = 0.0
    """The reference model's training FLOPs per token (reference.json's `flops_per_token`)."""

    def take(self, ids: np.ndarray) -> BlockScores:
        """The scores of a run that draws from the blocks `ids` only (train.tokens_per_param):
        its block i is `ids[i]`; the reference's costs are the same."""
        return dataclasses.replace(self, score=self.score[ids], reference=self.reference[ids])

    def write(self, path: Path, info: dict[str, Any]) -> None:
        """The parquet at `path`; `info` (with the token counts) as reference.json beside it."""
        write_parquet(path, pd.DataFrame({"block_id": np.arange(len(self.score)), "score": self.score,
                                          "reference": self.reference}))
        write_json(Path(path).with_name("reference.json"), info)

    @classmethod
    def read(cls, path: str | Path) -> BlockScores:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"block scores {path} not found; run the score_reference rule first")
        table = pd.read_parquet(path).sort_values("block_id")
        if not np.array_equal(table.block_id.to_numpy(), np.arange(len(table))):
            raise ValueError(f"{path}: block_id must be 0..N-1")
        info_path = path.with_name("reference.json")
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        return cls(table.score.to_numpy(np.float32), table.reference.to_numpy(bool),
                   int(info.get("reference_train_tokens", 0)), int(info.get("scoring_tokens", 0)),
                   float(info.get("flops_per_token", 0)))


class Batch(NamedTuple):
    """One optimizer step's blocks, as `Sampler.batch_ids` returns them."""

    ids: np.ndarray
    """Global block ids (int64, length batch_blocks); an id may repeat (e.g. at a pass boundary)."""
    weights: np.ndarray | None = None
    """Per-draw loss weights (float32, the same length), or None: all ones."""


Observes = Literal["none", "now", "late"]
"""When `Sampler.observe` gets a step's training losses: never, before the next step's
`batch_ids`, or one step late (see `Sampler.observes`)."""


class Sampler(ABC):
    """Decides which training blocks make up each optimizer step.

    A subclass implements `batch_ids`; everything else has a default: runs as long as `random`
    (`num_steps`), reads no candidates, one phase, no records, no state. docs/adding-a-method.md
    walks through a complete one."""

    Options: ClassVar[type[SamplerOptions]] = SamplerOptions
    needs_block_scores: ClassVar[bool] = False
    """The workflow trains and scores a reference model first and passes `RunFacts.block_scores`;
    the run is charged with that model's compute (its training and scoring tokens)."""
    observes: ClassVar[Observes] = "now"
    """When the loop calls `observe` with a step's training losses:
    - "none": never (the loop then gathers no losses across ranks but for its log);
    - "now": before it asks for the next step's `batch_ids`;
    - "late": one step late, once the next step is queued on the device (whose batch is prepared
      meanwhile), for a sampler whose `batch_ids(step + 1)` within a phase neither depends on
      `observe(step, ...)` nor changes the state. Every loss is handed over before a phase's
      first `batch_ids` and before a checkpoint."""

    def __init__(self, run: RunFacts, options: SamplerOptions):
        self.run, self.options = run, options
        self.num_blocks, self.batch_blocks, self.seed = run.num_blocks, run.batch_blocks, run.seed

    def num_steps(self) -> int:
        """Optimizer steps in the whole plan; fixed before step 0 (the LR schedule spans it).
        Default: random's run length (equal tokens), from the options' `epochs` if they have one
        (`RunLengthOptions`)."""
        return equal_token_steps(self.run, getattr(self.options, "epochs", None))

    @abstractmethod
    def batch_ids(self, step: int) -> Batch:
        """The blocks of optimizer step `step` and their loss weights.

        Steps are requested in order 0, 1, ...; every DDP rank gets the same ids and takes its
        own slice.
        """

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        """Per-block training losses (mean token CE, from the training forward pass, before the
        update) of the blocks step `step` trained, as `observes` says when. Default: ignore."""

    def candidate_ids(self, step: int) -> np.ndarray | None:
        """Global block ids (int64) to score before `batch_ids(step)`, or None when the step's
        batch can be chosen (the default: no candidates). The loop asks again after each
        `observe_candidates`, so a method may score several rounds per step; it charges the
        scored tokens as forward-only."""
        return None

    def observe_candidates(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        """Per-block losses (mean token CE; no-grad, eval mode, after step - 1's update) of the
        ids the last `candidate_ids(step)` returned, in their order, the same on every rank."""

    def phase(self, step: int) -> str:
        """Name of the phase that step `step` belongs to (a column of the metrics log)."""
        return "train"

    def kept_fraction(self) -> float:
        """The share of the training blocks that the current step draws from (a column of the
        metrics log): 1 unless the method leaves blocks out."""
        return 1.0

    def records(self) -> dict[str, Any]:
        """Tables (name -> DataFrame) to save now, e.g. per-block state at a phase boundary.

        The loop calls this after every step and writes what it gets; default: nothing.
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything `batch_ids` depends on that the run changed, for the checkpoint."""
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


def epoch_permutation(size: int, *key: int) -> np.ndarray:
    """A permutation of range(size) fixed by the integers `key` alone (e.g. seed, epoch)."""
    return np.random.default_rng(list(key)).permutation(size)


class EpochOrder:
    """The visiting order of each pass over a pool of `size` blocks: pass e is
    epoch_permutation(size, *key, e). The current pass's order is cached: consecutive steps
    draw from the same pass."""

    def __init__(self, size: int, *key: int) -> None:
        self.size, self.key = size, key
        self._epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def __call__(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_permutation(self.size, *self.key, epoch)
        return self._order


class PoolSampler(Sampler):
    """Uniform sampling without replacement from a fixed pool of blocks (`self.pool`, set by the
    subclass): back-to-back passes, each in its own seeded order (`order_key`, then the pass)."""

    observes: ClassVar[Observes] = "none"
    pool: np.ndarray
    order_key: tuple[int, ...] = ()
    """Integers between the seed and the pass number in each pass's RNG key (a stream of its own)."""

    def batch_ids(self, step: int) -> Batch:
        if not hasattr(self, "_order"):
            self._order = EpochOrder(len(self.pool), self.seed, *self.order_key)
        start = step * self.batch_blocks
        return Batch(epoch_draws(self.pool, start, start + self.batch_blocks, self._order))


def equal_token_steps(run: RunFacts, epochs: float | None) -> int:
    """Steps of `epochs` passes' worth of draws over all blocks (default train.epochs), times the
    run's budget: the run length of `random`, which methods without a schedule of their own
    match (equal tokens)."""
    return int((epochs or run.epochs) * run.budget * run.num_blocks) // run.batch_blocks

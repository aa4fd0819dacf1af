"""`random`: the baseline. Each epoch is a fresh seeded permutation of all blocks (uniform
sampling without replacement); steps take consecutive slices of the concatenated epochs."""

from __future__ import annotations

import numpy as np

from lfr.sampling.base import Epochs, Sampler, SamplerOptions, epoch_draws, epoch_permutation


class RandomOptions(SamplerOptions):
    epochs: Epochs | None = None
    """Passes over all blocks (the run length); default: train.epochs."""


class RandomSampler(Sampler):
    Options = RandomOptions
    options: RandomOptions

    def num_steps(self) -> int:
        epochs = self.options.epochs or self.run.epochs
        return int(epochs * self.num_blocks) // self.batch_blocks

    def batch_ids(self, step: int) -> np.ndarray:
        start = step * self.batch_blocks
        return epoch_draws(np.arange(self.num_blocks), start, start + self.batch_blocks, self._order)

    def _order(self, epoch: int) -> np.ndarray:
        if getattr(self, "_cached_epoch", None) != epoch:
            self._cached_epoch, self._cached_order = epoch, epoch_permutation(
                self.num_blocks, self.seed, epoch)
        return self._cached_order

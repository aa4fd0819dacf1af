"""`random`: the baseline. Each epoch is a fresh seeded permutation of all blocks (uniform
sampling without replacement); steps take consecutive slices of the concatenated epochs."""

from __future__ import annotations

import numpy as np

from lfr.sampling.base import PoolSampler, RunFacts, RunLengthOptions


class RandomSampler(PoolSampler):
    Options = RunLengthOptions
    options: RunLengthOptions

    def __init__(self, run: RunFacts, options: RunLengthOptions) -> None:
        super().__init__(run, options)
        self.pool = np.arange(self.num_blocks)

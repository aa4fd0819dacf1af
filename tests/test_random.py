"""`random` (lfr/sampling/random.py): the baseline, a fresh seeded permutation of all blocks each
epoch, and the pooled-uniform base it shares with ppl-prune and the reference shard."""

from __future__ import annotations

import numpy as np
from test_sampling import make

from lfr.sampling import RunFacts
from lfr.sampling.base import EpochOrder, epoch_permutation
from lfr.sampling.ppl_prune import ShardSampler, reference_shard


def test_random_is_a_permutation_per_epoch():
    s = make("random", 40, 8, epochs=3)
    assert s.num_steps() == 15
    stream = np.concatenate([s.batch_ids(i).ids for i in range(s.num_steps())])
    for epoch in range(3):
        assert sorted(stream[epoch * 40 : (epoch + 1) * 40]) == list(range(40))
    assert not np.array_equal(stream[:40], stream[40:80])  # reshuffled each epoch
    other = make("random", 40, 8, seed=1, epochs=3)
    assert not np.array_equal(stream[:40], np.concatenate([other.batch_ids(i).ids for i in range(5)]))


def test_epoch_order_is_the_seeded_permutation_of_each_pass():
    order = EpochOrder(50, 7, 3)
    first = order(0)
    np.testing.assert_array_equal(first, epoch_permutation(50, 7, 3, 0))
    assert order(0) is first  # the current pass is cached
    np.testing.assert_array_equal(order(1), np.random.default_rng([7, 3, 1]).permutation(50))
    assert sorted(order(1)) == list(range(50)) and not np.array_equal(order(1), first)


def test_reference_shard_sampler_passes_over_its_shard_only():
    shard = reference_shard(100, 0.2, seed=0)
    assert len(shard) == 20 and np.all(np.diff(shard) > 0)
    s = ShardSampler(RunFacts(100, 8, 16, 0, 1.0), shard, epochs=2)
    assert s.num_steps() == 5 and s.observes == "none"
    stream = np.concatenate([s.batch_ids(i).ids for i in range(s.num_steps())])
    assert sorted(stream[:20]) == shard.tolist() and sorted(stream[20:40]) == shard.tolist()
    assert not np.array_equal(stream[:20], stream[20:40])


def test_methods_that_ignore_losses_say_so():
    assert make("random", 10, 2).observes == "none" and make("lfr", 10, 2, epochs=4).observes == "late"

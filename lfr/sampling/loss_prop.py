"""`loss-prop`: loss-proportional prioritized sampling with importance weights, as in
prioritized experience replay (Schaul et al., arXiv 1511.05952; Loshchilov & Hutter, arXiv
1511.06343; Katharopoulos & Fleuret, arXiv 1803.00942).

Block i's priority is (loss_i + eps)^alpha, loss_i its training loss at its last visit; blocks
not seen yet get the largest priority of the seen ones (1 before any is seen), so they are
drawn early. Each step draws `batch_blocks` ids with replacement from p_i = priority_i / sum,
with a generator seeded by (seed, step). The bias is corrected by the importance weights
w_i = (N p_i)^-beta, normalised by the largest weight over all N blocks, (N min_j p_j)^-beta, so
that weights are at most 1 (PER's convention); beta rises linearly from `beta0` at step 0 to 1
at the last step. The run lasts as many steps as `random` (equal tokens).

A step costs O(B log N), as in PER: the priorities live in segment trees over the blocks (the
sum of the seen blocks' priorities, the count of unseen blocks, the min and max loss of the seen
ones), which `observe` updates along the paths of the blocks it changes. A draw descends from
the root with the mass of a subtree = its priority sum + (largest priority) x its unseen count,
so the unseen blocks need no update when the largest priority changes. The trees derive from
the per-block losses alone: the checkpoint holds only those, and a resumed run rebuilds them
bit for bit.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from lfr.sampling.base import Batch, RunFacts, RunLengthOptions, Sampler


class LossPropOptions(RunLengthOptions):
    alpha: Annotated[float, Field(ge=0, le=10)] = 1.0
    """Priority exponent: 0 is uniform sampling, 1 is proportional to the loss. At most 10: larger
    powers of a fresh model's losses overflow float64 and the run fails mid-training (NaN p)."""
    beta0: Annotated[float, Field(ge=0, le=1)] = 0.4
    """Importance-weight exponent at step 0 (PER's default); annealed linearly to 1."""
    eps: Annotated[float, Field(gt=0, le=1)] = 0.01
    """Added to every loss so that no block's probability is 0; at most 1 (more flattens the
    priorities towards uniform, and its power, like alpha's, must stay in float64's range)."""


# -- segment trees over n leaves in one array of 2n: leaf j at n + j, node i (1 <= i < n) is
# op(node 2i, node 2i + 1), the root is node 1. Any n works; the leaves are just not in id order
# under the root when n is not a power of two, which a draw does not need.
def tree_build(leaves: np.ndarray, op: np.ufunc) -> np.ndarray:
    n = len(leaves)
    tree = np.zeros(2 * n, dtype=leaves.dtype)
    tree[n:] = leaves
    for k in reversed(range(n.bit_length())):  # nodes [2^k, 2^(k+1)): deepest level first
        lo, hi = 1 << k, min(2 << k, n)
        if lo < hi:
            tree[lo:hi] = op(tree[2 * lo : 2 * hi : 2], tree[2 * lo + 1 : 2 * hi : 2])
    return tree


def tree_paths(n: int, ids: np.ndarray) -> list[np.ndarray]:
    """The inner nodes above leaves `ids`, level by level upwards: recomputing them in this order
    sees every node's children final (a node can appear again at the next level)."""
    levels, node = [], np.unique((n + ids) >> 1)
    while len(node := node[node >= 1]):
        levels.append(node)
        node = np.unique(node >> 1)
    return levels


def tree_update(tree: np.ndarray, op: np.ufunc, ids: np.ndarray, values: np.ndarray,
                paths: list[np.ndarray]) -> None:
    n = len(tree) // 2
    tree[n + ids] = values
    for node in paths:
        tree[node] = op(tree[2 * node], tree[2 * node + 1])


class LossPropSampler(Sampler):
    Options = LossPropOptions
    options: LossPropOptions

    def __init__(self, run: RunFacts, options: LossPropOptions) -> None:
        super().__init__(run, options)
        self.steps = self.num_steps()  # beta's schedule spans them
        self._set_loss(np.full(self.num_blocks, np.nan, dtype=np.float32))  # last loss; NaN = unseen

    def _set_loss(self, loss: np.ndarray) -> None:
        self.loss = loss
        seen = ~np.isnan(loss)
        self.prio_sum = tree_build(np.where(seen, self.priority(loss), 0.0), np.add)
        self.unseen = tree_build((~seen).astype(np.int32), np.add)
        self.loss_min = tree_build(loss, np.fmin)  # fmin/fmax skip NaN: the seen blocks' extremes
        self.loss_max = tree_build(loss, np.fmax)

    def beta(self, step: int) -> float:
        b0 = self.options.beta0
        return b0 + (1 - b0) * min(1.0, step / max(1, self.steps - 1))

    def priority(self, loss: np.ndarray | np.floating) -> np.ndarray:
        return (np.asarray(loss, dtype=np.float64) + self.options.eps) ** self.options.alpha

    def max_priority(self) -> float:
        """The unseen blocks' priority: the largest seen one (the priority rises with the loss),
        1 before any block is seen."""
        top = self.loss_max[1]
        return 1.0 if np.isnan(top) else float(self.priority(top))

    def total(self) -> float:
        return float(self.prio_sum[1] + self.max_priority() * self.unseen[1])

    def probabilities(self) -> np.ndarray:
        """p_i over all blocks (float64, sums to 1), from the trees' leaves: O(N), for tests and
        inspection; a step never needs it."""
        n = self.num_blocks
        prio = np.where(self.unseen[n:] > 0, self.max_priority(), self.prio_sum[n:])
        return prio / self.total()

    def draw(self, u: np.ndarray) -> np.ndarray:
        """The blocks at uniform positions `u` in [0, 1) of the probability mass: a descent from
        the root, going right where u passes the left subtree's mass."""
        n, top = self.num_blocks, self.max_priority()
        u = u * self.total()
        node = np.ones(len(u), dtype=np.int64)
        while (inner := node < n).any():  # leaves differ in depth by at most one level
            at, left = node[inner], 2 * node[inner]
            left_mass = self.prio_sum[left] + top * self.unseen[left]
            right_mass = self.prio_sum[left + 1] + top * self.unseen[left + 1]
            right = (u[inner] >= left_mass) & (right_mass > 0)  # rounding never ends on a 0 leaf
            u[inner] -= np.where(right, left_mass, 0.0)
            node[inner] = 2 * at + right
        return node - n

    def weights(self, ids: np.ndarray, step: int) -> np.ndarray:
        """w_i = (N p_i)^-beta / max_j (N p_j)^-beta = (p_i / min_j p_j)^-beta; the smallest p is a
        seen block's (unseen ones have the largest priority), or uniform before any is seen."""
        n, total, top = self.num_blocks, self.total(), self.max_priority()
        low = self.loss_min[1]
        p_min = (1.0 if np.isnan(low) else float(self.priority(low))) / total
        p = np.where(self.unseen[n + ids] > 0, top, self.prio_sum[n + ids]) / total
        return ((p / p_min) ** -self.beta(step)).astype(np.float32)

    def batch_ids(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, step])
        ids = self.draw(rng.random(self.batch_blocks))
        return Batch(ids, self.weights(ids, step))

    def observe(self, step: int, ids: np.ndarray, losses: np.ndarray) -> None:
        self.loss[ids] = losses  # a repeated id keeps its last loss
        ids = np.unique(ids)
        loss = self.loss[ids]
        seen = ~np.isnan(loss)
        paths = tree_paths(self.num_blocks, ids)
        tree_update(self.prio_sum, np.add, ids, np.where(seen, self.priority(loss), 0.0), paths)
        tree_update(self.unseen, np.add, ids, (~seen).astype(np.int32), paths)
        tree_update(self.loss_min, np.fmin, ids, loss, paths)
        tree_update(self.loss_max, np.fmax, ids, loss, paths)

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._set_loss(state["loss"].astype(np.float32))  # a copy; the trees follow from it

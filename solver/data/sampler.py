"""The one minibatch sampler: epochs of a seeded permutation of the global samples.

An epoch is ⌈S/B⌉ iterations. At its start a permutation of the *global* sample
indices 0 … S−1 is drawn from ``numpy.random.default_rng(seed)``; batch j of the
epoch is the j-th block of B indices of it (the last one holds the remainder).
Every rank holds the same generator and draws the same numbers, so batches agree
on all ranks. With a data split, data group g holds the global samples
offset_g … offset_g + S_g − 1 (the contiguous blocks of :func:`.dataset.shard`,
in data-rank order) and evaluates the part of the batch it holds; the data ranks
sum the gradients, so a step is the same one as without a data split (up to
summation round-off). :meth:`Minibatches.state` is what a checkpoint needs.
"""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["Minibatches"]


class Minibatches:
    """Batches of ``batch_size`` of ``S`` global samples for the ``S_local`` samples
    starting at global index ``offset`` on this rank."""

    def __init__(self, S: int, S_local: int, offset: int, batch_size: int, seed: int = 0):
        self.S, self.S_local, self.offset = int(S), int(S_local), int(offset)
        self.B = int(batch_size)
        self.rng = np.random.default_rng(int(seed))
        self.perm = np.zeros(0, dtype=np.int64)  # this epoch's permutation of 0 … S−1

    @classmethod
    def for_functional(cls, rf, batch_size: int, seed: int = 0) -> Minibatches:
        """The sampler of a reduced functional's samples (collective over its data comm)."""
        comm = rf.data_comm
        offset = comm.exscan(rf.S_local)  # None on data rank 0
        return cls(rf.S, rf.S_local, int(offset) if comm.rank > 0 else 0, batch_size, seed)

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.S / self.B)

    def local(self, k: int) -> np.ndarray:
        """This rank's (sorted, local) sample indices of iteration k's batch; call
        with k = 0, 1, 2, … in order (a new epoch draws a new permutation). A
        sampler that starts mid-epoch without this epoch's permutation (a method
        that continues another's checkpoint, or a batch size changed on resume)
        draws one at once."""
        j = k % self.per_epoch
        if j == 0 or len(self.perm) != self.S:
            self.perm = self.rng.permutation(self.S)
        idx = self.perm[j * self.B : (j + 1) * self.B]
        mine = idx[(idx >= self.offset) & (idx < self.offset + self.S_local)]
        return np.sort(mine) - self.offset

    def state(self) -> dict[str, np.ndarray]:
        return {
            "perm": self.perm.copy(),
            "rng": np.array(json.dumps(self.rng.bit_generator.state)),
        }

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.perm = np.array(state["perm"], dtype=np.int64)
        self.rng.bit_generator.state = json.loads(str(state["rng"]))

"""A pool of work arrays reused from one forward–adjoint sweep to the next.

Every gradient of a training run allocates the same arrays: the stored layer
records (with full storage 2·N_t multivectors of N×S for IMEX Euler) and the
temporaries of each adjoint step. Allocated afresh, each gradient pays the
first-touch page faults of all of them, because the C allocator hands large
freed blocks back to the operating system — measured as 13 % of the dense
gradient's time (``benchmarks/gradient_cost.py``, the "sys" column). PETSc
avoids this by allocating work vectors once (``KSPSetWorkVecs``); the
:class:`Workspace` does the same for the sweep: arrays given back are kept and
handed out again for the next request of the same shape.

Only arrays the pool made are ever recycled: :meth:`Workspace.give` ignores any
other array (inputs, the embedding's U⁰, arrays made by kernels that do not use
the pool), so giving back is always safe. An array must not be used after it is
given back. :meth:`Workspace.end` forgets arrays still lent at the end of a
sweep (nothing is recycled that someone might still hold).

An array another pool made (the width axis's node-shared arrays,
:mod:`~pontryx.solver.model.shared`) can be lent through a workspace
(:meth:`Workspace.adopt`): giving it back gives it to that pool, and so does
:meth:`Workspace.end` for one still lent (the sweep that took it is over).

The pool keeps its memory between sweeps (as a training run needs it again at
once); :meth:`Workspace.clear` returns it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["HEAP", "Heap", "Workspace"]


class Workspace:
    """Recycled float64 arrays, keyed by shape."""

    def __init__(self, adopts: bool = True):
        #: Whether arrays of other pools may be lent through this one (:meth:`adopt`);
        #: a :class:`Heap` never, as nothing is given back to it.
        self.adopts = adopts
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._lent: dict[int, np.ndarray] = {}
        self._owners: dict[int, object] = {}

    def take(self, shape) -> np.ndarray:
        """An uninitialised C-contiguous float64 array of ``shape``."""
        shape = tuple(int(s) for s in shape)
        free = self._free.get(shape)
        a = free.pop() if free else np.empty(shape)
        self._lent[id(a)] = a
        return a

    def adopt(self, a: np.ndarray, owner) -> None:
        """Lend ``a``, an array of another pool ``owner`` (with a ``give``): giving
        it back here gives it back to ``owner``."""
        self._lent[id(a)] = a
        self._owners[id(a)] = owner

    def give(self, *arrays) -> None:
        """Give arrays back for reuse; arrays the pool did not lend are ignored."""
        for a in arrays:
            if a is None or self._lent.pop(id(a), None) is None:
                continue
            owner = self._owners.pop(id(a), None)
            if owner is not None:
                owner.give(a)
            else:
                self._free.setdefault(a.shape, []).append(a)

    def replaced(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """``new``, the result of an operation on ``old`` that may return its
        input (an allgather on one rank, ε = 0): ``old`` is given back unless it
        is ``new`` itself."""
        if new is not old:
            self.give(old)
        return new

    def end(self) -> None:
        """End of a sweep: forget arrays still lent (they are not reused); adopted
        ones go back to their owners (the sweep that lent them is over: nothing
        holds them)."""
        for key, owner in self._owners.items():
            owner.give(self._lent[key])
        self._lent.clear()
        self._owners.clear()

    def clear(self) -> None:
        """Drop every pooled array (their memory goes back to the allocator); as
        :meth:`end` for arrays still lent."""
        self.end()
        self._free.clear()

    @property
    def lent(self) -> int:
        """Number of arrays handed out and not given back."""
        return len(self._lent)

    @property
    def nbytes(self) -> int:
        """Bytes held for reuse."""
        return sum(a.nbytes for free in self._free.values() for a in free)


class Heap(Workspace):
    """No pooling: fresh arrays from NumPy, nothing kept (the default)."""

    def __init__(self):
        super().__init__(adopts=False)

    def take(self, shape) -> np.ndarray:
        return np.empty(tuple(int(s) for s in shape))

    def adopt(self, a, owner) -> None:  # pragma: no cover - callers check ``adopts``
        raise TypeError("a Heap lends nothing: check Workspace.adopts")

    def give(self, *arrays) -> None:
        pass


#: The shared no-pooling workspace (stateless).
HEAP = Heap()

"""Node-shared multivectors of the width axis: an allgather without copies.

On the width axis the dense kernel's K U = W (M_L U) needs all N rows of M_L U
on every width rank (:meth:`WidthSpace.allgather`) and Kᵀ D a sum of full-height
partial products (:meth:`WidthSpace.reduce_scatter`). When every rank of the
width communicator runs on one node, both can go through memory all of them
see (MPI-3 shared windows, ``MPI_Win_allocate_shared``; the hybrid MPI+MPI model
of Hoefler et al., *MPI+MPI: a new hybrid approach to parallel programming with
MPI plus shared memory*, Computing 95, 2013):

* :meth:`SharedRows.rows` — an N×S array, one window whose rank-r segment is
  rank r's rows: each rank writes its own rows, :meth:`SharedRows.fence`, and
  every rank reads all N rows in place (no copy, no message);
* :meth:`SharedRows.partials` — one N×S array per rank: each writes its partial
  product into its own, fence, and each sums its owned rows of all of them.

Measured on 2 ranks of a 2-core Xeon (dense, S = 1000, 16 layers; layouts
``width`` and ``width-mpi`` of ``benchmarks/gradient_cost.py``, RESULTS.md): the
forward 0.116 → 0.082 s and the gradient 0.264 → 0.241 s at N = 529 (75 → 83 % of
the GEMM rate), the gradient 0.863 → 0.795 s at N = 1024 (81 → 89 %).

Reuse. An array given back (:meth:`SharedRows.give`) is handed out again only
after a later fence: every rank gives an array back at the same point of the
same (SPMD) program, after its own last read of it, and reaches that fence after
it, so no rank writes into an array another may still read. Arrays are made
collectively, in the same order on every rank (the pool's state is the same on
every rank). None is made without room in ``/dev/shm`` on every rank (MPICH
maps its windows there; Docker's default of 64 MB would fail with SIGBUS on
first touch) nor past :data:`MAX_WINDOWS` (MPICH crashes past about 2000 windows
and communicators): arrays given back are freed first, oldest first, and failing
that :meth:`rows` and :meth:`partials` return None and the caller takes the MPI
collectives. One pool serves every width space on the same group of ranks.
"""

from __future__ import annotations

import os

from mpi4py import MPI

import numpy as np

__all__ = ["SharedRows"]

#: Where MPICH maps shared windows (checked for room before each new window).
SHM_DIR = "/dev/shm"
#: Room left in ``SHM_DIR`` after a new window (bytes).
SHM_MARGIN = 64 << 20
#: Windows kept by one pool at most: each holds an MPI context id, of which MPICH
#: has about 2000 per process (shared with every communicator DOLFINx and PETSc
#: make); past this, free arrays are freed, oldest first, before a new one is made.
MAX_WINDOWS = 128

#: The pools, one per group of ranks (world ranks), shared by every width space
#: on that group.
_POOLS: dict[tuple[int, ...], SharedRows] = {}


def on_one_node(comm: MPI.Comm) -> bool:
    """Whether every rank of ``comm`` shares one node's memory. Collective."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.size == comm.size
    finally:
        node.Free()


def free_bytes() -> int:
    """Free bytes in :data:`SHM_DIR` (0 where there is none)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


class SharedRows:
    """A pool of node-shared N×S arrays over the ranks of one communicator, for
    row distributions ``counts`` (rank r owns rows ``offset_r : offset_r +
    counts[r]``); see the module docstring. :meth:`of` gives the pool of a
    communicator's group."""

    def __init__(self, comm: MPI.Comm):
        self.comm = comm.Dup()  # its barriers apart from the caller's messages
        self.epoch = 0
        self._free: dict[tuple, list[tuple[int, object, MPI.Win]]] = {}
        self._lent: dict[int, tuple[tuple, object, MPI.Win]] = {}
        self._windows = 0
        self._written: dict[int, MPI.Win] = {}  # lent since the last fence

    @classmethod
    def of(cls, comm: MPI.Comm) -> SharedRows | None:
        """The pool of ``comm``'s group of ranks, or None when ``comm`` has one rank
        or spans nodes. Collective."""
        if comm.size == 1 or not on_one_node(comm):
            return None
        ranks = comm.group.Translate_ranks(list(range(comm.size)), MPI.COMM_WORLD.group)
        key = tuple(int(r) for r in ranks)
        if key not in _POOLS:
            _POOLS[key] = cls(comm)
        return _POOLS[key]

    # -- windows ----------------------------------------------------------
    def _window(self, nbytes: int) -> tuple[MPI.Win, list] | None:
        """A new window of ``nbytes`` on this rank and its segments (buffers), one
        per rank; None on every rank when one of them lacks room. Collective."""
        while self._windows >= MAX_WINDOWS and self._evict():
            pass
        room = self._room(nbytes)
        while not room and self._evict():
            room = self._room(nbytes)
        if self._windows >= MAX_WINDOWS or not room:
            return None
        win = MPI.Win.Allocate_shared(nbytes, 1, comm=self.comm)
        win.Lock_all(MPI.MODE_NOCHECK)  # one passive-target epoch, for Win_sync
        self._windows += 1
        return win, [win.Shared_query(r)[0] for r in range(self.comm.size)]

    def _room(self, nbytes: int) -> bool:
        return self.comm.allreduce(
            free_bytes() >= nbytes * self.comm.size + SHM_MARGIN, op=MPI.LAND
        )

    def _evict(self) -> bool:
        """Free the array given back longest ago (False: none). Collective."""
        oldest = None
        for key, free in self._free.items():
            for i, (epoch, _, _) in enumerate(free):
                if epoch < self.epoch and (oldest is None or epoch < oldest[0]):
                    oldest = (epoch, key, i)
        if oldest is None:
            return False
        _, key, i = oldest
        _, _, win = self._free[key].pop(i)
        self._release(win)
        return True

    def _release(self, win: MPI.Win) -> None:
        self._written.pop(id(win), None)
        win.Unlock_all()
        win.Free()
        self._windows -= 1

    def _take(self, key, make):
        """A free array of ``key`` given back before the last fence (no rank reads
        it), else a new one; lent."""
        free = self._free.get(key, [])
        for i, (epoch, _, _) in enumerate(free):
            if epoch < self.epoch:
                _, item, win = free.pop(i)
                break
        else:
            made = make()
            if made is None:
                return None
            item, win = made
        handle = item if isinstance(item, np.ndarray) else item[self.comm.rank]
        self._lent[id(handle)] = (key, item, win)
        self._written[id(win)] = win
        return item

    def rows(self, counts, S: int) -> np.ndarray | None:
        """An N×S array (C order, N = Σ counts) that every rank sees whole; this
        rank's rows ``[offset : offset + counts[rank]]`` are its own to write,
        then :meth:`fence` before any rank reads another's. None when there is no
        room. Collective when it makes one."""
        counts = tuple(int(c) for c in counts)
        N, S, rank = sum(counts), int(S), self.comm.rank

        def make():
            made = self._window(counts[rank] * S * 8)
            if made is None:
                return None
            win, segments = made
            first = segments[0].address  # one window: the segments follow each other
            offsets = np.concatenate([[0], np.cumsum(counts[:-1])]) * S * 8
            if any(b.address != first + int(o) for b, o in zip(segments, offsets, strict=True)):
                self._release(win)  # pragma: no cover - MPI makes them contiguous by default
                return None  # pragma: no cover
            mem = MPI.buffer.fromaddress(first, N * S * 8)
            return np.ndarray((N, S), dtype=np.float64, buffer=mem), win

        return self._take(("rows", counts, S), make)

    def partials(self, N: int, S: int) -> list[np.ndarray] | None:
        """One N×S array per rank, all seen by every rank: write this rank's
        (``[comm.rank]``), :meth:`fence`, then read any. None when there is no
        room. Collective when it makes one. Give back this rank's own array."""
        N, S = int(N), int(S)

        def make():
            made = self._window(N * S * 8)
            if made is None:
                return None
            win, segments = made
            return [np.ndarray((N, S), dtype=np.float64, buffer=b) for b in segments], win

        return self._take(("partials", N, S), make)

    def owns(self, a) -> bool:
        """Whether ``a`` is an array this pool lent and has not had back."""
        return id(a) in self._lent

    def give(self, a) -> None:
        """Give back an array of :meth:`rows` (or this rank's of :meth:`partials`);
        any other is ignored. Every rank gives it back at the same point."""
        entry = self._lent.pop(id(a), None)
        if entry is not None:
            key, item, win = entry
            self._free.setdefault(key, []).append((self.epoch, item, win))

    def fence(self) -> None:
        """Every rank's writes before it are seen by every rank after it: the
        windows lent since the last fence synchronised (``MPI_Win_sync``) on both
        sides of a barrier, the writers' before and the readers' after (MPI-3.1
        §11.7, example 11.21)."""
        written = list(self._written.values())
        self._written.clear()
        for win in written:
            win.Sync()
        self.comm.Barrier()
        for win in written:
            win.Sync()
        self.epoch += 1

    @property
    def windows(self) -> int:
        """Number of windows the pool holds."""
        return self._windows

    def clear(self, counts=None) -> None:
        """Free the arrays given back (of row distribution ``counts`` only, with N =
        Σ counts for partials); lent arrays stay. Collective."""
        keys = list(self._free)
        if counts is not None:
            counts = tuple(int(c) for c in counts)
            keys = [k for k in keys if k[1] in (counts, sum(counts))]
        for key in keys:
            for _, _, win in self._free.pop(key):
                self._release(win)

"""MPI layout: the width × data communicator split (DESIGN.md §4).

The P ranks of ``world`` form a P_w × P_d grid. Ranks ``g·P_w … g·P_w+P_w−1``
make data group g: they hold one copy of the mesh, partitioned by DOLFINx over
their *width* communicator, and the g-th block of samples. Ranks with the same
width rank across groups form a *data* communicator, over which gradients are
summed (one Allreduce per sweep). Like Firedrake's ``Ensemble``. The layout owns
the communicators it split off and frees them in :meth:`Layout.destroy`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpi4py import MPI

from pontryx.meshes.errors import InputError

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    world: MPI.Comm
    width: MPI.Comm
    data: MPI.Comm

    @property
    def n_width(self) -> int:
        return self.width.size

    @property
    def n_data(self) -> int:
        return self.data.size

    @property
    def group(self) -> int:
        """Index of this rank's data group (which block of samples it holds)."""
        return self.data.rank

    @property
    def is_root(self) -> bool:
        return self.world.rank == 0

    @classmethod
    def create(cls, world: MPI.Comm, width: int | None = None, data: int | None = None):
        """Split ``world`` into ``width`` × ``data`` ranks. Give either factor or
        both; by default all ranks go to the width axis. Errors are keyed
        ``width`` or ``data``."""
        P = world.size
        if width is None and data is None:
            width = P
        if width is None:
            width = P // data if data and P % data == 0 else -1
        if data is None:
            data = P // width if width > 0 and P % width == 0 else -1
        if width < 1 or data < 1 or width * data != P:
            raise InputError(f"width × data = {width} × {data} does not match the {P} MPI ranks")
        r = world.rank
        width_comm = world.Split(color=r // width, key=r)
        data_comm = world.Split(color=r % width, key=r)
        return cls(world, width_comm, data_comm)

    def describe(self) -> str:
        return f"{self.world.size} ranks = {self.n_width} width × {self.n_data} data"

    def destroy(self) -> None:
        """Free the width and data communicators (not ``world``)."""
        for comm in (self.width, self.data):
            if comm != MPI.COMM_NULL and comm not in (MPI.COMM_WORLD, MPI.COMM_SELF):
                comm.Free()

"""MPI layout: the width × data × depth communicator split (DESIGN.md §4).

The P ranks of ``world`` form a P_w × P_d × P_t grid, rank r = w + P_w (g + P_d k)
with width rank w, data group g and depth rank k. Ranks ``w = 0 … P_w−1`` of one
(g, k) share one copy of the mesh, partitioned by DOLFINx over their *width*
communicator, and hold the g-th block of samples. Ranks with the same (w, k)
across data groups form a *data* communicator, over which gradients are summed
(one Allreduce per sweep); ranks with the same (w, g) across depth ranks form a
*depth* communicator, over which the one-shot solve splits its layers into
contiguous blocks (:mod:`pontryx.solver.training.kkt`: neighbouring depth ranks
exchange the states and costates of the layers at their common boundary).
Every other method keeps all layers on every depth rank (the application layer
refuses depth > 1 for them). Like Firedrake's ``Ensemble``. The layout owns the
communicators it split off and frees them in :meth:`Layout.destroy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mpi4py import MPI

from pontryx.meshes.errors import InputError

__all__ = ["Layout", "ranks"]


@dataclass(frozen=True)
class Layout:
    world: MPI.Comm
    width: MPI.Comm
    data: MPI.Comm
    depth: MPI.Comm = field(default_factory=lambda: MPI.COMM_SELF)

    @property
    def n_width(self) -> int:
        return self.width.size

    @property
    def n_data(self) -> int:
        return self.data.size

    @property
    def n_depth(self) -> int:
        return self.depth.size

    @property
    def group(self) -> int:
        """Index of this rank's data group (which block of samples it holds)."""
        return self.data.rank

    @property
    def is_root(self) -> bool:
        return self.world.rank == 0

    @property
    def writes(self) -> bool:
        """Whether this rank's width communicator writes the run's outputs: data group 0
        on depth rank 0 (every other (group, depth) copy holds the same controls)."""
        return self.data.rank == 0 and self.depth.rank == 0

    @classmethod
    def create(
        cls,
        world: MPI.Comm,
        width: int | None = None,
        data: int | None = None,
        depth: int | None = None,
    ):
        """Split ``world`` into ``width`` × ``data`` × ``depth`` ranks. ``depth``
        defaults to 1; of width and data give either or both (by default all
        remaining ranks go to the width axis). Errors are keyed ``depth`` or
        (width × data not matching) not keyed."""
        P = world.size
        depth = 1 if depth is None else depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1 or P % depth:
            raise InputError(f"expected a divisor of the {P} MPI ranks, got {depth}", "depth")
        Q = P // depth  # ranks of one depth slice
        if width is None and data is None:
            width = Q
        if width is None:
            width = Q // data if data and Q % data == 0 else -1
        if data is None:
            data = Q // width if width > 0 and Q % width == 0 else -1
        if width < 1 or data < 1 or width * data * depth != P:
            sizes = f"{width} × {data}" + (f" × {depth}" if depth > 1 else "")
            axes = "width × data" + (" × depth" if depth > 1 else "")
            raise InputError(f"{axes} = {sizes} does not match the {P} MPI ranks")
        r = world.rank
        w, k = r % width, r // (width * data)
        width_comm = world.Split(color=r // width, key=r)
        data_comm = world.Split(color=w + width * k, key=r)
        depth_comm = world.Split(color=r % (width * data), key=r) if depth > 1 else MPI.COMM_SELF
        return cls(world, width_comm, data_comm, depth_comm)

    def describe(self) -> str:
        text = f"{ranks(self.world.size)} = {self.n_width} width × {self.n_data} data"
        return text + (f" × {self.n_depth} depth" if self.n_depth > 1 else "")

    def destroy(self) -> None:
        """Free the width, data and depth communicators (not ``world``)."""
        for comm in (self.width, self.data, self.depth):
            if comm != MPI.COMM_NULL and comm not in (MPI.COMM_WORLD, MPI.COMM_SELF):
                comm.Free()


def ranks(n: int) -> str:
    """ "1 rank", "2 ranks"."""
    return f"{n} rank{'' if n == 1 else 's'}"

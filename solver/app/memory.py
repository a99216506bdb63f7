"""The memory a run needs, estimated before anything large is allocated.

From the configuration alone (no mesh is built, no control drawn) :func:`estimate`
predicts, per MPI rank, the bytes of

* the controls θ (dense kernel: N_t·n·N values; low-rank 2·N_t·n·R; local
  (2 + d)·N_t·n; b: N_t·n; C, E, d), times the copies the method keeps
  (:attr:`Trainer.memory_copies`: gradient, optimiser memory, line-search points,
  the test evaluation — about 42 for TAO's ``lmvm`` with its default history, 2m + 4
  for ``lbfgs`` with history m; 2(T − 1) more where the samples are split over T
  BLAS threads, :mod:`pontryx.solver.adjoint.split`: the chunks' gradients, and
  their Hessian actions);
* the states a gradient stores: ``records`` multivectors of n × S_local per layer
  for full storage (IMEX Euler 2: M_L U and Δt σ'(Z) in the gradient sweep, U and Z
  otherwise; midpoint 4; Verlet 4; RK4 8), ⌈√N_t⌉ + 2 records'
  worth with ``checkpointing: sqrt`` (N_t/k + 2k for every k-th state), a few with
  ``reverse``, plus the sweep's work arrays (N × S for the dense kernel's gathered
  states); with noise in depth S_local counts the M paths of every sample, and
  the increments a full-batch run keeps (n × S_local·M per layer, at most
  :data:`~pontryx.solver.model.noise.CACHE_BYTES`) are added;
* the method's own solve (:meth:`Trainer.memory_bytes`, the one-shot's KKT
  vectors);
* the data set (training and test samples, on every rank) and the test
  evaluation's forward sweep (a few n × S_test multivectors, N × S_test for the
  dense kernel's gathered states);
* for an inverse problem, the physical PDE: :data:`PDE_DOF_BYTES` per dof of
  Ω_phys and of the mesh the synthetic data are solved on (``refine`` uniform
  refinements: 2^(refine·d) times the cells), and the observation points;

where N is the number of dofs predicted from the ``mesh:`` description
(:func:`dofs`: exact for the built-in meshes, from the area and ``h`` for the
gmsh domains; the values read, such as ``mesh.n`` or ``data.n_train``, checked and
keyed as the builders check them, since the estimate comes before the builders),
n = 1.25 N / width ranks (DOLFINx's partitions are not quite
even), S_local = n_train / data ranks. The run is
refused (one line, exit 2) when the estimate exceeds ``--max-memory`` or the
memory available on the node shared by its ranks (``MemAvailable`` of
``/proc/meminfo``). The estimate is an upper-range figure (documented margins
in the tests: within a factor of 2 of the measured peak).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from mpi4py import MPI

from pontryx.meshes.errors import InputError, show
from pontryx.solver.config.schema import at_level

__all__ = [
    "available_bytes",
    "check_memory",
    "dofs",
    "estimate",
    "format_bytes",
    "least_available",
    "parse_size",
]

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
#: bytes per dof of an inverse problem's PDE (mesh, function spaces, the matrix and
#: its LU factors, the solver's vectors): an upper-range figure for P1 in 1D–3D
PDE_DOF_BYTES = 4096
#: bytes per observation point (its coordinates, cell, value and work arrays)
POINT_BYTES = 128
#: images of scikit-learn's digits set (its test set is the rest by default)
DIGITS_IMAGES = 1797


def parse_size(text: str) -> float:
    """``"8G"``, ``"512M"``, ``"2.5g"``, ``"1e9"``, ``"1000000"`` (bytes) → bytes."""
    m = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text)
    )
    if m is None or not 0 < float(m.group(1)) < math.inf:
        raise InputError(
            f"expected a size such as 8G, 512M or 1e9 bytes, got {show(text)}", "--max-memory"
        )
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def dofs(mesh: dict, degree: int) -> int:
    """The number of Lagrange P_degree dofs of the mesh a ``mesh:`` description makes
    (without making it): exact for the built-in meshes, an estimate from the area
    and the element size ``h`` for the gmsh domains, 0 (unknown) for files. The
    values it reads are checked as the mesh builders check them (the same
    :class:`InputError`, keyed within the description: ``n``, ``h``, …)."""
    from pontryx.meshes.errors import counts, length, resolve
    from pontryx.meshes.kinds import DEFAULT_KIND, MESH_KINDS

    p = resolve(mesh, MESH_KINDS, "kind", default=DEFAULT_KIND, what="kind")
    kind, k = p["kind"], int(degree)
    if kind in ("interval", "unit_interval"):
        (nx,) = counts(p["n"], 1)
        return k * nx + 1
    if kind in ("rectangle", "unit_square"):
        nx, ny = counts(p["n"], 2)
        if p.get("diagonal") != "crossed":
            return (k * nx + 1) * (k * ny + 1)
        # crossed: a vertex at each square's centre, 4 triangles per square
        vertices = (nx + 1) * (ny + 1) + nx * ny
        edges = nx * (ny + 1) + ny * (nx + 1) + 4 * nx * ny
        return vertices + (k - 1) * edges + (k - 1) * (k - 2) // 2 * 4 * nx * ny
    if kind in ("box", "unit_cube"):
        nx, ny, nz = counts(p["n"], 3)
        return (k * nx + 1) * (k * ny + 1) * (k * nz + 1)
    if kind == "file":
        return 0
    r = {key: length(p[key], key) for key in ("radius", "inner_radius", "outer_radius", "h")
         if key in p}  # fmt: skip
    areas = {
        "disk": lambda: math.pi * r["radius"] ** 2,
        "annulus": lambda: math.pi * abs(r["outer_radius"] ** 2 - r["inner_radius"] ** 2),
        "lshape": lambda: 0.75,
        "hole": lambda: max(1.0 - math.pi * r["radius"] ** 2, 0.0),
    }
    vertices = areas[kind]() / (math.sqrt(3) / 4 * r["h"] ** 2) / 2  # ≈ triangles / 2
    return int(min(1.5 * vertices * k * k, 1e18)) + 1  # boundary vertices and a margin


def _dimension(mesh: dict) -> int:
    kind = mesh.get("kind", "unit_square")
    return 1 if kind in ("interval", "unit_interval") else 3 if kind in ("box", "unit_cube") else 2


def _pde_bytes(inv, domain_dofs: int) -> float:
    """An inverse problem's PDE on Ω_phys and on the mesh of its synthetic data
    (``refine`` uniform refinements: 2^d times the cells each), and its points."""
    o = inv.observations
    refine = 0 if o.file is not None else int(o.refine)
    fine = domain_dofs * 2.0 ** min(refine * _dimension(inv.domain), 1000)  # no overflow
    points = o.points if o.kind == "points" and o.file is None else domain_dofs
    return PDE_DOF_BYTES * (domain_dofs + (fine if refine else 0)) + POINT_BYTES * points


def _samples(data: dict) -> tuple[int, int]:
    """(training, test) samples a ``data:`` description gives, its counts checked as
    the loader checks them (keyed ``n_train``, ``n_test``; files: their rows,
    counted cheaply, as training samples)."""
    from pontryx.meshes.errors import resolve
    from pontryx.solver.data.dataset import DATASET_KEYS, check_int

    full = resolve(data, DATASET_KEYS, "name", what="data set")
    name = full["name"]
    if name == "file":
        return _rows(Path(str(full["path"]))), 0
    n_train = check_int(full, "n_train", minimum=1)
    if name == "digits" and full["n_test"] is None:
        return n_train, max(DIGITS_IMAGES - n_train, 0)  # the rest of the images
    return n_train, check_int(full, "n_test", minimum=1)


def _rows(path: Path) -> int:
    """The rows of a data file, counted cheaply (an NPZ archive's from the header of
    its ``X_train`` or ``X`` alone: no array is loaded); 0 for a file that cannot be
    read (the data reader says why, as a one-line error keyed ``data.path``)."""
    try:
        if path.suffix.lower() == ".npz":
            from pontryx.solver.npz import npz_headers

            headers = npz_headers(path)
            key = "X_train" if "X_train" in headers else "X"
            shape = headers[key].shape if key in headers else ()
            return int(shape[0]) if shape else 0
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except (OSError, ValueError):
        return 0


def _keyed(fn, section: str, *args):
    """``fn(*args)`` with an :class:`InputError` put under ``section``."""
    try:
        return fn(*args)
    except InputError as e:
        raise e.under(section) from None


def _inputs(data: dict) -> int:
    return 64 if data.get("name") == "digits" else 2


def estimate(config, ranks: int, copies: float = 4.0, method_bytes: int = 0) -> dict:
    """Bytes per rank of the parts listed in the module docstring (a dict with
    the parts and ``total``), and the N, n, S_local used."""
    from pontryx.solver.registry import KERNELS, SCHEMES, load

    m, t = config.model, config.training
    width, data_ranks = config.parallel.sizes(ranks)
    N = _keyed(dofs, "mesh", config.mesh, m.degree)
    n = max(1, math.ceil((N if width == 1 else 1.25 * N) / width))  # partitions are uneven
    inv = config.inverse  # an inverse run: the samples are the dofs of Ω_phys
    tests = 0
    if inv is not None:
        samples = _keyed(dofs, "inverse.domain", inv.domain, inv.degree)
    elif config.data is not None:
        samples, tests = _keyed(_samples, "data", config.data)
    else:  # (an hjb configuration has no data: pontryx train refuses it later)
        samples = 1
    S = max(1, -(-samples // data_ranks))  # ⌈samples / ranks⌉ in integers (exact at 2⁶³)
    S_test = -(-tests // data_ranks)
    L = m.layers
    noise = 0
    if m.noise.enabled:
        from pontryx.solver.model.noise import CACHE_BYTES

        S *= m.noise.samples
        noise = min(CACHE_BYTES, 8 * n * S * L)
    kernel = m.kernel.type
    if kernel == "dense":
        per_layer = n * N
    elif kernel == "lowrank":
        per_layer = 2 * n * int(m.kernel.options.get("rank") or 1)
    else:
        gdim = 1 if config.mesh.get("kind", "") in ("interval", "unit_interval") else 3
        per_layer = (2 + gdim) * n
    data = config.data or {}
    n_out = 10 if data.get("name") == "digits" else 5
    controls = 8 * (L * (per_layer + n) + n * (n_out + _inputs(data)))
    records = load(SCHEMES, m.scheme).records
    chk = t.checkpointing
    if chk is None:
        stored = records * L
    elif chk == "reverse":
        stored = 2 * records
    else:
        k = max(1, math.ceil(math.sqrt(L))) if chk == "sqrt" else min(int(chk), L)
        stored = math.ceil(L / k) + records * k
    states = 8 * n * S * (stored + 4)
    work = 8 * N * S if kernel == "dense" else 0
    # the data set on every rank, and the test evaluation's forward sweep
    test = 8 * (_inputs(data) + 1) * (samples + tests) + 8 * S_test * (
        4 * n + (N if kernel == "dense" else 0)
    )
    split = 0  # the sample split over T BLAS threads: its chunks' gradients and
    if config.parallel.threads == "samples":  # Hessian actions, 2(T − 1) copies
        from pontryx.solver.adjoint.split import runs
        from pontryx.solver.model.threads import blas_threads

        threadsafe = load(KERNELS, kernel).threadsafe
        if runs(threadsafe, width, m.epsilon, m.noise.enabled, 8 * per_layer):
            split = 2 * (blas_threads() - 1)
    parts = {
        "controls": int(controls * (copies + split)),
        "states": int(states),
        "work": int(work),
        "data": int(test) if inv is None else 0,
        "method": int(method_bytes),
        "noise": int(noise),
        "pde": int(_pde_bytes(inv, samples)) if inv is not None else 0,
    }
    parts["total"] = sum(parts.values())
    return {"bytes": parts, "N": N, "n": n, "S_local": S}


def available_bytes(comm: MPI.Comm) -> float | None:
    """MemAvailable of this node divided by the ranks sharing it (None if unknown)."""
    try:
        text = Path("/proc/meminfo").read_text()
        kb = int(re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.M).group(1))
    except (OSError, AttributeError, ValueError):
        return None
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    share = node.size
    node.Free()
    return kb * 1024 / share


def least_available(comm: MPI.Comm) -> float:
    """The smallest :func:`available_bytes` over the ranks of ``comm`` (∞ if unknown).
    Collective."""
    avail = available_bytes(comm)
    return comm.allreduce(avail if avail is not None else math.inf, op=MPI.MIN)


def format_bytes(b: float) -> str:
    """A size in B … TiB (beyond 10⁵ TiB in powers of ten)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024:
            return f"{b:.1f} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1024
    return f"{b:.1f} TiB" if b < 1e5 else f"{b:.2e} TiB"


def check_memory(
    config, comm: MPI.Comm, max_memory: float | None, copies: float | None = None, method_bytes=0
):
    """Refuse a run whose estimate exceeds ``max_memory`` (bytes) or the available
    memory per rank; returns the estimate. ``copies``: of the controls (None: those
    the configured method keeps, :meth:`Trainer.copies`). Collective (the same
    verdict everywhere)."""
    if copies is None:
        from pontryx.solver.training import method_class

        t = config.training
        copies = method_class(t.method).copies(dict(t.options or {}))
    est = estimate(config, comm.size, copies, method_bytes)
    # the coarse levels of training.levels are built beside the configured problem (and
    # share its data set)
    levels = []
    for i in range(len(getattr(config.training, "levels", None) or ())):
        try:
            part = estimate(config.level(i), comm.size, copies)["bytes"]
        except InputError as e:
            raise at_level(e, i) from None
        levels.append(part["total"] - part["data"])
    if levels:
        est["bytes"] = {**est["bytes"], "training.levels": sum(levels)}
        est["bytes"]["total"] += sum(levels)
    total = est["bytes"]["total"]
    avail = least_available(comm)
    limit, what = (max_memory, "--max-memory") if max_memory else (avail, "the memory available")
    if max_memory and avail < max_memory:
        limit, what = avail, "the memory available"
    if total > limit:
        sizes = est["bytes"].items()
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in sizes if k != "total" and v)
        raise InputError(
            f"this run needs about {format_bytes(total)} per rank ({parts}; N = {est['N']} dofs, "
            f"{config.model.layers} layers, {est['S_local']} samples per rank) but "
            f"{what} is {format_bytes(limit)} per rank: "
            + (
                "use a coarser inverse.domain, fewer observation points or refinements"
                if est["bytes"]["pde"] > total / 2
                else "use fewer samples (data.n_train, data.n_test) or more ranks"
                if est["bytes"]["data"] > total / 2
                else "use coarser levels or fewer layers in training.levels"
                if sum(levels) > total / 2
                else "use fewer layers or dofs, more ranks, checkpointing, or a smaller minibatch"
            ),
            "--max-memory" if what == "--max-memory" else "memory",
        )
    return est

"""The controls along a run, for ``pontryx analyze``: ``trajectory.jsonl``.

With ``output.trajectory_every: k`` (> 0) a run records the controls θ_j after
iteration j = 0 (the start; fresh runs only), k, 2k, … as

* ``projection``: a seeded random projection y ∈ R^P (P = :data:`DIMENSION`) of
  the trainable controls in the L²(M_L) Riesz variables x = √ω θ of the
  regulariser (:mod:`pontryx.solver.adjoint.riesz`; mesh independent), so
  that distances between iterates are those of the L² metric in expectation
  (E‖y(θ) − y(θ')‖² = ‖x − x'‖², Johnson–Lindenstrauss). Each control block —
  a layer of a layer control, E, C — is an (N × t) array X in the canonical dof
  order (rows; t its tail, the N columns of the dense W canonical too) and adds
  y_p += r_pᵀ X s_p / √P with r_p ∈ R^N, s_p ∈ R^t standard normal (the
  Khatri–Rao form of a Gaussian projection: E[(rᵀXs)²] = ‖X‖_F²; cost 2NtP per
  block, no N_t·N²·P array of normals); d adds s_pᵀ d / √P. The draws come from
  ``numpy.random.default_rng([SEED, crc32(name), layer])`` with the fixed
  :data:`SEED`, in canonical order: every run of the same network uses the same
  projection, on any number of ranks, so several runs embed together;
* ``norms``: the layerwise L²(M_L) norms ‖θⁿ‖ of every layer control (lists over
  n), and of E, C (‖·‖ in L²(Ω)) and d (Euclidean);
* ``loss``: J(θ_j) on the whole training set, evaluated when recorded (one
  forward sweep; with noise in depth the mean over the paths, J_M);
* ``iteration`` and ``method``.

The first line is a header (format, version, P, seed, the trainable names and
the shape of each control). Written by world rank 0, one line per record and
flushed, like ``metrics.jsonl``; on ``--resume`` the records after the
checkpoint's iteration are dropped, so a resumed run's file equals an
uninterrupted one's. The file is one of the run directory's own entries.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.adjoint.riesz import l2_weights
from pontryx.solver.model.controls import REPLICATED
from pontryx.solver.outputs.atomic import write_text
from pontryx.solver.outputs.canonical import canonical_shape

__all__ = [
    "DIMENSION",
    "FILE",
    "SEED",
    "Projection",
    "TrajectoryLog",
    "norm_layout",
    "read_trajectory",
]

FILE = "trajectory.jsonl"
FORMAT = "pontryx-trajectory"
DIMENSION = 64
SEED = 0


class Projection:
    """y(θ) ∈ R^P and the layerwise norms of the trainable controls of ``net``
    (see the module docstring). Collective over the width ranks."""

    def __init__(self, net, dimension: int = DIMENSION, seed: int = SEED):
        self.net, self.P, self.seed = net, int(dimension), int(seed)
        self.names = tuple(net.trainable)
        self.weights = l2_weights(net, self.names)
        self._factors: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def _pair(self, name: str, layer: int, tail: int, full: bool):
        """(r owned rows (n × P), s (t × P)) of one block, drawn once and kept."""
        key = (name, layer)
        if key not in self._factors:
            sp = self.net.space
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode()), layer])
            r = rng.standard_normal((sp.N, self.P))[sp.owned_canonical]
            s = rng.standard_normal((tail, self.P))
            if full:  # the dense W's columns: global dof j is canonical index canonical[j]
                s = s[sp.canonical]
            self._factors[key] = (r, s)
        return self._factors[key]

    def __call__(self, controls) -> tuple[np.ndarray, dict]:
        """(y, norms) for ``controls`` (on every width rank)."""
        net, sp = self.net, self.net.space
        y = np.zeros(self.P)
        norms_local: dict[str, np.ndarray] = {}
        for name in self.names:
            value, w = controls[name], self.weights[name]
            if name in REPLICATED:  # d: the same on every rank
                s = np.random.default_rng([self.seed, zlib.crc32(name.encode()), 0])
                s = s.standard_normal((value.size, self.P))
                if sp.comm.rank == 0:
                    y += value.ravel() @ s
                norms_local[name] = np.array([float(value @ value) if sp.comm.rank == 0 else 0.0])
                continue
            blocks = value if name in net.layer_names else value[None]
            full = name in net.kernel.full_axis
            sq = np.zeros(len(blocks))
            for n, block in enumerate(blocks):
                x = (np.sqrt(w) * block).reshape(block.shape[0], -1)  # √ω θ, (n_local × t)
                sq[n] = float(np.vdot(x, x))
                r, s = self._pair(name, n, x.shape[1], full)
                y += np.einsum("ip,ip->p", x @ s, r)
            norms_local[name] = sq
        y = sp.comm.allreduce(y) / math.sqrt(self.P)
        norms = {k: np.sqrt(sp.comm.allreduce(v)) for k, v in norms_local.items()}
        return y, {
            k: (v.tolist() if k in net.layer_names else float(v[0])) for k, v in norms.items()
        }

    def header(self, controls) -> dict:
        net = self.net
        return {
            "format": FORMAT,
            "version": 1,
            "dimension": self.P,
            "seed": self.seed,
            "variables": "L2(M_L) Riesz variables x = sqrt(omega) theta",
            "names": list(self.names),
            "shapes": {k: list(canonical_shape(net, k, controls[k].shape)) for k in self.names},
        }


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:  # JSON's NaN and Infinity included: a diverging run records them
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_header(obj) -> str | None:
    """What is wrong with the header line, or None."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return f"expected the header of a {FORMAT} file, got {show(obj)}"
    if not (_integer(obj.get("dimension")) and obj["dimension"] > 0):
        return f"dimension: expected a positive integer, got {show(obj.get('dimension'))}"
    if not _integer(obj.get("seed")):
        return f"seed: expected an integer, got {show(obj.get('seed'))}"
    shapes = obj.get("shapes")
    if not isinstance(shapes, dict) or not all(
        isinstance(v, list) and all(_integer(n) for n in v) for v in shapes.values()
    ):
        return f"shapes: expected a mapping of control shapes, got {show(shapes)}"
    return None


def norm_layout(norms) -> tuple | None:
    """(name, layers or None) of each entry of a record's ``norms`` (None if malformed)."""
    if not isinstance(norms, dict) or not norms:
        return None
    layout = []
    for name in sorted(norms):
        v = norms[name]
        if _number(v):
            layout.append((name, None))
        elif isinstance(v, list) and v and all(_number(x) for x in v):
            layout.append((name, len(v)))
        else:
            return None
    return tuple(layout)


def _check_record(obj, dimension: int, layout) -> str | None:
    """What is wrong with one record, or None (values may be non-finite)."""
    if not isinstance(obj, dict):
        return f"expected a record (a JSON object), got {show(obj)}"
    if not (_integer(obj.get("iteration")) and obj["iteration"] >= 0):
        return f"iteration: expected an integer ≥ 0, got {show(obj.get('iteration'))}"
    if not isinstance(obj.get("method"), str):
        return f"method: expected a string, got {show(obj.get('method'))}"
    if not _number(obj.get("loss")):
        return f"loss: expected a number, got {show(obj.get('loss'))}"
    y = obj.get("projection")
    if not (isinstance(y, list) and len(y) == dimension and all(_number(v) for v in y)):
        return f"projection: expected {dimension} numbers, got {show(y)}"
    got = norm_layout(obj.get("norms"))
    if got is None or (layout is not None and got != layout):
        return (
            "norms: expected the norms of the same controls and layers as the first "
            f"record, got {show(obj.get('norms'))}"
        )
    return None


def read_trajectory(directory: str | Path) -> tuple[dict | None, list[dict]]:
    """(header, records) of a run directory's ``trajectory.jsonl``, every line
    checked ((None, []) if there is none or it is empty; a torn last line, a run
    cut while writing it, is left out). A file pontryx cannot have written (not
    UTF-8, a line that is not JSON, a header or record of another form) is an
    InputError naming it and the line. Values may be non-finite (a diverging
    run's last record): :mod:`pontryx.solver.app.analyze` refuses those."""
    path = Path(directory) / FILE
    if not path.is_file():
        return None, []
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line}: not UTF-8 text") from None
    lines = text.splitlines()
    header, rows, layout = None, [], None
    for i, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            if i == len(lines) and not text.endswith("\n"):
                break  # torn
            raise InputError(f"{path}, line {i}: not a JSON line") from None
        why = _check_header(obj) if i == 1 else _check_record(obj, header["dimension"], layout)
        if why is not None:
            raise InputError(f"{path}, line {i}: {why}")
        if i == 1:
            header = obj
        else:
            rows.append(obj)
            layout = norm_layout(obj["norms"])
    return header, rows


class TrajectoryLog:
    """Appends records to ``trajectory.jsonl`` (world rank 0 writes; every width
    rank takes part in the projection)."""

    def __init__(self, directory: str | Path, net, rf, active: bool):
        self.directory, self.rf, self.active = Path(directory), rf, active
        self.projection = Projection(net)
        self._file = None

    def open(self, controls, keep_until: int | None = None, rows=None) -> TrajectoryLog:
        """Start the file: keep the records up to ``keep_until`` (resume: ``rows``,
        read before anything was written, or the file's) or none."""
        if not self.active:
            return self
        if keep_until is not None:
            rows = read_trajectory(self.directory)[1] if rows is None else rows
            rows = [r for r in rows if r["iteration"] <= keep_until]
        else:
            rows = []
        lines = [self.projection.header(controls), *rows]
        write_text(self.directory / FILE, "".join(json.dumps(r) + "\n" for r in lines))
        self._file = open(self.directory / FILE, "a", encoding="utf-8")
        return self

    def record(self, iteration: int, controls, method: str) -> None:
        """Project and append the controls after ``iteration`` (collective)."""
        rf = self.rf
        last = rf.last
        loss = float(rf(controls))  # J on the whole training set, one forward sweep
        rf.last = last
        y, norms = self.projection(controls)
        if self.active:
            row = {
                "iteration": int(iteration),
                "method": method,
                "loss": loss,
                "projection": y.tolist(),
                "norms": norms,
            }
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

"""The trained model as a portable ``.npz`` of named arrays (``model.npz``).

Everything the forward pass of DESIGN.md §2 needs, in the canonical
(partition-independent) dof order, so that it can be re-run with NumPy alone:

    U⁰ = E X,  Zⁿ = Kⁿ Uⁿ + bⁿ 1ᵀ,  (M_L + Δt ε A) U^{n+1} = M_L (Uⁿ + Δt σ(Zⁿ)),
    Ŷ = Cᵀ M_L U^{N_t} + d 1ᵀ,      Kⁿ = Wⁿ M_L | Aⁿ Gⁿᵀ M_L | M_L⁻¹ Lⁿ.

Arrays (N dofs, N_t layers, n_in inputs, n_out outputs, R rank):

* mesh: ``x`` (N, gdim) dof coordinates, ``cells`` (n_cells, k) dofs of each cell
  (basix order: the cell's vertices first), ``cell_type``, ``degree``, ``gdim``;
* operators: ``m`` (N,) lumped mass M_L; if ε > 0 the stiffness matrix A as CSR
  ``stiffness_data``, ``stiffness_indices``, ``stiffness_indptr``, ``stiffness_shape``;
* controls: ``b`` (N_t, N); dense ``W`` (N_t, N, N); low-rank ``A``, ``G``
  (N_t, N, R); local ``kappa``, ``r`` (N_t, N), ``a`` (N_t, N, gdim) and the
  assembled ``L_data``/``L_indices`` (N_t, nnz), ``L_indptr`` (N+1,);
  ``E`` (N, n_in), ``C`` (N, n_out), ``d`` (n_out,);
* discrete kernel values (``weights`` ternary or binary, 0-d; "real" otherwise):
  each kernel control is stored as int8 codes T ∈ {−1, 0, 1} with its scales
  ``<name>_scale`` (N_t,), the values being c_n T (:func:`load_model` returns
  them as floats);
* metadata (0-d arrays): ``format`` ("pontryx-model"), ``version``, ``kernel``,
  ``scheme``, ``activation``, ``smooth_relu_delta``, ``epsilon``, ``T``,
  ``layers``, ``dt``, ``n_in``, ``n_out``, ``task``, ``embedding``; and
  ``input_shape``, ``classes``;
* noise in depth (``model.noise``; :mod:`pontryx.solver.model.noise`):
  ``noise_amplitude`` g (0: none), and for g > 0 ``noise_correlation_length``,
  ``noise_smoothness`` β, ``noise_kappa`` κ, ``noise_sigma`` σ_M,
  ``noise_samples`` M, ``noise_seed``, ``noise_block`` B, and the stiffness
  matrix (even when ε = 0): enough to redraw the training paths with NumPy.

Load with ``numpy.load(path, allow_pickle=False)``; nothing in it needs pickle.
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
from pathlib import Path

from mpi4py import MPI

import numpy as np

from pontryx.forms.activations import SMOOTH_RELU_DELTA
from pontryx.meshes.errors import InputError, show, show_dtype
from pontryx.solver.model.controls import REPLICATED
from pontryx.solver.npz import read_npz
from pontryx.solver.outputs.atomic import atomic_path
from pontryx.solver.outputs.canonical import from_canonical

__all__ = [
    "FORMAT",
    "VERSION",
    "check_model",
    "controls_from_model",
    "load_model",
    "mesh_arrays",
    "model_arrays",
    "nonfinite",
    "save_model",
]

FORMAT = "pontryx-model"
VERSION = 1


def mesh_arrays(space) -> dict[str, np.ndarray]:
    """Canonical dof coordinates, cells and lumped mass (on every width rank)."""
    mesh, V = space.mesh, space.V
    tdim = mesh.topology.dim
    n_cells = mesh.topology.index_map(tdim).size_local
    local = V.dofmap.list[:n_cells]
    glob = V.dofmap.index_map.local_to_global(local.ravel()).reshape(local.shape)
    cells = space.canonical[np.concatenate(space.comm.allgather(glob))]
    cells = cells[np.lexsort(np.sort(cells, axis=1).T[::-1])]
    return {
        "x": space.to_canonical(space.x),
        "cells": cells.astype(np.int64),
        "cell_type": np.array(mesh.topology.cell_type.name),
        "degree": np.array(space.degree),
        "gdim": np.array(mesh.geometry.dim),
        "m": space.to_canonical(space.m),
    }


def _csr(prefix: str, A) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": A.data,
        f"{prefix}_indices": A.indices.astype(np.int64),
        f"{prefix}_indptr": A.indptr.astype(np.int64),
    }


def _metadata(net, task, input_shape, classes, noise=None, weights="real") -> dict[str, np.ndarray]:
    numeric = all(isinstance(c, int | float | np.integer | np.floating) for c in classes)
    extra = noise.arrays() if noise is not None else {"noise_amplitude": np.array(0.0)}
    return dict(
        **extra,
        format=np.array(FORMAT),
        version=np.array(VERSION),
        weights=np.array(weights),
        kernel=np.array(net.kernel.name),
        kernel_rank=np.array(getattr(net.kernel, "rank", 0)),
        scheme=np.array(net.scheme.name),
        activation=np.array(net.activation.name),
        smooth_relu_delta=np.array(SMOOTH_RELU_DELTA),
        epsilon=np.array(net.epsilon),
        T=np.array(net.T),
        layers=np.array(net.layers),
        dt=np.array(net.dt),
        n_in=np.array(net.n_in),
        n_out=np.array(net.n_out),
        task=np.array(task),
        embedding=np.array(net.embedding_kind),
        input_shape=np.array(tuple(input_shape), dtype=np.int64),
        classes=np.array(classes if numeric else [str(c) for c in classes]),
    )


def _codes(net, name, value):
    """(int8 codes T, scales c) of the discrete values c_n T of a kernel control
    (all layers; c_n = max |values of layer n|, 1 for a layer of zeros). Collective."""
    from pontryx.solver.training.discrete import codes

    T, c = codes(net.space.comm, value)
    cT = c.reshape(-1, *([1] * (value.ndim - 1))) * T
    bad = bool(np.any(cT != value) or np.any(np.abs(T) > 1))
    if net.space.comm.allreduce(bad, op=MPI.LOR):
        raise ValueError(f"control {name!r} is not discrete (c·T with T in {{-1, 0, 1}})")
    return T, c


def _controls_in_layers(net, controls, weights="real"):
    """(name, global shape, dtype, iterator of canonical chunks on width rank 0) for
    every control: layer controls one layer at a time, gathered to width rank 0
    only; discrete kernel controls as int8 codes followed by their scales.
    Collective (the iterators must be consumed on every width rank)."""
    from pontryx.solver.outputs.canonical import canonical_shape

    sp = net.space
    for name, value in controls.items():
        shape = canonical_shape(net, name, value.shape)
        if name in REPLICATED:
            yield name, shape, float, iter([np.array(value, copy=True)])
        elif name in net.layer_names:
            full = name in net.kernel.full_axis
            if weights != "real" and name in net.kernel.shapes():
                T, c = _codes(net, name, value)
                yield name, shape, np.int8, (sp.gather_canonical(v, axis_full=full) for v in T)
                yield f"{name}_scale", c.shape, float, iter([c])
            else:
                yield name, shape, float, (sp.gather_canonical(v, axis_full=full) for v in value)
        else:
            yield name, shape, float, iter([sp.gather_canonical(value)])


def model_arrays(
    net, controls, *, task: str, input_shape, classes=(), noise=None, weights="real"
) -> dict | None:
    """All arrays of ``model.npz`` on width rank 0 (None elsewhere), in memory.
    Collective. (:func:`save_model` streams them to the file instead.)"""
    out = mesh_arrays(net.space)
    for name, shape, dtype, chunks in _controls_in_layers(net, controls, weights):
        parts = list(chunks)
        if net.space.comm.rank == 0:
            value = np.stack(parts).reshape(shape) if len(parts) > 1 else parts[0]
            out[name] = value.astype(dtype, copy=False)
    out.update(_operators(net, controls, noise))
    if net.space.comm.rank != 0:
        return None
    out.update(_metadata(net, task, input_shape, classes, noise, weights))
    return out


def _operators(net, controls, noise=None) -> dict[str, np.ndarray]:
    sp, out = net.space, {}
    if net.epsilon > 0 or noise is not None:
        A = sp.canonical_csr(sp.A)
        if A is not None:
            out.update(_csr("stiffness", A), stiffness_shape=np.array(A.shape))
    out.update(net.kernel.export(controls, net.layers))  # e.g. the local kernel's Lⁿ
    return out


def save_model(
    path: str | os.PathLike,
    net,
    controls,
    *,
    task,
    input_shape,
    classes=(),
    noise=None,
    weights="real",
) -> None:
    """Write ``model.npz`` atomically, streamed: width rank 0 writes each layer of a
    layer control as it is gathered, so no rank ever holds the whole N_t × N × N
    kernel and the other ranks only their rows. ``weights`` ternary or binary:
    the kernel controls (values c_n T) are written as int8 codes T and scales c_n.
    Collective (width comm)."""
    sp = net.space
    root = sp.comm.rank == 0
    small = mesh_arrays(sp)
    small.update(_operators(net, controls, noise))
    with contextlib.ExitStack() as stack:
        zf = None
        if root:
            tmp = stack.enter_context(atomic_path(Path(path)))
            zf = stack.enter_context(zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True))
        for name, shape, dtype, chunks in _controls_in_layers(net, controls, weights):
            if not root:
                for _ in chunks:  # take part in the gathers
                    pass
                continue
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                          "fortran_order": False, "shape": tuple(shape)}  # fmt: skip
                np.lib.format.write_array_header_2_0(f, header)
                for chunk in chunks:
                    f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
        if root:
            meta = _metadata(net, task, input_shape, classes, noise, weights)
            for name, value in {**small, **meta}.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


#: the 0-d entries every model file holds (README, "The model file"), by kind
TEXT = ("format", "cell_type", "kernel", "scheme", "activation", "embedding", "task")
INTEGERS = ("version", "degree", "gdim", "layers", "n_in", "n_out", "kernel_rank")
NUMBERS = ("epsilon", "T", "dt", "smooth_relu_delta")


def _scalar(arrays, key: str, kind: str):
    """The 0-d entry ``key`` of a model file as a Python value, checked (``kind``:
    "text", "integer" or "number")."""
    if key not in arrays:
        raise InputError(
            f"missing (a model file holds {', '.join(TEXT + INTEGERS + NUMBERS)})", key
        )
    a = arrays[key]
    ok = {"text": "U", "integer": "iu", "number": "iuf"}[kind]
    if a.ndim != 0 or a.dtype.kind not in ok:
        raise InputError(
            f"expected a 0-d {kind}, got {show_dtype(a.dtype)} of shape {a.shape}", key
        )
    return a.item()


def _check_shapes(arrays) -> None:
    """The arrays' shapes against each other and the metadata (N = len(m))."""
    layers, n_in, n_out = (_scalar(arrays, k, "integer") for k in ("layers", "n_in", "n_out"))
    gdim = _scalar(arrays, "gdim", "integer")
    if layers < 1:
        raise InputError(f"expected at least 1, got {layers}", "layers")
    m = arrays.get("m")
    if m is None or m.ndim != 1 or m.size == 0:
        raise InputError("expected the lumped mass, an array (N,)", "m")
    N = m.size
    expected = {
        "x": ("(N, gdim)", (N, gdim)),
        "b": ("(layers, N)", (layers, N)),
        "E": ("(N, n_in)", (N, n_in)),
        "C": ("(N, n_out)", (N, n_out)),
        "d": ("(n_out,)", (n_out,)),
    }
    for key, (names, shape) in expected.items():
        if key in arrays and arrays[key].shape != shape:
            raise InputError(
                f"has shape {arrays[key].shape}, expected {names} = {shape} (N = len(m))", key
            )
    cells = arrays.get("cells")
    if cells is None or cells.ndim != 2 or cells.dtype.kind not in "iu":
        raise InputError("expected the cells' dofs, an integer array (n_cells, k)", "cells")
    if cells.size and (cells.min() < 0 or cells.max() >= N):
        raise InputError(f"a dof outside 0 … {N - 1} (N = {N} dofs)", "cells")
    shape = arrays.get("input_shape")
    if shape is None or shape.ndim != 1 or shape.dtype.kind not in "iu":
        raise InputError("expected the input shape, an integer array (k,)", "input_shape")
    if int(np.prod(shape)) != n_in:
        raise InputError(
            f"{tuple(shape.tolist())} does not hold n_in = {n_in} inputs", "input_shape"
        )
    classes = arrays.get("classes")
    if classes is None or classes.ndim != 1:
        raise InputError("expected the class labels, an array (k,)", "classes")
    classifier = _scalar(arrays, "task", "text") == "classification"
    if classifier and len(classes) not in (0, n_out):  # 0: none recorded (save_model's default)
        raise InputError(
            f"{len(classes)} class labels for a model of {n_out} outputs (n_out)", "classes"
        )


def _decode(arrays, weights: str) -> None:
    """A discrete kernel's int8 codes T → the float values c_n T (in place), checked:
    every scale ``<name>_scale`` (N_t,) > 0 beside codes in {−1, 0, 1} ({−1, 1}
    binary); a real model has no scales."""
    scales = [k for k in arrays if k.endswith("_scale")]
    if weights == "real":
        if scales:
            raise InputError("a model with real weights (weights 'real') has no scales", scales[0])
        return
    if not scales:
        raise InputError(
            f"{weights!r} but no kernel control is stored as codes with its scales <name>_scale",
            "weights",
        )
    layers = arrays["layers"].item()
    for key in scales:
        name = key.removesuffix("_scale")
        T, c = arrays.get(name), arrays[key]
        if T is None:
            raise InputError(f"scales of a control {name!r} the file does not hold", key)
        if c.shape != (layers,) or c.dtype.kind != "f":
            raise InputError(
                f"expected {layers} scales (one per layer), got {show_dtype(c.dtype)} {c.shape}",
                key,
            )
        if np.any(np.isfinite(c) & (c <= 0)):
            raise InputError("expected scales c_n > 0", key)
        if T.dtype != np.int8 or T.ndim < 1 or len(T) != layers:
            raise InputError(
                f"expected int8 codes (N_t = {layers}, …), got {show_dtype(T.dtype)} {T.shape}",
                name,
            )
        binary = weights == "binary"
        if T.size and (T.min() < -1 or T.max() > 1 or (binary and np.any(T == 0))):
            allowed = "{-1, 1} (weights 'binary')" if binary else "{-1, 0, 1}"
            raise InputError(f"expected codes in {allowed}", name)
        arrays[name] = c.reshape(-1, *([1] * (T.ndim - 1))) * T


def load_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a model file (no pickle), checked against what README's "The
    model file" documents — ``format`` and ``version``, the 0-d metadata, the shapes
    against each other, ``classes`` against the outputs, a discrete kernel's codes
    and scales; an InputError keyed by the entry if not (non-finite values are left
    for the caller). A discrete kernel's int8 codes T come back as the float values
    c_n T."""
    from pontryx.solver.training.discrete import WEIGHTS

    try:
        arrays = read_npz(path)
    except ValueError as e:  # a text file, a truncated or corrupted archive, …
        raise InputError(f"not a pontryx model file ({e})") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise InputError("not a pontryx model file")
    version = _scalar(arrays, "version", "integer")
    if version != VERSION:
        raise InputError(
            f"expected {VERSION} (the model files this pontryx reads), got {version}", "version"
        )
    for keys, kind in ((TEXT, "text"), (INTEGERS, "integer"), (NUMBERS, "number")):
        for key in keys:
            _scalar(arrays, key, kind)
    for key, a in arrays.items():
        if key not in (*TEXT, "weights", "classes") and a.dtype.kind not in "iuf":
            raise InputError(f"expected numbers, got {show_dtype(a.dtype)}", key)
    weights = str(arrays.get("weights", "real"))
    if weights not in WEIGHTS:
        raise InputError(f"expected one of {', '.join(WEIGHTS)}, got {show(weights)}", "weights")
    _check_shapes(arrays)
    _decode(arrays, weights)
    return arrays


def nonfinite(arrays: dict[str, np.ndarray]) -> list[str]:
    """The entries of model arrays holding a NaN or ±inf, sorted (README: a model
    with non-finite values, exit 3). A discrete kernel's scales are named by their
    control (:func:`load_model` has folded them into its values)."""
    bad = {
        k.removesuffix("_scale") if k.endswith("_scale") and k[:-6] in arrays else k
        for k, a in arrays.items()
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a))
    }
    return sorted(bad)


#: relative round-off allowed between a file's real numbers (m, x, dt, …) and the
#: ones rebuilt from config.yaml (assembly on another number of ranks)
ROUNDOFF = 1e-10


def _close(have, want) -> float | None:
    """None if ``have`` equals ``want`` to round-off, else the largest difference."""
    have, want = np.asarray(have, dtype=float), np.asarray(want, dtype=float)
    if have.shape != want.shape:
        return math.inf
    err = float(np.max(np.abs(have - want), initial=0.0))
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    return None if err <= ROUNDOFF * scale else err


def _check_entry(arrays, key: str, want, *, optional: bool = False) -> None:
    """The 0-d entry ``key`` against the value ``want`` rebuilt from config.yaml
    (strings and integers equal, real numbers to round-off)."""
    if key not in arrays:
        if optional:
            return
        raise InputError(f"missing (the network of config.yaml has {show(want)})", key)
    a = arrays[key]
    if a.ndim != 0:
        raise InputError(f"expected a 0-d value, got shape {a.shape}", key)
    have = a.item()
    if isinstance(want, str) or isinstance(have, str):
        same = isinstance(have, str) and isinstance(want, str) and have == want
    elif isinstance(want, bool | int | np.integer):
        same = a.dtype.kind in "iu" and int(have) == int(want)
    else:
        same = a.dtype.kind in "iuf" and _close(have, want) is None
    if not same:
        h, w = show(have), show(want)
        if h == w:  # close but not equal: all the digits that differ
            h, w = repr(have), repr(want)
        raise InputError(f"the file has {h}, the network has {w}", key)


def _check_classes(arrays, want) -> None:
    """``classes``: numbers or strings, distinct, in increasing order (the order in
    which the data reader numbers them); equal to the run's classes ``want``
    (None: not known here, e.g. evaluated on other data)."""
    c = arrays["classes"]
    if c.size == 0:
        return
    if c.dtype.kind not in "iufU":
        raise InputError(f"expected numbers or strings, got {show_dtype(c.dtype)}", "classes")
    if not np.all(c[1:] > c[:-1]):
        raise InputError(
            f"expected distinct labels in increasing order, got {show(c.tolist())}", "classes"
        )
    if want is None or len(want) == 0:
        return
    w = np.asarray(list(want))
    numeric = c.dtype.kind in "iuf"
    same = len(c) == len(w) and (
        (numeric and w.dtype.kind in "iuf" and bool(np.all(c == w)))
        or (not numeric and w.dtype.kind == "U" and bool(np.all(c == w)))
    )
    if not same:
        raise InputError(
            f"the file has {show(c.tolist())}, the data set of config.yaml has {show(list(want))}",
            "classes",
        )


def _same_cells(have, want) -> bool:
    """The same cells (each a set of dofs; the order within a cell and of the cells
    aside, which the partition may change)."""
    if have.shape != want.shape:
        return False

    def canonical(c):
        c = np.sort(c, axis=1)
        return c[np.lexsort(c.T[::-1])] if c.size else c

    return bool(np.array_equal(canonical(have), canonical(want)))


def check_model(
    net,
    arrays: dict[str, np.ndarray],
    *,
    task: str | None = None,
    input_shape=None,
    classes=None,
    noise=None,
) -> None:
    """A loaded model file (:func:`load_model`) against the network rebuilt from
    the run's config.yaml: every 0-d entry of README's table (strings and integers
    equal, real numbers such as ``dt`` to round-off), the mesh (``x``, ``m`` to
    round-off, ``cells``, ``cell_type``), the noise entries against ``noise`` (the
    run's :class:`DepthNoise`, None: none, g = 0), the labels in ``classes``
    (numbers or strings, distinct, sorted; and equal to ``classes`` if given), and
    ``task`` and ``input_shape`` if given (``weights`` is not compared: a
    discrete kernel's codes and scales evaluate as the values c_n T they are).
    InputError keyed by the entry. Non-finite values are the caller's
    (:func:`nonfinite`) and are to be refused first. Collective (width comm: the
    mesh arrays are gathered)."""
    mesh = mesh_arrays(net.space)  # on every width rank: the same verdict everywhere
    entries = {
        **_stepping(net),
        "cell_type": str(mesh["cell_type"]),
        "gdim": int(mesh["gdim"]),
        "kernel_rank": int(getattr(net.kernel, "rank", 0)),
        "embedding": net.embedding_kind,
        "smooth_relu_delta": float(SMOOTH_RELU_DELTA),
        "dt": float(net.dt),
        "n_in": int(net.n_in),
        "n_out": int(net.n_out),
    }
    if task is not None:
        entries["task"] = str(task)
    for key, want in entries.items():
        _check_entry(arrays, key, want)
    for key in ("x", "m"):
        err = _close(arrays[key], mesh[key])
        if err is not None:
            raise InputError(
                f"differs from the mesh of config.yaml (by up to {err:.3g}; allowed: "
                f"round-off, {ROUNDOFF:g} relative)",
                key,
            )
    if not _same_cells(arrays["cells"], mesh["cells"]):
        raise InputError("differs from the cells of the mesh of config.yaml", "cells")
    if input_shape is not None:
        have = tuple(arrays["input_shape"].tolist())
        if have != tuple(input_shape):
            raise InputError(
                f"the file has {show(list(have))}, the data set of config.yaml has "
                f"{show(list(input_shape))}",
                "input_shape",
            )
    _check_classes(arrays, classes)
    expected = noise.arrays() if noise is not None else {"noise_amplitude": np.array(0.0)}
    for key, want in expected.items():
        _check_entry(arrays, key, want.item(), optional=noise is None)
    extra = sorted(k for k in arrays if k.startswith("noise_") and k not in expected)
    if extra:
        raise InputError("the network of config.yaml has no noise in depth", extra[0])


def _stepping(net) -> dict:
    """The 0-d entries that say how the network steps (checked by
    :func:`controls_from_model` before the controls are used, and by
    :func:`check_model` with the rest)."""
    return {
        "kernel": net.kernel.name,
        "layers": int(net.layers),
        "scheme": net.scheme.name,
        "activation": net.activation.name,
        "degree": int(net.space.degree),
        "T": float(net.T),
        "epsilon": float(net.epsilon),
    }


def controls_from_model(net, arrays: dict[str, np.ndarray]):
    """The network's controls (this rank's rows) from model arrays (keyed by the
    entry that does not fit the network)."""
    for key, want in _stepping(net).items():  # what the file says it is, what will step it
        if key in arrays and arrays[key].item() != want:
            raise InputError(f"the file has {arrays[key].item()!r}, the network has {want!r}", key)
    if str(arrays.get("weights", "real")) != "real":
        for name in net.kernel.shapes():
            if f"{name}_scale" not in arrays:
                raise InputError(
                    f"{str(arrays['weights'])!r}, but the kernel control {name!r} is not stored "
                    f"as codes with scales {name}_scale",
                    "weights",
                )
    try:
        return from_canonical(net, arrays)
    except InputError as e:  # no control, or one of another shape: the message names it
        raise InputError(e.message) from None

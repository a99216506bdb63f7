"""Controls in the canonical (partition-independent) dof order.

Row-distributed controls (layer controls (N_t, n, …), E (n, n_in), C (n, n_out))
are gathered into (…, N, …) arrays whose dof axis follows
:attr:`WidthSpace.canonical`; the dense kernel's column axis is permuted too
(the kernel's ``full_axis`` controls). The replicated readout offset ``d`` is
copied. The result does not depend on the number of ranks, so a model saved on
P ranks loads on Q.
"""

from __future__ import annotations

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.solver.model.controls import REPLICATED, Controls
from pontryx.solver.model.random import canonical_normal

__all__ = ["from_canonical", "local_shapes", "random_direction", "to_canonical"]


def _is_layer(net, name: str) -> bool:
    return name in net.layer_names


def to_canonical(net, controls) -> dict[str, np.ndarray]:
    """Every control as a canonical-order array, on every width rank (collective)."""
    sp = net.space
    out = {}
    for name, value in controls.items():
        if name in REPLICATED:
            out[name] = np.array(value, copy=True)
        elif _is_layer(net, name):
            full = name in net.kernel.full_axis
            out[name] = np.stack([sp.to_canonical(v, axis_full=full) for v in value])
        else:
            out[name] = sp.to_canonical(value)
    return out


def local_shapes(net) -> dict[str, tuple[int, ...]]:
    """Shapes of this rank's part of every control of ``net``."""
    n = net.space.n
    shapes = {k: (net.layers, *s) for k, s in net.kernel.shapes().items()}
    shapes["b"] = (net.layers, n)
    shapes.update(E=(n, net.n_in), C=(n, net.n_out), d=(net.n_out,))
    return shapes


def canonical_shape(net, name: str, local_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The global (canonical) shape of a control from its local shape."""
    if name in REPLICATED:
        return local_shape
    axis = 1 if _is_layer(net, name) else 0
    return (*local_shape[:axis], net.space.N, *local_shape[axis + 1 :])


def from_canonical(net, arrays: dict[str, np.ndarray], names=None) -> Controls:
    """Controls (this rank's rows) from canonical arrays; ``names`` defaults to all
    controls of the network (shapes are checked)."""
    sp = net.space
    shapes = local_shapes(net)
    names = list(shapes) if names is None else list(names)
    out = {}
    for name in names:
        if name not in arrays:
            raise InputError(f"no control {name!r} (found {', '.join(sorted(arrays))})", "arrays")
        a = np.asarray(arrays[name], dtype=float)
        expected = canonical_shape(net, name, shapes[name])
        if a.shape != expected:
            raise InputError(
                f"control {name!r} has shape {a.shape}, this network needs {expected}", "arrays"
            )
        if name in REPLICATED:
            local = a.copy()
        elif _is_layer(net, name):
            full = name in net.kernel.full_axis
            local = np.stack([sp.from_canonical(v, axis_full=full) for v in a])
        else:
            local = sp.from_canonical(a)
        out[name] = np.ascontiguousarray(local)
    return Controls(out, sp.comm)


def random_direction(net, controls, names, seed: int = 0) -> Controls:
    """A seeded standard-normal direction over ``names`` (the canonical draw of
    :func:`~pontryx.solver.model.random.canonical_normal`, identical on any number
    of ranks), each name scaled by the RMS size of that control."""
    like = controls.subset(names)
    scale = {}
    for name, v in like.items():  # RMS from global sums: no rank gathers a control
        weight = 1.0 if name not in REPLICATED or like.comm.rank == 0 else 0.0
        total = like.comm.allreduce(np.array([weight * float(np.vdot(v, v)), weight * v.size]))
        rms = float(np.sqrt(total[0] / total[1])) if total[1] else 0.0
        scale[name] = rms if rms > 0 else 1.0
    return canonical_normal(np.random.default_rng(seed), net, like, scale)

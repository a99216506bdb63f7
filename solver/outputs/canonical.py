"""Controls in the canonical (partition-independent) dof order.

Row-distributed controls (layer controls (N_t, n, …), E (n, n_in), C (n, n_out))
are gathered into (…, N, …) arrays whose dof axis follows
:attr:`WidthSpace.canonical`; the dense kernel's column axis is permuted too
(``axis_full``). The replicated readout offset ``d`` is copied. The result does
not depend on the number of ranks, so a model saved on P ranks loads on Q.
"""

from __future__ import annotations

import numpy as np

from pontryx.solver.controls import Controls

__all__ = ["from_canonical", "local_shapes", "random_direction", "to_canonical"]

#: Controls without a dof axis (replicated on every rank).
REPLICATED = ("d",)
#: Controls that carry a second, full-length dof axis (dense kernel W(t, x, y)).
FULL_AXIS = ("W",)


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
            full = name in FULL_AXIS
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
            raise ValueError(f"model: no control {name!r} (found {', '.join(sorted(arrays))})")
        a = np.asarray(arrays[name], dtype=float)
        expected = canonical_shape(net, name, shapes[name])
        if a.shape != expected:
            raise ValueError(
                f"model: control {name!r} has shape {a.shape}, this network needs {expected}"
            )
        if name in REPLICATED:
            local = a.copy()
        elif _is_layer(net, name):
            full = name in FULL_AXIS
            local = np.stack([sp.from_canonical(v, axis_full=full) for v in a])
        else:
            local = sp.from_canonical(a)
        out[name] = np.ascontiguousarray(local)
    return Controls(out, sp.comm)


def random_direction(net, controls, names, seed: int = 0) -> Controls:
    """A seeded standard-normal direction over ``names``, drawn in canonical order
    (identical on any number of ranks) and scaled by each control's RMS size."""
    sp = net.space
    canon = to_canonical(net, controls.subset(names))
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in names:
        a = canon[name]
        scale = float(np.sqrt(np.mean(a * a))) if a.size else 0.0
        arrays[name] = rng.standard_normal(a.shape) * (scale if scale > 0 else 1.0)
    return from_canonical(net, arrays, names) if names else Controls({}, sp.comm)

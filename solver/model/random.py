"""The one canonical random draw: N(0, I) arrays shaped like controls, drawn in the
canonical dof order so that the draw does not depend on the number of ranks.

For every name in order (as in ``like``): a replicated control (``d``) as it is;
a layer control (N_t, n, …) layer by layer, each layer the full (N, …) array in
canonical order (both dof axes for the kernel's ``full_axis`` controls, the dense
W), of which this rank keeps its rows; E and C (n, …) through (N, …). Drawing
layer by layer holds one layer's full array at a time. Used by the Langevin
noise, the Taylor-test directions and the check-gradient command.
"""

from __future__ import annotations

import numpy as np

from pontryx.solver.model.controls import REPLICATED, Controls

__all__ = ["canonical_normal"]


def canonical_normal(rng: np.random.Generator, net, like: Controls, scale=None) -> Controls:
    """Standard normals shaped like ``like`` (a subset of ``net``'s controls), each
    name multiplied by ``scale[name]`` if given."""
    sp, full_axis = net.space, net.kernel.full_axis
    out = {}
    for name, v in like.items():
        if name in REPLICATED:
            out[name] = rng.standard_normal(v.shape)
        elif name in net.layer_names:
            both = name in full_axis
            tail = (sp.N,) if both else v.shape[2:]
            out[name] = np.empty_like(v)
            for n in range(v.shape[0]):
                full = rng.standard_normal((sp.N, *tail))
                out[name][n] = sp.from_canonical(full, axis_full=both)
        else:
            out[name] = sp.from_canonical(rng.standard_normal((sp.N, *v.shape[1:])))
        if scale is not None:
            out[name] *= scale[name]
    return Controls(out, like.comm)

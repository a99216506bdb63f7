"""Width limit: the network's outputs converge under mesh refinement h → 0.

Fixed depth (N_t layers of the midpoint scheme), fixed smooth controls
(``_studies.py``: the kernel w(x, y) at the dof coordinates times the M_L
weights, b and the readout c at the dofs, the embedding interpolated), fixed
inputs; unit square meshes n = n₀, 2n₀, … for P1 (row-sum lumping) and P2
(HRZ lumping). With no exact solution the error is estimated by successive
differences e_h = max |Ŷ_h − Ŷ_{h/2}| / max |Ŷ|, which decay at the rate of the
error itself; the fitted rate is the slope over the finest three.
Plot: benchmarks/out/width_limit.png.

    .venv/bin/python benchmarks/width_limit.py [--smoke | --full]
"""

from __future__ import annotations

import itertools

from mpi4py import MPI

import _common as C
import _studies as St
import numpy as np

LAYERS, SCHEME = 8, "midpoint"
SETTINGS = {
    "smoke": {1: [2, 4, 8], 2: [1, 2, 4]},
    "quick": {1: [4, 8, 16, 32], 2: [2, 4, 8, 16]},
    "full": {1: [4, 8, 16, 32, 64], 2: [2, 4, 8, 16, 32]},
}


def output(n, degree, X):
    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace

    space = WidthSpace(create_mesh({"kind": "unit_square", "n": n}, MPI.COMM_SELF), degree)
    net, theta = St.network(space, LAYERS, SCHEME)
    Y = net.forward(theta, X)
    net.destroy()
    return space.N, space.lumping, Y


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    mode = C.mode(args)
    X = St.inputs()
    rows, series, rates = [], {}, {}
    with C.limit_threads(args.threads):
        for degree, meshes in SETTINGS[mode].items():
            outs = [output(n, degree, X) for n in meshes]
            scale = np.abs(outs[-1][2]).max()
            diffs = [np.abs(a[2] - b[2]).max() / scale for a, b in itertools.pairwise(outs)]
            hs = [1.0 / n for n in meshes[:-1]]
            k = min(3, len(diffs))
            rates[degree] = C.fit_exponent(hs[-k:], diffs[-k:])
            series[f"P{degree} ({outs[0][1]} lumping)"] = (hs, diffs)
            for i, (n, (N, lump, _)) in enumerate(zip(meshes, outs)):
                e = diffs[i] if i < len(diffs) else "–"
                r = np.log2(diffs[i - 1] / diffs[i]) if 0 < i < len(diffs) else "–"
                rows.append([f"P{degree}", lump, n, N, e, r])
    png = C.OUT / "width_limit.png"
    St.plot(
        png,
        series,
        "h = 1/n",
        "max |Ŷ_h − Ŷ_{h/2}| / max |Ŷ|",
        f"Width limit ({SCHEME}, N_t = {LAYERS})",
        slopes=[(2, s[0], s[1][0], "order 2") for s in list(series.values())[:1]],
    )
    body = (
        f"Dense kernel on unit square meshes n × n, {SCHEME} with N_t = {LAYERS}, tanh, ε = 0, "
        "the smooth controls of the deep-limit study; e_h = max |Ŷ_h − Ŷ_{h/2}| / max |Ŷ|. "
        f"Plot: `benchmarks/out/{png.name}`.\n\n"
        + C.table(["space", "lumping", "n", "N", "e_h", "rate"], rows)
        + "\n\nFitted rate (finest three differences): "
        + ", ".join(f"P{d} **{p:.2f}**" for d, p in rates.items())
        + "."
    )
    return C.publish("Width limit (h → 0)", body, timed=False)


if __name__ == "__main__":
    main()

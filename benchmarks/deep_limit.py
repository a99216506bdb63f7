"""Deep limit: the N_t-layer network converges to the continuous-in-time model.

Fixed smooth controls w(t, x, y), b(t, x) (``_studies.py``) sampled at the layer
midpoints, fixed mesh (unit square, P1) and inputs; the output Ŷ of the network
with N_t layers is compared with a fine reference (explicit midpoint, ε = 0,
N_t = 2^12, or 2^13 with --full). Error: max |Ŷ − Ŷ_ref| / max |Ŷ_ref|; the
fitted order (slope in log–log over the finest four depths) should be ≈ 1 for
IMEX Euler and ≈ 2 for the midpoint scheme. Plot: benchmarks/out/deep_limit.png.

    .venv/bin/python benchmarks/deep_limit.py [--smoke | --full]
"""

from __future__ import annotations

from mpi4py import MPI

import _common as C
import _studies as St
import numpy as np

SCHEMES = ("imex_euler", "midpoint")
SETTINGS = {
    "smoke": {"n": 3, "depths": [2, 4, 8], "ref": 128},
    "quick": {"n": 6, "depths": [4, 8, 16, 32, 64, 128, 256], "ref": 4096},
    "full": {"n": 8, "depths": [4, 8, 16, 32, 64, 128, 256, 512, 1024], "ref": 8192},
}


def output(space, layers, scheme, X):
    net, theta = St.network(space, layers, scheme)
    Y = net.forward(theta, X)
    net.destroy()
    return Y


def main(argv=None) -> str:
    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace

    args = C.arguments(__doc__, argv)
    mode = C.mode(args)
    cfg = SETTINGS[mode]
    X = St.inputs()
    with C.limit_threads(args.threads):
        space = WidthSpace(create_mesh({"kind": "unit_square", "n": cfg["n"]}, MPI.COMM_SELF))
        ref = output(space, cfg["ref"], "midpoint", X)
        scale = np.abs(ref).max()
        errors = {
            s: [np.abs(output(space, L, s, X) - ref).max() / scale for L in cfg["depths"]]
            for s in SCHEMES
        }
    depths = cfg["depths"]
    rows = []
    for i, L in enumerate(depths):
        row = [L]
        for s in SCHEMES:
            e = errors[s]
            row += [e[i], np.log2(e[i - 1] / e[i]) if i else "–"]
        rows.append(row)
    k = min(4, len(depths))
    orders = {s: -C.fit_exponent(depths[-k:], errors[s][-k:]) for s in SCHEMES}
    png = C.OUT / "deep_limit.png"
    St.plot(
        png,
        {s: (depths, errors[s]) for s in SCHEMES},
        "layers N_t",
        "max |Ŷ − Ŷ_ref| / max |Ŷ_ref|",
        f"Deep limit (P1, N = {space.N}, reference N_t = {cfg['ref']})",
        slopes=[
            (-1, depths, errors["imex_euler"][0], "order 1"),
            (-2, depths, errors["midpoint"][0], "order 2"),
        ],
    )
    body = (
        f"Unit square P1, N = {space.N}, S = {X.shape[1]} inputs, tanh, ε = 0; controls "
        "w = 2 cos(πt) exp(−|x−y|²), b = ½ sin(πt) cos(πx₁) at the layer midpoints; "
        f"reference: midpoint with N_t = {cfg['ref']}. Plot: `benchmarks/out/{png.name}`.\n\n"
        + C.table(
            ["N_t", "error imex_euler", "rate", "error midpoint", "rate"],
            rows,
        )
        + "\n\nFitted order (finest "
        + str(k)
        + " depths): "
        + ", ".join(f"{s} **{orders[s]:.2f}**" for s in SCHEMES)
        + " (expected 1 and 2)."
    )
    return C.publish("Deep limit (N_t → ∞)", body, timed=False)


if __name__ == "__main__":
    main()

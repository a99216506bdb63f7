"""Deep limit: the N_t-layer network converges to the continuous-in-time model.

Fixed smooth controls w(t, x, y), b(t, x) (``_studies.py``) sampled at the layer
midpoints, fixed mesh (unit square, P1) and inputs; the output Ŷ of the network
with N_t layers is compared with a fine reference (explicit midpoint, ε = 0,
N_t = 2^12, or 2^13 with --full). Error: max |Ŷ − Ŷ_ref| / max |Ŷ_ref|; the
fitted order (slope in log–log over the finest four depths) should be ≈ 1 for
IMEX Euler and ≈ 2 for the midpoint scheme — and 2 for RK4 too: controls sampled
at the layer midpoints are a midpoint-rule approximation of θ(t), of order 2.

A second study freezes the controls in depth (w(¼, x, y), b(¼, x) in every layer):
then each scheme shows its own order against an RK4 reference (N_t = 2^10, 2^11
with --full; Verlet, which steps a two-state Hamiltonian model, against Verlet):
IMEX Euler 1, midpoint 2, Verlet 2, RK4 4.
Plots: benchmarks/out/deep_limit.png, deep_limit_constant.png.

    .venv/bin/python benchmarks/deep_limit.py [--smoke | --full]
"""

from __future__ import annotations

from mpi4py import MPI

import _common as C
import _studies as St
import numpy as np

SCHEMES = ("imex_euler", "midpoint", "rk4")
#: the study with controls constant in depth, and each scheme's declared order
CONSTANT = {"imex_euler": 1, "midpoint": 2, "verlet": 2, "rk4": 4}
SETTINGS = {
    "smoke": {"n": 3, "depths": [2, 4, 8], "ref": 128, "ref_constant": 64},
    "quick": {"n": 6, "depths": [4, 8, 16, 32, 64, 128, 256], "ref": 4096, "ref_constant": 1024},
    "full": {
        "n": 8,
        "depths": [4, 8, 16, 32, 64, 128, 256, 512, 1024],
        "ref": 8192,
        "ref_constant": 2048,
    },
}


def output(space, layers, scheme, X, frozen=None):
    net, theta = St.network(space, layers, scheme, frozen)
    Y = net.forward(theta, X)
    net.destroy()
    return Y


def _study(space, X, depths, schemes, reference, frozen=None):
    """Relative errors of every scheme at every depth against ``reference(s)`` =
    (scheme, N_t) of its reference, the table rows, the fitted orders (finest four
    depths)."""
    refs = {}
    errors = {}
    for s in schemes:
        key = reference(s)
        if key not in refs:
            refs[key] = output(space, key[1], key[0], X, frozen)
        ref = refs[key]
        scale = np.abs(ref).max()
        errors[s] = [np.abs(output(space, L, s, X, frozen) - ref).max() / scale for L in depths]
    rows = []
    for i, L in enumerate(depths):
        row = [L]
        for s in schemes:
            e = errors[s]
            row += [e[i], np.log2(e[i - 1] / e[i]) if i else "–"]
        rows.append(row)
    k = min(4, len(depths))
    orders = {s: -C.fit_exponent(depths[-k:], errors[s][-k:]) for s in schemes}
    return errors, rows, orders, k


def _family(scheme: str) -> str:
    """The scheme of the reference: Verlet steps another model (u and its conjugate
    v, u' = σ(Kv + b), v' = −σ(K*u + b)), so it is held against itself."""
    return "verlet" if scheme == "verlet" else "rk4"


def _header(schemes):
    return ["N_t"] + [x for s in schemes for x in (f"error {s}", "rate")]


def main(argv=None) -> str:
    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace

    args = C.arguments(__doc__, argv)
    mode = C.mode(args)
    cfg = SETTINGS[mode]
    X = St.inputs()
    depths = cfg["depths"]
    with C.limit_threads(args.threads):
        space = WidthSpace(create_mesh({"kind": "unit_square", "n": cfg["n"]}, MPI.COMM_SELF))
        errors, rows, orders, k = _study(
            space, X, depths, SCHEMES, lambda s: ("midpoint", cfg["ref"])
        )
        frozen = list(CONSTANT)
        errors_c, rows_c, orders_c, _ = _study(
            space, X, depths, frozen, lambda s: (_family(s), cfg["ref_constant"]), frozen=0.25
        )
    png, png_c = C.OUT / "deep_limit.png", C.OUT / "deep_limit_constant.png"
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
    St.plot(
        png_c,
        {s: (depths, errors_c[s]) for s in frozen},
        "layers N_t",
        "max |Ŷ − Ŷ_ref| / max |Ŷ_ref|",
        f"Controls constant in depth (P1, N = {space.N}, RK4 reference N_t = "
        f"{cfg['ref_constant']})",
        slopes=[
            (-1, depths, errors_c["imex_euler"][0], "order 1"),
            (-2, depths, errors_c["midpoint"][0], "order 2"),
            (-4, depths, errors_c["rk4"][0], "order 4"),
        ],
    )
    body = (
        f"Unit square P1, N = {space.N}, S = {X.shape[1]} inputs, tanh, ε = 0; controls "
        "w = 2 cos(πt) exp(−|x−y|²), b = ½ sin(πt) cos(πx₁) at the layer midpoints; "
        f"reference: midpoint with N_t = {cfg['ref']}. Plot: `benchmarks/out/{png.name}`.\n\n"
        + C.table(_header(SCHEMES), rows)
        + f"\n\nFitted order (finest {k} depths): "
        + ", ".join(f"{s} **{orders[s]:.2f}**" for s in SCHEMES)
        + " (expected 1, 2 and 2: layer controls sampled at the midpoints are a "
        "midpoint-rule approximation of θ(t), which bounds every scheme at order 2)."
        + "\n\nControls constant in depth (w(¼, x, y), b(¼, x) in every layer), reference: "
        f"rk4 with N_t = {cfg['ref_constant']} (Verlet, a Hamiltonian network of another "
        f"model: Verlet with N_t = {cfg['ref_constant']}). "
        f"Plot: `benchmarks/out/{png_c.name}`.\n\n"
        + C.table(_header(frozen), rows_c)
        + f"\n\nFitted order (finest {k} depths): "
        + ", ".join(f"{s} **{orders_c[s]:.2f}**" for s in frozen)
        + " (expected "
        + ", ".join(str(CONSTANT[s]) for s in frozen)
        + ")."
    )
    return C.publish("Deep limit (N_t → ∞)", body, timed=False)


if __name__ == "__main__":
    main()

"""Diffusion maps of optimiser paths: sgd, adam, langevin, lmvm and msa from the
same start on ellipses, their controls recorded every k iterations
(``output.trajectory_every``) and embedded together by ``pontryx analyze``.

Each method trains the same network (unit square, dense kernel, the same initial
controls) through ``pontryx train`` into benchmarks/out/paths/<method>; then
``pontryx analyze`` embeds all recorded iterates (their seeded random projection
in the L² Riesz variables, 64 numbers each). Reported: per method the final J,
test accuracy and time, and the diffusion coordinates of its last iterate; the
spectrum. Plot: benchmarks/out/paths/sgd/analysis/diffusion_map.png (copied to
benchmarks/out/optimiser_paths.png).

    .venv/bin/python benchmarks/optimiser_paths.py [--smoke | --full]
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import _common as C
import numpy as np

METHODS = {
    "sgd": {"batch_size": 50, "learning_rate": 0.1, "seed": 1},
    "adam": {"batch_size": 50, "seed": 1},
    "langevin": {
        "batch_size": 50,
        "learning_rate": 0.1,
        "temperature": 1e-4,
        "decay": 1.0,
        "seed": 1,
    },
    "lmvm": {},
    "msa": {},
}
SETTINGS = {
    "smoke": {"n": 3, "layers": 3, "samples": 40, "iterations": 6, "every": 2},
    "quick": {"n": 6, "layers": 8, "samples": 500, "iterations": 60, "every": 2},
    "full": {"n": 8, "layers": 16, "samples": 1000, "iterations": 200, "every": 4},
}
CONFIG = """
mesh: {{kind: unit_square, n: {n}}}
model: {{layers: {layers}, T: 5.0, init: {{seed: 0}}}}
data: {{name: ellipses, n_train: {samples}, n_test: {samples}, seed: 0}}
training: {{method: sgd, max_iterations: {iterations}, test_every: 0, alpha: 1.0e-4}}
output: {{checkpoint_every: {iterations}, plots: false, paraview: false,
          trajectory_every: {every}}}
"""


def main(argv=None) -> str:
    from pontryx.solver.app.cli import main as cli

    def pontryx(argv):  # the command's own output stays out of the report
        with contextlib.redirect_stdout(io.StringIO()):
            return cli(argv)

    args = C.arguments(__doc__, argv)
    cfg = SETTINGS[C.mode(args)]
    root = C.OUT / "paths"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = root / "ellipses.yaml"
    config.write_text(CONFIG.format(**cfg))
    rows = []
    with C.limit_threads(args.threads):
        for method, options in METHODS.items():
            t = C.now()
            code = pontryx(
                [
                    "train",
                    str(config),
                    "--output",
                    str(root / method),
                    "--quiet",
                    "--set",
                    f"training.method={method}",
                    "--set",
                    f"training.options={json.dumps(options)}",
                ]
            )
            seconds = C.now() - t
            if code not in (0, 4):  # 4: not converged, still a path
                raise SystemExit(f"optimiser_paths: pontryx train ({method}) exited {code}")
            summary = json.loads((root / method / "summary.json").read_text())
            rows.append(
                [
                    method,
                    summary["iterations"],
                    summary["train"]["loss"],
                    summary["test"]["accuracy"],
                    seconds,
                    code,
                ]
            )
        out = root / "analysis"
        code = pontryx(["analyze", *(str(root / m) for m in METHODS), "--output", str(out)])
    f = np.load(out / "diffusion_map.npz")
    coords, run = f["coordinates"], f["run"]
    for i, row in enumerate(rows):
        last = coords[run == i][-1]
        row[5:] = [last[0], last[1]]
    png = C.OUT / "optimiser_paths.png"
    shutil.copy(out / "diffusion_map.png", png)
    lam = ", ".join(f"{v:.4f}" for v in f["eigenvalues"])
    body = (
        f"Ellipses ({cfg['samples']} training samples), unit square n = {cfg['n']}, dense "
        f"kernel, {cfg['layers']} layers, T = 5, α = 1e-4, the same initial controls; "
        f"{cfg['iterations']} iterations of each method, controls recorded every "
        f"{cfg['every']} (`output.trajectory_every`); minibatches of 50 for sgd/adam/langevin "
        "(langevin at T = 1e-4). `pontryx analyze` embeds the "
        f"{len(coords)} iterates (64-dimensional random projections, α = 1, "
        f"ε = {float(f['epsilon']):.3g}). Plot: `benchmarks/out/{png.name}`.\n\n"
        + C.table(
            ["method", "iterations", "final J (train)", "test accuracy", "s", "last ψ₁", "last ψ₂"],
            rows,
        )
        + f"\n\nEigenvalues λ_0 … λ_3: {lam}."
    )
    return C.publish("Diffusion maps of optimiser paths", body)


if __name__ == "__main__":
    main()

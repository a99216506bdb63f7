"""Digits at its anchors: the shipped digits example against scikit-learn's SVC and MLP.

scikit-learn's 8×8 digits on its usual split (the first 898 images train, the
last 899 test — ``pontryx.solver.data``'s ``digits``). pontryx: ``pontryx
train EXAMPLE`` under ``mpirun -n RANKS`` (quick: 2 ranks, the goal's
2 cores) in a fresh process, wall time of the whole command (start-up, set-up,
training, outputs) and the test accuracy of its ``summary.json``. The anchors,
measured in the same run: ``SVC(gamma=0.001)`` (the classifier of
scikit-learn's digits example) and ``MLPClassifier(hidden_layer_sizes=(100,),
random_state=0)`` on the raw pixels, fit and test time included.
Goal: ≥ 97.5 % test accuracy in ≤ 2 minutes on 2 cores.

    .venv/bin/python benchmarks/digits.py [--smoke | --full]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import _common as C

EXAMPLE = C.ROOT / "examples" / "digits_dense.yaml"
SETTINGS = {
    "smoke": {
        "ranks": 1,
        "sets": ["training.max_iterations=2", "output.plots=false", "output.paraview=false"],
    },
    "quick": {"ranks": 2, "sets": []},
    "full": {"ranks": 2, "sets": []},
}


def anchors() -> list[list]:
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    split = 898
    rows = []
    for name, model in (
        ("SVC(γ = 0.001)", SVC(gamma=0.001)),
        ("MLPClassifier(100)", MLPClassifier(hidden_layer_sizes=(100,), random_state=0)),
    ):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X[:split], y[:split])
        acc = float((model.predict(X[split:]) == y[split:]).mean())
        rows.append([name, f"{100 * acc:.1f} %", time.perf_counter() - t, "1 core"])
    return rows


def pontryx(cfg) -> list:
    out = C.OUT / "digits_run"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(C.VENV / "bin" / "pontryx"), "train", str(EXAMPLE), "--output", str(out)]
    cmd += ["--overwrite", "--quiet", *(a for s in cfg["sets"] for a in ("--set", s))]
    if cfg["ranks"] > 1:
        cmd = [str(C.MPIRUN), "-n", str(cfg["ranks"]), *cmd]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=C.thread_env(1))
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"pontryx train failed:\n{proc.stderr[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    return [
        f"pontryx `{EXAMPLE.name}`",
        f"{100 * s['test']['accuracy']:.1f} %",
        seconds,
        f"{cfg['ranks']} rank(s); training {s['time']:.0f} s, {s['iterations']} iterations",
    ]


def main(argv=None) -> str:
    args = C.parse(C.parser(__doc__.splitlines()[0]), argv)
    cfg = SETTINGS[C.mode(args)]
    rows = [pontryx(cfg), *anchors()]
    body = (
        "scikit-learn's digits, the first 898 images train, the last 899 test. pontryx: "
        f"`pontryx train examples/{EXAMPLE.name}` (wall time of the whole command, "
        "one BLAS thread per rank); the anchors on the raw pixels in this process.\n\n"
        + C.table(["model", "test accuracy", "time s", "note"], rows)
        + "\n\nGoal: ≥ 97.5 % in ≤ 120 s on 2 cores."
    )
    text = C.section("Digits at its anchors", body)
    C.report(text)
    return text


if __name__ == "__main__":
    main()

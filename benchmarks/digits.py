"""Digits at its anchors: the shipped digits examples against scikit-learn's SVC and MLP.

scikit-learn's 8×8 digits on its usual split (the first 898 images train, the
last 899 test — ``pontryx.solver.data``'s ``digits``). pontryx: ``pontryx
train EXAMPLE`` under ``mpirun -n RANKS`` (quick: 2 ranks, the goal's
2 cores) in a fresh process, wall time of the whole command (start-up, set-up,
training, outputs) and the test accuracy of its ``summary.json``, for
``examples/digits_conv.yaml`` (the conv kernel: a PDE-based convolutional
network with channels) and ``examples/digits_dense.yaml`` (a dense kernel on
the image plane). The anchors, measured in the same run: ``SVC(gamma=0.001)``
(the classifier of scikit-learn's digits example) and
``MLPClassifier(hidden_layer_sizes=(100,), random_state=0)`` on the raw pixels,
fit and test time included. CPU time (user + system of the whole process tree,
or of this process for the anchors) and the load average at the start are
printed beside the wall times: the machine may be shared. Goal: ≥ 97.5 % test
accuracy in ≤ 2 minutes on 2 cores.

    .venv/bin/python benchmarks/digits.py [--smoke | --full]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time

import _common as C

#: The pontryx runs: (example, extra ``--set`` overrides).
RUNS = [("digits_conv.yaml", []), ("digits_dense.yaml", [])]
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
        t, cpu = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X[:split], y[:split])
        acc = float((model.predict(X[split:]) == y[split:]).mean())
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        rows.append([name, f"{100 * acc:.1f} %", seconds, cpu, "1 core"])
    return rows


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pontryx(cfg, example: str, sets: list[str]) -> list:
    out = C.OUT / "digits_run"
    shutil.rmtree(out, ignore_errors=True)
    path = C.ROOT / "examples" / example
    cmd = [str(C.VENV / "bin" / "pontryx"), "train", str(path), "--output", str(out)]
    sets = [*cfg["sets"], *sets]
    cmd += ["--overwrite", "--quiet", *(a for s in sets for a in ("--set", s))]
    if cfg["ranks"] > 1:
        cmd = [str(C.MPIRUN), "-n", str(cfg["ranks"]), *cmd]
    t, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=C.thread_env(1))
    seconds, cpu = time.perf_counter() - t, _children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"pontryx train failed:\n{proc.stderr[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    return [
        f"pontryx `{example}`" + "".join(f" `{s}`" for s in sets),
        f"{100 * s['test']['accuracy']:.1f} %",
        seconds,
        cpu,
        f"{cfg['ranks']} rank(s); training {s['time']:.0f} s, {s['iterations']} iterations",
    ]


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    cfg = SETTINGS[C.mode(args)]
    load = os.getloadavg()[0]
    rows = [*(pontryx(cfg, example, sets) for example, sets in RUNS), *anchors()]
    body = (
        "scikit-learn's digits, the first 898 images train, the last 899 test. pontryx: "
        "`pontryx train examples/NAME.yaml` (wall time of the whole command, "
        "one BLAS thread per rank; CPU time of its process tree); the anchors on the raw "
        f"pixels in this process. Load average at the start: {load:.1f} "
        f"on {os.cpu_count()} cores.\n\n"
        + C.table(["model", "test accuracy", "time s", "CPU s", "note"], rows)
        + "\n\nGoal: ≥ 97.5 % in ≤ 120 s on 2 cores."
    )
    return C.publish("Digits at its anchors", body)


if __name__ == "__main__":
    main()

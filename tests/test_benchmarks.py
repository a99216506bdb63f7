"""Every benchmark script runs in its tiniest ``--smoke`` mode (seconds each).

These prove the scripts run and print their Markdown tables; they time nothing
and assert no performance (the benchmarks report numbers, tests do not). Serial
only: the scripts start their own ``mpirun`` workers where they need ranks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
from run_all import SCRIPTS  # noqa: E402  (the one list of benchmark scripts)


def _run(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "MPIR_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=BENCH.parent,
    )


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_smoke(name):
    proc = _run(BENCH / f"{name}.py", "--smoke", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.lstrip().startswith("## "), proc.stdout[-2000:]
    if name not in ("training",):
        assert "|---|" in proc.stdout  # a Markdown table


@pytest.mark.serial
def test_run_all_writes_results(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = _run(BENCH / "run_all.py", "--smoke", "--only", "deep_limit", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("# pontryx benchmark results", "## Machine", "## Versions", "## Deep limit"):
        assert heading in text
    assert "Fitted order" in text


@pytest.mark.serial
def test_run_all_rejects_unknown_benchmark():
    proc = _run(BENCH / "run_all.py", "--smoke", "--only", "nonsense")
    assert proc.returncode != 0
    assert "--only: unknown benchmark 'nonsense'" in proc.stderr


@pytest.mark.serial
@pytest.mark.slow
def test_discrete_weights_goal_rows_over_seeds():
    """``--goals --seeds 2``: the goal rows only, their means and each seed's accuracy."""
    proc = _run(BENCH / "discrete_weights.py", "--smoke", "--goals", "--seeds", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ellipses")]
    assert [r.split("|")[2].strip() for r in rows] == [
        "msa ternary", "emsa ternary (batch size 300) (inner iterations 2)",
        "adam ternary (STE)", "lmvm real",
    ]  # fmt: skip
    assert "emsa ternary (variant, batch size 300, inner iterations 2)" in proc.stdout
    assert all(len(r.split("|")[-2].split(" / ")) == 2 for r in rows)  # per seed
    assert "seeds 0 … 1" in proc.stdout and "Goals:" in proc.stdout
    bad = _run(BENCH / "discrete_weights.py", "--smoke", "--seeds", "0")
    assert bad.returncode == 2 and "--seeds: expected at least 1, got 0" in bad.stderr


@pytest.mark.serial
@pytest.mark.slow
def test_gradient_cost_width_axis_with_both_exchanges():
    """The width axis through node-shared arrays and with the MPI collectives
    (the A/B of ``parallel.exchange``), side by side."""
    proc = _run(BENCH / "gradient_cost.py", "--smoke", "--layouts", "width,width-mpi")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in proc.stdout.splitlines() if r.startswith("| 2 ranks")]
    assert sum("width axis · MPI collectives | dense" in r for r in rows) == 1
    assert sum("width axis | dense" in r for r in rows) == 1


def test_benchmarks_use_the_environment_that_runs_them():
    """mpirun and pontryx come from the running interpreter's environment (setup.sh's
    PONTRYX_VENV may put it anywhere), not from a .venv the checkout may lack: 8 of
    the 20 scripts had failed with FileNotFoundError there."""
    import _common as C

    assert Path(sys.prefix) == C.VENV
    assert C.MPIRUN == Path(sys.prefix) / "bin" / "mpirun" and C.MPIRUN.exists()

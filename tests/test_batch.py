"""The Slurm and PBS templates (docker/) run for real outside a scheduler: a job
array task takes its line of the sweep file and its own run directory; the
scheduler's warning signal stops pontryx cleanly (checkpoint, summary
"interrupted", exit 143) and the job is requeued; a restart resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.serial, pytest.mark.cli]

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "docker" / "slurm" / "train.sbatch"
PBS = ROOT / "docker" / "pbs" / "train.pbs"
CONFIG = """
mesh: {kind: unit_square, n: 4}
model: {layers: 4}
data: {name: ellipses, n_train: 400, n_test: 40}
training: {method: adam, max_iterations: MAXIT, test_every: 0}
output: {checkpoint_every: 5, plots: false, paraview: false}
"""


def _env(tmp_path, **extra):
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    for tool in ("scontrol", "qsub", "qdel"):  # record what the scheduler would be asked
        (fake / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> "{tmp_path}/scheduler.log"\n')
        (fake / tool).chmod(0o755)
    drop = ("PMI_", "PMIX_", "MPI_", "MPICH_", "HYDRA_", "SLURM_", "PBS_", "PONTRYX_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    venv = Path(sys.executable).absolute().parent
    env.update(
        PATH=f"{fake}:{venv}:{env['PATH']}",
        PONTRYX_VENV="",
        PONTRYX_LAUNCHER="mpirun",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        **extra,
    )
    return env


def _config(tmp_path, iterations):
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.replace("MAXIT", str(iterations)))
    return path


def test_job_array_task_takes_its_sweep_line(tmp_path):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text(
        "# learning rates\n--set training.options.learning_rate=0.001\n\n"
        "--set training.options.learning_rate=0.02\n"
    )
    env = _env(
        tmp_path,
        SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_JOB_ID="77",
        SLURM_ARRAY_JOB_ID="70",
        SLURM_ARRAY_TASK_ID="1",
        PONTRYX_SWEEP=str(sweep),
    )
    config = _config(tmp_path, 3)
    proc = subprocess.run(
        ["bash", str(SBATCH), str(config), "runs/lr"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "runs" / "lr" / "task-1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "max_iterations" and summary["iterations"] == 3
    assert "learning_rate: 0.02" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("script", ["sbatch", "pbs"])
def test_warning_signal_checkpoints_and_requeues(tmp_path, script):
    """SIGUSR1 (Slurm's --signal) or SIGTERM (PBS's walltime) to the batch script:
    pontryx stops after an iteration with a checkpoint and exit 143; Slurm's
    template requeues the job; starting again resumes and finishes."""
    config = _config(tmp_path, 100000)
    if script == "sbatch":
        env = _env(tmp_path, SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_ID="42", PONTRYX_GRACE="60")
        cmd, sig = ["bash", str(SBATCH), str(config), "runs/r"], signal.SIGUSR1
    else:
        env = _env(tmp_path, PBS_O_WORKDIR=str(tmp_path), PONTRYX_CONFIG=str(config),
                   PONTRYX_RUN_DIR="runs/r", PONTRYX_CHAIN="0")  # fmt: skip
        cmd, sig = ["bash", str(PBS)], signal.SIGTERM
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    run = tmp_path / "runs" / "r"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(
        (run / "checkpoints").glob("iter-*/manifest.json")
    ):
        time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == signal.SIGTERM, out
    assert "pontryx exited with status 143" in out
    stopped = summary["iterations"]
    assert stopped >= 5 and summary["resume_from"] == stopped
    log = (tmp_path / "scheduler.log").read_text() if (tmp_path / "scheduler.log").exists() else ""
    if script == "sbatch":
        assert proc.returncode == 0 and "scontrol requeue 42" in log, out
    else:
        assert proc.returncode == 143, out
    # the restart resumes from the checkpoint of the interruption and goes on
    config.write_text(CONFIG.replace("MAXIT", str(stopped + 5)))
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "max_iterations" and summary["iterations"] == stopped + 5

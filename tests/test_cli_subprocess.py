"""The installed command in real processes: ``pontryx`` and ``python -m
pontryx.solver``, SIGKILL-and-resume equality (serially and under ``mpirun -n
2``), a fault on one of 2 ranks ending the job within seconds, and bad input
under ``mpirun``.

All tests here start processes, so they run from the serial pytest run only
(the 2-rank variants launch ``mpirun -n 2`` themselves, from an environment
without the parent's PMI/MPI variables)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pontryx.solver.outputs import model_io, read_metrics

pytestmark = [pytest.mark.cli, pytest.mark.serial]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).absolute().parent
PONTRYX = [sys.executable, "-m", "pontryx.solver"]

CONFIG = """
mesh: {kind: unit_square, n: 5}
model: {layers: 6, T: 3.0, init: {variance: 3.0}}
data: {name: ellipses, n_train: 200, n_test: 50}
training: {method: lmvm, max_iterations: 24, test_every: 3}
output: {checkpoint_every: 4, plots: false, paraview: false}
"""


def clean_env(**extra) -> dict:
    """The environment without the MPI launcher's variables (no nested-MPI surprises)."""
    drop = ("PMI_", "PMIX_", "MPI_", "MPICH_", "HYDRA_", "OMPI_", "I_MPI_", "PONTRYX_FAULT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def mpirun() -> str:
    found = BIN / "mpirun"
    return str(found) if found.exists() else shutil.which("mpirun")


def command(ranks: int, *args) -> list[str]:
    base = [*PONTRYX, *map(str, args)]
    return [mpirun(), "-n", str(ranks), *base] if ranks > 1 else base


def run(cmd, timeout=240, **env):
    return subprocess.run(
        cmd, capture_output=True, text=True, env=clean_env(**env), cwd=ROOT, timeout=timeout
    )


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "kr.yaml"
    path.write_text(CONFIG)
    return path


def test_entry_points_help():
    for cmd in ([str(BIN / "pontryx"), "--help"], [*PONTRYX, "train", "--help"]):
        if not Path(cmd[0]).exists():
            pytest.skip("console script not installed")
        proc = run(cmd, timeout=120)
        assert proc.returncode == 0 and "usage: pontryx" in proc.stdout, proc.stderr


def _start_and_await_checkpoint(cmd, run_dir: Path, iteration: int, timeout=180):
    """The job in its own session (so that a signal reaches the launcher and every
    rank), once the checkpoint of ``iteration`` is complete."""
    proc = subprocess.Popen(
        cmd,
        env=clean_env(),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    manifest = run_dir / "checkpoints" / f"iter-{iteration:08d}" / "manifest.json"
    deadline = time.monotonic() + timeout
    try:
        while not manifest.exists():
            assert proc.poll() is None, f"the run ended early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"no checkpoint {iteration} in time"
            time.sleep(0.005)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        raise
    return proc


def _kill_after_second_checkpoint(cmd, run_dir: Path) -> None:
    proc = _start_and_await_checkpoint(cmd, run_dir, 8)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole launcher tree, no clean-up
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists(), "the run finished before the kill"


def _same_run(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert [r["iteration"] for r in ma] == list(range(1, 25)) == [r["iteration"] for r in mb]
    for ra, rb in zip(ma, mb):
        # every metric but the elapsed time and TAO's evaluation counter (not in its state)
        assert {k: v for k, v in ra.items() if k not in ("time", "sweeps")} == {
            k: v for k, v in rb.items() if k not in ("time", "sweeps")
        }
    A, B = model_io.load_model(a / "model.npz"), model_io.load_model(b / "model.npz")
    assert all(np.array_equal(A[k], B[k]) for k in A)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sa["train"] == sb["train"] and sa["test"] == sb["test"]


@pytest.mark.parametrize("ranks", [1, 2])
def test_sigkill_and_resume_equals_uninterrupted(config, tmp_path, ranks):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    proc = run(command(ranks, "train", config, "--output", whole, "--quiet"))
    assert proc.returncode == 0, proc.stderr
    _kill_after_second_checkpoint(command(ranks, "train", config, "--output", cut), cut)
    proc = run(command(ranks, "train", config, "--output", cut, "--resume", "--quiet"))
    assert proc.returncode == 0, proc.stderr
    _same_run(whole, cut)


def test_two_width_ranks_repeat_bit_for_bit(config, tmp_path):
    """Two runs of one configuration on 2 width ranks, and the two exchanges, end with
    the same model bit for bit (README, Parallel layout). The initial controls' and
    the noise's Matérn draws are solved redundantly: MUMPS's parallel factorisation
    does not repeat (on this mesh, before: W, b, C, d differed from run to run)."""
    models = []
    for i, exchange in enumerate(("shared", "shared", "mpi")):
        out = tmp_path / f"r{i}"
        proc = run(command(2, "train", config, "--output", out, "--quiet",
                           "--set", "parallel.width=2", "--set", f"parallel.exchange={exchange}",
                           "--set", "mesh.n=10", "--set", "model.layers=2",
                           "--set", "model.noise.amplitude=0.1",
                           "--set", "training.max_iterations=2"))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        models.append(model_io.load_model(out / "model.npz"))
    assert all(np.array_equal(models[0][k], m[k]) for m in models[1:] for k in models[0])


def test_fault_on_one_rank_ends_the_job(config, tmp_path):
    start = time.monotonic()
    proc = run(
        command(2, "train", config, "--output", tmp_path / "r"),
        timeout=120,
        PONTRYX_FAULT_INJECT="1:3",
    )
    elapsed = time.monotonic() - start
    assert proc.returncode != 0, proc.stderr
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end:\n{proc.stderr}"
    assert "injected fault on rank 1 at iteration 3" in proc.stderr, proc.stderr


def test_bad_input_under_mpirun_is_one_line(config, tmp_path):
    proc = run(
        command(2, "train", config, "--output", tmp_path / "r", "--set", "model.T=-1"), timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "config error: model.T: expected a number > 0, got -1"
    assert not (tmp_path / "r").exists()


def _terminate_after_first_checkpoint(cmd, run_dir: Path):
    """SIGTERM to the whole job (as Slurm sends it at the time limit); wait for it to end."""
    proc = _start_and_await_checkpoint(cmd, run_dir, 4)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("method", ["lmvm", "lbfgs", "adam"])
def test_sigterm_stops_cleanly_and_resumes(config, tmp_path, ranks, method):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    opts = ("--set", f"training.method={method}")
    proc = run(command(ranks, "train", config, "--output", whole, "--quiet", *opts))
    assert proc.returncode == 0, proc.stderr
    code, err = _terminate_after_first_checkpoint(
        command(ranks, "train", config, "--output", cut, *opts), cut
    )
    assert code == 128 + signal.SIGTERM, err
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    assert (cut / "model.npz").exists()
    assert "Traceback" not in err, err
    proc = run(command(ranks, "train", config, "--output", cut, "--resume", "--quiet", *opts))
    assert proc.returncode == 0, proc.stderr
    _same_run(whole, cut)


def test_not_converged_exits_4(config, tmp_path):
    """A TAO solve stopped by its own safeguard is reported as not converged."""
    proc = run(
        command(
            1,
            "train",
            config,
            "--output",
            tmp_path / "r",
            "--quiet",
            "--set",
            "petsc.pontryx_tao.tao_max_funcs=3",
        ),
    )
    assert proc.returncode == 4, proc.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "not_converged", summary


def test_a_file_name_of_other_bytes_than_utf8_runs(tmp_path):
    """``pontryx validate c\\xff.yaml``: DOLFINx's logger takes the arguments as
    UTF-8 strings and refused such a name (a TypeError in every command)."""
    name = os.fsdecode(b"c\xff.yaml")
    (tmp_path / name).write_text(CONFIG)
    cmd = [*PONTRYX, "validate", os.fsencode(tmp_path / name)]
    out = subprocess.run(cmd, capture_output=True, env=clean_env(), cwd=ROOT, timeout=240)
    assert out.returncode == 0 and b": valid" in out.stdout, out.stderr.decode(errors="replace")
    # train from it into a run directory of such a name (its config.yaml and train.log
    # name both, escaped), and resume it
    run_dir = os.fsencode(tmp_path / os.fsdecode(b"r\xff"))
    cmd = [*PONTRYX, "train", os.fsencode(tmp_path / name), "--output", run_dir]
    for extra in ([b"training.max_iterations=2"], [b"training.max_iterations=4", b"--resume"]):
        args = [*cmd, b"--set", *extra]
        out = subprocess.run(args, capture_output=True, env=clean_env(), cwd=ROOT, timeout=240)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert [r["iteration"] for r in read_metrics(os.fsdecode(run_dir))] == [1, 2, 3, 4]


def test_a_second_signal_ends_the_process_during_a_long_c_call():
    """Two SIGTERMs 0.1 s apart while the main thread is in one long C call (as
    TAO between two callbacks): CPython would run the handler once, afterwards,
    for both; the watcher thread sees the second delivery and ends the process at
    once, killed by it."""
    code = (
        "import sys, time\n"
        "from mpi4py import MPI\n"
        "import numpy as np\n"
        "from pontryx.solver.app.signals import StopRequest\n"
        "a = np.random.default_rng(0).standard_normal((1500, 1500))\n"
        "with StopRequest(MPI.COMM_WORLD):\n"
        "    print('ready', flush=True)\n"
        "    for _ in range(100):\n"
        "        np.linalg.eigvals(a)  # about a second each, no Python in between\n"
        "    sys.exit(0)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, env=clean_env(), cwd=ROOT
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM
        assert time.monotonic() - start < 0.5
    finally:
        proc.kill()
        proc.wait()


def test_one_signal_delivered_twice_stops_cleanly(config, tmp_path):
    """coreutils' timeout signals the command, then its process group: two SIGTERMs
    microseconds apart are one request (the second killed the run, nothing saved)."""
    run_dir = tmp_path / "r"
    cmd = [*PONTRYX, "train", config, "--output", run_dir, "--quiet",
           "--set", "training.method=adam", "--set", "training.max_iterations=100000",
           "--set", "output.checkpoint_every=4"]  # fmt: skip
    proc = _start_and_await_checkpoint(cmd, run_dir, 4)
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and (run_dir / "model.npz").is_file()


def test_a_closed_stdout_ends_the_output_not_the_command(config, tmp_path):
    """``pontryx … | head``: a reader that goes away ends the printing, not the
    command (PETSc's SIGPIPE handler printed a signal dump and aborted; train died
    with a half-written run directory); so does an output on a full disk (exit 5,
    "cannot write the run directory", before)."""
    run_dir = tmp_path / "run"
    for args in (("methods",), ("train", config, "--output", run_dir)):
        with open(tmp_path / "stderr", "w+b") as err:
            p = subprocess.Popen(
                command(1, *args), stdout=subprocess.PIPE, stderr=err, env=clean_env(), cwd=ROOT
            )
            p.stdout.close()  # before the first line is written
            assert p.wait(timeout=240) == 0, args
            err.seek(0)
            text = err.read().decode()
        assert "PETSC ERROR" not in text and "Traceback" not in text and "Broken" not in text, text
    assert json.loads((run_dir / "summary.json").read_text())["status"]
    assert (run_dir / "model.npz").is_file()
    full = tmp_path / "full"  # an output that fails with ENOSPC: ended, not the run
    with open("/dev/full", "w") as out:
        cmd = command(1, "train", config, "--output", full)
        r = subprocess.run(
            cmd, stdout=out, stderr=subprocess.PIPE, env=clean_env(), cwd=ROOT, timeout=240
        )
    assert r.returncode == 0 and (full / "summary.json").is_file(), r.stderr


def test_unusual_environments_are_one_line_or_work(config, tmp_path):
    """An ASCII-only output (Unicode escaped, the run whole: it was a traceback and a
    half-written run), --version under mpirun (once), PETSc that cannot start (one
    line: was PETSc's banner and a traceback), a JIT cache that cannot be written
    (was "cannot write the run directory", exit 5; tracebacks on 2 ranks), python
    -OO (the methods' summaries, which came from the dropped docstrings)."""
    proc = run([*PONTRYX, "train", config, "--output", tmp_path / "a",
                "--set", "training.max_iterations=2"], PYTHONIOENCODING="ascii")  # fmt: skip
    assert proc.returncode == 0 and "\\u2192" in proc.stdout, proc.stderr
    assert (tmp_path / "a" / "summary.json").is_file()
    proc = run(command(2, "--version"))
    assert proc.returncode == 0 and proc.stdout.count("pontryx") == 1, proc.stdout
    proc = run([*PONTRYX, "validate", config], PETSC_OPTIONS="-options_file /nonexistent/x")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "PETSc could not start: Unable to open options file /nonexistent/x" in proc.stderr
    proc = run([*PONTRYX, "validate", config], XDG_CACHE_HOME="/proc/no-cache")  # was exit 5
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("config error: XDG_CACHE_HOME: the forms are compiled into")
    plain, optimised = run([*PONTRYX, "methods"]), run([*PONTRYX, "methods"], PYTHONOPTIMIZE="2")
    assert plain.returncode == optimised.returncode == 0
    assert plain.stdout == optimised.stdout

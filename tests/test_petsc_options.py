"""The YAML ``petsc:`` section takes effect or is refused before anything is
written (solver/app/petsc_options.py): each documented spelling has its effect,
misspellings and unknown types are one-line errors, options of solvers the run
does not have are warnings, ``log_view`` works."""

import json
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import pytest
from test_cli import SMALL, cli, write

from pontryx.solver.outputs import read_metrics

pytestmark = pytest.mark.cli
INVERSE = Path(__file__).resolve().parents[1] / "examples" / "inverse_1d.yaml"


def _train(capsys, tmp, petsc: str, extra=(), name="run"):
    config = write(tmp / f"{name}.yaml", SMALL + f"petsc: {petsc}\n")
    return cli(capsys, "train", config, "--output", tmp / name, "--quiet", *extra)


def test_tao_tolerance_spelled_as_documented_stops_the_run(capsys, mpi_tmp_path):
    code, _, err = _train(
        capsys, mpi_tmp_path, "{pontryx_tao: {tao_gatol: 0.09}}",  # ‖∇J‖ 0.11 at the start
        ("--set", "training.max_iterations=50"),
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((mpi_tmp_path / "run" / "summary.json").read_text())
    assert summary["reason"] == "converged: CONVERGED_GATOL" and summary["iterations"] < 50
    assert read_metrics(mpi_tmp_path / "run")[-1]["grad_norm"] <= 0.09  # the same norm


def test_line_search_and_history_options_change_the_iterates(capsys, mpi_tmp_path):
    losses = {}
    for name, petsc in (
        ("plain", "{}"),
        ("armijo", "{pontryx_tao: {tao_ls_type: armijo}}"),
        ("history", "{tao_lmvm_mat_lmvm_hist_size: 1}"),
    ):
        code, _, err = _train(
            capsys, mpi_tmp_path, petsc, ("--set", "output.checkpoint_every=6"), name=name
        )
        assert code == 0 and "warning" not in err, err
        losses[name] = [r["loss"] for r in read_metrics(mpi_tmp_path / name)]
    assert losses["armijo"] != losses["plain"] and losses["history"] != losses["plain"]


@pytest.mark.parametrize(
    "petsc, extra, needle",
    [
        ("{pontryx_tao: {gatol: 1.0e-9}}", (), "petsc.pontryx_tao.gatol: -pontryx_tao_gatol"),
        (
            "{pontryx_tao: {tao_type: nosuchtao}}",
            (),
            "petsc.pontryx_tao.tao_type: the lmvm method's PETSc objects",
        ),
        (
            "{pontryx_tao: {tao_max_funcs: abc}}",
            (),
            "petsc.pontryx_tao.tao_max_funcs: the lmvm method's PETSc objects: Input string abc",
        ),
        (
            "{}",
            ("--set", "training.options.petsc_options.tao_max_funcs=abc"),
            "training.options.petsc_options.tao_max_funcs: the lmvm method's PETSc objects",
        ),
        (
            "{pontryx_diffusion: {ksp_type: nosuchksp}}",
            ("--set", "model.epsilon=0.1"),
            "petsc.pontryx_diffusion.ksp_type: the width-diffusion solver",
        ),
        (
            "{pontryx_diffusion: {ksp_typo: cg}}",
            ("--set", "model.epsilon=0.1"),
            "petsc.pontryx_diffusion.ksp_typo",
        ),
        # the initial controls' solver (a PETSc traceback) and the noise KSP (keyed
        # model.noise.petsc): keyed by the option, as for every other solver
        (
            "{pontryx_init: {ksp_type: nosuchksp}}",
            (),
            "petsc.pontryx_init.ksp_type: the random-field solver",
        ),
        ("{pontryx_init: {ksp_typo: cg}}", (), "petsc.pontryx_init.ksp_typo"),
        # a value with a space, and one longer than PETSc quotes whole (256
        # characters), keyed by their option too (were keyed petsc), the long one
        # shown in 60 characters
        (
            '{pontryx_tao: {tao_type: "nls x"}}',
            (),
            "petsc.pontryx_tao.tao_type: the lmvm method's PETSc objects: Unable to find "
            "requested Tao type nls x",
        ),
        (
            "{}",
            ("--set", 'training.options.petsc_options={tao_ls_type: "more thuente"}'),
            "training.options.petsc_options.tao_ls_type: ",
        ),
        (
            "{pontryx_tao: {tao_ls_type: " + "a" * 300 + "}}",
            (),
            "petsc.pontryx_tao.tao_ls_type: the lmvm method's PETSc objects: Unable to find "
            "requested TaoLineSearch type " + "a" * 57 + "...\n",
        ),
        (  # words, beyond what PETSc quotes: keyed and cut to 60 characters as well
            '{pontryx_tao: {tao_ls_type: "' + "a b " * 100 + '"}}',
            (),
            "petsc.pontryx_tao.tao_ls_type: the lmvm method's PETSc objects: Unable to find "
            "requested TaoLineSearch type " + ("a b " * 15)[:57] + "...\n",
        ),
        (
            "{pontryx_noise: {ksp_type: nosuchksp}}",
            ("--set", "model.noise.amplitude=0.1"),
            "petsc.pontryx_noise.ksp_type: the noise KSP (prefix pontryx_noise_): Unable to find",
        ),
    ],
)
def test_bad_options_fail_before_anything_is_written(capsys, mpi_tmp_path, petsc, extra, needle):
    code, _, err = _train(capsys, mpi_tmp_path, petsc, extra)
    assert code == 2 and err.startswith(f"config error: {needle}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (mpi_tmp_path / "run").exists()


@pytest.mark.parametrize(
    "option, needle",
    [
        ("ksp_type=nosuchksp", "petsc.pontryx_pde.ksp_type: the PDE solver (prefix pontryx_pde_)"),
        ("ksp_typo=cg", "petsc.pontryx_pde.ksp_typo: -pontryx_pde_ksp_typo was not read by"),
    ],
)
def test_bad_inverse_pde_options_are_keyed_by_the_option(capsys, mpi_tmp_path, option, needle):
    code, _, err = cli(capsys, "train", INVERSE, "--output", mpi_tmp_path / "run",
                       "--set", f"petsc.pontryx_pde.{option}")  # fmt: skip
    assert code == 2 and err.startswith(f"config error: {needle}"), err
    assert err.count("\n") == 1 and not (mpi_tmp_path / "run").exists()


@pytest.mark.parametrize(
    "method, good, bad",
    [
        ("lmvm", "{tao_ls_type: armijo}", "gatol"),  # README's misspelling of tao_gatol
        ("lmvm", "{tao_gatol: 1.0e-9}", "tao_nosuch_option"),
        ("msa", "{tao_ls_type: armijo}", "tao_nosuch_option"),
        ("oneshot", "{ksp_type: gmres, pc_type: none}", "ksp_nosuch_option"),
    ],
)
def test_method_petsc_options_that_are_not_read_are_refused(
    capsys, mpi_tmp_path, method, good, bad
):
    """``training.options.petsc_options`` is checked like ``petsc:`` (it ran with exit
    0 and no word: the check asked ``hasName``, which marks an option as read)."""
    config = write(mpi_tmp_path / "c.yaml", SMALL)
    args = ("--set", f"training.method={method}", "--set", "training.max_iterations=1")
    if method == "oneshot":  # the KSP of the line search (the trust region has none)
        args += ("--set", "training.options.globalisation=line_search")
    code, _, err = cli(capsys, "validate", config, *args,
                       "--set", f"training.options.petsc_options={good}")  # fmt: skip
    assert code == 0, err
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "run", *args,
                       "--set", f"training.options.petsc_options={{{bad}: 1}}")  # fmt: skip
    key = f"training.options.petsc_options.{bad}"
    assert code == 2 and err.startswith(f"config error: {key}: ") and "no such option" in err, err
    assert err.count("\n") == 1 and not (mpi_tmp_path / "run").exists()


def test_viewers_are_read_when_the_solver_runs(capsys, mpi_tmp_path):
    """``tao_view`` is read at the end of TaoSolve: accepted in ``petsc:`` (it was
    refused as not read), refused in ``petsc_options``, which are withdrawn then."""
    code, _, err = _train(capsys, mpi_tmp_path, "{pontryx_tao: {tao_view: null}}")
    assert code == 0 and "warning" not in err, err
    config = write(mpi_tmp_path / "c.yaml", SMALL)
    code, _, err = cli(capsys, "validate", config,
                       "--set", "training.options.petsc_options={tao_view: null}")  # fmt: skip
    key = "training.options.petsc_options.tao_view"
    assert code == 2 and err.startswith(f"config error: {key}: ") and "petsc:" in err, err


def test_inverse_trust_region_gets_no_line_search_option(capsys):
    """An inverse run's Armijo default is not given to ntr, which reads no line search
    option (it would now be refused as a misspelling the user never wrote)."""
    code, _, err = cli(capsys, "validate", INVERSE, "--set", "training.method=ntr",
                       "--set", "training.options.hessian=fd")  # fmt: skip
    assert code == 0, err


def test_options_of_absent_solvers_are_a_warning(capsys, mpi_tmp_path):
    code, _, err = _train(capsys, mpi_tmp_path, "{pontryx_diffusion: {ksp_type: cg}}")
    assert code == 0, err
    assert "warning: petsc.pontryx_diffusion.ksp_type" in err and "has no width-diffusion" in err


@pytest.mark.serial
def test_log_view_prints_the_summary(mpi_tmp_path):
    config = write(mpi_tmp_path / "lv.yaml", SMALL + "petsc: {log_view: null}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pontryx.solver", "train", str(config), "--output",
         str(mpi_tmp_path / "lv"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Performance Summary" in proc.stdout + proc.stderr
    assert "PetscFinalize() failed" not in proc.stderr and MPI.COMM_WORLD.size == 1


@pytest.mark.parametrize("method, bad", [("lmvm", "tao_foo"), ("msa", "tao_foo")])
def test_minimize_refuses_petsc_options_nothing_reads(method, bad):
    """The library's ``minimize`` checks ``petsc_options`` as ``pontryx train`` does
    (README: its methods and options are those of the YAML), before any iteration."""
    from tiny import ellipses_problem

    from pontryx.meshes import InputError
    from pontryx.solver import minimize

    rf, theta = ellipses_problem()
    before = theta.copy()
    with pytest.raises(InputError, match="no such option") as e:
        minimize(rf, theta, method, {"petsc_options": {bad: 1}}, max_iterations=2)
    assert e.value.key == f"petsc_options.{bad}"
    assert all((theta[k] == before[k]).all() for k in theta)


@pytest.mark.parametrize(
    "method, option, value, needle",
    [
        ("lmvm", "tao_max_funcs", "abc", "Input string abc has no integer value"),
        ("lmvm", "tao_type", "nosuchtao", "Unable to find requested Tao type nosuchtao"),
        ("msa", "tao_max_funcs", "x", "Input string x has no integer value"),
        ("lmvm", "tao_gatol", float("nan"), "Newly set value nan."),  # was keyed petsc
        ("lmvm", "tao_gatol", float("inf"), "Newly set value inf."),
    ],
)
def test_minimize_refuses_petsc_option_values_in_one_line(method, option, value, needle):
    """A value PETSc refuses is an ``InputError`` keyed by its option (was PETSc's
    own multi-line error), on every rank, before any iteration."""
    from tiny import ellipses_problem

    from pontryx.meshes import InputError
    from pontryx.solver import minimize

    rf, theta = ellipses_problem()
    before = theta.copy()
    with pytest.raises(InputError) as e:
        minimize(rf, theta, method, {"petsc_options": {option: value}}, max_iterations=2)
    assert e.value.key == f"petsc_options.{option}" and needle in str(e.value)
    assert "\n" not in str(e.value)
    assert all((theta[k] == before[k]).all() for k in theta)


@pytest.mark.parametrize(
    "method, option, what",
    [
        ("lmvm", "tao_max_it", "training.max_iterations"),
        ("msa", "tao_gatol", "forcing"),
        ("emsa", "tao_max_it", "inner_iterations"),
    ],
)
def test_options_pontryx_sets_itself_are_refused(method, option, what):
    """An option the method overwrites after setFromOptions (TAO's iteration count,
    the layer solves' tolerances) had been read and silently undone."""
    from tiny import ellipses_problem

    from pontryx.meshes import InputError
    from pontryx.solver import minimize

    rf, theta = ellipses_problem()
    with pytest.raises(InputError, match=f"set by pontryx from .*{what}") as e:
        minimize(rf, theta, method, {"petsc_options": {option: 1}}, max_iterations=2)
    assert e.value.key == f"petsc_options.{option}"


def test_one_option_in_two_spellings_is_refused():
    """``pontryx_tao_tao_gatol`` beside ``pontryx_tao: {tao_gatol: …}`` flatten to one
    option: the later had silently won."""
    from pontryx.meshes import InputError
    from pontryx.solver.config import validate_config

    for petsc in (
        {"pontryx_tao_tao_gatol": 1, "pontryx_tao": {"tao_gatol": 1e-9}},
        {"pontryx_tao": {"tao_gatol": 1e-9}, "pontryx_tao_tao_gatol": 1},
        {"pontryx_tao": {"tao": {"gatol": 1}, "tao_gatol": 2}},
    ):
        with pytest.raises(InputError, match="is given twice") as e:
            validate_config({"data": {"name": "ellipses"}, "petsc": petsc})
        assert e.value.key.startswith("petsc.pontryx_tao") and "\n" not in str(e.value)


def test_a_misspelling_under_lmvm_matrix_prefix_is_an_error(capsys, mpi_tmp_path):
    """PETSc gives lmvm's L-BFGS matrix the fixed prefix tao_lmvm_: a misspelling there
    had been a warning ("no solver of this run reads it") and the run went on."""
    config = write(mpi_tmp_path / "c.yaml", SMALL)
    good = ("--set", "petsc={tao_lmvm_mat_lmvm_hist_size: 3}", "--set", "training.max_iterations=1")
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "a", "--quiet", *good)
    assert code == 0 and "warning" not in err, err
    bad = ("--set", "petsc={tao_lmvm_mat_lmvm_hist_sizo: 3}")
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "b", *bad)
    assert code == 2 and err.startswith("config error: petsc.tao_lmvm_mat_lmvm_hist_sizo: "), err
    assert not (mpi_tmp_path / "b").exists()

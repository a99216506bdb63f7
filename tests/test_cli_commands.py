"""Commands against what their help and README promise: ``pontryx methods`` (every
registered method, a complete one-line summary, the options with their defaults)
and ``pontryx check-gradient --steps K`` (K steps h0 … h0/2^(K−1), K − 1 rates).
In process on every rank, as test_cli.py."""

import json

from mpi4py import MPI

import numpy as np
import pytest
from test_cli import SMALL, cli, small, write  # noqa: F401  (small: the fixture)

from pontryx.solver.adjoint.taylor import FLOOR, first_step, taylor_test
from pontryx.solver.registry import METHODS
from pontryx.solver.training import method_class

# ----------------------------------------------------------------- methods ---


def _options(cls) -> list[str]:
    return [f"    {k} = {json.dumps(v, default=str)}" for k, v in cls.defaults.items()]


def test_methods_lists_every_method_with_a_summary_and_its_defaults(capsys):
    """One line per registered method, in the registry's order: its name and the
    docstring's summary line, a whole sentence; then its options with defaults."""
    code, out, err = cli(capsys, "methods")
    assert code == 0 and not err, err
    lines = out.splitlines()
    assert lines[-1].startswith("Set them under training.options")
    expected = []
    for name in METHODS:
        cls = method_class(name)
        summary = cls.__doc__.strip().splitlines()[0]
        assert summary.endswith(".") and len(summary) > 20, (name, summary)
        assert cls.__doc__.strip().partition("\n")[2][:1] in ("", "\n"), name  # one line
        expected += [f"{name}: {summary}", *_options(cls)]
    assert lines[:-1] == expected
    assert len(METHODS) == 19


def test_methods_name_prints_its_options_with_defaults(capsys):
    cls = method_class("emsa")
    code, out, err = cli(capsys, "methods", "emsa")
    assert code == 0 and not err, err
    lines = out.splitlines()
    assert lines[0] == f"emsa: {cls.__doc__.strip().splitlines()[0]}"
    assert lines[1:-1] == _options(cls) and "rho = 0.01" in out
    code, out, err = cli(capsys, "methods", "emsa", "--json")
    assert code == 0 and not err, err
    table = json.loads(out)
    assert list(table) == ["emsa"] and table["emsa"]["summary"] == lines[0][len("emsa: ") :]
    assert table["emsa"]["options"] == json.loads(json.dumps(cls.defaults, default=str))


def test_methods_with_an_empty_name_is_an_unknown_method(capsys):
    code, out, err = cli(capsys, "methods", "")
    assert code == 2 and err.startswith("config error: methods: unknown method ''"), err
    assert err.count("\n") == 1 and not out


def test_methods_help(capsys):
    code, out, _ = cli(capsys, "methods", "--help")
    assert code == 0 and "usage: pontryx methods [-h] [--json] [NAME]" in out


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_methods_unknown_name_is_one_line_exit_2(capsys, flags):
    code, out, err = cli(capsys, "methods", "nosuch", *flags)
    assert code == 2 and not out
    assert err.startswith("config error: methods: unknown method 'nosuch'; expected one of lmvm")
    assert err.count("\n") == 1


# ---------------------------------------------------------- check-gradient ---


@pytest.mark.parametrize("steps", [2, 5])
def test_check_gradient_steps_are_the_steps_taken(capsys, small, steps):  # noqa: F811
    """--steps K: K rows h0, h0/2, …, h0/2^(K−1) and K − 1 rates."""
    code, out, err = cli(capsys, "check-gradient", small, "--steps", steps, "--h0", "1e-2")
    assert code == 0, out + err
    rates = out.split("observed rates:")[1].splitlines()[0].split(",")
    assert len(rates) == steps - 1
    rows = out.split("|…−h⟨∇J,δ⟩|")[1].split("observed rates:")[0].splitlines()[1:]
    hs = [float(row.split()[0]) for row in rows]
    assert np.allclose(hs, [1e-2 / 2**i for i in range(steps)])


class _Scalar:
    """One control x: enough of Controls for the Taylor tests."""

    def __init__(self, x):
        self.x = float(x)

    def copy(self):
        return _Scalar(self.x)

    def axpy(self, h, other):
        self.x += h * other.x
        return self

    def keys(self):
        return ["x"]

    def subset(self, keys):
        return self

    def dot(self, other):
        return self.x * other.x


class _Quadratic:
    """J(x) = J0 + x + x²: the remainder r¹(h) = h² exactly (rate 2 at any h)."""

    def __init__(self, J0):
        self.J0 = J0

    def __call__(self, c):
        return self.J0 + c.x + c.x**2

    def value_and_gradient(self, c):
        return self(c), _Scalar(1.0 + 2 * c.x)


def test_first_step_checks_round_off_at_the_last_step_taken():
    """J = J0 + x + x²: q(h) = 2h² exactly, so every window is asymptotic and the
    deepest one ends at the last h = 2^{-k} with ½q = h² above the round-off floor
    FLOOR ε |J0| = 0.008 (between 4⁻⁴ and 4⁻³): h = 1/8, so four steps start at 1
    and five would start at 2 > the first step 1 (None)."""
    J0 = 0.008 / (FLOOR * np.finfo(float).eps)
    rf, x, d = _Quadratic(J0), _Scalar(0.0), _Scalar(1.0)
    assert first_step(rf, x, d, steps=4) == 1.0
    assert first_step(rf, x, d, steps=2) == 0.25
    assert first_step(rf, x, d, steps=5) is None
    result = taylor_test(rf, x, d, h0=1.0, steps=4)
    assert result.h == [1.0, 0.5, 0.25, 0.125] and len(result.rates) == 3
    assert min(result.rates) > 1.95 and min(result.r1) > 0.008


class _Kinked(_Quadratic):
    """J0 + x + x² + 50|x − a|³, a = 2⁻¹⁰: a jump of the third derivative at a,
    which the steps above it see; the chosen window lies below it."""

    def __call__(self, c):
        a = 2.0**-10
        return super().__call__(c) + 50.0 * abs(c.x - a) ** 3

    def value_and_gradient(self, c):
        a = 2.0**-10
        J, g = super().value_and_gradient(c)
        return J, _Scalar(g.x + 150.0 * np.sign(c.x - a) * (c.x - a) ** 2)


def test_first_step_is_chosen_from_J_alone_near_round_off():
    """The steps do not depend on the gradient (a wrong one gets the same h0) and
    end near round-off, below a kink in J; there ∇J·(1 + 10⁻³) fails."""
    rf, x, d = _Kinked(1.0), _Scalar(0.0), _Scalar(1.0)
    h0 = first_step(rf, x, d, steps=4)
    assert h0 is not None and h0 / 8 < 2.0**-12
    result = taylor_test(rf, x, d, h0=h0, steps=4)
    assert all(abs(r - 2) < 0.05 for r in result.rates), result.rates

    class Wrong(_Kinked):
        def value_and_gradient(self, c):
            J, g = super().value_and_gradient(c)
            return J, _Scalar(1.001 * g.x)

    assert first_step(Wrong(1.0), x, d, steps=4) == h0
    wrong = taylor_test(Wrong(1.0), x, d, h0=h0, steps=4)
    assert not all(1.95 <= r <= 2.05 for r in wrong.rates), wrong.rates


# ------------------------------------------------------------ image files ---


def test_image_embedding_takes_the_shape_of_an_npz_file(capsys, mpi_tmp_path):
    """``model.embedding.type: image`` on an NPZ whose X is S×h×w needs no
    ``data.input_shape`` (the file gives it); a contradicting one is refused keyed
    data.input_shape, samples that are no images (S×2×2×2) keyed
    model.embedding.type, one line, exit 2."""
    rng = np.random.default_rng(0)
    imgs, cubes, y = rng.random((12, 4, 4)), rng.random((12, 2, 2, 2)), np.arange(12) % 2
    if MPI.COMM_WORLD.rank == 0:
        np.savez(mpi_tmp_path / "imgs.npz", X=imgs, y=y)
        np.savez(mpi_tmp_path / "cubes.npz", X=cubes, y=y)
    text = SMALL.replace(
        "data: {name: ellipses, n_train: 24, n_test: 12}", "data: {name: file, path: imgs.npz}"
    ).replace("model: {", "model: {embedding: {type: image}, ")
    config = write(mpi_tmp_path / "img.yaml", text)
    code, out, err = cli(capsys, "validate", config)
    assert code == 0 and "valid" in out, err
    for sets, want in [
        (["data.input_shape=[2, 8]"], "config error: data.input_shape: [2, 8] contradicts"),
        (["data.path=cubes.npz"], "config error: model.embedding.type: 'image' needs images"),
    ]:
        code, _, err = cli(capsys, "validate", config, *(a for s in sets for a in ("--set", s)))
        assert code == 2 and err.startswith(want) and err.count("\n") == 1, err

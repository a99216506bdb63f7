"""The architecture's contracts: every public subpackage imports first in a fresh
interpreter (binary wheels: libmpi must load before DOLFINx/PETSc), the
configuration imports no solver, each registry is defined once and matches the
classes it names, and no YAML key is written into a message below the
application layer (errors are keyed at the edge)."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pontryx.solver.registry import KERNELS, LUMPINGS, METHODS, SCHEMES, load

pytestmark = pytest.mark.serial  # static and subprocess checks: once is enough

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("mesh", "model", "data", "training", "parallel", "petsc", "output")
PACKAGES = [
    "pontryx.forms",
    "pontryx.meshes",
    "pontryx.solver",
    "pontryx.solver.model",
    "pontryx.solver.adjoint",
    "pontryx.solver.training",
    "pontryx.solver.data",
    "pontryx.solver.config",
    "pontryx.solver.app",
    "pontryx.solver.outputs",
    "pontryx.solver.analysis",
]


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_every_subpackage_imports_first(package):
    """``import <package>`` as the first import of a fresh interpreter, then one of
    its names (names load on first use)."""
    name = {"pontryx.forms": "function_space", "pontryx.meshes": "create_mesh"}.get(package)
    use = f"; getattr(m, {name!r})" if name else ""
    proc = _python(f"import importlib; m = importlib.import_module({package!r}){use}")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_configuration_imports_no_solver():
    proc = _python(
        "import sys, pontryx.solver.config as c; "
        "print(sorted(m for m in sys.modules if m.startswith(('petsc4py', 'dolfinx', "
        "'pontryx.solver.training', 'pontryx.solver.model'))))"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout


def test_registries_name_their_classes():
    from pontryx.forms import ACTIVATIONS, EMBEDDINGS
    from pontryx.solver.config.schema import KernelSection, ModelSection

    for registry in (KERNELS, SCHEMES, METHODS):
        for name in registry:
            assert load(registry, name).name == name
    model = ModelSection.model_fields
    assert set(model["scheme"].annotation.__args__) == set(SCHEMES)
    assert set(model["lumping"].annotation.__args__) == set(LUMPINGS)
    assert set(model["activation"].annotation.__args__) == set(ACTIVATIONS)
    assert set(KernelSection.model_fields["type"].annotation.__args__) == set(KERNELS)
    for scheme in SCHEMES:
        cls = load(SCHEMES, scheme)
        assert cls.order in (1, 2, 4) and isinstance(cls.reversible, bool)
    assert EMBEDDINGS == ("bump", "coordinate", "image")


def test_trainer_declares_its_whole_interface():
    from pontryx.solver.training import Trainer

    for attribute in ("iterate", "state", "restore", "destroy", "record", "defaults", "name"):
        assert hasattr(Trainer, attribute)
    source = (ROOT / "solver" / "training" / "base.py").read_text()
    for attribute in ("converged", "failed", "on_record", "iteration"):
        assert f"self.{attribute}" in source


def _below_the_application_layer():
    for top in ("forms", "meshes", "solver"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(("solver/config/", "solver/app/")):
                yield rel, path


KEYED = re.compile(rf"(?<![\w.])(?:{'|'.join(SECTIONS)})\.(?!npz\b)[a-z_]")


def test_no_yaml_key_in_messages_below_the_application_layer():
    """No string in a ``raise`` statement of forms/, meshes/ or the solver below
    solver/config and solver/app names a YAML key path such as ``model.degree`` (a
    section's name is allowed as the key of the enclosing function's own argument:
    ``WidthSpace(mesh)``)."""
    found = []
    for rel, path in _below_the_application_layer():
        tree = ast.parse(path.read_text(), rel)
        own = {}  # a raise → the arguments of the functions around it
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef):
                names = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
                for node in ast.walk(function):
                    own.setdefault(id(node), set()).update(names)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for const in ast.walk(node.exc):
                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                    value, args = const.value, own.get(id(node), set())
                    if KEYED.search(value) or (value in SECTIONS and value not in args):
                        found.append(f"{rel}:{node.lineno}: {value!r}")
    assert not found, "\n".join(found)


def test_no_message_parsing_or_alias_table():
    """Keys travel on the error (InputError.key); nothing parses message text."""
    for _, path in [*_below_the_application_layer(), ("app", ROOT / "solver" / "app")]:
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for f in files:
            text = f.read_text()
            assert "_KEYED" not in text and "_ALIASES" not in text, f

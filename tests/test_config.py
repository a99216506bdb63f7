"""The YAML schema (solver/config/): defaults, resolution, overrides, PETSc
option flattening, one-line error messages, and the README's schema reference."""

import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from pontryx.meshes import MESH_KINDS, InputError
from pontryx.solver.config import (
    Config,
    apply_override,
    flatten_petsc,
    key_paths,
    load_config,
    read_yaml,
    validate_config,
)
from pontryx.solver.data import DATASET_KEYS

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"data": {"name": "ellipses"}}

pytestmark = pytest.mark.serial  # pure Python, no MPI: once is enough


def test_defaults_and_resolution():
    c = validate_config(MINIMAL, ranks=1)
    r = c.resolved()
    assert r["mesh"] == {"kind": "unit_square", **MESH_KINDS["unit_square"]}
    assert r["data"] == {"name": "ellipses", **DATASET_KEYS["ellipses"]}
    assert r["model"]["kernel"] == {"type": "dense"}
    low = validate_config({**MINIMAL, "model": {"kernel": {"type": "lowrank", "rank": 4}}}, ranks=1)
    assert low.resolved()["model"]["kernel"] == {"type": "lowrank", "rank": 4}
    # ``rank: null`` (written by pontryx 0.1's resolved config.yaml) means "not given"
    assert validate_config({**MINIMAL, "model": {"kernel": {"rank": None}}}, ranks=1)
    assert r["training"]["method"] == "lmvm" and r["output"]["checkpoint_every"] == 10
    # the resolved configuration validates to itself (reproducible from config.yaml)
    again = validate_config(yaml.safe_load(yaml.safe_dump(r)), ranks=1).resolved()
    assert again == r


def test_yaml_exponent_numbers_and_paraview_shorthand():
    c = validate_config(
        {**MINIMAL, "training": {"alpha": "1e-4"}, "output": {"paraview": False}}, ranks=1
    )
    assert c.training.alpha == 1e-4 and c.output.paraview.enabled is False


def _spelled(value):
    """``value`` in YAML 1.1's string spelling of a number (``3e-1``, ``25e-2``: an
    exponent and no dot), lists entry by entry: what PyYAML reads as a string."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_spelled(v) for v in value) + "]"
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    text = f"{'-' if sign else ''}{''.join(map(str, digits))}e{exponent}"
    assert isinstance(yaml.safe_load(text), str), text
    return text


def _floats(value) -> bool:
    if isinstance(value, list | tuple):
        return bool(value) and all(_floats(v) for v in value)
    return isinstance(value, float)


#: a valid configuration for each section's numbers (hjb and inverse exclude data)
_BASES = {
    "hjb": {
        "hjb": {"grid": {"n": 12}},
        "mesh": {"kind": "interval", "n": 1},
        "training": {"alpha": 0.2},
    },
    "inverse": {"inverse": {"truth": 1.0}},
}


def _with(base: dict, path: str, text: str) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(base))
    apply_override(raw, f"{path}={text}")
    return raw


def test_every_number_takes_the_yaml_exponent_spelling(tmp_path):
    """README: numbers such as ``1e-4`` (a string to YAML 1.1) are accepted wherever
    a number is expected: every key of the schema whose default is a number (or a
    list of them), the float keys of every mesh kind (checked by the mesh builders)
    and data set (checked by the data sources), the conv kernel's length, a few
    keys without a numeric default, the method's options, bounds and the augment
    angles. Each resolves to the number itself."""
    from pontryx.solver.config.schema import HJBSection, InverseSection

    paths = key_paths() | key_paths(HJBSection, "hjb.") | key_paths(InverseSection, "inverse.")
    numeric = {p: d for p, (d, _) in paths.items() if _floats(d)}
    numeric |= {"model.init.depth_correlation": 0.5, "inverse.truth": 2.0}
    assert {"model.T", "training.alpha", "hjb.kernel", "inverse.noise"} <= numeric.keys()
    for path, value in numeric.items():
        base = _BASES.get(path.split(".")[0], MINIMAL)
        got = validate_config(_with(base, path, _spelled(value)), ranks=1).resolved()
        for part in path.split("."):
            got = got[part]
        assert got == value, path
    for kind, keys in MESH_KINDS.items():
        for key, default in keys.items():
            if _floats(default):
                raw = _with({**MINIMAL, "mesh": {"kind": kind}}, f"mesh.{key}", _spelled(default))
                assert validate_config(raw, ranks=1).mesh[key] == default, (kind, key)
    data_file = tmp_path / "d.csv"
    data_file.write_text("1,0\n2,1\n")
    for name, keys in DATASET_KEYS.items():
        for key, default in keys.items():
            if _floats(default):
                raw = _with(
                    {"data": {"name": name, "path": str(data_file)}},
                    f"data.{key}",
                    _spelled(default),
                )
                if name != "file":
                    del raw["data"]["path"]
                assert validate_config(raw, ranks=1).data[key] == default, (name, key)
    raw = _with(MINIMAL, "model.kernel", "{type: conv, length: 3e-1}")
    assert validate_config(raw, ranks=1).model.kernel.options["length"] == 0.3
    raw = _with(MINIMAL, "training", "{method: adam, options: {learning_rate: 1e-3}}")
    assert validate_config(raw, ranks=1).training.options["learning_rate"] == 1e-3
    raw = _with(MINIMAL, "training.bounds", "{W: 2e0, b: [-1e0, 1e0]}")
    assert validate_config(raw, ranks=1).training.bounds == {"W": 2.0, "b": [-1.0, 1.0]}
    raw = _with({"data": {"name": "digits"}}, "data.augment", "{rotations: [-1e1, 1e1]}")
    assert validate_config(raw, ranks=1).data["augment"]["rotations"] == [-10.0, 10.0]


def test_largest_legitimate_values_are_accepted():
    """The bounds are the arithmetic's, not a taste: Δt the smallest normal double,
    2³¹ − 1 iterations; keep_checkpoints, test_every, paraview.samples up to the
    largest integer a file holds (2⁶³ − 1: all, never) are left alone."""
    raw = {
        **MINIMAL,
        "model": {"T": 2 * sys.float_info.min, "layers": 2},
        "training": {"max_iterations": 2**31 - 1, "test_every": 2**63 - 1},
        "output": {"checkpoint_every": 2**31 - 1, "keep_checkpoints": 2**63 - 1,
                   "paraview": {"samples": 2**63 - 1}},
    }  # fmt: skip
    c = validate_config(raw, ranks=1)
    assert c.model.T / c.model.layers == sys.float_info.min


def test_parallel_sizes():
    assert validate_config(MINIMAL, ranks=4).parallel.sizes(4) == (4, 1)
    c = validate_config({**MINIMAL, "parallel": {"data": 2}}, ranks=4)
    assert c.parallel.sizes(4) == (2, 2)
    c = validate_config({**MINIMAL, "parallel": {"width": 1}}, ranks=4)
    assert c.parallel.sizes(4) == (1, 4)
    with pytest.raises(InputError, match=r"^parallel.width: 3 does not divide"):
        validate_config({**MINIMAL, "parallel": {"width": 3}}, ranks=4)


def test_overrides_are_yaml_values():
    raw = {"model": {"layers": 4}}
    apply_override(raw, "model.layers=8")
    apply_override(raw, "mesh.n=[4, 2]")
    apply_override(raw, "training.options.petsc_options={tao_ls_type: armijo}")
    apply_override(raw, "model.kernel.rank=")
    assert raw == {
        "model": {"layers": 8, "kernel": {"rank": None}},
        "mesh": {"n": [4, 2]},
        "training": {"options": {"petsc_options": {"tao_ls_type": "armijo"}}},
    }
    with pytest.raises(InputError, match=r"^--set: expected KEY.PATH=VALUE"):
        apply_override(raw, "model.layers")
    with pytest.raises(InputError, match=r"^model.layers: is 8, not a mapping"):
        apply_override(raw, "model.layers.x=1")


def test_overrides_index_lists_as_errors_name_them():
    """``training.levels.0.max_iterations``: the key an error names can be set."""
    raw = {"training": {"levels": [{"max_iterations": 3}, {"mesh": {"n": 2}}]}}
    apply_override(raw, "training.levels.0.max_iterations=7")
    apply_override(raw, "training.levels.1.mesh.n=4")
    apply_override(raw, "training.levels.1.layers=2")
    assert raw["training"]["levels"] == [
        {"max_iterations": 7},
        {"mesh": {"n": 4}, "layers": 2},
    ]
    with pytest.raises(InputError, match=r"^training.levels: has 2 entries, no entry 2"):
        apply_override(raw, "training.levels.2.layers=1")
    with pytest.raises(InputError, match=r"^training.levels: is a list: index it with 0, 1"):
        apply_override(raw, "training.levels.first.layers=1")
    with pytest.raises(InputError, match=r"^training.levels: is not in the file, so it has no ent"):
        apply_override({"training": {}}, "training.levels.0.layers=1")  # not a mapping {0: …}


def test_flatten_petsc():
    tree = {
        "pontryx_tao": {"type": "lmvm", "gatol": 1e-8, "monitor": None},
        "log_view": None,
        "options_left": False,
    }
    assert flatten_petsc(tree) == {
        "pontryx_tao_type": "lmvm",
        "pontryx_tao_gatol": "1e-08",
        "pontryx_tao_monitor": None,
        "log_view": None,
        "options_left": "false",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**MINIMAL, "model": {"T": -1}}, "model.T: expected a number > 0, got -1"),
        ({**MINIMAL, "model": {"layers": 2.5}}, "model.layers: expected an integer, got 2.5"),
        ({**MINIMAL, "modle": {}}, "modle: unknown key; expected one of mesh, model, data"),
        ({**MINIMAL, "training": {"alpha": "abc"}}, "training.alpha: expected a number, got 'abc'"),
        ({**MINIMAL, "petsc": {"a": {"b": [1]}}}, "petsc.a.b: expected a string, number"),
        ({"data": {"name": "elipses"}}, "data.name: unknown data set 'elipses'; expected one of"),
        ({**MINIMAL, "model": {"kernel": {"type": "lowrank"}}}, "model.kernel.rank: required"),
        (
            {**MINIMAL, "output": {"plots": "yes"}},
            "output.plots: expected true or false, got 'yes'",
        ),
        ({**MINIMAL, "model": {"T": float("inf")}}, "model.T: expected a finite number"),
        (
            {**MINIMAL, "model": {"kernel": {"type": "conv", "length": float("inf")}}},
            "model.kernel.length: expected a finite number, got inf",
        ),
        # unions and constrained types: the key is the YAML key path, no pydantic tags
        ({"inverse": {"truth": [1, 2]}}, "inverse.truth: expected a number or a string, got"),
        ({"inverse": {"truth": 1, "pde": {"source": float("nan")}}}, "inverse.pde.source: expe"),
        ({"inverse": {"truth": 1, "pde": {"dirichlet": [5]}}}, "inverse.pde.dirichlet.0: exp"),
        ({"inverse": {"truth": 1, "observations": {"points": 0}}}, "inverse.observations.poin"),
        ({"inverse": {"truth": 1, "nosuch": 0}}, "inverse.nosuch: unknown key; expected one of"),
        ({"hjb": {"grid": {"n": [1, "a"]}}}, "hjb.grid.n.1: expected an integer, got 'a'"),
        ({"hjb": {"grid": {"n": 0}}}, "hjb.grid.n: expected an integer ≥ 1, got 0"),
        ({"hjb": {"grid": {"n": "a"}}}, "hjb.grid.n: expected an integer or a list, got 'a'"),
        ({"hjb": {"kernel": [[1, 2], [3]]}}, "hjb.kernel.1: expected at least 2 entries"),
        ({**MINIMAL, "parallel": {"width": 0}}, "parallel.width: expected an integer ≥ 1, got 0"),
        (
            {**MINIMAL, "parallel": {"exchange": "shm"}},
            "parallel.exchange: expected one of 'shared', 'mpi', got 'shm'",
        ),
        ({**MINIMAL, "model": {"str": 1}}, "model.str: unknown key; expected one of degree"),
        # absurd values that overflowed: Δt subnormal (1/Δt = inf, Δt = 0 with more layers),
        # iteration counts beyond TAO's 32-bit PetscInt (a chunk is one TAO solve)
        (
            {**MINIMAL, "model": {"T": 1e-320, "layers": 2}},
            "model.T: expected T/layers = Δt ≥ 2.23e-308 (a smaller, subnormal Δt",
        ),
        ({**MINIMAL, "model": {"T": 1e-300, "layers": 10**9}}, "model.T: expected T/layers"),
        ({**MINIMAL, "training": {"max_iterations": 10**30}}, "training.max_iterations: expec"),
        ({**MINIMAL, "output": {"checkpoint_every": 2**31}}, "output.checkpoint_every: expect"),
        (
            {**MINIMAL, "training": {"levels": [{"max_iterations": 2**31}]}},
            "training.levels.0.max_iterations: expected at most 2147483647 (TAO counts",
        ),
    ],
)
def test_messages_are_one_line_with_the_key(raw, message):
    with pytest.raises(InputError) as info:
        validate_config(raw, ranks=2)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text
    assert not re.search(r"function-|constrained-|literal\[|list\[", text)


def test_read_yaml_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  T: 1\n   layers: 3\n")
    with pytest.raises(InputError, match=r"YAML syntax error at line 3"):
        read_yaml(bad)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="top level"):
        read_yaml(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(InputError, match="empty"):
        read_yaml(tmp_path / "empty.yaml")


@pytest.mark.parametrize(
    "key",
    ["data.n_train", "data.noise", "model.layers", "mesh.n", "model.noise.seed", "model.T"],
)
def test_integers_beyond_64_bits_are_keyed(tmp_path, key):
    """An integer beyond int64 (no key takes one; Python's big ints overflowed in
    float arithmetic: tracebacks, and a seed of 2^64 crashed writing model.npz after
    training) is refused where it is read, keyed by its key path."""
    for value, shown in ((10**400, "<1329-bit integer>"), (2**64, str(2**64)), (-(2**63) - 1, "")):
        with pytest.raises(InputError, match=rf"^{key}: an integer beyond 64 bits: {shown}"):
            apply_override({}, f"{key}={value}")
    apply_override({}, f"{key}={2**63 - 1}")  # the largest int64 is read


def test_set_is_bounded_as_a_file_is():
    """--set nesting (by its key path or by its value) beyond 32 levels is refused as
    the same nesting in a file is (it was accepted with a warning)."""
    deep = ".".join(["petsc"] + ["a"] * 40)
    with pytest.raises(InputError, match="nested more than 32 levels deep"):
        apply_override({}, f"{deep}=1")
    raw = {"petsc": {}}
    value = "1"
    for _ in range(20):
        value = "{a: " + value + "}"
    with pytest.raises(InputError, match="nested more than 32 levels deep"):
        apply_override(raw, "petsc" + ".a" * 15 + "=" + value)


def test_init_smoothness_is_bounded_by_the_schema():
    """β of model.init ≤ 32 is the schema's check (a run that draws no field, pontryx
    hjb, skipped it)."""
    with pytest.raises(InputError, match=r"^model.init.smoothness: expected an integer 1 ≤ β ≤ 32"):
        validate_config({**MINIMAL, "model": {"init": {"smoothness": 33}}})
    validate_config({**MINIMAL, "model": {"init": {"smoothness": 32}}})


def test_keys_are_shown_on_one_line():
    """A key with a newline or a tab is shown with its escape, on one line."""
    error = InputError("unknown key", "model.lay\ners")
    assert str(error) == "model.lay\\ners: unknown key"
    assert str(InputError("bad", "a\tb\x07")) == "a\\tb\\x07: bad"
    # a message too (a value PETSc relays: an escape sequence reached the terminal)
    assert (
        str(InputError("type \x1b[31mred\nunknown", "petsc")) == "petsc: type \\x1b[31mred unknown"
    )


def test_paths_that_cannot_be_looked_up_are_keyed(tmp_path):
    """A path with a name longer than the file system takes (ENAMETOOLONG) is bad
    input keyed by its key, not an error writing the run directory (exit 5)."""
    long = "x" * 300
    for raw, key in (
        ({"data": {"name": "file", "path": f"{long}.csv"}}, "data.path"),
        ({**MINIMAL, "mesh": {"kind": "file", "path": f"{long}.msh"}}, "mesh.path"),
    ):
        with pytest.raises(InputError, match=rf"^{key}: file '{long}.*' cannot be looked up"):
            validate_config(raw, base_dir=tmp_path)
    with pytest.raises(InputError, match="cannot be looked up"):
        read_yaml(tmp_path / f"{long}.yaml")


def test_integers_python_cannot_read_are_keyed(tmp_path):
    """More digits than int() converts (4300): a one-line error keyed by the key, not
    a ValueError traceback from the YAML parser."""
    digits = "1" * 5000
    message = r"an integer of 5000 digits \(Python reads at most \d+\)$"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: ellipses}}\nmodel:\n  layers: {digits}\n")
    with pytest.raises(InputError, match=r"^model.layers: " + message):
        read_yaml(cfg)
    cfg.write_text(f"mesh: {{n: [3, -{digits}]}}\n")
    with pytest.raises(InputError, match=r"^mesh.n.1: " + message):
        read_yaml(cfg)
    cfg.write_text(digits)
    with pytest.raises(InputError, match=r"^c.yaml: " + message):
        read_yaml(cfg)
    with pytest.raises(InputError, match=r"^model.T: " + message):
        apply_override({}, f"model.T={digits}")
    with pytest.raises(InputError, match=r"^model.init.seed: " + message):
        apply_override({}, f"model={{init: {{seed: {digits}}}}}")


def test_relative_data_path_from_config_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.csv").write_text("a,b,y\n0,1,0\n1,0,1\n0,0,0\n1,1,1\n")
    cfg = tmp_path / "sub" / "c.yaml"
    cfg.write_text("data: {name: file, path: d.csv}\n")
    c = load_config(cfg, ranks=1)
    assert c.data["path"] == str((tmp_path / "sub" / "d.csv").resolve())


def test_load_config_can_require_a_section(tmp_path):
    """``require``: a file without the section, or with it null (also by --set), is
    refused before validation (its other problems unseen), keyed by the section;
    the caller's ``hint`` ends the message."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: ellipses}\nmodel: {layers: 0}\n")
    with pytest.raises(InputError) as e:
        load_config(cfg, ranks=1, require="hjb")
    assert (e.value.key, e.value.message) == ("hjb", "this configuration has no hjb: section")
    with pytest.raises(InputError, match=r"^hjb: this .* no hjb: section \(run it so\)$"):
        load_config(cfg, ["hjb=null"], ranks=1, require="hjb", hint="run it so")
    with pytest.raises(InputError, match=r"^model.layers: "):  # without require: validated
        load_config(cfg, ranks=1)
    hjb = "hjb: {}\nmesh: {kind: interval, n: 1}\ntraining: {alpha: 0.2}\n"
    cfg.write_text(hjb)
    assert load_config(cfg, ranks=1, require="hjb").hjb is not None


def test_examples_validate_against_the_schema():
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(examples) >= 7
    for path in examples:
        load_config(path, ranks=2)
        assert path.read_text().lstrip().startswith("#"), f"{path.name} has no comment header"


def test_readme_documents_every_key():
    """Every key path of the schema appears in README.md's schema reference."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [
        k for k in key_paths() if f"`{k}`" not in readme and k not in ("mesh", "data", "petsc")
    ]
    assert not missing, f"README.md does not document: {missing}"
    for kind in MESH_KINDS:
        assert f"`{kind}`" in readme
    for name in DATASET_KEYS:
        assert re.search(rf"`{name}`", readme)
    for section in Config.model_fields:
        assert f"### `{section}`" in readme


def test_the_schema_bounds_the_matern_exponent_as_the_fields_do():
    from pontryx.solver.config.schema import MAX_SMOOTHNESS
    from pontryx.solver.model import fields

    assert MAX_SMOOTHNESS == fields.MAX_SMOOTHNESS


def test_a_level_of_another_mesh_kind_does_not_take_the_fine_meshs_keys():
    """``{kind: rectangle, n: [2, 2]}`` under a unit_square with ``cell``: the
    level's keys alone (a rectangle's own defaults), not unit_square's merged in."""
    from pontryx.solver.config.schema import level_mesh

    fine = {"kind": "unit_square", "n": 8, "diagonal": "left"}
    assert level_mesh(fine, {"n": 4}) == {"kind": "unit_square", "n": 4, "diagonal": "left"}
    assert level_mesh(fine, {"kind": "rectangle", "n": [2, 2]}) == {
        "kind": "rectangle",
        "n": [2, 2],
    }
    assert level_mesh({"n": 8}, {"kind": "unit_square", "n": 2}) == {"kind": "unit_square", "n": 2}

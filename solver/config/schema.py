"""The YAML parameter file: one pydantic schema for a whole run (DESIGN.md §6).

A configuration has the sections ``mesh`` (the width domain Ω, keys of
:data:`pontryx.meshes.MESH_KINDS`), ``model`` (the continuum network), ``data``
(keys of :data:`pontryx.solver.data.DATASET_KEYS`), ``training``, ``parallel``
(the width × data layout), ``petsc`` (options database) and ``output``.
:func:`load_config` reads a file with ``yaml.safe_load``, applies ``--set``
overrides (values parsed as YAML scalars), validates everything with pydantic
(unknown keys are errors, types are strict) and returns a :class:`Config` whose
:meth:`Config.resolved` mapping has every default filled in. Every problem is a
:class:`~pontryx.meshes.errors.InputError` whose message is one line naming the key path::

    config error: model.T: expected a number > 0, got -1

Values of ``mesh`` and ``data`` are checked by the mesh and data builders
themselves (before any output is written); the schema checks their kind/name,
their keys and that a data or mesh file exists. The names of kernels, schemes,
lumpings and methods come from :mod:`pontryx.solver.registry`, of activations
and embeddings from :mod:`pontryx.forms`, of mesh kinds from
:mod:`pontryx.meshes.kinds`: nothing is listed twice, and importing the schema
imports no solver (DOLFINx and PETSc load when a class is first needed).
"""

from __future__ import annotations

import math
import os
import re
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pontryx.forms.activations import ACTIVATIONS
from pontryx.forms.embedding import EMBEDDINGS
from pontryx.forms.operators import DEGREES
from pontryx.meshes.errors import InputError, file_problem, resolve, show, yaml_float
from pontryx.meshes.kinds import DEFAULT_KIND, MESH_KINDS
from pontryx.solver.data.augment import augmentation
from pontryx.solver.data.dataset import DATASET_KEYS, DIGITS_SHAPE
from pontryx.solver.registry import EXCHANGES, KERNELS, LUMPINGS, METHODS, SCHEMES, load

__all__ = [
    "SECTIONS",
    "Config",
    "first_message",
    "flatten_petsc",
    "key_paths",
    "message",
    "petsc_key_paths",
    "user_loc",
]

SECTIONS = ("mesh", "model", "data", "training", "parallel", "petsc", "output", "inverse", "hjb")


def _field(key: str, message: str) -> InputError:
    """The error of a validator, keyed relative to the validated object."""
    return InputError(message, key or None)


# ----------------------------------------------------------------- types ---

Number = Annotated[float, BeforeValidator(yaml_float), Field(allow_inf_nan=False)]
PositiveNumber = Annotated[Number, Field(gt=0)]
NonNegative = Annotated[Number, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]

#: the most iterations a run (or a chunk of one, output.checkpoint_every) asks of a
#: method: TAO counts them in a PetscInt, 32 bits in PETSc's default build
MAX_ITERATIONS = 2**31 - 1


def _iterations(v: int) -> int:
    if v > MAX_ITERATIONS:
        raise ValueError(
            f"expected at most {MAX_ITERATIONS} (TAO counts iterations in a 32-bit PetscInt), "
            f"got {show(v)}"
        )
    return v


Iterations = Annotated[NonNegativeInt, AfterValidator(_iterations)]


def _degree(choices):
    """A Lagrange degree among ``choices``; ``true`` is not 1 and ``2.0`` not 2 (a
    Literal of ints compares equal to a bool and takes an equal float, where every
    other integer key refuses one)."""

    def check(v):
        if isinstance(v, bool | float):
            raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {show(v)}")
        return v

    return Annotated[Literal[tuple(choices)], BeforeValidator(check)]


def at_level(e: InputError, index: int) -> InputError:
    """An error of coarse level ``index`` keyed under ``training.levels.<index>``: a
    key of the level itself stays as it is; a key of the whole configuration that
    fails on the level's mesh (``model.kernel.rank`` above the level's dofs) is named
    in the message (a key ``training.levels.0.model.kernel.rank`` does not exist)."""
    key = e.key or ""
    if key.startswith("training.levels"):
        return e
    own = {"model.layers": "layers", "training.max_iterations": "max_iterations"}
    if key in own or key == "mesh" or key.startswith("mesh."):  # the level's own keys
        return InputError(e.message, f"training.levels.{index}.{own.get(key, key)}")
    where = f"{key}: " if key else ""
    return InputError(f"{where}{e.message} (on this coarse level)", f"training.levels.{index}")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, frozen=True)


# ----------------------------------------------------------------- model ---


def _option_value(kernel, key, value):
    """An option whose default is a number takes YAML 1.1's ``1e-1`` as one too, and
    a finite one, as the schema's numbers (``length: .inf`` failed in the kernel)."""
    option = kernel.options.get(key)
    if option is None or not isinstance(option.default, float):
        return value
    value = yaml_float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _field(key, f"expected a finite number, got {show(value)}")
    return value


class KernelSection(Section):
    """The kernel 𝒦(t): its ``type`` (:data:`~pontryx.solver.registry.KERNELS`) and
    that kernel's options (declared by the kernel class, e.g. ``rank`` of lowrank)."""

    model_config = ConfigDict(extra="allow", strict=True, validate_default=True, frozen=True)

    type: Literal[tuple(KERNELS)] = Field("dense", description=" | ".join(KERNELS))

    @model_validator(mode="before")
    @classmethod
    def check_options(cls, v):
        kind = v.get("type", "dense") if isinstance(v, Mapping) else None
        if not isinstance(kind, str) or kind not in KERNELS:
            return v  # the type check reports it
        kernel = load(KERNELS, kind)
        options = {k: _option_value(kernel, k, val) for k, val in v.items() if k != "type"}
        return {"type": kind, **kernel.check_options(options)}

    @property
    def options(self) -> dict[str, Any]:
        """The kernel's options (everything but ``type``)."""
        return {k: v for k, v in self.model_dump().items() if k != "type"}


class EmbeddingSection(Section):
    type: Literal[EMBEDDINGS] = Field("bump", description="bump | coordinate | image")
    trainable: bool = Field(False, description="train the embedding E")


class ReadoutSection(Section):
    trainable: bool = Field(True, description="train the readout C, d")


def _bounded_smoothness(section):
    """``section`` if its Matérn exponent β (``smoothness``) is ≤ :data:`MAX_SMOOTHNESS`."""
    if section.smoothness > MAX_SMOOTHNESS:
        raise _field(
            "smoothness",
            f"expected an integer 1 ≤ β ≤ {MAX_SMOOTHNESS}, got {section.smoothness}",
        )
    return section


class InitSection(Section):
    """The random-field law of the initial controls (:class:`pontryx.solver.model.fields.FieldLaw`).
    ``gain`` (the scale of the former white noise on the nodes, whose L² size grew
    with the mesh) is gone: ``variance`` and ``correlation_length`` replace it."""

    seed: NonNegativeInt = Field(0, description="seed of the initial controls")
    variance: NonNegative = Field(3.0, description="pointwise variance of the kernel w")
    correlation_length: PositiveNumber = Field(
        0.3, description="correlation length ρ of the Matérn fields"
    )
    smoothness: PositiveInt = Field(2, description="β of the SPDE (κ² − Δ)^β x = noise")
    bias_variance: NonNegative = Field(0.0, description="pointwise variance of the bias b")
    depth_correlation: NonNegative | None = Field(
        None, description="τ: layers correlated by exp(−|t − t′|/τ); 0: independent; null: one draw"
    )

    @model_validator(mode="after")
    def check_smoothness(self):
        # here, not only where the fields are drawn: a run that draws none (pontryx
        # hjb) refuses it too
        return _bounded_smoothness(self)

    @model_validator(mode="before")
    @classmethod
    def gain_is_gone(cls, v):
        if isinstance(v, Mapping) and "gain" in v:
            raise _field(
                "gain",
                "removed: the initial controls are random fields on Ω; "
                "set variance and correlation_length instead",
            )
        return v

    def law(self):
        """The :class:`~pontryx.solver.model.fields.FieldLaw` of this section."""
        from pontryx.solver.model.fields import FieldLaw

        return FieldLaw(**self.model_dump(exclude={"seed"}))


# ------------------------------------------------------- noise in depth ---

#: the largest SPDE exponent β of a Matérn field (as :mod:`pontryx.solver.model.fields`)
MAX_SMOOTHNESS = 32
#: methods that step the reduced functional (and so see noise in depth); the
#: Pontryagin sweeps and the one-shot solve step the deterministic layers themselves
NOISELESS_METHODS = ("msa", "emsa", "oneshot")
#: methods that redraw the noise paths every iteration with ``resample``
STOCHASTIC_METHODS = ("sgd", "adam", "langevin")


class NoiseSection(Section):
    """``model.noise``: du = (εΔu + σ(𝒦u + b)) dt + g dW, W a Q-Wiener process with
    Matérn covariance (:mod:`pontryx.solver.model.noise`)."""

    amplitude: NonNegative = Field(0.0, description="g, pointwise noise amplitude (0: none)")
    correlation_length: PositiveNumber = Field(0.2, description="ρ of the Matérn covariance")
    smoothness: PositiveInt = Field(1, description="β of the Matérn SPDE (κ² − Δ)^β")
    samples: PositiveInt = Field(1, description="M noise paths per sample")
    seed: NonNegativeInt = Field(0, description="seed of the noise paths")
    resample: bool = Field(False, description="new paths every iteration (sgd, adam, langevin)")

    @model_validator(mode="after")
    def check_smoothness(self):
        # checked with the noise off too (it is refused once on), as model.init's is
        return _bounded_smoothness(self)

    @property
    def enabled(self) -> bool:
        return self.amplitude > 0


class ModelSection(Section):
    degree: _degree(DEGREES) = Field(1, description="Lagrange degree of V_h")
    kernel: KernelSection = Field(default_factory=KernelSection)
    activation: Literal[tuple(ACTIVATIONS)] = Field("tanh", description="σ")
    epsilon: NonNegative = Field(0.0, description="width diffusion ε ≥ 0")
    T: PositiveNumber = Field(1.0, description="depth (final time)")
    layers: PositiveInt = Field(16, description="number of layers N_t (Δt = T/N_t)")
    scheme: Literal[tuple(SCHEMES)] = Field("imex_euler", description="depth scheme")
    embedding: EmbeddingSection = Field(default_factory=EmbeddingSection)
    readout: ReadoutSection = Field(default_factory=ReadoutSection)
    init: InitSection = Field(default_factory=InitSection)
    lumping: Literal[LUMPINGS] = Field("auto", description="mass lumping")
    noise: NoiseSection = Field(default_factory=NoiseSection)

    @model_validator(mode="after")
    def check_consistent(self):
        if (dt := self.T / self.layers) < sys.float_info.min:
            raise _field(
                "T",
                f"expected T/layers = Δt ≥ {sys.float_info.min:.3g} (a smaller, subnormal Δt "
                f"loses precision and 1/Δt overflows), got Δt = {dt:.3g}",
            )
        if load(SCHEMES, self.scheme).needs_zero_epsilon and self.epsilon != 0:
            raise _field(
                "epsilon", f"the {self.scheme} scheme needs epsilon = 0, got {self.epsilon:g}"
            )
        return self


# -------------------------------------------------------------- training ---


def _checkpointing(v):
    if v is None or v in ("sqrt", "reverse"):
        return v
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return v
    raise _field("", f"expected null, 'sqrt', 'reverse' or an integer ≥ 1, got {show(v)}")


def level_mesh(mesh: Mapping, level: Mapping) -> dict:
    """A coarse level's mesh: its keys over ``mesh``'s, or its keys alone when it
    names another ``kind`` (whose keys ``mesh``'s need not be)."""
    kind = mesh.get("kind", DEFAULT_KIND)
    if level.get("kind", kind) != kind:
        return dict(level)
    return {**mesh, **level}


class LevelSection(Section):
    """A coarse level of multilevel training (:mod:`pontryx.solver.training.levels`):
    what differs from the configured problem."""

    mesh: dict[str, Any] = Field({}, description="mesh keys of this level, e.g. {n: 8}")
    layers: PositiveInt | None = Field(None, description="N_t of this level (null: model.layers)")
    max_iterations: Iterations = Field(description="iterations on this level")


class TrainingSection(Section):
    method: str = Field("lmvm", description="training method (see `pontryx train --help`)")
    max_iterations: Iterations = Field(100, description="iterations of the method")
    alpha: NonNegative = Field(1e-4, description="α, L² regularisation of w, b")
    beta: NonNegative = Field(0.0, description="β, H¹-in-depth regularisation of w, b")
    gamma: NonNegative = Field(0.0, description="γ, H¹-in-width regularisation of w, b")
    delta: NonNegative = Field(
        0.0, description="δ, L² regularisation of the trained embedding E and readout C, d"
    )
    checkpointing: Annotated[Any, BeforeValidator(_checkpointing)] = Field(
        None, description="adjoint memory: null (store all) | 'sqrt' | k | 'reverse' (verlet)"
    )
    test_every: NonNegativeInt = Field(
        10, description="test metric every k iterations (0: only at the end)"
    )
    options: dict[str, Any] = Field({}, description="options of the method (a mapping)")
    bounds: dict[str, Any] = Field(
        {}, description="box constraints: control name → c (|θ| ≤ c) or [lower, upper]"
    )
    levels: list[LevelSection] = Field(
        [], description="coarse levels trained first, coarse to fine (nested iteration)"
    )

    @field_validator("bounds", mode="before")
    @classmethod
    def check_bounds(cls, v):
        """Each value a number c > 0 or [lower, upper] (the names are checked against
        the network's controls when it is built)."""
        if not isinstance(v, Mapping):
            return v
        v = {
            k: [yaml_float(x) for x in val] if isinstance(val, list) else yaml_float(val)
            for k, val in v.items()
        }
        from pontryx.solver.model.bounds import Bounds

        Bounds(v, [str(k) for k in v])
        return v

    @field_validator("options", mode="before")
    @classmethod
    def numbers_in_options(cls, v):
        """``1e-4`` (a string to YAML 1.1) is a number in the method's options too."""
        if isinstance(v, Mapping):
            return {k: yaml_float(val) for k, val in v.items()}
        return v

    @field_validator("method")
    @classmethod
    def check_method(cls, v):
        if v not in METHODS:
            raise ValueError(f"unknown method {show(v)}; expected one of {', '.join(METHODS)}")
        return v


# -------------------------------------------------------------- parallel ---


class ParallelSection(Section):
    width: PositiveInt | None = Field(None, description="ranks sharing one mesh (null: auto)")
    data: PositiveInt | None = Field(None, description="sample groups (null: auto)")
    depth: PositiveInt = Field(1, description="layer blocks of the one-shot solve (oneshot only)")
    threads: Literal["samples", "rows"] = Field(
        "samples",
        description="how a rank's BLAS threads share J, ∇J, ∇²J·v: samples (split the "
        "samples where it can run) or rows (one sweep, GEMMs and row blocks on the threads)",
    )
    blas: Literal["numpy", "mkl"] = Field(
        "numpy",
        description="the library of the kernels' GEMMs: numpy (NumPy's BLAS, OpenBLAS in "
        "its wheels) or mkl (Intel MKL, pip install 'pontryx[mkl]')",
    )
    exchange: Literal[EXCHANGES] = Field(
        "shared",
        description="how the width ranks exchange a dense kernel's rows: shared (through "
        "node-shared memory where all width ranks share a node, else MPI collectives) or "
        "mpi (MPI collectives always)",
    )

    @model_validator(mode="after")
    def check_layout(self, info: ValidationInfo):
        P = (info.context or {}).get("ranks")
        if P is None:
            return self
        w, d, k = self.width, self.data, self.depth
        if P % k:
            raise _field("depth", f"{k} does not divide the {P} MPI ranks")
        Q = P // k  # ranks of one depth slice
        axes = "width × data" if k == 1 else "width × data × depth"
        if w is not None and d is not None and w * d != Q:
            sizes = f"{w} × {d}" if k == 1 else f"{w} × {d} × {k}"
            raise _field("", f"{axes} = {sizes} = {w * d * k} ≠ {P} MPI ranks")
        if w is not None and w > Q:
            raise _field("width", f"expected at most {Q} (MPI ranks / depth), got {w}")
        if d is not None and d > Q:
            raise _field("data", f"expected at most {Q} (MPI ranks / depth), got {d}")
        if w is not None and d is None and Q % w:
            raise _field("width", f"{w} does not divide the {Q} ranks of a depth slice")
        if d is not None and w is None and Q % d:
            raise _field("data", f"{d} does not divide the {Q} ranks of a depth slice")
        return self

    def sizes(self, ranks: int) -> tuple[int, int]:
        """(width, data) for ``ranks`` MPI ranks: width × data = ranks / depth (all on
        the width axis by default); ``depth`` is the third factor."""
        Q = ranks // self.depth
        if self.width is None and self.data is None:
            return Q, 1
        if self.width is None:
            return Q // self.data, self.data
        if self.data is None:
            return self.width, Q // self.width
        return self.width, self.data


# ---------------------------------------------------------------- output ---


class ParaViewSection(Section):
    enabled: bool = Field(True, description="write ParaView (VTX/ADIOS2 .bp) files")
    samples: NonNegativeInt = Field(4, description="test samples whose u(t,x) is written")
    kernel_rows: NonNegativeInt = Field(3, description="rows w(t, x_i, ·) of the kernel written")


def _paraview_shorthand(v):
    return {"enabled": v} if isinstance(v, bool) else v


class OutputSection(Section):
    directory: str | None = Field(None, description="run directory (null: runs/<config name>)")
    trajectory_every: NonNegativeInt = Field(
        0, description="record a projection of the controls every k iterations (0: off)"
    )
    checkpoint_every: Annotated[PositiveInt, AfterValidator(_iterations)] = Field(
        10, description="checkpoint every K iterations"
    )
    keep_checkpoints: PositiveInt = Field(2, description="newest checkpoints kept")
    model: bool = Field(True, description="write model.npz")
    plots: bool = Field(True, description="write PNG plots")
    paraview: Annotated[ParaViewSection, BeforeValidator(_paraview_shorthand)] = ParaViewSection()

    @field_validator("directory")
    @classmethod
    def check_directory(cls, v):
        """An empty path is an error, as ``--output ''`` is (null means the default)."""
        if v is not None and not v.strip():
            raise ValueError("expected a directory, got an empty path (null: runs/<config name>)")
        return v


# --------------------------------------------------------- mesh, data, petsc ---


def _two_entries(shape: Any) -> bool:
    """Whether a file's ``input_shape`` may be an image's: not given (the file's
    X gives it) or a list of 2 entries."""
    return shape is None or (isinstance(shape, list) and len(shape) == 2)


def _relative_to(path: Any, base: Path | None) -> Any:
    if not isinstance(path, str) or not path or base is None:
        return path
    p = Path(os.path.expanduser(path))
    if p.is_absolute():
        return str(p)
    try:
        return str((base / p).resolve())
    except (OSError, RuntimeError):  # a symlink loop: the file check below names it
        return os.path.normpath(base / p)


def _described(v: Any, info: ValidationInfo, table, selector, default, what) -> dict:
    """A ``mesh:`` or ``data:`` section completed from its registry; a ``file``
    entry's path taken from the configuration's directory and checked."""
    out = resolve(v, table, selector, default=default, what=what)
    if out[selector] == "file":
        out["path"] = _relative_to(out["path"], (info.context or {}).get("base_dir"))
        if not isinstance(out["path"], str):
            raise _field("path", f"expected a file path, got {show(v['path'])}")
        if (why := file_problem(out["path"])) is not None:
            raise _field("path", f"file {v['path']!r} {why}")
    return out


def _mesh(v: Any, info: ValidationInfo) -> dict:
    return _described(v, info, MESH_KINDS, "kind", DEFAULT_KIND, "mesh kind")


def _data(v: Any, info: ValidationInfo) -> dict:
    out = _described(v, info, DATASET_KEYS, "name", None, "data set")
    if out.get("augment") is not None:  # checked here; a file's shape again once read
        shape = DIGITS_SHAPE if out["name"] == "digits" else out.get("input_shape")
        if not (isinstance(shape, list | tuple) and all(type(d) is int and d > 0 for d in shape)):
            shape = None
        try:
            checked = augmentation(out["augment"], None if shape is None else tuple(shape))
        except InputError as e:
            raise e.under("augment") from None
        if "rotations" in out["augment"]:  # the angles as numbers (1e1 is a string to YAML)
            out["augment"] = {**out["augment"], "rotations": list(checked["rotations"])}
    return out


_OPTION_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def flatten_petsc(tree: Mapping, prefix: str = "") -> dict[str, str | None]:
    """{pontryx_tao: {type: lmvm}} → {"pontryx_tao_type": "lmvm"} (PETSc option names
    without the dash; null is a flag without a value, booleans become true/false)."""
    out: dict[str, str | None] = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not _OPTION_NAME.match(key):
            raise _field(str(key), "expected an option name of letters, digits and _")
        name = f"{prefix}_{key}" if prefix else key
        if isinstance(value, Mapping):
            try:
                flat = flatten_petsc(value, name)
            except InputError as e:
                raise e.under(key) from None
        elif value is None:
            flat = {name: None}
        elif isinstance(value, bool):
            flat = {name: "true" if value else "false"}
        elif isinstance(value, str | int | float):
            flat = {name: str(value)}
        else:
            raise _field(key, f"expected a string, number, boolean or null, got {show(value)}")
        if twice := next((n for n in flat if n in out), None):
            raise _field(key, f"-{twice} is given twice (two spellings of one option)")
        out.update(flat)
    return out


def petsc_key_paths(tree: Mapping, prefix: str = "", path: str = "petsc") -> dict[str, str]:
    """PETSc option name → its YAML key path (``pontryx_tao_tao_gatol`` →
    ``petsc.pontryx_tao.tao_gatol``), for errors about a single option."""
    out = {}
    for key, value in tree.items():
        name, here = (f"{prefix}_{key}" if prefix else key), f"{path}.{key}"
        if isinstance(value, Mapping):
            out.update(petsc_key_paths(value, name, here))
        else:
            out[name] = here
    return out


def _petsc(v: Any) -> dict:
    if not isinstance(v, Mapping):
        raise _field("", f"expected a mapping of PETSc options, got {show(v)}")
    flatten_petsc(v)
    return dict(v)


# --------------------------------------------------------------- inverse ---
#: the methods an inverse run takes (gradient methods on J(θ); the Newton types with
#: ``hessian: fd``); the others need per-sample losses or layer sweeps. Not ``ntl``: when
#: its line search fails at a trial point where κ = exp(m) overflows (J = +∞), PETSc's
#: TaoSolve_NTL falls back to a step with a preconditioner it never created (MatSolve
#: on a null matrix: a segmentation fault, PETSc 3.25)
INVERSE_METHODS = ("lmvm", "blmvm", "bqnls", "bncg", "cg", "tao", "lbfgs", "ntr", "nls")
Coefficient = Annotated[Number | str, BeforeValidator(yaml_float)]


class InversePDESection(Section):
    """``inverse.pde``: −∇·(κ∇u) = f, u = g_D on Γ_D, κ∂_n u = g_N on the rest of ∂Ω."""

    source: Coefficient = Field(1.0, description="f: a number or an expression in x")
    dirichlet: str | list[str] = Field(
        "all", description="Γ_D: 'all' or sides left, right, bottom, top, front, back"
    )
    g_D: Coefficient = Field(0.0, description="Dirichlet value on Γ_D (number or expression)")
    g_N: Coefficient = Field(0.0, description="Neumann flux on ∂Ω \\ Γ_D (number or expression)")


class ObservationsSection(Section):
    """``inverse.observations``: where u is observed."""

    kind: Literal["points", "field"] = Field("points", description="points | field (every dof)")
    points: PositiveInt = Field(100, description="random points in Ω_phys (without file)")
    file: str | None = Field(None, description="CSV/NPZ of points and values (kind points)")
    seed: NonNegativeInt = Field(0, description="seed of the points and of the noise")
    refine: NonNegativeInt = Field(
        1, description="uniform refinements of the mesh the synthetic data are computed on"
    )

    @field_validator("file", mode="before")
    @classmethod
    def check_file(cls, v, info: ValidationInfo):
        if v is None:
            return v
        path = _relative_to(v, (info.context or {}).get("base_dir"))
        if not isinstance(path, str):
            raise ValueError(f"expected a file path, got {show(v)}")
        if Path(path).suffix.lower() not in (".csv", ".npz", ".txt"):
            raise ValueError(f"expected a .csv or .npz file, got {show(v)}")
        if (why := file_problem(path)) is not None:
            raise ValueError(f"file {v!r} {why}")
        return path


class TikhonovSection(Section):
    gamma: NonNegative = Field(0.0, description="γ of (γ/2)∫|∇ log κ|² (0: off)")
    delta: NonNegative = Field(0.0, description="δ of (δ/2)∫(log κ − log κ₀)² (0: off)")


class InverseSection(Section):
    """``inverse:`` recover κ in −∇·(κ∇u) = f from noisy observations of u, with
    log κ = the output of the network of ``model:`` at the coordinates x
    (:mod:`pontryx.solver.inverse`)."""

    domain: dict[str, Any] = Field(
        {"kind": "unit_square", "n": 32}, description="Ω_phys: a mesh description (as mesh:)"
    )
    degree: _degree((1, 2)) = Field(1, description="Lagrange degree of u and log κ")
    pde: InversePDESection = Field(default_factory=InversePDESection)
    truth: Coefficient | None = Field(
        None, description="κ†: synthetic data and the κ error (number or expression in x)"
    )
    observations: ObservationsSection = Field(default_factory=ObservationsSection)
    noise: PositiveNumber = Field(0.01, description="η: noise std σ = η max |u†(x_i)|")
    initial: PositiveNumber = Field(1.0, description="κ₀: log κ starts at log κ₀ (readout d)")
    regularisation: TikhonovSection = Field(default_factory=TikhonovSection)

    @field_validator("domain", mode="before")
    @classmethod
    def check_domain(cls, v, info: ValidationInfo):
        return _mesh(v, info)

    @model_validator(mode="after")
    def check_consistent(self):
        o = self.observations
        if o.file is None and self.truth is None:
            raise _field("truth", "required for synthetic observations (no observations.file)")
        if o.kind == "field" and o.file is not None:
            raise _field("observations.file", "field observations are synthetic; use kind: points")
        return self


# ------------------------------------------------------------------- hjb ---
#: the open-loop methods of an hjb run (TAO's bounded quasi-Newton types)
HJB_METHODS = ("lmvm", "blmvm", "bqnls")
Pair = Annotated[list[Number], Field(min_length=2, max_length=2)]


class HJBGridSection(Section):
    """``hjb.grid``: the rectangle G of states where V(t, u) is computed."""

    lower: Pair = Field([-2.5, -2.5], description="lower corner of G")
    upper: Pair = Field([2.5, 2.5], description="upper corner of G")
    n: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = Field(
        64, description="cells per axis"
    )
    cfl: Annotated[Number, Field(gt=0, le=1)] = Field(0.9, description="fraction of the CFL Δτ")
    controls: Annotated[int, Field(ge=2)] = Field(
        41, description="candidate controls per component (then Newton)"
    )

    @model_validator(mode="after")
    def check_box(self):
        if any(hi <= lo for lo, hi in zip(self.lower, self.upper, strict=True)):
            raise _field("upper", f"expected upper > lower, got {self.upper} and {self.lower}")
        return self


class HJBSection(Section):
    """``hjb:`` the value function of the network reduced to two states (an interval of
    one P1 cell), the kernel fixed, the bias in a box as the control
    (:mod:`pontryx.solver.hjb`; ``pontryx hjb``)."""

    kernel: Annotated[list[Pair], Field(min_length=2, max_length=2)] = Field(
        [[0.0, -2.0], [2.0, 0.0]], description="W (2×2), the same in every layer"
    )
    readout: Pair = Field([1.0, -1.0], description="C: ŷ = Cᵀ M_L u + d")
    offset: Number = Field(0.0, description="d")
    target: Number = Field(0.5, description="y: terminal cost ½(ŷ − y)²")
    bound: PositiveNumber = Field(1.0, description="the control box |b_i| ≤ bound")
    grid: HJBGridSection = Field(default_factory=HJBGridSection)
    initial_states: Annotated[list[Pair], Field(min_length=1, max_length=50)] = Field(
        [[0.5, 0.0], [-0.5, 0.5], [0.0, -0.8]], description="u₀ of the compared trajectories"
    )

    @model_validator(mode="after")
    def check_states(self):
        g = self.grid
        for k, u in enumerate(self.initial_states):
            if not all(lo < x < hi for x, lo, hi in zip(u, g.lower, g.upper, strict=True)):
                raise _field(f"initial_states.{k}", f"{u} is not inside the grid")
        return self


# ---------------------------------------------------------------- config ---


class Config(Section):
    """A whole run. ``mesh``, ``data`` and ``petsc`` are plain mappings (checked
    against MESH_KINDS, DATASET_KEYS and PETSc's option syntax)."""

    mesh: dict[str, Any] = Field({"kind": DEFAULT_KIND}, description="the width domain Ω")
    model: ModelSection = Field(default_factory=ModelSection)
    data: dict[str, Any] | None = Field(None, description="the data set (not with inverse)")
    training: TrainingSection = Field(default_factory=TrainingSection)
    parallel: ParallelSection = Field(default_factory=ParallelSection)
    petsc: dict[str, Any] = Field({}, description="PETSc options (nested mapping)")
    output: OutputSection = Field(default_factory=OutputSection)
    inverse: InverseSection | None = Field(None, description="a PDE inverse problem (no data)")
    hjb: HJBSection | None = Field(None, description="HJB in reduced dimension (pontryx hjb)")

    @field_validator("mesh", mode="before")
    @classmethod
    def check_mesh(cls, v, info: ValidationInfo):
        return _mesh(v, info)

    @field_validator("data", mode="before")
    @classmethod
    def check_data(cls, v, info: ValidationInfo):
        return None if v is None else _data(v, info)

    @field_validator("petsc", mode="before")
    @classmethod
    def check_petsc(cls, v):
        return _petsc(v)

    @model_validator(mode="after")
    def check_consistent(self):
        m, t = self.model, self.training
        if t.checkpointing == "reverse" and not load(SCHEMES, m.scheme).reversible:
            reversible = [name for name in SCHEMES if load(SCHEMES, name).reversible]
            raise _field(
                "training.checkpointing",
                f"'reverse' needs a reversible scheme ({', '.join(reversible)}), not {m.scheme}",
            )
        if self.hjb is not None:
            self._check_hjb()
            return self
        self._check_inverse()
        depth = self.parallel.depth
        if m.layers < depth:  # every depth rank holds a layer (oneshot, msa/emsa jacobi)
            ranks = "1 depth rank" if m.layers == 1 else f"{m.layers} depth ranks"
            raise _field(
                "parallel.depth", f"expected at most {ranks} (one layer each), got {depth}"
            )
        for i, level in enumerate(t.levels):
            try:
                merged = level_mesh(self.mesh, level.mesh)
                resolve(merged, MESH_KINDS, "kind", default=DEFAULT_KIND, what="mesh kind")
            except InputError as e:
                raise e.under(f"training.levels.{i}.mesh") from None
            if (level.layers or m.layers) < depth:  # the depth axis splits every level's layers
                raise _field(
                    f"training.levels.{i}.layers",
                    f"expected at least parallel.depth = {depth} layers (one per depth rank), "
                    f"got {level.layers or m.layers}",
                )
        if m.embedding.type == "image":
            d = self.data
            shape = d.get("input_shape")  # a file's X of S×h×w gives it (checked once read)
            if not (d["name"] == "digits" or (d["name"] == "file" and _two_entries(shape))):
                raise _field(
                    "model.embedding.type",
                    "'image' needs image inputs (digits, or a file of S×h×w images or with a "
                    "2-entry input_shape)",
                )
            if self.mesh["kind"] in ("interval", "unit_interval"):
                raise _field("model.embedding.type", "'image' needs a 2D or 3D mesh")
        self._check_noise()
        return self

    def _check_hjb(self) -> None:
        m, t = self.model, self.training
        if self.inverse is not None:
            raise _field("hjb", "an hjb run and an inverse run exclude each other")
        if self.data is not None:
            raise _field("data", "an hjb run takes no data (its samples are the initial states)")
        kind, n = self.mesh.get("kind"), self.mesh.get("n")
        if kind not in ("interval", "unit_interval") or n != 1:
            raise _field("mesh", "an hjb run reduces the network to 2 dofs: {kind: interval, n: 1}")
        for key, ok, want in (
            ("model.scheme", m.scheme == "imex_euler", "imex_euler"),
            ("model.epsilon", m.epsilon == 0, "0"),
            ("model.kernel.type", m.kernel.type == "dense", "dense"),
            ("model.noise.amplitude", not m.noise.enabled, "0"),
            ("model.degree", m.degree == 1, "1 (two P1 dofs)"),
            ("training.method", t.method in HJB_METHODS, f"one of {', '.join(HJB_METHODS)}"),
            ("training.beta", t.beta == 0, "0 (its running cost is (α/2)‖b‖²_{M_L} alone)"),
            ("training.gamma", t.gamma == 0, "0 (its running cost is (α/2)‖b‖²_{M_L} alone)"),
            ("training.delta", t.delta == 0, "0 (its running cost is (α/2)‖b‖²_{M_L} alone)"),
            ("training.levels", not t.levels, "no levels (one grid, one network)"),
            ("parallel.depth", self.parallel.depth == 1, "1 (its open loop keeps every layer)"),
        ):
            if not ok:
                raise _field(key, f"an hjb run needs {want}")
        if not t.alpha > 0:
            raise _field("training.alpha", "an hjb run needs α > 0 (the running cost)")
        if t.bounds:
            raise _field("training.bounds", "an hjb run's control box is hjb.bound")

    def _check_inverse(self) -> None:
        if self.inverse is None:
            if self.data is None:
                raise _field("data", "required key is missing")
            return
        if self.data is not None:
            raise _field(
                "data",
                "an inverse run takes no data (its samples are the dof coordinates of Ω_phys)",
            )
        if self.training.method not in INVERSE_METHODS:
            raise _field(
                "training.method",
                f"an inverse run takes one of {', '.join(INVERSE_METHODS)}, not "
                f"{self.training.method}",
            )
        if self.model.embedding.type == "image":
            raise _field("model.embedding.type", "an inverse run's inputs are coordinates")
        if self.training.delta:
            raise _field(
                "training.delta",
                "an inverse run regularises the layer controls only (its readout d is log κ₀)",
            )
        if self.model.noise.enabled:
            raise _field("model.noise.amplitude", "an inverse run has no noise in depth")
        if self.training.bounds:
            raise _field("training.bounds", "an inverse run takes no bounds")
        if self.training.levels:
            raise _field("training.levels", "an inverse run has no multilevel training")

    def _check_noise(self) -> None:
        noise, method = self.model.noise, self.training.method
        if noise.enabled and method in NOISELESS_METHODS:
            raise _field(
                "model.noise.amplitude",
                f"noise in depth needs a method on the reduced functional, not {method} "
                f"(its sweeps step the deterministic layers)",
            )
        if noise.enabled and noise.resample and method not in STOCHASTIC_METHODS:
            raise _field(
                "model.noise.resample",
                f"new paths every iteration need {', '.join(STOCHASTIC_METHODS)}, not {method} "
                "(its line searches need one function)",
            )

    def level(self, index: int) -> Config:
        """The configuration of coarse level ``index`` of ``training.levels``: its
        mesh keys merged into ``mesh``, its layers and iterations, no levels."""
        lv = self.training.levels[index]
        r = self.resolved()
        r["mesh"] = level_mesh(r["mesh"], lv.mesh)
        r["model"]["layers"] = lv.layers or self.model.layers
        r["training"]["levels"] = []
        r["training"]["max_iterations"] = lv.max_iterations
        try:
            return Config.model_validate(r)
        except InputError as e:
            raise at_level(e, index) from None
        except ValidationError as e:  # a check across sections (Δt = T/layers subnormal)
            key, text = first_message(e.errors())
            raise at_level(InputError(text, key), index) from None

    @property
    def petsc_options(self) -> dict[str, str | None]:
        return flatten_petsc(self.petsc)

    def resolved(self) -> dict:
        """The configuration with every default filled in (what config.yaml holds)."""
        return self.model_dump(mode="python")


# ------------------------------------------------------------ error text ---


def _plain(ann) -> list:
    """The types an annotation admits, without ``Annotated`` metadata and ``None``
    (``PositiveInt | None`` → [int]; ``Number | str`` → [float, str])."""
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) in (Union, types.UnionType):
        return [t for a in get_args(ann) if a is not type(None) for t in _plain(a)]
    return [ann]


def _child(ann, part: str):
    """The annotation of the key ``part`` below one of annotation ``ann`` (None: unknown)."""
    for t in _plain(ann):
        if isinstance(t, type) and issubclass(t, BaseModel):
            info = t.model_fields.get(part)
            return info.annotation if info is not None else None
        if get_origin(t) is list and part.isdigit():
            return get_args(t)[0]
        if get_origin(t) is dict:
            return get_args(t)[1]
    return None


def user_loc(loc: tuple) -> tuple[tuple[str, ...], int | None]:
    """(the YAML key path of a pydantic error location, the index in ``loc`` of its
    first union member tag or None): the tags pydantic puts into the location of
    an error inside a union (``function-after[…]``, ``str``, ``list[str]``) are no
    keys of the file, so the schema is walked along ``loc`` to leave them out."""
    out, ann, tag = [], Config, None
    for i, part in enumerate(loc):
        members = _plain(ann) if ann is not None else []
        if len(members) > 1 and isinstance(part, str):  # the member of a union
            tag = i if tag is None else tag
            lists = part.startswith("list")
            ann = next((m for m in members if (get_origin(m) is list) == lists), None)
            continue
        out.append(str(part))
        ann = _child(ann, str(part)) if ann is not None else None
    return tuple(out), tag


def _annotation(loc: tuple):
    """The annotation at the key path ``loc`` (None when not a section field)."""
    ann = Config
    for part in loc:
        ann = _child(ann, part)
        if ann is None:
            return None
    return ann


def _section_keys(loc: tuple) -> list[str] | None:
    models = [
        t for t in _plain(_annotation(loc)) if isinstance(t, type) and issubclass(t, BaseModel)
    ]
    return list(models[0].model_fields) if models else None


def _kind(loc) -> str:
    return "an integer" if int in _plain(_annotation(loc)) else "a number"


def _bound(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


#: what a value of the wrong type should have been, by pydantic error type
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def message(err: dict) -> tuple[str, str]:
    """(key path, one-line message) of a pydantic error."""
    loc = user_loc(err["loc"])[0]
    typ, ctx, got = err["type"], err.get("ctx") or {}, show(err.get("input"))
    error = ctx.get("error")
    if isinstance(error, InputError):
        return ".".join([*loc, *([error.key] if error.key else [])]), error.message
    if typ == "extra_forbidden":
        keys = _section_keys(loc[:-1])
        expected = f"; expected one of {', '.join(keys)}" if keys else ""
        return ".".join(loc), f"unknown key{expected}"
    if typ == "missing":
        return ".".join(loc), "required key is missing"
    texts = {
        "greater_than": lambda: f"expected {_kind(loc)} > {_bound(ctx['gt'])}, got {got}",
        "greater_than_equal": lambda: f"expected {_kind(loc)} ≥ {_bound(ctx['ge'])}, got {got}",
        "less_than_equal": lambda: f"expected {_kind(loc)} ≤ {_bound(ctx['le'])}, got {got}",
        "less_than": lambda: f"expected {_kind(loc)} < {_bound(ctx['lt'])}, got {got}",
        "finite_number": lambda: f"expected a finite number, got {got}",
        "too_short": lambda: f"expected at least {ctx['min_length']} entries, got {got}",
        "too_long": lambda: f"expected at most {ctx['max_length']} entries, got {got}",
        "literal_error": lambda: (
            f"expected one of {ctx['expected'].replace(' or ', ', ')}, got {got}"
        ),
    }
    if typ in _EXPECTED:
        return ".".join(loc), f"expected {_EXPECTED[typ]}, got {got}"
    if typ in texts:
        return ".".join(loc), texts[typ]()
    msg = err["msg"].removeprefix("Value error, ")
    return ".".join(loc), msg[:1].lower() + msg[1:]


def first_message(errors: list[dict]) -> tuple[str, str]:
    """(key path, one-line message) of the first problem of a ValidationError's
    ``errors()``. A value that fits no member of a union (``Number | str``,
    ``int | list[int]``) has an error per member: the one that got furthest is
    shown (``n.1: expected an integer`` rather than ``n: expected a list``), or,
    when each member refused the value's type, what every member expects."""
    loc, tag = user_loc(errors[0]["loc"])
    if tag is None:
        return message(errors[0])
    prefix = tuple(errors[0]["loc"][:tag])  # the union's field: its members' errors follow
    group = [e for e in errors if tuple(e["loc"][:tag]) == prefix and len(e["loc"]) > tag]
    deeper = [
        e for e in group if len(user_loc(e["loc"])[0]) > len(loc) or e["type"] not in _EXPECTED
    ]
    if deeper:
        return message(deeper[0])
    expected = list(dict.fromkeys(_EXPECTED[e["type"]] for e in group))
    got = show(errors[0].get("input"))
    return ".".join(loc), f"expected {' or '.join(expected)}, got {got}"


def key_paths(cls: type[BaseModel] = Config, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Every key path of the schema → (default, description), for the reference."""
    out = {}
    for name, info in cls.model_fields.items():
        path = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(key_paths(ann, path + "."))
        else:
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            out[path] = (default, info.description or "")
    return out

"""From a validated configuration to everything a command needs — the edge where
YAML keys are attached to errors.

:func:`build_problem` does everything that can fail on bad input (collective,
nothing written): the width × data layout, the PETSc options, the data set,
the mesh, the network (:mod:`.network`), the reduced functionals — or, for a
configuration with an ``inverse:`` section, the inverse problem of
:mod:`.inverse`; :func:`make_method` the trainer. The builders below raise
:class:`InputError` keyed by their own arguments (``n``, ``rank``,
``lumping``); each call here runs under the YAML section it reads from
(:func:`.network.section`), which puts the key under it (``mesh.n``,
``model.kernel.rank``) — no message text is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mpi4py import MPI

from pontryx.meshes.errors import InputError, show
from pontryx.meshes.factory import mesh_summary
from pontryx.solver.adjoint.reduced import ReducedFunctional
from pontryx.solver.app import petsc_options
from pontryx.solver.app.inverse import build_inverse
from pontryx.solver.app.network import build_network, section, use_blas
from pontryx.solver.config.schema import Config, TrainingSection, at_level, petsc_key_paths
from pontryx.solver.data import Dataset, load_dataset, shard
from pontryx.solver.layout import Layout
from pontryx.solver.model.bounds import Bounds
from pontryx.solver.model.network import ContinuumNetwork
from pontryx.solver.model.noise import PREFIX as NOISE_PREFIX
from pontryx.solver.model.noise import DepthNoise
from pontryx.solver.model.width import WidthSpace
from pontryx.solver.training import make_trainer, method_class

__all__ = ["Problem", "build_problem", "evaluate", "make_method"]


@dataclass
class Problem:
    """Everything a command needs, built from a validated configuration."""

    config: Config
    layout: Layout
    dataset: Dataset
    space: WidthSpace
    net: ContinuumNetwork
    controls: object  # Controls
    rf: ReducedFunctional
    rf_test: ReducedFunctional
    noise: DepthNoise | None = None  # model.noise (the training functional's paths)
    shared_layout: bool = False  # a coarse level: the layout belongs to its problem
    levels: list = field(default_factory=list)  # coarse levels of training.levels (Problems)

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.dataset.task == "classification" else "rmse"

    def describe(self) -> list[str]:
        d, sp, net, m = self.dataset, self.space, self.net, self.config.model
        options = ", ".join(f"{k} {v}" for k, v in m.kernel.options.items())
        kernel = m.kernel.type + (f" ({options})" if options else "")
        lines = [
            f"layout: {self.layout.describe()}",
            f"mesh:   {mesh_summary(sp.mesh)}; P{sp.degree}, N = {sp.N} dofs",
            f"data:   {d.description}",
            f"model:  {kernel} kernel, {m.activation}, {m.scheme}, T = {m.T:g}, "
            f"{m.layers} layers, ε = {m.epsilon:g}; trains {', '.join(net.trainable)}",
            *(
                [
                    "levels: "
                    + " → ".join(
                        f"N = {p.space.N}, {p.net.layers} layers, "
                        f"{p.config.training.max_iterations} iterations"
                        for p in self.levels
                    )
                    + " → this problem"
                ]
                if self.levels
                else []
            ),
        ]
        z = m.noise
        if z.enabled:
            paths = "new every iteration" if z.resample else "fixed"
            lines.append(
                f"noise:  g = {z.amplitude:g}, Matérn ρ = {z.correlation_length:g}, "
                f"β = {z.smoothness}; {z.samples} path(s) per sample ({paths}), seed {z.seed}"
            )
        return lines

    def destroy(self) -> None:
        for level in self.levels:
            level.destroy()
        if self.noise is not None:
            self.noise.destroy()
        self.net.destroy()
        self.space.destroy()
        if not self.shared_layout:  # a coarse level shares its problem's layout and options
            self.layout.destroy()
            petsc_options.remove(self.config.petsc_options)


def build_problem(config: Config, comm: MPI.Comm, *, layout=None, dataset=None) -> Problem:
    """Layout, PETSc options, data, mesh, network, functionals. Collective. On
    failure, what was set up is released (the ``petsc:`` options removed). A
    coarse level of multilevel training shares the ``layout``, PETSc options and
    ``dataset`` of its problem. A configuration with an ``inverse:`` section
    builds an :class:`~.inverse.InverseProblem` instead."""
    if not isinstance(config, Config):
        raise InputError(
            f"expected a validated Config (validate_config), got {show(config)}", "config"
        )
    if not isinstance(comm, MPI.Comm):
        raise InputError(f"expected an MPI communicator, got {show(comm)}", "comm")
    if config.hjb is not None:
        raise InputError("an hjb: configuration is run by pontryx hjb", "hjb")
    if config.inverse is not None:
        return build_inverse(config, comm)
    if layout is not None:
        return _build(config, comm, layout, dataset)
    try:
        return _build(config, comm, None, dataset)
    except BaseException:
        petsc_options.remove(config.petsc_options)
        raise


def _build(config: Config, comm: MPI.Comm, layout, dataset) -> Problem:
    c, m = config, config.model
    shared = layout is not None
    if not shared:
        with section("parallel"):
            use_blas(c.parallel.blas)
            layout = Layout.create(comm, *c.parallel.sizes(comm.size), depth=c.parallel.depth)
        petsc_options.apply(c.petsc_options, petsc_key_paths(c.petsc))
    if dataset is None:
        with section("data"):
            dataset = load_dataset(c.data)
    space, net, controls = build_network(
        c, layout, dataset.n_in, dataset.n_outputs, input_shape=dataset.input_shape
    )
    noise = None
    if m.noise.enabled:
        z = m.noise
        with petsc_options.errors(f"the noise KSP (prefix {NOISE_PREFIX})"), section("model.noise"):
            noise = DepthNoise(
                space,
                z.amplitude,
                correlation_length=z.correlation_length,
                smoothness=z.smoothness,
                samples=z.samples,
                seed=z.seed,
                resample=z.resample,
            )

    def functional(X, y, alpha, beta, gamma=0.0, delta=0.0, noise=None):
        part = shard(len(X), layout.group, layout.n_data)
        return ReducedFunctional(
            net,
            X[part],
            y[part],
            dataset.task,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            delta=delta,
            layout=layout,
            checkpoint=c.training.checkpointing,
            noise=noise,
            threads=c.parallel.threads,
        )

    t = c.training
    with section("training"):
        rf = functional(dataset.X_train, dataset.y_train, t.alpha, t.beta, t.gamma, t.delta, noise)
        rf_test = functional(dataset.X_test, dataset.y_test, 0.0, 0.0)
    problem = Problem(
        c, layout, dataset, space, net, controls, rf, rf_test, noise, shared_layout=shared
    )
    for i in range(len(t.levels)):  # built (and so checked) before anything is written
        try:
            level = build_problem(c.level(i), comm, layout=layout, dataset=dataset)
            problem.levels.append(level)
            _check_same_dimension(level.space.mesh, space.mesh)
        except InputError as e:
            raise at_level(e, i) from None
    return problem


def _check_same_dimension(coarse, fine) -> None:
    """A coarse level's mesh has the fine mesh's cell and coordinate dimensions (its
    controls are interpolated onto the fine mesh: :mod:`.prolongation`)."""
    dims = [(m.topology.dim, m.geometry.dim) for m in (coarse, fine)]
    if dims[0] != dims[1]:
        raise InputError(
            f"expected a mesh of the fine mesh's dimension ({dims[1][0]}D cells in "
            f"{dims[1][1]}D, as its controls are interpolated onto it), got {dims[0][0]}D cells "
            f"in {dims[0][1]}D",
            "mesh",  # under training.levels.i
        )


def train_coarse_levels(problem: Problem, on_level=None, on_record=None) -> list:
    """Multilevel training (``training.levels``, :mod:`pontryx.solver.training.levels`):
    train the coarse levels (``problem.levels``), coarse to fine, with the
    configured method and options, and write the last one's controls, prolonged,
    into ``problem.controls`` (in place), where the configured problem's own
    training then starts. ``on_level(k, result)`` after each level. Returns the
    :class:`~pontryx.solver.training.levels.LevelResult` of every coarse level;
    ``on_record(k, record)`` sees every record of level k. Collective."""
    from pontryx.solver.model.prolongation import prolong_controls
    from pontryx.solver.training.levels import Level, train_levels

    t, coarse = problem.config.training, problem.levels
    levels = [
        Level(p.net, p.rf, p.config.training.max_iterations, p.rf_test, p.controls) for p in coarse
    ]
    results = train_levels(
        levels,
        t.method,
        dict(t.options),
        test_every=t.test_every,
        on_level=on_level,
        on_record=on_record,
    )
    fine = prolong_controls(coarse[-1].net, results[-1].controls, problem.net)
    for name, value in fine.items():
        problem.controls[name][...] = value
    return results


def probed_trainer(method: str, rf, controls, options: dict, bounds):
    """The trainer of ``method`` with ``options`` on ``rf`` and ``controls``, kept in
    ``bounds`` (the ``training.bounds`` mapping, or a :class:`Bounds`), its PETSc
    objects probed; an error is keyed as in the configuration (``training.options.…``,
    ``training.bounds.…``, ``petsc``, or ``parallel.depth``)."""
    try:
        if not isinstance(bounds, Bounds):
            try:
                bounds = Bounds(bounds, rf.net.trainable)
            except InputError as e:
                raise e.under("bounds") from None
        trainer = make_trainer(method, rf, controls, options, bounds)
        given = (options or {}).get("petsc_options") or {}
        given = {f"petsc_options.{k}": v for k, v in given.items()}
        with petsc_options.errors(f"the {method} method's PETSc objects", given):
            trainer.probe()
    except InputError as e:
        if e.key == "petsc" or (e.key or "").startswith("petsc."):
            raise
        if e.key == "depth":  # the layout's depth axis (the one-shot's layer blocks)
            raise e.under("parallel") from None
        head = (e.key or "").split(".")[0]
        raise e.under(
            "training" if head in TrainingSection.model_fields else "training.options"
        ) from None
    return trainer


def make_method(problem: Problem, say=None):
    """The configured trainer on the problem's functional and controls, its PETSc
    objects probed, and the ``petsc:`` options checked (every object of the run
    now exists: :func:`.petsc_options.check_used`; warnings go to ``say``). A
    method names its options by themselves; they live under ``training.options``
    (keys of the training section itself, such as ``method``, under ``training``; the
    depth axis the one-shot splits the layers over under ``parallel``)."""
    c, t = problem.config, problem.config.training
    if problem.layout.n_depth > 1 and not method_class(t.method).depth_parallel:
        raise InputError(
            f"method {t.method!r} keeps every layer on every rank; oneshot, msa and emsa "
            f"(order: jacobi) split the layers over the depth axis "
            f"(got depth = {problem.layout.n_depth})",
            "parallel.depth",
        )
    options = dict(t.options)
    if hasattr(problem, "method_options"):  # an inverse problem's defaults
        options = problem.method_options(t.method, options)
    trainer = probed_trainer(t.method, problem.rf, problem.controls, options, t.bounds)
    quiet = problem.layout.world.rank != 0 or say is False
    petsc_options.check_used(
        c.petsc_options, petsc_key_paths(c.petsc), say=(lambda *a, **k: None) if quiet else print
    )
    if getattr(trainer, "requested_type", None) and not quiet:
        print(f"note: training.bounds: {t.method} runs as {trainer.type} (its bounded variant)")
    return trainer


def evaluate(problem: Problem, controls) -> dict:
    """Loss and metric on the training and test sets at ``controls``. Collective.

    With noise in depth these are of the deterministic network (g = 0: the drift
    alone, the prediction ``pontryx evaluate`` and the test metric report), and
    ``"noise"`` adds the mean over the M noise paths of every sample (the paths of
    the run's seed at epoch 0; for the training set, the objective J_M). An
    inverse problem reports its own (:meth:`~.inverse.InverseProblem.evaluate`)."""
    if problem.config.inverse is not None:
        return problem.evaluate(controls)
    out = {}
    for split, rf in (("train", problem.rf.deterministic()), ("test", problem.rf_test)):
        out[split] = _scores(problem, rf, controls)
    if problem.noise is not None:
        noisy = {}
        for split, rf in (("train", problem.rf), ("test", problem.rf_test)):
            noisy[split] = _scores(problem, rf.with_noise(problem.noise), controls)
        out["noise"] = {"paths": problem.noise.samples, **noisy}
    return out


def _scores(problem: Problem, rf, controls) -> dict:
    J = rf(controls)
    return {
        "loss": float(J),
        "misfit": float(rf.last["misfit"]),
        problem.metric_name: float(rf.metric()),
        "samples": int(rf.S),
    }

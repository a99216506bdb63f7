"""The one training loop: every method, the library and ``pontryx train`` alike.

:func:`train` runs a :class:`~pontryx.solver.training.base.Trainer` for
``max_iterations`` iterations in chunks that end at multiples of ``chunk`` (in
fresh and resumed runs alike, so both take identical steps), and after every
chunk calls ``on_chunk(trainer, reason, finished)`` (where ``pontryx train``
writes its checkpoint). Each iteration's record is handled exactly once, whether
the method yields it or reports it live through ``trainer.on_record`` (TAO
iterates inside PETSc): the loss and gradient must be finite
(:class:`NonFiniteError` otherwise), the test metric is filled in every
``test_every`` iterations, then ``on_record(record)``.

Why training stopped — one spelling everywhere (summary.json, checkpoints,
:class:`TrainResult`): ``"max_iterations"``, ``"converged: <reason>"`` (the
method met its tolerance, e.g. ``converged: CONVERGED_GATOL``), ``"stopped:
<reason>"`` (it cannot go on, e.g. ``stopped: DIVERGED_LS_FAILURE``) or
``"no_progress"`` (a chunk did no iteration).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pontryx.meshes.errors import InputError, integer, show
from pontryx.solver.errors import NonFiniteError
from pontryx.solver.model.bounds import Bounds
from pontryx.solver.model.controls import Controls
from pontryx.solver.petsc import input_errors
from pontryx.solver.training.base import Callback, Record, Trainer
from pontryx.solver.training.common import check_finite

__all__ = ["MAX_ITERATIONS", "NO_PROGRESS", "TrainResult", "minimize", "stop_reason", "train"]

MAX_ITERATIONS = "max_iterations"
NO_PROGRESS = "no_progress"


@dataclass
class TrainResult:
    """The trained controls, one Record per iteration, and why training stopped."""

    controls: Controls
    history: list[Record] = field(default_factory=list)
    reason: str = MAX_ITERATIONS
    trainer: Trainer | None = None

    @property
    def converged(self) -> bool:
        return self.reason.startswith("converged")


def stop_reason(trainer: Trainer, did: int, asked: int) -> str:
    """Why a chunk that asked for ``asked`` iterations and did ``did`` stopped."""
    if trainer.converged:
        return f"converged: {trainer.converged}"
    if trainer.failed:
        return f"stopped: {trainer.failed}"
    if asked > 0 and did == 0:
        return NO_PROGRESS
    return MAX_ITERATIONS


def train(
    trainer: Trainer,
    max_iterations: int,
    *,
    chunk: int | None = None,
    test_rf=None,
    test_every: int = 1,
    on_record: Callback | None = None,
    on_chunk: Callable[[Trainer, str, bool], None] | None = None,
) -> TrainResult:
    """Run ``trainer`` (its controls are updated in place) until ``max_iterations``
    or until it stops by itself; see the module docstring. A non-finite loss or
    gradient raises :class:`NonFiniteError` with the trainer's controls at the
    last finite iterate; the error carries ``history``."""
    integer(max_iterations, "max_iterations", 0)
    integer(test_every, "test_every", 0)
    if chunk is not None:
        integer(chunk, "chunk", 1)
    history: list[Record] = []
    seen: set[int] = set()

    def handle(rec: Record) -> None:
        if rec.iteration in seen:  # reported live and yielded: handle once
            return
        seen.add(rec.iteration)
        check_finite(rec.iteration, rec.loss, rec.grad_norm)
        if test_rf is not None and test_every and rec.iteration % test_every == 0:
            test_rf(trainer.controls)
            rec.test_metric = float(test_rf.metric())
        history.append(rec)
        if on_record is not None:
            on_record(rec)

    trainer.on_record = handle
    result = TrainResult(trainer.controls, history, trainer=trainer)
    try:
        while trainer.iteration < max_iterations:
            k = max_iterations - trainer.iteration
            if chunk is not None:
                k = min(k, chunk - trainer.iteration % chunk)
            count = 0
            for rec in trainer.iterate(k):
                handle(rec)
                count += 1
            result.reason = stop_reason(trainer, count, k)
            finished = result.reason != MAX_ITERATIONS or trainer.iteration >= max_iterations
            if on_chunk is not None:
                on_chunk(trainer, result.reason, finished)
            if finished:
                break
    except NonFiniteError as e:
        e.history = history
        raise
    finally:
        trainer.on_record = None
    if test_rf is not None and history and history[-1].test_metric is None:
        test_rf(trainer.controls)  # the last iterate always gets its test metric
        history[-1].test_metric = float(test_rf.metric())
    return result


#: the keywords of :func:`minimize` that go to :func:`train`
LOOP_KEYWORDS = frozenset({"chunk", "test_rf", "test_every", "on_record", "on_chunk"})


def check_problem(rf, controls) -> None:
    """``rf`` is a reduced functional (a network's ``net`` and ``value_and_gradient``)
    and ``controls`` are :class:`Controls` of its network: InputErrors keyed ``rf`` or
    by the first control of another shape."""
    net = getattr(rf, "net", None)
    if not callable(getattr(rf, "value_and_gradient", None)) or not callable(
        getattr(net, "check_controls", None)
    ):
        raise InputError(f"expected a ReducedFunctional, got {show(rf)}", "rf")
    if not isinstance(controls, Controls):
        raise InputError(f"expected Controls, got {show(controls)}", "controls")
    net.check_controls(controls)


def minimize(
    rf,
    controls: Controls,
    method: str = "lmvm",
    options: dict | None = None,
    *,
    max_iterations: int = 100,
    state: dict | None = None,
    bounds=None,
    **loop,
) -> TrainResult:
    """Minimise ``rf`` over ``controls`` (in place) with ``method`` — the library's
    one call: the trainer of :func:`~pontryx.solver.training.make_trainer` (kept
    in ``bounds``, a :class:`~pontryx.solver.model.bounds.Bounds`, if given),
    its PETSc objects probed first (an option of ``petsc_options`` they do not read,
    or whose value they refuse, is an :class:`~pontryx.meshes.errors.InputError`
    keyed by it, as for ``pontryx train``), restored from ``state`` (a
    :meth:`Trainer.state`) if given, run by :func:`train` (``loop``: its keywords
    ``chunk``, ``test_rf``, ``test_every``, ``on_record``, ``on_chunk``)."""
    from pontryx.solver.training import make_trainer, method_class

    if not isinstance(method, str):
        raise InputError(f"expected a method name, got {show(method)}", "method")
    if options is not None and not isinstance(options, Mapping):
        raise InputError(f"expected a mapping of options, got {show(options)}", "options")
    check_problem(rf, controls)
    method_class(method)  # an unknown method before anything else
    unknown = sorted(set(loop) - LOOP_KEYWORDS)
    if unknown:
        expected = ", ".join(sorted(LOOP_KEYWORDS))
        raise InputError(f"unknown argument (expected one of {expected})", unknown[0])
    for name in ("on_record", "on_chunk"):
        if loop.get(name) is not None and not callable(loop[name]):
            raise InputError(f"expected a function or None, got {show(loop[name])}", name)
    if loop.get("test_rf") is not None:
        try:
            check_problem(loop["test_rf"], controls)
        except InputError as e:
            keyed = e.under("test_rf") if e.key != "rf" else InputError(e.message, "test_rf")
            raise keyed from None
    if bounds is not None and not isinstance(bounds, Bounds):
        raise InputError(f"expected a Bounds or None, got {show(bounds)}", "bounds")
    if state is not None and not isinstance(state, Mapping):
        raise InputError(f"expected a trainer's state or None, got {show(state)}", "state")
    if not math.isfinite(controls.max_abs()):  # every method alike (collective)
        error = NonFiniteError(
            "training: non-finite loss at iteration 0 (the initial controls hold a "
            "non-finite value)"
        )
        error.history = []
        raise error
    trainer = make_trainer(method, rf, controls, options, bounds)
    given = (options or {}).get("petsc_options") or {}
    try:
        with input_errors(  # a bad PETSc option fails here, as in ``pontryx train``
            f"the {method} method's PETSc objects",
            {f"petsc_options.{k}": v for k, v in given.items()},
        ):
            trainer.probe()
        if state is not None:
            try:
                trainer.restore(state)
            except InputError:
                raise
            except (KeyError, TypeError, ValueError, IndexError) as e:
                raise InputError(
                    f"not a state of this {method} trainer on these controls ({type(e).__name__}: "
                    f"{show(str(e))})",
                    "state",
                ) from None
        return train(trainer, max_iterations, **loop)
    finally:
        trainer.destroy()

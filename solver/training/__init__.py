"""Training: every method is a :class:`Trainer`; :func:`train` runs one.

    from pontryx.solver.training import train
    result = train(rf, controls, "lmvm", {"gatol": 1e-6}, max_iterations=200, test_rf=rf_test)
    result.controls, result.history[-1].test_metric, result.converged, result.reason

Methods (:data:`TRAINERS`): PETSc TAO (``lmvm``, ``blmvm``, ``bqnls``, ``bncg``,
``cg``; Newton-type ``ntr``, ``nls``, … with a matrix-free Hessian; ``tao`` for
any of them by the option ``type``), stochastic (``sgd``, ``adam``,
``langevin``), and, where present, the Pontryagin sweeps (``msa``, ``emsa``) and
the one-shot Euler–Lagrange solve (``oneshot``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pontryx.solver.controls import Controls
from pontryx.solver.training.base import Callback, Record, Trainer
from pontryx.solver.training.common import NonFiniteError, check_finite
from pontryx.solver.training.registry import TRAINERS, make_trainer

__all__ = [
    "TRAINERS",
    "NonFiniteError",
    "Record",
    "TrainResult",
    "Trainer",
    "make_trainer",
    "train",
]


@dataclass
class TrainResult:
    """The trained controls, one Record per iteration, and why training stopped."""

    controls: Controls
    history: list[Record] = field(default_factory=list)
    converged: bool = False
    reason: str = "MAX_ITERATIONS"  # TAO's reason name, or MAX_ITERATIONS / NO_PROGRESS
    trainer: Trainer | None = None


def train(
    rf,
    controls: Controls,
    method: str = "lmvm",
    options: dict | None = None,
    *,
    max_iterations: int = 100,
    callback: Callback | None = None,
    test_rf=None,
    eval_every: int = 1,
    chunk: int | None = None,
    on_chunk=None,
    state: dict | None = None,
) -> TrainResult:
    """Train ``controls`` (in place) by ``method`` until ``max_iterations`` or convergence.

    Every ``eval_every`` iterations (and at the last one) the record's
    ``test_metric`` is ``test_rf.metric()`` after ``test_rf(controls)`` (forward
    only), evaluated at the controls after that iteration; then ``callback(record)``.
    Iterations run in chunks of ``chunk`` (default: all at once) aligned to
    multiples of ``chunk``; ``on_chunk(trainer)`` after each (e.g. to checkpoint
    ``trainer.state()``), and ``state`` (from ``trainer.state()``) resumes a run,
    bit-for-bit when the chunks are the same. A non-finite loss or gradient
    raises :class:`NonFiniteError` with the controls at the last finite iterate;
    the error carries ``history`` and ``controls``.
    """
    if int(max_iterations) < 0 or int(eval_every) < 1 or (chunk is not None and int(chunk) < 1):
        raise ValueError("training.max_iterations/eval_every/chunk: expected ≥ 0, ≥ 1, ≥ 1")
    trainer = make_trainer(method, rf, controls, options)
    if state is not None:
        trainer.restore(state)
    history: list[Record] = []
    seen: set[int] = set()

    def observe(rec: Record) -> None:
        if rec.iteration in seen:  # live (on_record) and yielded: handle once
            return
        seen.add(rec.iteration)
        check_finite(rec.iteration, rec.loss, rec.grad_norm)
        if test_rf is not None and rec.iteration % eval_every == 0:
            test_rf(trainer.controls)
            rec.test_metric = float(test_rf.metric())
        history.append(rec)
        if callback is not None:
            callback(rec)

    if hasattr(trainer, "on_record"):
        trainer.on_record = observe  # TAO iterates inside PETSc: observe at each iterate
    result = TrainResult(trainer.controls, history, trainer=trainer)
    try:
        while trainer.iteration < max_iterations:
            k = max_iterations - trainer.iteration
            if chunk is not None:
                k = min(k, chunk - trainer.iteration % chunk)
            count = 0
            for rec in trainer.iterate(k):
                observe(rec)
                count += 1
            if on_chunk is not None:
                on_chunk(trainer)
            converged = getattr(trainer, "converged", None)
            failed = getattr(trainer, "failed", None)
            if converged or failed or count == 0:
                result.converged = bool(converged)
                result.reason = converged or failed or "NO_PROGRESS"
                break
    except NonFiniteError as e:
        e.history, e.controls = history, trainer.controls
        raise
    if test_rf is not None and history and history[-1].test_metric is None:
        test_rf(trainer.controls)
        history[-1].test_metric = float(test_rf.metric())
    return result

"""The training methods by name: ``TRAINERS`` maps ``training.method`` to a
:class:`~pontryx.solver.training.base.Trainer` subclass.

TAO methods (:mod:`.tao`) and the stochastic ones (:mod:`.stochastic`) are always
there; the Pontryagin sweeps (:mod:`.msa`: ``msa``, ``emsa``) and the one-shot
Euler–Lagrange solve (:mod:`.oneshot`: ``oneshot``) register themselves here as
soon as their modules exist.
"""

from __future__ import annotations

from pontryx.solver.training.base import Trainer
from pontryx.solver.training.stochastic import SGD, Adam, Langevin
from pontryx.solver.training.tao import TAO_TRAINERS

__all__ = ["TRAINERS", "make_trainer"]

TRAINERS: dict[str, type[Trainer]] = {
    **TAO_TRAINERS,
    "sgd": SGD,
    "adam": Adam,
    "langevin": Langevin,
}


try:
    from pontryx.solver.training.msa import EMSA, MSA

    TRAINERS.update(msa=MSA, emsa=EMSA)
except ModuleNotFoundError as e:  # not written yet; any other import error is a bug
    if e.name != f"{__package__}.msa":
        raise

try:
    from pontryx.solver.training.oneshot import OneShot

    TRAINERS["oneshot"] = OneShot
except ModuleNotFoundError as e:
    if e.name != f"{__package__}.oneshot":
        raise


def make_trainer(name: str, rf, controls, options: dict | None = None) -> Trainer:
    """The trainer called ``name`` on (rf, controls) with its options."""
    try:
        cls = TRAINERS[name]
    except KeyError:
        raise ValueError(
            f"training.method: unknown method {name!r}; expected one of {sorted(TRAINERS)}"
        ) from None
    return cls(rf, controls, **(options or {}))

"""Multilevel training by nested iteration, in width and depth.

Train a network on a coarse mesh with few layers, prolong its trained controls
to the next level (a finer mesh, more layers:
:func:`pontryx.solver.model.prolongation.prolong_controls`, w(t, x, y)
interpolated in x and y by DOLFINx and linearly in t) and continue
training there; the last level is the problem one wants. This is nested
iteration, the coarse-to-fine half of a multigrid cycle (Cyr, Günther &
Schroder 2019 refine in depth; for the width continuum the same idea refines
the mesh). Coarse levels are cheap (a dense layer costs N²S), and their
solutions are good initial guesses because the discrete problems converge to
one continuum problem as h, Δt → 0 — and the start carries the coarse level's
basin of attraction to the fine level, so every level descends towards the
same local minimiser instead of a fresh one.

Every level runs the one training loop (:func:`pontryx.solver.training.loop.minimize`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pontryx.meshes.errors import InputError, integer, show
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.prolongation import check_prolongable, prolong_controls
from pontryx.solver.training.base import Record
from pontryx.solver.training.loop import TrainResult, check_problem, minimize

__all__ = ["Level", "LevelResult", "train_levels"]


@dataclass
class Level:
    """One level: a network, its training (and optionally test) functional, the
    iterations to spend on it and — for the first level — its initial controls."""

    net: object  # ContinuumNetwork
    rf: object  # ReducedFunctional on net
    max_iterations: int
    rf_test: object | None = None
    controls: Controls | None = None
    name: str = ""


@dataclass
class LevelResult:
    """What one level did: its trained controls and records, and its time."""

    level: Level
    result: TrainResult
    seconds: float
    history: list[Record] = field(default_factory=list)

    @property
    def controls(self) -> Controls:
        return self.result.controls


def train_levels(
    levels: Sequence[Level],
    method: str = "lmvm",
    options: dict | None = None,
    *,
    test_every: int = 1,
    on_record: Callable[[int, Record], None] | None = None,
    on_level: Callable[[int, LevelResult], None] | None = None,
) -> list[LevelResult]:
    """Nested iteration over ``levels`` (coarse to fine): level 0 trains from its
    ``controls``; level k > 0 from level k − 1's trained controls prolonged to its
    network (or from its own ``controls``, into which they are written when given).
    ``on_record(k, record)`` sees every record, ``on_level(k, result)`` every
    finished level. Returns one :class:`LevelResult` per level; the last one's
    controls are the trained network."""
    if isinstance(levels, str | bytes) or not isinstance(levels, Sequence) or not levels:
        raise InputError(f"expected a sequence of at least one Level, got {show(levels)}", "levels")
    for k, level in enumerate(levels):
        if not isinstance(level, Level):
            raise InputError(f"expected a Level, got {show(level)}", f"levels.{k}")
        for name in ("rf", "rf_test"):
            rf = getattr(level, name)
            if rf is None and name == "rf_test":
                continue
            if not callable(getattr(rf, "value_and_gradient", None)):
                raise InputError(
                    f"expected a ReducedFunctional, got {show(rf)}", f"levels.{k}.{name}"
                )
            if getattr(rf, "net", None) is not level.net:
                raise InputError(f"its {name} is not a functional of its net", f"levels.{k}.{name}")
        try:
            integer(level.max_iterations, "max_iterations", 0)
        except InputError as e:
            raise e.under(f"levels.{k}") from None
        try:
            if level.controls is not None:
                check_problem(level.rf, level.controls)
        except InputError as e:
            raise e.under(f"levels.{k}.controls") from None
        try:
            if k > 0:
                check_prolongable(levels[k - 1].net, level.net)
        except InputError as e:
            raise InputError(e.message, f"levels.{k}") from None
    if levels[0].controls is None:
        raise InputError("the first level needs initial controls", "levels")
    for name, f in (("on_record", on_record), ("on_level", on_level)):
        if f is not None and not callable(f):
            raise InputError(f"expected a function or None, got {show(f)}", name)
    out: list[LevelResult] = []
    controls = levels[0].controls
    for k, level in enumerate(levels):
        t0 = time.perf_counter()
        if k > 0:
            prolonged = prolong_controls(levels[k - 1].net, controls, level.net)
            if level.controls is not None:
                for name, value in prolonged.items():
                    level.controls[name][...] = value
                prolonged = level.controls
            controls = prolonged
        result = minimize(
            level.rf,
            controls,
            method,
            options,
            max_iterations=level.max_iterations,
            test_rf=level.rf_test,
            test_every=test_every,
            on_record=None if on_record is None else (lambda rec, k=k: on_record(k, rec)),
        )
        done = LevelResult(level, result, time.perf_counter() - t0, result.history)
        out.append(done)
        if on_level is not None:
            on_level(k, done)
    return out

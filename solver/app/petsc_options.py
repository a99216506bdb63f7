"""The YAML ``petsc:`` section made to take effect, or refused before anything is written.

Each option (flattened with ``_``: ``petsc: {pontryx_tao: {tao_gatol: 1e-9}}`` is
``-pontryx_tao_tao_gatol 1e-9``) goes into PETSc's options database before any
solver exists (:func:`apply`). The application then builds the network and the
method, which create or probe every PETSc object of the run under its prefix
(``pontryx_tao_``, ``pontryx_diffusion_``, …) — a wrong value or an unknown type
(``tao_type: nosuchtao``) fails there, as a one-line error (:func:`errors`). At
last :func:`check_used` looks at every option: one that an object of this run
should have read but did not (a misspelling under a prefix of this run) is an
error naming its key (viewers such as ``tao_view``, read when the object solves,
excepted); one for a solver this run does not create (a
``pontryx_diffusion_`` option with ε = 0) or for no pontryx solver at all is a
one-line warning. PETSc's process-wide options (:data:`GLOBAL`: ``log_view``,
``options_left``, …) are left to PETSc; ``log_view`` starts PETSc's logging
here, so PETSc prints the performance summary when the run ends.
"""

from __future__ import annotations

import sys

from petsc4py import PETSc

from pontryx.meshes.errors import InputError, bounded
from pontryx.solver.petsc import (
    ACTIVE_PREFIXES,
    REPRODUCIBLE,
    input_errors,
    read_when_run,
    reproducible,
    set_by_pontryx,
)

__all__ = ["GLOBAL", "apply", "check_used", "errors", "remove"]

#: PETSc options read at initialisation, at the end of the run or by every object
#: (not by one solver); never reported as unused.
GLOBAL = frozenset(
    {
        "log_view",
        "log_view_memory",
        "log_trace",
        "options_left",
        "options_view",
        "options_monitor",
        "info",
        "malloc_debug",
        "malloc_dump",
        "malloc_view",
        "memory_view",
        "on_error_abort",
        "on_error_attach_debugger",
        "fp_trap",
        "check_pointer_intensity",
        *REPRODUCIBLE,
    }
)

#: The prefixes of pontryx's solvers, and what they are (for the messages).
SOLVERS = {
    "pontryx_tao_": "TAO solver (the TAO methods)",
    "pontryx_snes_": "KSP of the one-shot line search (globalisation: line_search)",
    "pontryx_msa_": "MSA layer solver",
    "tao_lmvm_": "L-BFGS matrix of lmvm (PETSc's fixed prefix tao_lmvm_)",
    "pontryx_diffusion_": "width-diffusion KSP (ε > 0)",
    "pontryx_init_": "random-field KSP (model.init)",
    "pontryx_noise_": "noise-in-depth KSP (model.noise)",
    "pontryx_pde_": "PDE KSP of the inverse problem (inverse.pde)",
}


#: The run's ``petsc:`` options by key path (for the key of an error about one).
_GIVEN: dict[str, object] = {}


def apply(options: dict[str, str | None], key_paths: dict[str, str] | None = None) -> None:
    """Insert the ``petsc:`` options (before any solver is created), after the
    reproducibility defaults, which they may override; ``log_view`` starts logging.
    ``key_paths`` (option name → YAML key path) names them in :func:`errors`."""
    ACTIVE_PREFIXES.clear()  # a new run in this process: only its own objects count
    _GIVEN.clear()
    _GIVEN.update({(key_paths or {}).get(k, f"petsc.{k}"): v for k, v in options.items()})
    db = PETSc.Options()
    for name, value in options.items():
        db.setValue(name, value)
    reproducible()
    if any(name.startswith("log_view") for name in options):
        PETSc.Log.begin()


def remove(options: dict[str, str | None]) -> None:
    """Take the ``petsc:`` options out of the database again at the end of a run
    (the process-wide ones of :data:`GLOBAL` stay for PETSc's finalisation), so a
    later run in the same process starts clean."""
    db = PETSc.Options()
    for name in options:
        if name not in GLOBAL and db.hasName(name):
            db.delValue(name)


def errors(what: str, given: dict[str, object] | None = None):
    """A PETSc error raised while ``what`` is configured (an unknown type, a bad
    value) as a one-line :class:`InputError` without PETSc's traceback, keyed by
    the option whose value it quotes: one of the ``petsc:`` section (given to
    :func:`apply`) or of ``given`` (key path → value), else ``petsc``."""
    return input_errors(what, {**_GIVEN, **(given or {})})


def check_used(options: dict[str, str | None], key_paths: dict[str, str], say=print) -> None:
    """After every object of the run was configured: an option under a prefix of
    this run that nothing read is an error keyed by its YAML path; an option of a
    solver this run does not have, or of none, a one-line warning (``say``)."""
    db = PETSc.Options()
    for name in options:
        set_by_pontryx(name, key_paths.get(name, "petsc"))
    for name in options:
        if name in GLOBAL or db.used(name):
            continue
        key = key_paths.get(name, "petsc")
        prefix = next((p for p in ACTIVE_PREFIXES if name.startswith(p)), None)
        if prefix is not None and read_when_run(name):
            continue  # a viewer of an object of this run: read when it solves
        if prefix is not None:
            raise InputError(
                f"-{name} was not read by the {SOLVERS.get(prefix, prefix)}: no such option, "
                "or not one its type reads (ksp_rtol of the default ksp_type preonly; check "
                f"the spelling and the type; options of the object with prefix {prefix!r} "
                "follow it without the dash, e.g. tao_gatol, ksp_type)",
                key,
            )
        solver = next((what for p, what in SOLVERS.items() if name.startswith(p)), None)
        where = f"this run has no {solver}" if solver else "no solver of this run reads it"
        say(bounded(f"warning: {key}: -{name} is not used ({where})"), file=sys.stderr)

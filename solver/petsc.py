"""PETSc objects owned the way DOLFINx's ``LinearProblem`` owns them.

Every solver pontryx creates (the width-diffusion KSP, TAO, SNES, the layer
solves) gets an options prefix; pontryx's defaults for it are pushed into the
options database under that prefix only for the ``setFromOptions`` call and
removed right after (:func:`configure`), so the command line, ``PETSC_OPTIONS``
and the YAML ``petsc:`` section always win and nothing is left behind; the
objects are freed with :func:`destroy`.

:data:`REPRODUCIBLE` holds the defaults that make runs repeat bit for bit
(library use gets them too, :func:`reproducible`): PETSc's BLAS-GEMV kernels of
VecMDot/VecMAXPY (used by TAO's L-BFGS and Krylov methods) round differently
depending on the memory alignment of the vectors, so a resumed process (another
heap layout) would drift from an uninterrupted run in the last bits; the plain
kernels are alignment-independent.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping

from mpi4py import MPI  # noqa: F401  (libmpi before PETSc, with the binary wheels)

from petsc4py import PETSc

from pontryx.meshes.errors import SHOWN, InputError, bounded
from pontryx.solver.errors import SolveError

__all__ = [
    "ACTIVE_PREFIXES",
    "REPRODUCIBLE",
    "Converged",
    "configure",
    "destroy",
    "ineffective",
    "input_errors",
    "pushed_options",
    "read_when_run",
    "reproducible",
    "unread",
]

#: Options prefixes of the PETSc objects configured so far in this process (the
#: application checks that every user option under one of them was read).
ACTIVE_PREFIXES: set[str] = set()

REPRODUCIBLE = {"vec_mdot_use_gemv": "false", "vec_maxpy_use_gemv": "false"}


@contextlib.contextmanager
def input_errors(
    what: str, given: Mapping[str, object] | None = None, key: str = "petsc"
) -> Iterator[None]:
    """A PETSc error raised inside the block (an unknown type, a bad value while an
    object reads its options) as a one-line :class:`InputError` about ``what``,
    without PETSc's traceback. Keyed by the option whose value the message quotes,
    where exactly one of ``given`` (key path → value) is quoted (``Input string abc
    has no integer value``, ``… requested TAO type nosuchtao``), else by ``key``."""
    PETSc.Sys.pushErrorHandler("python")
    try:
        yield
    except PETSc.Error as e:
        lines = [ln.split("] ", 1)[-1].strip() for ln in str(e).splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith(("error code", "See https"))]
        found = [ln for ln in lines if "type" in ln.lower() or "invalid" in ln.lower()]
        reason = " ".join((found or lines or [f"PETSc error code {e.ierr}"])[-1].split())
        text = " ".join(" ".join(lines).split())
        quoted = []
        for k, v in (given or {}).items():
            shown = _quoted(text, v)
            if shown is not None:
                quoted.append(k)
                if len(shown) > SHOWN:  # a long value (PETSc quotes ≤ 256 characters) in 60
                    reason = reason.replace(shown, shown[: SHOWN - 3] + "...")
        reason = bounded(reason)  # and any other long word PETSc quotes
        raise InputError(f"{what}: {reason}", quoted[0] if len(quoted) == 1 else key) from None
    finally:
        PETSc.Sys.popErrorHandler()


def _quoted(text: str, value: object) -> str | None:
    """The part of PETSc's message ``text`` that quotes ``value``: the value whole
    (its words separated by single spaces, as the message is normalised), or the
    longest start of a long value (PETSc cuts it to its buffer, PETSC_MAX_PATH_LEN
    and the like); None if it is not quoted."""
    if value is None:
        return None
    v = " ".join(str(value).split())
    sep = r"[\s:;,!?()\[\]'\"]"
    end = rf"($|{sep}|\.(\s|$))"  # (a sentence's full stop after it: "value nan.")
    if v and re.search(rf"(^|{sep}){re.escape(v)}{end}", text) is not None:
        return v
    if len(v) <= SHOWN or v[: SHOWN + 1] not in text:
        return None
    lo, hi = SHOWN + 1, len(v)  # the longest start of v in text (a start of one is too)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if v[:mid] in text else (lo, mid - 1)
    return v[:lo]


def read_when_run(name: str) -> bool:
    """Whether an option is a viewer (``tao_view``, ``ksp_view_pre``, …): PETSc reads
    those when the object runs (``PetscObjectViewFromOptions`` at the start or the
    end of a solve), so configuring the object cannot tell whether one is read."""
    return re.search(r"(^|_)view(_[a-z_]+)?$", name) is not None


#: PETSc options that pontryx sets on its objects after they read the options
#: database (an iteration count or tolerance the method decides): given, they would
#: be read and then overwritten, so they are refused, naming what sets them
SET_BY_PONTRYX = {
    "pontryx_tao_tao_max_it": "training.max_iterations (with the checkpoint chunks)",
    "pontryx_msa_tao_max_it": "training.options.inner_iterations",
    "pontryx_msa_tao_gatol": "the layer solves' forcing (training.options.forcing)",
    "pontryx_msa_tao_grtol": "the layer solves' forcing (training.options.forcing)",
    "pontryx_msa_tao_gttol": "the layer solves' forcing (training.options.forcing)",
    "pontryx_snes_ksp_rtol": "the one-shot's forcing (training.options.forcing)",
    "pontryx_snes_ksp_atol": "the one-shot's forcing (training.options.forcing)",
    "pontryx_snes_ksp_max_it": "training.options.krylov_max_it",
}


def set_by_pontryx(name: str, key: str) -> None:
    """An InputError keyed ``key`` if the option ``name`` (full, without the dash) is
    one pontryx sets itself (:data:`SET_BY_PONTRYX`)."""
    if name in SET_BY_PONTRYX:
        raise InputError(
            f"-{name} is set by pontryx from {SET_BY_PONTRYX[name]}; give that instead", key
        )


def ineffective(prefix: str, given, unused) -> list[str]:
    """The names of a method's ``petsc_options`` ``given`` (without ``prefix``) that
    take no effect: not read by ``setFromOptions`` (``unused``, :func:`configure`'s
    list) or viewers, read when the object solves, after they are withdrawn."""
    return [n for n in given if prefix + n in unused or read_when_run(n)]


def unread(prefix: str, name: str, what: str) -> InputError:
    """The error for an option ``name`` of a method's ``petsc_options`` (pushed under
    ``prefix`` for :func:`configure` only) that ``what`` (``TAO``, ``the KSP``) did
    not read, keyed ``petsc_options.<name>``."""
    if read_when_run(name):  # pushed for setFromOptions only: the solve never sees it
        return InputError(
            f"-{prefix}{name} is read when {what} solves, after petsc_options are "
            f"withdrawn; give it in the petsc: section ({prefix[:-1]}: {{{name}: …}})",
            f"petsc_options.{name}",
        )
    return InputError(
        f"{what} did not read -{prefix}{name}: no such option", f"petsc_options.{name}"
    )


def reproducible() -> None:
    """Set :data:`REPRODUCIBLE` in the options database unless already given (idempotent)."""
    db = PETSc.Options()
    for name, value in REPRODUCIBLE.items():
        if not db.hasName(name):
            db.setValue(name, value)
            db.getBool(name)  # mark as used: no "unused option" warning for a default


@contextlib.contextmanager
def pushed_options(defaults: Mapping[str, object]) -> Iterator[None]:
    """Options (full names, no dash; ``None`` a flag) in the database for the
    duration of the block, unless the database has them already (the user's
    value wins); the ones pushed are removed afterwards. (Presence is looked up
    in ``getAll()``: ``hasName`` would mark an option as used.)"""
    db = PETSc.Options()
    present = db.getAll()
    pushed = [name for name in defaults if name not in present]
    for name in pushed:
        value = defaults[name]
        db.setValue(name, value if value is None or isinstance(value, str) else str(value))
    try:
        yield
    finally:
        for name in pushed:
            db.delValue(name)


#: PETSc's fixed options prefix of a TAO ``lmvm``'s L-BFGS matrix (not the TAO's own:
#: ``blmvm``'s and ``bqnls``'s matrices follow the TAO's prefix)
LMVM_PREFIX = "tao_lmvm_"
#: the quasi-Newton TAO types, whose L-BFGS matrix pontryx makes ``lmvmdbfgs``
QUASI_NEWTON = ("lmvm", "blmvm", "bqnls")


def quasi_newton_matrix(prefix: str, tao_type: str) -> dict[str, str]:
    """For a quasi-Newton TAO under ``prefix``, its L-BFGS matrix as ``lmvmdbfgs``
    (full option name → value, for :func:`configure`'s ``extra``; PETSc's default
    ``lmvmbfgs`` is not bit-reproducible in 3.25): ``lmvm``'s matrix under the fixed
    :data:`LMVM_PREFIX`, ``blmvm``'s and ``bqnls``'s under the TAO's own. Empty for
    other types."""
    if tao_type not in QUASI_NEWTON:
        return {}
    key = f"{LMVM_PREFIX}mat_type" if tao_type == "lmvm" else f"{prefix}tao_{tao_type}_mat_type"
    return {key: "lmvmdbfgs"}


def configure(
    obj, prefix: str, defaults: Mapping[str, object] | None = None, extra=None
) -> list[str]:
    """``obj.setOptionsPrefix(prefix)`` and ``obj.setFromOptions()`` with
    ``defaults`` (names relative to ``prefix``) and ``extra`` (full names)
    pushed for the call only. Returns the names of ``defaults`` and ``extra`` the
    object did not read (the check that a user's option is no misspelling). A TAO
    of type ``lmvm`` makes :data:`LMVM_PREFIX` one of the run's prefixes too: its
    L-BFGS matrix reads the options under it."""
    reproducible()
    for k in defaults or {}:
        set_by_pontryx(prefix + k, f"petsc_options.{k}")
    obj.setOptionsPrefix(prefix)
    ACTIVE_PREFIXES.add(prefix)
    options = {prefix + k: v for k, v in (defaults or {}).items()}
    options.update(extra or {})
    db = PETSc.Options()
    with pushed_options(options):
        obj.setFromOptions()
        if isinstance(obj, PETSc.TAO) and obj.getType() == "lmvm":
            ACTIVE_PREFIXES.add(LMVM_PREFIX)
        return [name for name in options if not db.used(name)]


#: KSP converged reasons by value (names of PETSc.KSP.ConvergedReason)
KSP_REASONS = {
    getattr(PETSc.KSP.ConvergedReason, k): k
    for k in sorted(dir(PETSc.KSP.ConvergedReason), reverse=True)
    if k.isupper()
}


class Converged:
    """Whether a KSP's solves converged, every column of a ``KSPMatSolve`` included:
    PETSc solves the columns one by one with iterative methods and keeps the last
    one's reason only, so a post-solve hook records the first failure. Call
    :meth:`check` after each solve (or matSolve)."""

    def __init__(self, ksp: PETSc.KSP, what: str):
        self.ksp, self.what, self.failed = ksp, what, None
        ksp.setPostSolve(self._post)

    def _post(self, ksp, b, x) -> None:
        reason = ksp.getConvergedReason()
        if reason < 0 and self.failed is None:
            self.failed = (reason, ksp.getIterationNumber())

    def check(self) -> None:
        """Raise :class:`SolveError` if a solve since the last check did not converge
        (the KSP's reason is the same on every rank: collective in effect)."""
        failed, self.failed = self.failed, None
        reason = self.ksp.getConvergedReason()
        if failed is None and reason < 0:
            failed = (reason, self.ksp.getIterationNumber())
        if failed is not None:
            code, its = failed
            name = KSP_REASONS.get(code, str(code))
            raise SolveError(
                f"{self.what} (options prefix {self.ksp.getOptionsPrefix()}) did not converge: "
                f"KSP {name} after {its} iterations"
            )


def destroy(*objects) -> None:
    """Destroy PETSc objects (``None`` entries are skipped)."""
    for obj in objects:
        if obj is not None:
            obj.destroy()

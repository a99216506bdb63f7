"""The one error type for bad input, the one value printer, and argument checks.

pontryx's data flow is config → mesh → forms → operators → solver; ``meshes``
is its lowest layer, so the error type every layer raises for bad input lives
here (re-exported as ``pontryx.solver.InputError``).

Keyed at the edge: a function raises :class:`InputError` naming *its own*
argument (``rank``, ``n``, ``path``); the layer that read the value from a YAML
file puts the key under its section with :meth:`InputError.under`
(``n`` → ``mesh.n``). No message text is ever parsed.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["DTYPE_WORDS", "InputError", "file_problem", "show", "show_dtype", "yaml_float"]


def _printable(text: str) -> str:
    """``text`` on one line: each character that does not print (a newline, a tab, a
    control character) as its escape, ``\\n``."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class InputError(ValueError):
    """Bad input: ``key`` names the argument (a dotted path once put under a
    section), ``message`` says what is wrong (both printed on one line, control
    characters escaped: a value relayed from PETSc too). ``str(error)`` is one line,
    ``"key: message"`` (just the message without a key)."""

    def __init__(self, message: str, key: str | None = None):
        self.message = _printable(" ".join(str(message).split()))
        self.key = _printable(key) if key else None
        super().__init__(f"{self.key}: {self.message}" if self.key else self.message)

    def __reduce__(self):  # keep key and message when pickled (MPI broadcast)
        return (type(self), (self.message, self.key))

    def under(self, section: str) -> InputError:
        """The same error with its key put under ``section`` (``n`` → ``mesh.n``)."""
        key = f"{section}.{self.key}" if self.key else section
        return type(self)(self.message, key)


_EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def yaml_float(value: object) -> object:
    """A number for YAML 1.1's string spellings of one: PyYAML reads ``1e-4`` and
    ``1.0e4`` (an exponent without a dot or without its sign) as strings. Any
    other value is returned as it is. Every key that takes a number reads its
    value through this (the schema's numbers, and the registry keys of
    :func:`resolve` whose default is a number)."""
    if isinstance(value, str) and _EXP_FLOAT.match(value.strip()):
        return float(value)
    return value


def file_problem(path) -> str | None:
    """Why ``path`` cannot be read as a file: ``"does not exist"``, ``"is not a
    regular file"`` (a directory, a device), ``"is a symbolic link that leads
    nowhere"`` (dangling, or a loop), ``"cannot be looked up (…)"`` (a name too
    long, no permission), or None."""
    p = Path(path)
    try:
        if p.is_file():
            return None
        if p.exists():
            return "is not a regular file"
        return "is a symbolic link that leads nowhere" if p.is_symlink() else "does not exist"
    except OSError as e:  # a name too long, no permission on a folder above it
        return f"cannot be looked up ({e.strerror or e})"


#: the characters of a user value an error message shows (README)
SHOWN = 60

#: NumPy dtype kinds by the word an error message names them with
DTYPE_WORDS = {"b": "boolean", "i": "integer", "u": "unsigned integer", "f": "floating-point",
               "c": "complex", "U": "string", "S": "bytes", "O": "object", "V": "structured",
               "M": "datetime", "m": "timedelta"}  # fmt: skip


def show_dtype(dtype) -> str:
    """A NumPy dtype in a message: its name (``float64``, ``<U5``, ``int8``), or
    ``structured`` for one with fields or a subarray, whose name lists every field
    (thousands of characters for a file with many)."""
    d = np.dtype(dtype)
    return DTYPE_WORDS["V"] if d.fields or d.subdtype else str(d)


def bounded(message: str, limit: int = SHOWN) -> str:
    """``message`` with every quoted part (in single quotes, or in double quotes as
    Python shows a text with an apostrophe) and every unquoted word longer than
    ``limit`` characters (a path, a name, a number, a value some message showed
    whole) cut to its first and last characters, ``limit`` in all — README's bound
    on what an error shows of a value; a file name keeps its end. Apostrophes inside
    words (``method's``) do not open a quote."""
    head = (limit - 3) // 2
    tail = limit - 3 - head

    def cut(text: str) -> str:
        return f"{text[:head]}...{text[-tail:]}"

    for q in ("'", '"'):
        quoted = re.compile(rf"(?<![\w{q}]){q}([^{q}\n]{{{limit + 1},}}){q}(?![\w])")
        message = quoted.sub(lambda m, q=q: f"{q}{cut(m[1])}{q}", message)
    return re.sub(rf"[^\s'\"]{{{limit + 1},}}", lambda m: cut(m[0]), message)


def show(value: object, limit: int = SHOWN) -> str:
    """A short one-line rendering of a user value (YAML spelling: null, true,
    1e-05), at most ``limit`` characters. Bounded in time and memory too: huge or
    deeply nested values (a YAML alias bomb) are walked only as far as the
    characters shown, never rendered whole."""
    out: list[str] = []
    budget = [limit + 1]

    def emit(text: str) -> bool:
        out.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(v, depth: int) -> bool:
        if v is None:
            return emit("null")
        if isinstance(v, bool | np.bool_):
            return emit("true" if v else "false")
        if isinstance(v, numbers.Integral):
            v = int(v)
            if v.bit_length() > 200:  # str() of a huge int is slow
                return emit(f"{'-' if v < 0 else ''}<{v.bit_length()}-bit integer>")
            return emit(str(v))
        if isinstance(v, numbers.Real):  # a float shown as one: 1.0, not 1
            text = f"{float(v):g}"
            return emit(text if any(c in text for c in ".ein") else text + ".0")
        if isinstance(v, str | bytes):
            return emit(repr(v[: limit + 2]))
        if isinstance(v, Mapping):
            if depth == 0:
                return emit("a mapping")
            if not emit("{"):
                return False
            for i, (k, item) in enumerate(v.items()):
                if (i and not emit(", ")) or not walk(k, depth - 1) or not emit(": "):
                    return False
                if not walk(item, depth - 1):
                    return False
            return emit("}")
        if isinstance(v, Sequence | np.ndarray):
            if depth == 0:
                return emit("[...]")
            if not emit("["):
                return False
            for i, item in enumerate(v):
                if (i and not emit(", ")) or not walk(item, depth - 1):
                    return False
            return emit("]")
        return emit(" ".join(repr(v)[: 4 * limit].split()))

    if isinstance(value, Mapping):
        emit("a mapping")
    else:
        if isinstance(value, list | tuple):
            emit("a list ")
        walk(value, 4)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- argument checks shared by the mesh builders and the solver's constructors -------


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    try:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an int beyond a float
        return False


def _is_list(v: object) -> bool:
    return isinstance(v, Sequence | np.ndarray) and not isinstance(v, str | bytes)


def counts(value: object, dim: int, key: str = "n") -> tuple[int, ...]:
    """Cells per direction: a positive integer (all directions) or ``dim`` of them."""
    if _is_int(value) and value > 0:
        return (int(value),) * dim
    if _is_list(value) and len(value) == dim and all(_is_int(v) and v > 0 for v in value):
        return tuple(int(v) for v in value)
    also = "" if dim == 1 else f" or a list of {dim} positive integers"
    raise InputError(f"expected a positive integer{also}, got {show(value)}", key)


def point(value: object, dim: int, key: str) -> tuple[float, ...]:
    """A point of R^dim: a finite number when ``dim == 1``, else a list of ``dim``."""
    if dim == 1 and _is_real(value):
        return (float(value),)
    if _is_list(value) and len(value) == dim and all(_is_real(v) for v in value):
        return tuple(float(v) for v in value)
    what = "a finite number" if dim == 1 else f"a list of {dim} finite numbers"
    raise InputError(f"expected {what}, got {show(value)}", key)


#: The largest magnitude of a box corner's coordinate: a width is then at most 2e50
#: and the measure of a 3D box at most 8e150, so squared measures (a squared
#: readout integral ∫ C u, the measure of Ω × Ω under a kernel) stay finite in float64.
COORD_MAX = 1e50
#: The smallest width of a box (DOLFINx itself takes a width below 2.2e-16 as zero).
WIDTH_MIN = 1e-12
#: The smallest cell width relative to the magnitude of the coordinates: float64
#: then places every vertex to within about 1e-6 of a cell width (rounding is
#: 1.1e-16 of the magnitude), so no two vertices collapse and no cell degenerates.
CELL_RESOLUTION = 1e-10


def _sci(x: float) -> str:
    return f"{x:g}".replace("e+", "e")


def bounds(
    lower: object, upper: object, dim: int, cells: Sequence[int] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Opposite corners of an axis-aligned box, checked per coordinate: magnitudes at
    most :data:`COORD_MAX`, ``upper > lower``, a width of at least :data:`WIDTH_MIN`,
    and (given the cells per direction) cells at least :data:`CELL_RESOLUTION` of
    the coordinates' magnitude wide. Errors are keyed ``lower`` or ``upper``."""
    lo, up = point(lower, dim, "lower"), point(upper, dim, "upper")
    for key, given, corner in (("lower", lower, lo), ("upper", upper, up)):
        if any(abs(x) > COORD_MAX for x in corner):
            raise InputError(
                f"expected coordinates of magnitude at most {_sci(COORD_MAX)} (so measures of "
                f"the domain and their squares stay finite), got {show(given)}",
                key,
            )
    if not all(u > l for l, u in zip(lo, up)):
        raise InputError(
            f"expected upper > lower in every coordinate, got lower={show(lower)}, "
            f"upper={show(upper)}",
            "upper",
        )
    widths = [u - l for l, u in zip(lo, up)]
    for i, w in enumerate(widths):
        if w < WIDTH_MIN:
            where = "" if dim == 1 else f" in coordinate {i + 1}"
            raise InputError(
                f"expected a width upper − lower of at least {_sci(WIDTH_MIN)} in every "
                f"coordinate, got {w:.3g}{where}",
                "upper",
            )
    for w, n, l, u in zip(widths, cells or (), lo, up):
        scale, cell = max(abs(l), abs(u)), w / float(min(n, 10**300))
        if cell < CELL_RESOLUTION * scale:
            raise InputError(
                f"cells {cell:.3g} wide at coordinates of magnitude {scale:.3g} are not "
                f"resolved in float64: expected cells at least {_sci(CELL_RESOLUTION)} × the "
                f"coordinates' magnitude wide (fewer cells, or a domain nearer the origin)",
                "upper",
            )
    return lo, up


def positive(value: object, key: str) -> float:
    """A finite number > 0."""
    if _is_real(value) and value > 0:
        return float(value)
    raise InputError(f"expected a positive finite number, got {show(value)}", key)


def nonnegative(value: object, key: str) -> float:
    """A finite number ≥ 0."""
    if _is_real(value) and value >= 0:
        return float(value)
    raise InputError(f"expected a finite number ≥ 0, got {show(value)}", key)


def integer(value: object, key: str, minimum: int, most: int | None = None, why: str = "") -> int:
    """An integer (not a bool) from ``minimum`` (up to ``most``); ``why`` follows the
    bound in the message."""
    if _is_int(value) and value >= minimum and (most is None or value <= most):
        return int(value)
    bound = f"≥ {minimum}" if most is None else f"from {minimum} to {most}"
    raise InputError(f"expected an integer {bound}{why}, got {show(value)}", key)


def length(value: object, key: str) -> float:
    """A length of a domain (a radius, a mesh size ``h``): a number from
    :data:`WIDTH_MIN` to :data:`COORD_MAX`, as the box kinds' widths and
    coordinates (areas and their squares stay finite)."""
    v = positive(value, key)
    if not WIDTH_MIN <= v <= COORD_MAX:
        raise InputError(
            f"expected a length from {WIDTH_MIN:g} to {COORD_MAX:g} (areas and their squares "
            f"stay finite), got {show(value)}",
            key,
        )
    return v


def choice(value: object, choices: Sequence[str], key: str) -> str:
    """One of ``choices`` (strings)."""
    if isinstance(value, str) and value in choices:
        return value
    raise InputError(f"expected one of {', '.join(choices)}, got {show(value)}", key)


def resolve(desc: object, table: Mapping, selector: str, *, default=None, what: str) -> dict:
    """A description (a YAML section such as ``mesh:`` or ``data:``) completed from
    a registry: ``desc[selector]`` (or ``default``) picks an entry of ``table``
    whose keys and defaults it accepts; a default of ``...`` (or a registry's
    REQUIRED marker, any object whose repr is ``REQUIRED``) is a required key.
    A key whose default is a real number (or a list of them) takes YAML 1.1's
    string spelling of one (:func:`yaml_float`). Errors are keyed by the
    description's own keys; ``what`` names the entries ("kind", "data set") in
    messages."""
    if not isinstance(desc, Mapping):
        raise InputError(f"expected a mapping with a {selector!r}, got {show(desc)}")
    choice = desc.get(selector, default)
    names = ", ".join(table)
    if choice is None:
        raise InputError(f"required; one of {names}", selector)
    if not isinstance(choice, str) or choice not in table:
        raise InputError(f"unknown {what} {show(choice)}; expected one of {names}", selector)
    accepted = table[choice]
    for key in desc:
        if key != selector and key not in accepted:
            allowed = ", ".join([selector, *accepted])
            raise InputError(
                f"unknown key for {what} {show(choice)} (allowed: {allowed})", str(key)
            )
    out = {selector: choice, **accepted, **{k: v for k, v in desc.items() if k != selector}}
    for key, value in out.items():
        if value is ... or repr(value) == "REQUIRED":
            raise InputError(f"required for {what} {show(choice)}", key)
        if _takes_numbers(accepted.get(key)):
            out[key] = [yaml_float(v) for v in value] if _is_list(value) else yaml_float(value)
    return out


def _takes_numbers(default: object) -> bool:
    """Whether a registry key with this default takes real numbers (a float or a
    list of floats; not integers, which the string spellings are not)."""
    if _is_list(default):
        return any(isinstance(v, float) for v in default)
    return isinstance(default, float)

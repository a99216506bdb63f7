"""Coefficients given as numbers or expressions in the coordinates, as in FEniCS.

A value in the ``inverse:`` section (the source f, boundary data, the true κ) is a
number or a string such as ``"1 + 0.5*sin(2*pi*x[0])*x[1]"``: an arithmetic
expression in the coordinates ``x[0]``, ``x[1]``, ``x[2]`` (or ``x``, ``y``,
``z``) with the constants ``pi`` and ``e``, the operators ``+ - * / **``,
comparisons, and the NumPy functions of :data:`FUNCTIONS`
(``where(x[0] < 0.5, 1, 2)`` is a piecewise constant). It is parsed once into a
Python syntax tree whose nodes are checked against this whitelist — nothing is
evaluated that is not arithmetic on arrays (no attribute access, no names
outside the list, no calls of anything else) — and evaluated with NumPy on
coordinate arrays of shape (gdim, n), the layout DOLFINx's interpolation uses.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

import numpy as np

from pontryx.meshes.errors import InputError, show

__all__ = ["FUNCTIONS", "Expression", "expression", "require_finite"]

#: The functions an expression may call.
FUNCTIONS: dict[str, Callable] = {
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "tanh": np.tanh,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "arctan": np.arctan,
    "atan2": np.arctan2,
    "minimum": np.minimum,
    "maximum": np.maximum,
    "where": np.where,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_COORDS = {"x": 0, "y": 1, "z": 2}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
MAX_LENGTH = 1000


class Expression:
    """A parsed expression: ``expr(x)`` for coordinates ``x`` of shape (gdim, n)
    returns the n values (float64). ``text`` is what was given."""

    def __init__(self, text: str, tree: ast.AST | None, value: float | None, gdim: int):
        self.text, self._tree, self._value, self.gdim = text, tree, value, gdim

    @property
    def constant(self) -> float | None:
        """The value when the expression is a number, else None."""
        return self._value

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        n = x.shape[1]
        if self._value is not None:
            return np.full(n, self._value)
        with np.errstate(all="ignore"):
            out = np.broadcast_to(np.asarray(self._eval(self._tree, x), dtype=float), (n,))
        return np.array(out)

    def _eval(self, node, x):
        if isinstance(node, ast.Expression):
            return self._eval(node.body, x)
        if isinstance(node, ast.Constant):  # NumPy arithmetic: 1/0 and 10**400 are inf
            return np.float64(node.value)
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            return x[_COORDS[node.id]]
        if isinstance(node, ast.Subscript):
            return x[int(node.slice.value)]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, x), self._eval(node.right, x))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, x))
        if isinstance(node, ast.Compare):
            left, out = self._eval(node.left, x), True
            for op, right in zip(node.ops, node.comparators, strict=True):
                value = self._eval(right, x)
                out = np.logical_and(out, _COMPARE[type(op)](left, value))
                left = value
            return out
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(self._eval(a, x) for a in node.args))
        raise AssertionError(node)  # excluded by _check


def _check(node, gdim: int, key: str) -> None:
    """Refuse anything but the whitelisted arithmetic."""
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Load)
    allowed += tuple(_BINARY) + tuple(_UNARY) + tuple(_COMPARE)
    called = {id(s.func) for s in ast.walk(node) if isinstance(s, ast.Call)}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant):
            if isinstance(sub.value, bool) or not isinstance(sub.value, int | float):
                raise InputError(f"expected numbers in the expression, got {show(sub.value)}", key)
        elif isinstance(sub, ast.Name):
            if sub.id in _CONSTANTS or sub.id in ("x",):
                continue
            if sub.id in _COORDS:
                if _COORDS[sub.id] >= gdim:
                    raise InputError(f"{show(sub.id)} is not a coordinate of a {gdim}D domain", key)
                continue
            if sub.id in FUNCTIONS and id(sub) in called:
                continue
            names = ", ".join([*_COORDS, *_CONSTANTS, *FUNCTIONS])
            raise InputError(
                f"unknown name {show(sub.id)} in the expression; expected {names}", key
            )
        elif isinstance(sub, ast.Subscript):
            index = sub.slice
            ok = isinstance(sub.value, ast.Name) and sub.value.id == "x"
            ok = ok and isinstance(index, ast.Constant) and type(index.value) is int
            if not ok:
                raise InputError("only x[0], x[1], x[2] may be indexed", key)
            if not 0 <= index.value < gdim:
                raise InputError(f"x[{index.value}] is not a coordinate of a {gdim}D domain", key)
        elif isinstance(sub, ast.Call):
            if not (isinstance(sub.func, ast.Name) and sub.func.id in FUNCTIONS) or sub.keywords:
                raise InputError(
                    f"only the functions {', '.join(FUNCTIONS)} may be called (positional "
                    "arguments)",
                    key,
                )
        elif not isinstance(sub, allowed):
            raise InputError(f"{type(sub).__name__} is not allowed in an expression", key)


def expression(value, gdim: int, key: str = "value") -> Expression:
    """An :class:`Expression` from a number or a string (see the module docstring);
    one-line :class:`InputError` keyed ``key`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"expected a number or an expression in x, got {show(value)}", key)
    if not isinstance(value, str):
        if not math.isfinite(value):
            raise InputError(f"expected a finite number, got {show(value)}", key)
        return Expression(str(value), None, float(value), gdim)
    text = value.strip()
    if not text or len(text) > MAX_LENGTH:
        raise InputError(f"expected an expression of 1 to {MAX_LENGTH} characters", key)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise InputError(f"syntax error in {show(text)}: {e.msg}", key) from None
    _check(tree, gdim, key)
    expr = Expression(text, tree, None, gdim)
    try:  # a wrong number of arguments shows here, and a literal beyond the float range
        expr(np.full((gdim, 1), 0.5))
    except (TypeError, ValueError, ArithmeticError) as e:
        raise InputError(f"cannot evaluate {show(text)}: {e}", key) from None
    return expr


def require_finite(values: np.ndarray, points: np.ndarray, comm, text: str, key: str) -> None:
    """An :class:`InputError` keyed ``key`` unless the values of the coefficient
    ``text`` at this rank's ``points`` (owned dofs, n × gdim) are finite on every
    rank (a division by zero, an overflow, the logarithm or square root of a
    negative number), naming the first such dof in the order of the coordinates
    (the same on any number of ranks). Collective."""
    bad = np.flatnonzero(~np.isfinite(values))
    count = comm.allreduce(len(bad))
    if not count:
        return
    x = np.round(points[bad], 12) + 0.0  # no −0 or 1e-18 of the mesh's rounding
    local = min(
        ((tuple(map(float, x[k])), float(values[i])) for k, i in enumerate(bad)), default=None
    )
    x, value = min(f for f in comm.allgather(local) if f is not None)
    more = f" and at {count - 1} more dofs" if count > 1 else ""
    raise InputError(
        f"{show(text)} is not finite on Ω_phys: {value:g} at x = "
        f"({', '.join(f'{c:g}' for c in x)}){more}",
        key,
    )

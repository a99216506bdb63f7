"""Reading a parameter file: bounded, strict YAML, ``--set`` overrides, validation.

:func:`read_yaml` reads with a ``yaml.SafeLoader`` that refuses duplicate keys
(``{layers: 2, layers: 3}``: YAML says keys are unique, PyYAML would keep the
last) and bounds what a file may hold: at most :data:`MAX_BYTES` bytes, nesting
at most :data:`MAX_DEPTH` deep, at most :data:`MAX_NODES` values once aliases
are expanded (a "billion laughs" alias bomb is refused, not walked), integers
within 64 bits (:data:`MAX_INT`); ``--set`` overrides are bounded alike. Every
problem is an :class:`~pontryx.meshes.errors.InputError` with a one-line message
naming the key path or the file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from numbers import Integral
from pathlib import Path

import yaml
from pydantic import ValidationError

from pontryx.meshes.errors import InputError, file_problem, show
from pontryx.solver.config.schema import SECTIONS, Config, first_message

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_NODES",
    "apply_override",
    "load_config",
    "parse_yaml",
    "read_yaml",
    "validate_config",
]

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 32
MAX_NODES = 100_000
#: the largest integer a parameter file may hold (int64: seeds and counts are
#: stored as int64, and Python's ints beyond a float overflow in arithmetic)
MAX_INT = 2**63 - 1


class _TooDeep(Exception):
    """A node nested deeper than :data:`MAX_DEPTH`."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys, and nesting deeper than
    :data:`MAX_DEPTH` as soon as it is met: by the scanner for flow collections
    (``[[[…``: PyYAML's scanner reads a flow collection to its end before the first
    node is composed, at O(d) per token at depth d; 1 000 nested ``[`` took seconds),
    by the composer for the rest."""

    _depth = 0

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level > MAX_DEPTH:  # the new collection's depth ≥ flow_level + 1
            raise _TooDeep
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent, index):
        if self._depth > MAX_DEPTH:
            raise _TooDeep
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if duplicate:
                    mark = key_node.start_mark
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {show(key)}", mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        try:
            value = super().construct_yaml_int(node)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            limit = sys.get_int_max_str_digits()
            digits = len(node.value.lstrip("+-").replace("_", ""))
            message = f"an integer of {digits} digits (Python reads at most {limit})"
            raise _HugeInteger(node, message) from None
        if abs(value) > MAX_INT:  # no key takes one; seeds and counts are stored as int64
            raise _HugeInteger(node, f"an integer beyond 64 bits: {show(value)} (at most 2^63 − 1)")
        return value


class _HugeInteger(yaml.constructor.ConstructorError):
    """An integer no key can take (``message`` says why); ``node`` is where."""

    def __init__(self, node, message: str):
        super().__init__(None, None, message, node.start_mark)
        self.node, self.message = node, message


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _node_path(root, target) -> list[str] | None:
    """The key path from the node ``root`` to the node ``target`` (None if absent)."""
    stack = [(root, [])]
    seen = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:  # aliases share nodes
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                stack.extend([(key, path), (value, [*path, str(name)])])
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, [*path, str(i)]) for i, item in enumerate(node.value))
    return None


def _check_size(value, where: str) -> None:
    """Refuse values nested deeper than MAX_DEPTH or with more than MAX_NODES
    nodes, counting shared (aliased) nodes once per use, stopping at the limit."""
    count = 0
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise InputError(f"{where}: more than {MAX_NODES} values (after expanding aliases)")
        if depth > MAX_DEPTH:
            raise InputError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(v, dict):
            stack.extend((item, depth + 1) for pair in v.items() for item in pair)
        elif isinstance(v, list):
            stack.extend((item, depth + 1) for item in v)


def parse_yaml(text: str, where: str, key: str | None = None):
    """The value of a YAML text (safe, strict, bounded); ``where`` names it in
    errors. An integer Python cannot hold (more than
    ``sys.get_int_max_str_digits()`` digits) or beyond 64 bits (:data:`MAX_INT`)
    is an error keyed by its key path
    below ``key`` (the key of the text's root; ``where`` when there is none)."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise InputError(f"{where}: larger than {MAX_BYTES // 1024} KiB")
    loader, root = None, None
    try:
        loader = _StrictLoader(text)  # (its reader refuses control characters at once)
        root = loader.get_single_node()
        value = loader.construct_document(root) if root is not None else None
    except _HugeInteger as e:
        path = [*([key] if key else []), *(_node_path(root, e.node) or [])]
        raise InputError(e.message, ".".join(path) or where) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(
            f"{where}: YAML syntax error{at}: {' '.join(str(problem).split())}"
        ) from None
    except (RecursionError, _TooDeep):
        raise InputError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    _check_size(value, where)
    return value


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML file; an error for a missing, unreadable, oversized
    or malformed file, or a top level that is not a mapping."""
    if not isinstance(path, str | bytes | os.PathLike):
        raise InputError(f"expected a file path, got {show(path)}", "path")
    p = Path(os.fsdecode(path))
    if (why := file_problem(p)) is not None:
        missing = why == "does not exist"
        raise InputError(f"file {str(p)!r} not found" if missing else f"{str(p)!r} {why}")
    try:
        if p.stat().st_size > MAX_BYTES:
            raise InputError(f"{p.name}: larger than {MAX_BYTES // 1024} KiB")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {str(path)!r}: {e}") from None
    raw = parse_yaml(text, p.name)
    if raw is None:
        raise InputError(
            f"{p.name} is empty; expected a mapping with the sections {', '.join(SECTIONS)}"
        )
    if not isinstance(raw, dict):
        raise InputError(
            f"{p.name}: expected a mapping of sections at the top level, got {show(raw)}"
        )
    return raw


def _is_index(part: str) -> bool:
    """Whether a part of a key path is a list position (0, 1, …)."""
    return part.isdigit() and part.isascii()


def _step(node, part: str, path: str, key: str):
    """The index into ``node`` that ``part`` names: the key of a mapping, or the
    position (0, 1, …) in a list, which must exist (``--set training.levels.0.layers=2``)."""
    if isinstance(node, dict):
        return part
    if not _is_index(part):
        raise InputError(f"is a list: index it with 0, 1, … (--set {key})", path)
    if int(part) >= len(node):
        entries = "1 entry" if len(node) == 1 else f"{len(node)} entries"
        raise InputError(f"has {entries}, no entry {part} (--set {key})", path)
    return int(part)


def apply_override(raw: dict, assignment: str) -> None:
    """``--set model.layers=8``: set a key path (a list entry by its position,
    ``training.levels.0.layers=2``); the value is parsed as YAML."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise InputError(f"expected KEY.PATH=VALUE, got {show(assignment)}", "--set")
    try:
        value = parse_yaml(text, f"--set {key}", key) if text.strip() else None
    except InputError as e:
        if e.key == key or (e.key or "").startswith(key + "."):
            raise  # a value Python cannot hold, keyed by its key
        raise InputError(f"the value {show(text)} is not a YAML value ({e.message})", key) from None
    parts = key.split(".")
    if len(parts) > MAX_DEPTH:  # as deep in a file is refused too
        raise InputError(f"nested more than {MAX_DEPTH} levels deep (--set {key})", key)
    node = raw
    for i, part in enumerate(parts[:-1]):
        index = _step(node, part, ".".join(parts[:i]), key)
        child = node.get(index) if isinstance(node, dict) else node[index]
        if child is None and _is_index(parts[i + 1]):
            raise InputError(  # a list the file does not have: no entry to set
                f"is not in the file, so it has no entry {parts[i + 1]}: give the whole list "
                f"(--set '{'.'.join(parts[: i + 1])}=[...]')",
                ".".join(parts[: i + 1]),
            )
        if child is None:
            child = node[index] = {}
        if not isinstance(child, dict | list):
            raise InputError(
                f"is {show(child)}, not a mapping (--set {key})", ".".join(parts[: i + 1])
            )
        node = child
    node[_step(node, parts[-1], ".".join(parts[:-1]), key)] = value
    _check_size(raw, f"--set {key}")  # the file with the value in place, as a file is bounded


def _as_dicts(value):
    """``value`` with every mapping a dict (nested; lists as lists)."""
    if isinstance(value, Mapping):
        return {k: _as_dicts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_dicts(v) for v in value]
    return value


def validate_config(raw: Mapping, *, ranks: int | None = None, base_dir=None) -> Config:
    """Validate a raw mapping; an InputError (the first problem) otherwise.
    ``ranks``: the MPI ranks the run will have (None: not checked against them)."""
    integral = isinstance(ranks, Integral) and not isinstance(ranks, bool)
    if ranks is not None and not (integral and ranks >= 1):
        raise InputError(f"expected a number of ranks ≥ 1, got {show(ranks)}", "ranks")
    if not isinstance(raw, Mapping):
        raise InputError(f"expected a mapping of sections, got {show(raw)}", "config")
    raw = _as_dicts(raw)  # (a MappingProxyType or ChainMap: as the dict it reads as)
    if base_dir is not None and not isinstance(base_dir, str | os.PathLike):
        raise InputError(f"expected a directory path or None, got {show(base_dir)}", "base_dir")
    context = {"ranks": ranks, "base_dir": Path(base_dir) if base_dir is not None else None}
    try:
        return Config.model_validate(raw, context=context)
    except ValidationError as e:
        key, text = first_message(e.errors())
        raise InputError(text, key) from None


def load_config(
    path,
    overrides=(),
    *,
    ranks: int | None = None,
    require: str | None = None,
    hint: str | None = None,
) -> Config:
    """Read, override and validate a YAML parameter file. Relative data and mesh
    file paths are taken from the file's directory. With ``require`` (a section
    such as ``hjb``), a file without that section (or with ``require: null``) is
    refused before validation, keyed by it; ``hint`` (the caller's) ends that
    message in parentheses."""
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    if require is not None and raw.get(require) is None:
        why = f" ({hint})" if hint else ""
        raise InputError(f"this configuration has no {require}: section{why}", require)
    return validate_config(raw, ranks=ranks, base_dir=Path(path).resolve().parent)

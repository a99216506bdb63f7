"""pontryx.solver.config — the YAML parameter file: :mod:`.schema` (one pydantic
schema for a whole run) and :mod:`.loader` (strict, bounded reading, ``--set``
overrides, validation). Light to import: no DOLFINx, PETSc or solver."""

from pontryx.solver.config.loader import (
    apply_override,
    load_config,
    parse_yaml,
    read_yaml,
    validate_config,
)
from pontryx.solver.config.schema import SECTIONS, Config, flatten_petsc, key_paths

__all__ = [
    "SECTIONS",
    "Config",
    "apply_override",
    "flatten_petsc",
    "key_paths",
    "load_config",
    "parse_yaml",
    "read_yaml",
    "validate_config",
]

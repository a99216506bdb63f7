"""pontryx.solver.outputs — everything a run writes into its run directory.

One concept per module: :mod:`.rundir` (layout and overwrite policy),
:mod:`.metrics` (per-iteration log), :mod:`.checkpoint` (atomic restart files),
:mod:`.model_io` (the portable ``model.npz``), :mod:`.canonical`
(partition-independent control arrays), :mod:`.paraview` (VTX time series),
:mod:`.plots` (PNG figures), :mod:`.environment` (versions), :mod:`.atomic`.
"""

from . import canonical, environment, model_io, paraview, plots
from .checkpoint import Checkpoints
from .metrics import MetricsLog, read_metrics
from .rundir import ENTRIES, RunDirectory, check_run_directory, prepare_run_directory

__all__ = [
    "ENTRIES",
    "Checkpoints",
    "MetricsLog",
    "RunDirectory",
    "canonical",
    "check_run_directory",
    "environment",
    "model_io",
    "paraview",
    "plots",
    "prepare_run_directory",
    "read_metrics",
]

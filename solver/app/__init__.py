"""pontryx.solver.app — the application layer: :mod:`.problem` (configuration →
layout, data, mesh, network (:mod:`.network`), functionals, trainer; YAML keys
attached to errors here; :mod:`.inverse` for an ``inverse:`` section),
:mod:`.train` (one ``pontryx train``: a :mod:`.run` training run, or
:mod:`.inverse_run`'s), :mod:`.faults` (ending a job on one rank's error, the
fault hook), :mod:`.cli` (the ``pontryx`` command line) and :mod:`.console` (its
console script)."""

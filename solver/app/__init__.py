"""pontryx.solver.app — the application layer: :mod:`.problem` (configuration →
layout, data, mesh, network, functionals, trainer; YAML keys attached to errors
here), :mod:`.run` (one ``pontryx train``), :mod:`.faults` (ending a job on one
rank's error, the fault hook) and :mod:`.cli` (the ``pontryx`` command line)."""

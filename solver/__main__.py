"""``python -m pontryx.solver``: the ``pontryx`` command line."""

import sys

from pontryx.solver.app.console import console

sys.exit(console())

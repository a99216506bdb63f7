"""``python -m pontryx.solver``: the ``pontryx`` command line."""

import sys

from pontryx.solver.cli import main

sys.exit(main())

"""``python -m pontryx.solver``: the ``pontryx`` command line."""

import sys

from pontryx.solver.app.cli import main

sys.exit(main())

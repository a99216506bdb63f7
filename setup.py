"""Package discovery for pontryx's layout (metadata lives in pyproject.toml).

The top-level folders ``solver/``, ``forms/`` and ``meshes/`` are the
subpackages ``pontryx.solver``, ``pontryx.forms`` and ``pontryx.meshes``
(DESIGN.md §5). pyproject's ``[tool.setuptools.packages.find]`` cannot add the
``pontryx.`` prefix under such a mapping, so every package below each root is
found here with :func:`setuptools.find_packages` — a new subpackage is picked
up by wheel, sdist and editable installs alike, never listed by hand.
"""

from setuptools import find_packages, setup

ROOTS = {"pontryx.solver": "solver", "pontryx.forms": "forms", "pontryx.meshes": "meshes"}

setup(
    package_dir=ROOTS,
    packages=[
        f"{name}.{sub}" if sub else name
        for name, path in ROOTS.items()
        for sub in ("", *find_packages(path))
    ],
)

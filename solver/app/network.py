"""The network of a configuration, shared by the training and the inverse
problems (:mod:`.problem`, :mod:`.inverse`): the width space of ``mesh:``, the
continuum network of ``model:`` and its initial controls; :func:`use_blas`, the
library of the kernels' GEMMs (``parallel.blas``, for every kind of run); and
:func:`section`, which puts the YAML section a builder reads from in front of the
key of its :class:`InputError` (``n`` → ``mesh.n``) — no message text is parsed.
"""

from __future__ import annotations

import contextlib

from pontryx.meshes.errors import InputError
from pontryx.meshes.factory import create_mesh
from pontryx.solver.app import petsc_options
from pontryx.solver.config.schema import Config
from pontryx.solver.layout import Layout
from pontryx.solver.model import blas
from pontryx.solver.model.diffusion import PREFIX as DIFFUSION_PREFIX
from pontryx.solver.model.fields import PREFIX as INIT_PREFIX
from pontryx.solver.model.network import ContinuumNetwork
from pontryx.solver.model.width import WidthSpace

__all__ = ["build_network", "section", "use_blas"]


def use_blas(name: str) -> None:
    """The kernels' GEMMs on ``name`` (``parallel.blas``); a library that cannot be
    loaded is an error keyed ``blas``."""
    try:
        blas.use(name)
    except blas.BlasUnavailable as e:
        raise InputError(str(e), "blas") from None


@contextlib.contextmanager
def section(name: str):
    """Put the key of an :class:`InputError` raised in the block under ``name``."""
    try:
        yield
    except InputError as e:
        raise e.under(name) from None


def build_network(config: Config, layout: Layout, n_in: int, n_outputs: int, input_shape=None):
    """(space, net, controls): the width space of ``config.mesh`` over
    ``layout.width``, the network of ``config.model`` (its width-diffusion solver
    set up) and its initial controls (``model.init``). ``input_shape`` is the
    data's (an image embedding needs h × w). Collective; errors keyed by their
    section."""
    m = config.model
    if m.embedding.type == "image" and (input_shape is None or len(input_shape) != 2):
        shape = tuple(input_shape or (n_in,))
        got = f"{n_in} features" if len(shape) == 1 else " × ".join(map(str, shape)) + " arrays"
        raise InputError(
            f"'image' needs images (samples of h × w); the data's samples are {got} "
            "(images: a file's X of S × h × w, or a 2-entry data.input_shape)",
            "model.embedding.type",
        )
    with section("mesh"):
        mesh = create_mesh(config.mesh, layout.width)
    with section("model"):
        space = WidthSpace(
            mesh, degree=m.degree, lumping=m.lumping, exchange=config.parallel.exchange
        )
        net = ContinuumNetwork(
            space,
            n_in,
            n_outputs,
            kernel=m.kernel.type,
            kernel_options=m.kernel.options,
            activation=m.activation,
            scheme=m.scheme,
            T=m.T,
            layers=m.layers,
            epsilon=m.epsilon,
            embedding=m.embedding.type,
            input_shape=input_shape,
            train_embedding=m.embedding.trainable,
            train_readout=m.readout.trainable,
        )
    with petsc_options.errors(f"the width-diffusion solver (prefix {DIFFUSION_PREFIX})"):
        net.scheme.setup()
    with petsc_options.errors(f"the random-field solver (prefix {INIT_PREFIX})"):
        with section("model.init"):
            controls = net.init_controls(seed=m.init.seed, law=m.init.law())
    return space, net, controls

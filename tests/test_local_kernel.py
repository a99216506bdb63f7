"""The local kernel's linear map t ↦ vec(L) (solver/model/kernels/local.py): a
distance-2 colouring, and B t equal to L(θ) assembled from UFL (1 and 2 ranks)."""

import dolfinx.fem.petsc
import numpy as np
import scipy.sparse

from pontryx.meshes import create_mesh
from pontryx.solver import WidthSpace
from pontryx.solver.model.kernels.local import LocalKernel, distance2_colouring


def test_distance2_colouring():
    A = scipy.sparse.random(60, 60, density=0.05, random_state=1, format="csr")
    A = ((A + A.T + scipy.sparse.eye(60)) != 0).astype(np.int8)
    colour = distance2_colouring(A)
    two = ((A @ A) != 0).tocoo()
    clash = (colour[two.row] == colour[two.col]) & (two.row != two.col)
    assert not clash.any() and colour.min() == 0


def test_linear_map_is_the_assembled_operator(comm):
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 5}, comm))
    K = LocalKernel(sp)
    rng = np.random.default_rng(comm.rank)
    theta = {k: rng.standard_normal(s) for k, s in K.shapes().items()}
    L = K.layer(theta).L
    K._set_coefficients(theta)
    A = dolfinx.fem.petsc.assemble_matrix(K.operator)
    A.assemble()
    indptr, indices, data = A.getValuesCSR()
    A.destroy()
    assert np.array_equal(indptr, L.indptr) and np.array_equal(indices, L.indices)
    assert np.allclose(L.data, data, rtol=0, atol=1e-13 * np.abs(data).max())


def test_banded_products_equal_csr():
    """Dense-band and CSR blocks of banded.Pattern against SciPy's products."""
    from pontryx.solver.model.kernels.banded import Pattern

    rng = np.random.default_rng(3)
    n, N, S = 150, 170, 7
    band = scipy.sparse.diags([1.0] * 5, [-9, -1, 0, 2, 11], shape=(n, N), format="csr")
    ij = ([3, 70, 71, 140, 149], [160, 0, 169, 5, 90])
    far = scipy.sparse.csr_matrix(([1.0] * 5, ij), (n, N))
    A = (band + far).tocsr()
    A.sort_indices()
    A.data = rng.standard_normal(A.nnz)
    P = Pattern(A.indptr, A.indices, A.shape, rows=16, fill=8)
    assert 0 < P.dense_share < 1  # both kinds of blocks
    X, Q = rng.standard_normal((N, S)), rng.standard_normal((n, S))
    assert np.allclose(P.matmul(A.data, X), A @ X, rtol=1e-14, atol=1e-13)
    T, perm = P.transpose()
    assert np.allclose(T.matmul(A.data[perm], Q), A.T @ Q, rtol=1e-14, atol=1e-13)
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    ref = np.einsum("es,es->e", Q[rows], X[A.indices])
    assert np.allclose(P.sampled(Q, X), ref, rtol=1e-14, atol=1e-13)

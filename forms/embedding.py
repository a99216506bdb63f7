"""Input embedding u_s(0, ·) = Σ_j ξ_{s,j} e_j and readout functions (DESIGN.md §1).

Fixed families of embedding functions e_j on Ω, as callables x ↦ e_j(x) on a
(gdim, n_points) coordinate array (the form DOLFINx interpolation takes):

* ``bump``: Gaussian bumps e_j(x) = exp(−|x − c_j|² / (2 w²)) with centres c_j
  evenly spaced on a circle of radius 0.3·diam(Ω)/√d around the centre of Ω's
  bounding box, in the plane of its first two axes (one input: the centre; in 1D
  evenly on the middle 60 % of the interval), width w = 0.25·diam(Ω), diam(Ω)
  the diagonal of the bounding box;
* ``coordinate``: e_j(x) = (x_{j mod d} − x̄_{j mod d}) / diam(Ω), the linear lift;
* ``image``: for an input that is an h × w image, u_s(0, ·) is the image as a
  function on Ω's bounding box: pixel (r, c) sits at the centre of its cell, row
  0 on top, and u is the bilinear interpolant of the pixel values (constant
  extension at the edges). Then e_j is the bilinear hat of pixel j.
"""

from __future__ import annotations

import numpy as np

from pontryx.meshes.errors import InputError, show

__all__ = ["EMBEDDINGS", "embedding_functions"]

EMBEDDINGS = ("bump", "coordinate", "image")


def _bump_centres(n_in, lo, hi):
    mid, diam = 0.5 * (lo + hi), float(np.linalg.norm(hi - lo))
    d = len(lo)
    if d == 1 or n_in == 1:
        s = np.linspace(-0.3, 0.3, n_in) if n_in > 1 else np.zeros(1)
        return np.array([mid + t * (hi - lo) for t in s])
    phi = 2 * np.pi * np.arange(n_in) / n_in
    c = np.tile(mid, (n_in, 1))
    c[:, 0] += 0.3 * diam * np.cos(phi) / np.sqrt(d)
    c[:, 1] += 0.3 * diam * np.sin(phi) / np.sqrt(d)
    return c


def _bilinear_hats(shape, lo, hi):
    h, w = shape

    def hats(x):
        # pixel-centre coordinates: column c ↦ s = (c + ½)/w, row r ↦ t = 1 − (r + ½)/h
        s = np.clip((x[0] - lo[0]) / (hi[0] - lo[0]) * w - 0.5, 0, w - 1)
        t = np.clip((1 - (x[1] - lo[1]) / (hi[1] - lo[1])) * h - 0.5, 0, h - 1)
        c0 = np.minimum(np.floor(s).astype(int), max(w - 2, 0))
        r0 = np.minimum(np.floor(t).astype(int), max(h - 2, 0))
        fs, ft = s - c0, t - r0
        E = np.zeros((h * w, x.shape[1]))
        cols = np.arange(x.shape[1])
        for dr, wr in ((0, 1 - ft), (1, ft)):
            for dc, wc in ((0, 1 - fs), (1, fs)):
                r, c = np.minimum(r0 + dr, h - 1), np.minimum(c0 + dc, w - 1)
                np.add.at(E, (r * w + c, cols), wr * wc)
        return E

    return hats


def embedding_functions(kind: str, n_in: int, lo, hi, input_shape=None):
    """Callable x ↦ E(x) of shape (n_in, n_points): the values e_j(x)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    d = len(lo)
    diam = float(np.linalg.norm(hi - lo))
    if kind == "bump":
        centres = _bump_centres(n_in, lo, hi)
        width = 0.25 * diam

        def bumps(x):
            r2 = ((x[:d, None, :] - centres.T[:, :, None]) ** 2).sum(axis=0)
            return np.exp(-r2 / (2 * width**2))

        return bumps
    if kind == "coordinate":
        mid = 0.5 * (lo + hi)
        return lambda x: np.stack([(x[j % d] - mid[j % d]) / diam for j in range(n_in)])
    if kind == "image":
        if input_shape is None or len(input_shape) != 2 or d < 2:
            raise InputError("'image' needs image inputs (h × w) and a 2D or 3D mesh", "kind")
        if int(np.prod(input_shape)) != n_in:
            raise InputError(f"image shape {input_shape} ≠ {n_in} inputs", "input_shape")
        return _bilinear_hats(tuple(input_shape), lo, hi)
    expected = ", ".join(EMBEDDINGS)
    raise InputError(f"unknown embedding {show(kind)}; expected one of {expected}", "kind")

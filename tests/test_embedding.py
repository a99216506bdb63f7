"""The embedding functions e_j (forms/embedding.py) are the ones README's
`model.embedding.type` row defines, evaluated from that definition alone."""

import numpy as np
import pytest

from pontryx.forms.embedding import embedding_functions


@pytest.mark.parametrize(
    "lo, hi, n_in",
    [([0, 0], [2, 1], 5), ([-1, 0, 0], [1, 1, 3], 4), ([0], [4], 3), ([0, 0], [1, 1], 1)],
)
def test_bump_is_readme_formula(lo, hi, n_in):
    """e_j(x) = exp(−|x − c_j|²/(2w²)), w = diam/4, c_j = centre + 0.3 diam/√d
    (cos φ_j, sin φ_j, 0…), φ_j = 2πj/n_in; one input: the centre; 1D: evenly on
    the middle 60 % of the interval."""
    lo, hi = np.array(lo, float), np.array(hi, float)
    d, diam, mid = len(lo), np.linalg.norm(hi - lo), (lo + hi) / 2
    x = lo[:, None] + (hi - lo)[:, None] * np.random.default_rng(0).random((d, 30))
    if n_in == 1:
        c = mid[None, :]
    elif d == 1:
        c = (lo + (hi - lo) * np.linspace(0.2, 0.8, n_in))[:, None]
    else:
        phi = 2 * np.pi * np.arange(n_in) / n_in
        c = np.tile(mid, (n_in, 1))
        c[:, 0] += 0.3 * diam / np.sqrt(d) * np.cos(phi)
        c[:, 1] += 0.3 * diam / np.sqrt(d) * np.sin(phi)
    r2 = ((x[None, :, :] - c[:, :, None]) ** 2).sum(axis=1)
    expected = np.exp(-r2 / (2 * (diam / 4) ** 2))
    got = embedding_functions("bump", n_in, lo, hi)(x)
    assert np.allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_image_is_readme_bilinear_function():
    """Pixel (r, c) of an h × w image at the centre of its cell of the bounding
    box, row 0 on top; bilinear between centres, constant beyond the outermost."""
    h, w = 3, 4
    img = np.random.default_rng(1).random((h, w))
    E = embedding_functions("image", h * w, [0, 0], [2, 3], input_shape=(h, w))
    centre = lambda r, c: np.array([[2 * (c + 0.5) / w], [3 * (1 - (r + 0.5) / h)]])  # noqa: E731
    for r in range(h):
        for c in range(w):
            assert E(centre(r, c))[:, 0] @ img.ravel() == pytest.approx(img[r, c], abs=1e-14)
    mid = (centre(0, 1) + centre(1, 2)) / 2  # bilinear: the mean of four pixels
    four = img[0, 1] + img[0, 2] + img[1, 1] + img[1, 2]
    assert E(mid)[:, 0] @ img.ravel() == pytest.approx(four / 4, abs=1e-14)
    corner = np.array([[0.0], [3.0]])  # the top left corner: pixel (0, 0), constant
    assert E(corner)[:, 0] @ img.ravel() == pytest.approx(img[0, 0], abs=1e-14)

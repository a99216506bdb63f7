"""The synthetic data sets of DESIGN §6, drawn from seeded generators.

- ``ellipses``   2 classes in R²: class 0 has r ~ U[0,1), class 1 r ~ U[1,2),
  φ ~ U[0,2π), point (r cos φ, 0.4 r sin φ).
- ``swiss_roll`` 2 interleaved Swiss-roll arms in [−1,1]² (Haber & Ruthotto 2017).
- ``peaks``      points of [−3,3]² labelled by level sets of MATLAB's peaks, 5 classes.
- ``spirals``    2 intertwined spirals in [−1,1]².
- ``sine``       1D regression, x ~ U[−π,π], y = sin x.

The same description gives bit-identical arrays on every MPI rank; train and
test sets are drawn from independent streams spawned from
``numpy.random.SeedSequence(seed)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from pontryx.solver.data.dataset import Dataset, check_int, check_noise

__all__ = ["GENERATORS", "PEAKS_THRESHOLDS", "peaks", "synthetic"]


#: Level-set thresholds of :func:`peaks` for the 5 classes of the ``peaks`` set:
#: the 20/40/60/80 % quantiles of peaks(x, y) for (x, y) uniform on [−3,3]²
#: (midpoint rule on an 8000² grid), so the classes are about equally likely.
#: Class k holds the points with t_{k-1} ≤ peaks(x, y) < t_k.
PEAKS_THRESHOLDS: tuple[float, ...] = (-0.3079, 0.0017, 0.1536, 1.3136)


def peaks(x, y):
    """MATLAB's peaks function, 3(1−x)² e^{−x²−(y+1)²} − 10(x/5 − x³ − y⁵) e^{−x²−y²}
    − e^{−(x+1)²−y²}/3."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (
        3.0 * (1.0 - x) ** 2 * np.exp(-(x**2) - (y + 1.0) ** 2)
        - 10.0 * (x / 5.0 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1.0) ** 2) - y**2) / 3.0
    )


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent train and test generators from one seed."""
    train, test = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train), np.random.default_rng(test)


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels, class c occurring n//k + (c < n % k) times, in random order."""
    counts = [n // k + (c < n % k) for c in range(k)]
    return rng.permutation(np.repeat(np.arange(k, dtype=np.int64), counts))


def _ellipses(rng, n):
    y = _balanced_labels(rng, n, 2)
    r = y + rng.random(n)
    phi = 2.0 * np.pi * rng.random(n)
    return np.column_stack([r * np.cos(phi), 0.4 * r * np.sin(phi)]), y


def _swiss_roll(rng, n):
    y = _balanced_labels(rng, n, 2)
    theta = 4.0 * np.pi * rng.random(n)
    r = (theta / (4.0 * np.pi) + 0.2 * y) / 1.2
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)]), y


def _spirals(rng, n):
    y = _balanced_labels(rng, n, 2)
    t = rng.random(n)
    r = 0.1 + 0.9 * t
    theta = 4.0 * np.pi * t + np.pi * y
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)]), y


def _peaks(rng, n):
    X = rng.uniform(-3.0, 3.0, size=(n, 2))
    y = np.searchsorted(PEAKS_THRESHOLDS, peaks(X[:, 0], X[:, 1]), side="right")
    return X, y.astype(np.int64)


def _sine(rng, n):
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    return x, np.sin(x)


# name: (sampler, task, n_classes, feature_range, description)
GENERATORS: dict[str, tuple[Callable, str, int, tuple[float, float], str]] = {
    "ellipses": (
        _ellipses,
        "classification",
        2,
        (-2.0, 2.0),
        "concentric ellipses: class 0 r~U[0,1), class 1 r~U[1,2), φ~U[0,2π), "
        "x=(r cos φ, 0.4 r sin φ)",
    ),
    "swiss_roll": (
        _swiss_roll,
        "classification",
        2,
        (-1.0, 1.0),
        "Swiss roll (Haber–Ruthotto 2017): θ~U[0,4π), class c radius (θ/4π + 0.2c)/1.2, "
        "x=r(cos θ, sin θ)",
    ),
    "peaks": (
        _peaks,
        "classification",
        5,
        (-3.0, 3.0),
        f"peaks: x~U[-3,3]², class = level set of MATLAB peaks(x) at {PEAKS_THRESHOLDS}",
    ),
    "spirals": (
        _spirals,
        "classification",
        2,
        (-1.0, 1.0),
        "two spirals: t~U[0,1), r=0.1+0.9t, θ=4πt+πc, x=r(cos θ, sin θ)",
    ),
    "sine": (_sine, "regression", 0, (-np.pi, np.pi), "sine: x~U[-π,π], y=sin x"),
}


def synthetic(name: str, desc: Mapping) -> Dataset:
    sampler, task, k, frange, text = GENERATORS[name]
    n_train = check_int(desc, "n_train", minimum=1)
    n_test = check_int(desc, "n_test", minimum=1)
    seed = check_int(desc, "seed", minimum=0)
    noise = check_noise(desc)
    rng_train, rng_test = _streams(seed)
    sets = []
    for rng, n in ((rng_train, n_train), (rng_test, n_test)):
        X, y = sampler(rng, n)
        if noise > 0.0 and task == "regression":
            y = y + noise * rng.standard_normal(y.shape)
        elif noise > 0.0:
            X = X + noise * rng.standard_normal(X.shape)
        sets.append((X, y))
    if noise > 0.0:
        text += f", Gaussian noise std {noise} on {'y' if task == 'regression' else 'x'}"
    n_out = k if task == "classification" else 1
    return Dataset(
        name=name,
        task=task,
        X_train=sets[0][0],
        y_train=sets[0][1],
        X_test=sets[1][0],
        y_test=sets[1][1],
        n_classes=k,
        n_outputs=n_out,
        input_shape=(sets[0][0].shape[1],),
        feature_range=frange,
        description=f"{text}; seed {seed}, {n_train} train / {n_test} test",
        classes=tuple(range(k)),
    )

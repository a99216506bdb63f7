"""Data augmentation of image training sets: shifted and rotated copies.

``augment: {shifts: k, rotations: [φ₁, …]}`` in the ``data:`` section of an
image data set (``digits``, or a ``file`` of S×h×w images or with a 2-entry
``input_shape``) adds to the training images, in this order,

* the images moved dx pixels right and dy pixels down for every −k ≤ dx, dy ≤ k
  other than (0, 0), dy outermost, pixels moved out of the image dropped and the
  vacated ones set to 0 (``(2k+1)² − 1`` copies);
* the images rotated by each angle φ (degrees, counter-clockwise) about the
  image centre, ``scipy.ndimage.rotate(order=1, reshape=False, mode="constant")``:
  bilinear between pixel centres, 0 where the source point falls outside the
  square of the outermost pixel centres (not only outside the image);

each copy keeping its image's label. The training set becomes the originals
followed by the copies, block by block (S·(1 + copies) samples). No random
numbers are drawn, so every rank builds the same array before the samples are
sharded over the data ranks. The test set is never augmented.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from pontryx.meshes.errors import InputError, show, yaml_float

__all__ = ["AUGMENT_KEYS", "augmentation", "augmented"]

#: Keys of ``augment:`` and their defaults (no copies).
AUGMENT_KEYS = {"shifts": 0, "rotations": ()}


def augmentation(spec: object, shape: tuple[int, ...] | None = None) -> dict | None:
    """The checked ``augment`` description: ``None`` (none) or ``{shifts: int ≥ 0,
    rotations: tuple of finite angles in degrees, |φ| ≤ 180}``. With the image
    ``shape`` known, shifts must be smaller than its sides and the shape 2-D.
    Errors are keyed by the description's keys (``shifts``, ``rotations``)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InputError(
            f"expected a mapping with keys {', '.join(AUGMENT_KEYS)}, got {show(spec)}"
        )
    for key in spec:
        if key not in AUGMENT_KEYS:
            raise InputError(f"unknown key (allowed: {', '.join(AUGMENT_KEYS)})", str(key))
    k = spec.get("shifts", 0)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise InputError(f"expected an integer >= 0, got {show(k)}", "shifts")
    angles = spec.get("rotations", ())
    if not isinstance(angles, list | tuple):
        raise InputError(f"expected a list of angles in degrees, got {show(angles)}", "rotations")
    angles = [yaml_float(a) for a in angles]
    for a in angles:
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(a):
            raise InputError(f"expected finite angles in degrees, got {show(angles)}", "rotations")
        if abs(a) > 180:
            raise InputError(f"expected angles in [-180, 180], got {show(angles)}", "rotations")
    if shape is not None:
        if len(shape) != 2:
            raise InputError(
                f"needs images (a file's X of S×h×w or a 2-entry input_shape), got shape "
                f"{list(shape)}"
            )
        if k >= min(shape):
            raise InputError(f"must be < {min(shape)}, the image's smaller side, got {k}", "shifts")
    return {"shifts": int(k), "rotations": tuple(float(a) for a in angles)}


def _shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``images`` (S×H×W, row 0 on top) moved dx pixels right and dy down, 0 fill."""
    out = np.zeros_like(images)
    H, W = images.shape[1:]
    out[:, max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = images[
        :, max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
    ]
    return out


def _rotated(images: np.ndarray, degrees: float) -> np.ndarray:
    from scipy.ndimage import rotate

    return rotate(images, degrees, axes=(2, 1), reshape=False, order=1, mode="constant")


def augmented(
    X: np.ndarray, y: np.ndarray, shape: tuple[int, int], spec: dict
) -> tuple[np.ndarray, np.ndarray]:
    """The training set (X: S×(H·W) images flattened row-major, y: S labels or
    targets) followed by the copies of ``spec`` (from :func:`augmentation`)."""
    images = np.asarray(X, dtype=np.float64).reshape(-1, *shape)
    k = spec["shifts"]
    copies = [
        _shifted(images, dx, dy)
        for dy in range(-k, k + 1)
        for dx in range(-k, k + 1)
        if (dx, dy) != (0, 0)
    ]
    copies += [_rotated(images, a) for a in spec["rotations"]]
    S = len(images)
    Xa = np.concatenate([images, *copies]).reshape(S * (1 + len(copies)), -1)
    return Xa, np.concatenate([y] * (1 + len(copies)))

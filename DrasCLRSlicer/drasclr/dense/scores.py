"""Scores of a subtype labelmap against the truth, shared by training (validation Dice), class-weight calibration and
``drasclr evaluate``: the confusion matrix and Dice per class."""

from __future__ import annotations

import math

import numpy as np

from ..core import labels
from ..core.errors import InputError


def _array(x) -> np.ndarray:
    return np.asarray(getattr(x, "array", x))


def confusion_matrix(pred, truth, n: int = labels.NUM_CLASSES) -> np.ndarray:
    """``(n, n)`` int64 voxel counts, ``[truth, pred]``. Inputs: integer arrays of the same shape, values < n."""
    p, t = _array(pred), _array(truth)
    if p.shape != t.shape:
        raise InputError(f"prediction shape {p.shape} does not match truth shape {t.shape}")
    joint = t.astype(np.int64).ravel() * n + p.astype(np.int64).ravel()
    return np.bincount(joint, minlength=n * n)[: n * n].reshape(n, n)


def dice_from_confusion(conf: np.ndarray, classes=(1, 2, 3, 4)) -> dict[int, float]:
    """Dice per class from a confusion matrix (NaN when the class is absent from truth and prediction)."""
    out = {}
    for c in classes:
        denom = conf[c, :].sum() + conf[:, c].sum()
        out[int(c)] = math.nan if denom == 0 else float(2 * conf[c, c] / denom)
    return out

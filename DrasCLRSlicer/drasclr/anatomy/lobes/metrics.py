"""Lobe accuracy against a truth labelmap: Dice per lobe and the mean surface distance of the fissures."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...core import labels

# fissures as pairs of lobe sets: left oblique, right oblique, right horizontal
FISSURES = {"left_oblique": ((1,), (2,)), "right_oblique": ((3, 4), (5,)), "right_horizontal": ((3,), (4,))}


def dice_per_lobe(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of each LTRC lobe (1–5) between two labelmaps on one grid (nan when both are empty)."""
    out = {}
    for v, name in labels.LOBES.items():
        p, t = pred == v, truth == v
        denom = int(p.sum()) + int(t.sum())
        out[name] = 2.0 * float(np.sum(p & t)) / denom if denom else float("nan")
    return out


def fissure_surface(lobes: np.ndarray, a: tuple[int, ...], b: tuple[int, ...]) -> np.ndarray:
    """Voxels of lobe set ``a`` with a face neighbour in lobe set ``b`` (the fissure between them, one side)."""
    in_a, in_b = np.isin(lobes, a), np.isin(lobes, b)
    return in_a & ndimage.binary_dilation(in_b)


def fissure_distances(pred: np.ndarray, truth: np.ndarray, spacing_zyx) -> dict[str, float]:
    """Symmetric mean surface distance (mm) per fissure between predicted and true lobes; nan when absent."""
    out = {}
    for name, (a, b) in FISSURES.items():
        sp, st = fissure_surface(pred, a, b), fissure_surface(truth, a, b)
        if not sp.any() or not st.any():
            out[name] = float("nan")
            continue
        to_t = ndimage.distance_transform_edt(~st, sampling=spacing_zyx)[sp]
        to_p = ndimage.distance_transform_edt(~sp, sampling=spacing_zyx)[st]
        out[name] = float((to_t.sum() + to_p.sum()) / (to_t.size + to_p.size))
    return out

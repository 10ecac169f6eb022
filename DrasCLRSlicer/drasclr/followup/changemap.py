"""Voxel change map on the baseline grid: what happened to each baseline lung voxel by the later scan.

Labels (uint8): 0 outside the baseline lung, 1 normal in both, 2 emphysema of the same subtype in both,
3 new emphysema (normal -> CLE/PSE/PLE), 4 emphysema gone (CLE/PSE/PLE -> normal), 5 subtype changed (e.g.
CLE -> PLE). Emphysema is a subtype label >= 2 (:mod:`drasclr.core.labels`); without a subtype map, a voxel below the
(volume-adjusted) -950 HU threshold.
"""

from __future__ import annotations

import numpy as np

from ..core import labels

OUTSIDE, STABLE_NORMAL, STABLE_EMPHYSEMA, NEW, GONE, CHANGED = range(6)
NAMES = {STABLE_NORMAL: "stable_normal", STABLE_EMPHYSEMA: "stable_emphysema", NEW: "new_emphysema",
         GONE: "emphysema_gone", CHANGED: "subtype_changed"}
COLORS = {STABLE_NORMAL: (0, 0, 0), STABLE_EMPHYSEMA: (120, 120, 255), NEW: (255, 60, 40), GONE: (60, 200, 80),
          CHANGED: (255, 200, 0)}


def change_labels(base: np.ndarray, later: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Subtype labels of the baseline and of the later scan on the baseline grid (same shape) -> change labels."""
    b_em, l_em = base >= labels.CLE, later >= labels.CLE
    out = np.full(base.shape, STABLE_NORMAL, np.uint8)
    out[b_em & l_em] = STABLE_EMPHYSEMA
    out[b_em & l_em & (base != later)] = CHANGED
    out[~b_em & l_em] = NEW
    out[b_em & ~l_em] = GONE
    out[~lung] = OUTSIDE
    return out


def volumes_ml(change: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Volume (ml) of each change label."""
    counts = np.bincount(change.reshape(-1), minlength=len(NAMES) + 1)
    return {name: round(float(counts[v]) * voxel_ml, 3) for v, name in NAMES.items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (NaN when both are empty)."""
    s = int(a.sum()) + int(b.sum())
    return float("nan") if s == 0 else 2.0 * float((a & b).sum()) / s

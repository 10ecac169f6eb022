"""Fissure-guided relabelling: each lobe border moved from the atlas's guess onto the fissure in the image.

Every fissure separates an upper lobe set from a lower one and is crossed once by a vertical line (left and right
oblique: upper lobe(s) above, lower lobe below; right horizontal: upper lobe above the middle lobe), so it is
searched as a height field ``z(y, x)`` over the columns of the lung:

1. the atlas border gives ``z0(y, x)`` (mid-point between the upper set's lowest and the lower set's highest voxel
   in each column; continued over the other columns of the lung as the least-squares plane through it);
2. for every offset ``δ`` within ``SEARCH_MM`` (oblique) or ``HORIZONTAL_SEARCH_MM`` (horizontal) the sheet
   response at ``z0 + δ`` (:mod:`.fissures`, for the normal of the atlas border in that column) is averaged over
   the columns with a Gaussian of ``SURFACE_SIGMA_MM`` (normalised by where it was measured: vessel-free inner
   lung), so a faint sheet spread over many columns outscores noise and texture; a mild prior
   ``1 - PRIOR·(δ/range)²`` favours the atlas;
3. each column takes the best offset, median-filtered over 5 × 5 columns and then smoothed (Gaussian of half
   ``SURFACE_SIGMA_MM``) so the surface has no steps; voxels of the pair above the surface get the upper label,
   below it the lower.

Right lung: the oblique fissure (RUL+RML | RLL) first, then the horizontal one (RUL | RML) within the upper part.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .. import labels
from .fissures import SheetEvidence

SEARCH_MM = 75.0  # oblique fissures
HORIZONTAL_SEARCH_MM = 45.0  # the right horizontal fissure: wider ranges lock onto other sheets in real CTs
SURFACE_SIGMA_MM = 12.0
PRIOR = 0.3
SIDES = {labels.LEFT_LUNG: labels.LEFT_LOBES, labels.RIGHT_LUNG: labels.RIGHT_LOBES}
# per lung: (upper set, lower set) in the order they are searched
FISSURE_PAIRS = {labels.LEFT_LUNG: [((1,), (2,))], labels.RIGHT_LUNG: [((3, 4), (5,)), ((3,), (4,))]}


def atlas_border_height(lab: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...],
                        columns: np.ndarray) -> np.ndarray | None:
    """``z0(y, x)`` (float, index along axis 0 = superior up) of the border between ``upper`` and ``lower``;
    None when no column holds both. ``columns``: the (Y, X) columns that hold this lung."""
    z = np.arange(lab.shape[0], dtype=np.float32)[:, None, None]
    up, lo = np.isin(lab, upper), np.isin(lab, lower)
    up_min = np.where(up, z, np.inf).min(axis=0)
    lo_max = np.where(lo, z, -np.inf).max(axis=0)
    both = np.isfinite(up_min) & np.isfinite(lo_max)
    if not both.any():
        return None
    mid = 0.5 * (up_min[both] + lo_max[both])
    # elsewhere the border continues as the least-squares plane through it (fissures are nearly planar)
    yy, xx = np.nonzero(both)
    design = np.stack([np.ones(yy.size), yy, xx], axis=1)
    coef, *_ = np.linalg.lstsq(design, mid, rcond=None)
    gy, gx = np.mgrid[: lab.shape[1], : lab.shape[2]]
    z0 = (coef[0] + coef[1] * gy + coef[2] * gx).astype(np.float32)
    z0[both] = mid
    return np.where(columns, z0, np.nan)


def search_surface(evidence: SheetEvidence, lung: np.ndarray, z0: np.ndarray, spacing: float,
                   search_mm: float = SEARCH_MM, sigma_mm: float = SURFACE_SIGMA_MM,
                   prior: float = PRIOR) -> np.ndarray:
    """Best fissure height ``z(y, x)`` near ``z0`` (see the module doc); axis 0 of the volumes is S–I.

    The sheet normal expected at each column is that of the atlas border ``z0`` (its gradient)."""
    nz = lung.shape[0]
    steps = np.arange(-int(search_mm / spacing), int(search_mm / spacing) + 1)
    cols = np.isfinite(z0)
    z0s = ndimage.gaussian_filter(np.where(cols, z0, 0.0), 2.0) / np.maximum(
        ndimage.gaussian_filter(cols.astype(float), 2.0), 1e-3)
    gy, gx = np.gradient(z0s)
    yy, xx = np.nonzero(cols)
    normal = np.stack([np.ones(yy.size), -gy[yy, xx], -gx[yy, xx]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    base = np.round(z0[yy, xx]).astype(np.int64)
    score = np.full((len(steps),) + z0.shape, -np.inf, np.float32)
    sig = sigma_mm / spacing
    for i, d in enumerate(steps):
        zi = base + d
        ok = (zi >= 0) & (zi < nz)
        ok[ok] &= lung[zi[ok], yy[ok], xx[ok]]
        e = np.zeros(z0.shape, np.float32)
        w = np.zeros(z0.shape, np.float32)
        e[yy[ok], xx[ok]] = evidence.response(zi[ok], yy[ok], xx[ok], normal[ok])
        w[yy[ok], xx[ok]] = evidence.valid[zi[ok], yy[ok], xx[ok]]
        s = ndimage.gaussian_filter(e, sig) / np.maximum(ndimage.gaussian_filter(w, sig), 0.05)
        score[i] = s * (1.0 - prior * (d / steps[-1]) ** 2)
    best = steps[np.argmax(score, axis=0)].astype(np.float32)
    best = ndimage.median_filter(best, size=5)
    # a smooth surface: the offsets averaged over the lung's columns (no steps between neighbouring columns)
    w = cols.astype(np.float32)
    best = ndimage.gaussian_filter(best * w, sig / 2) / np.maximum(ndimage.gaussian_filter(w, sig / 2), 1e-3)
    return np.where(cols, np.round(z0) + best, np.nan)


def relabel(prior_lobes: np.ndarray, lungs: np.ndarray, evidence: SheetEvidence, spacing: float,
            search_mm: float = SEARCH_MM, sigma_mm: float = SURFACE_SIGMA_MM, prior: float = PRIOR) -> np.ndarray:
    """Lobes after moving each fissure onto the image evidence; volumes ``(Z, Y, X)`` with axis 0 pointing
    superior (the caller reorients). ``prior_lobes``: atlas lobes filled per lung; ``lungs``: 1 right, 2 left."""
    out = prior_lobes.copy()
    z = np.arange(out.shape[0], dtype=np.float32)[:, None, None]
    for side, pairs in FISSURE_PAIRS.items():
        lung = lungs == side
        if not lung.any():
            continue
        columns = lung.any(axis=0)
        for upper, lower in pairs:
            reach = search_mm if len(upper) > 1 or side == labels.LEFT_LUNG else min(search_mm, HORIZONTAL_SEARCH_MM)
            z0 = atlas_border_height(np.where(lung, out, 0), upper, lower, columns)
            if z0 is None:
                continue
            zf = search_surface(evidence, lung, z0, spacing, reach, sigma_mm, prior)
            pair = lung & np.isin(out, upper + lower)
            above = z > np.where(np.isfinite(zf), zf, -1.0)[None]
            # within the pair: above the surface -> the upper set (keeping RUL/RML as they were for the
            # oblique fissure, the horizontal search then splits them), below -> the lower set
            new_upper = np.where(np.isin(out, upper), out, upper[-1] if len(upper) == 1 else 0)
            out = np.where(pair & above, new_upper, out)
            out = np.where(pair & ~above, lower[0], out)
            if len(upper) > 1:  # voxels moved into the upper set from below: nearest upper label
                hole = lung & (out == 0)
                if hole.any():
                    have = lung & np.isin(out, upper)
                    idx = ndimage.distance_transform_edt(~have, return_distances=False, return_indices=True)
                    out[hole] = out[tuple(i[hole] for i in idx)]
    return out.astype(np.uint8)

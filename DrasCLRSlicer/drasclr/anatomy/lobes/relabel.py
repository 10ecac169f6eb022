"""Fissure-guided relabelling: each lobe border moved from the atlas's guess onto the fissure in the image.

Every fissure separates an upper lobe set from a lower one and is crossed once by a vertical line (left and right
oblique: upper lobe(s) above, lower lobe below; right horizontal: upper lobe above the middle lobe), so it is
searched as a height field ``z(y, x)`` over the columns of the lung:

1. the atlas border gives ``z0(y, x)`` (mid-point between the upper set's lowest and the lower set's highest voxel
   in each column; continued over the other columns of the lung as the least-squares plane through it);
2. whole-fissure search (:func:`fit_plane_offset`): ``z0`` moved by an offset within ``SEARCH_MM`` (oblique) or
   ``HORIZONTAL_SEARCH_MM`` (horizontal) and re-tilted to a slope in an anatomical range (``OBLIQUE_SLOPE``,
   ``HORIZONTAL_SLOPE``, plus ``CROSS_TILT`` across); the candidate whose surface carries the most sheet evidence
   wins if it stands out (``MIN_CONTRAST``, ``MIN_CONTRAST_HORIZONTAL``) and leaves each lobe of the pair at
   least ``MIN_SHARE``; otherwise the atlas border stays. The whole surface votes, so a faint, interrupted
   fissure is found 25–40 mm and 20° away from the atlas's guess, where a column-by-column search locks onto
   texture;
3. local refinement (:func:`search_surface`) within ``LOCAL_MM`` of that plane: for every offset ``δ`` the sheet
   response at ``z + δ`` (:mod:`.fissures`, for the normal of the surface in that column) is averaged over the
   columns with a Gaussian of ``SURFACE_SIGMA_MM`` (normalised by where it was measured: vessel-free inner lung),
   with a mild prior ``1 - PRIOR·(δ/range)²``; each column takes the best offset, median-filtered over 5 × 5
   columns and then smoothed so the surface has no steps; voxels of the pair above the surface get the upper
   label, below it the lower.

Right lung: the oblique fissure (RUL+RML | RLL) first, then the horizontal one (RUL | RML) within the upper part:
it starts moved as the oblique fissure moved where both meet, and only evidence inside RUL+RML, at least
``OTHER_MARGIN_MM`` from the lower lobe, counts (so it cannot find the oblique fissure again).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ...core import labels
from ...core.distance import distance_to
from .fissures import SheetEvidence

log = logging.getLogger(__name__)
SEARCH_MM = 75.0  # oblique fissures
HORIZONTAL_SEARCH_MM = 45.0  # the right horizontal fissure: wider ranges lock onto other sheets in real CTs
SURFACE_SIGMA_MM = 12.0
# slopes searched (mm per mm along the atlas border's own slope direction; oblique: rising posteriorly): adult oblique
# fissures run at 30-55 degrees to the axial plane, the horizontal one within about 15 degrees of it; and a tilt
# across that direction
OBLIQUE_SLOPE, HORIZONTAL_SLOPE, CROSS_TILT, TILT_STEP = (0.6, 1.2), (-0.3, 0.3), 0.2, 0.1
# a plane is taken when its score stands this far above the median candidate (robust z): in lungs of pure noise
# the best of the candidates reaches 3.5-5.4 (Testing/engine/test_lobes_planes.py), a visible fissure 10-28 and an
# oblique one in 5 mm slices 5-9 (tuning phantoms)
MIN_CONTRAST = 6.0
# the horizontal fissure lies in the slice plane, so thick slices average it away; what the search finds there
# scores 4-8, a visible one 16-22 (tuning phantoms): below this it stays where the oblique fissure's move puts it
MIN_CONTRAST_HORIZONTAL = 10.0
LOCAL_MM = 15.0
OTHER_MARGIN_MM = 6.0
MIN_SHARE = 0.15  # each side of a fissure keeps at least this share of the lobes it splits
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


def fit_plane_offset(evidence: SheetEvidence, lung: np.ndarray, z0: np.ndarray, search_mm: float,
                     spacing: float, slope: tuple[float, float] = OBLIQUE_SLOPE, cross_tilt: float = CROSS_TILT,
                     stride: int = 2, min_contrast: float = MIN_CONTRAST,
                     pair: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The atlas border ``z0`` moved by the offset and tilt (``z0 + δ + a·(y - ȳ) + b·(x - x̄)``) whose surface
    carries the most sheet evidence: ``(moved z0, contrast)``.

    Every candidate surface is sampled on every ``stride``-th column; its score is the summed sheet response
    (for the candidate's own normal) over the vessel-free inner lung it crosses, divided by that count plus a
    pseudo-count (a surface grazing the lung's edge does not win on a few voxels), times the prior
    ``1 - PRIOR·(δ/range)²``. ``pair``: the voxels the fissure splits; a candidate leaving either side less than
    ``MIN_SHARE`` of them is not considered (no lobe vanishes onto a stray sheet). ``contrast``: the best score
    over the median one, in units of their spread (robust z); below ``min_contrast`` the surface is left where
    the atlas put it."""
    nz = lung.shape[0]
    cols = np.isfinite(z0)
    sub = np.zeros_like(cols)
    sub[::stride, ::stride] = True
    yy, xx = np.nonzero(cols & sub)
    if yy.size < 10:
        return z0, 0.0
    z0s = ndimage.gaussian_filter(np.where(cols, z0, 0.0), 2.0) / np.maximum(
        ndimage.gaussian_filter(cols.astype(float), 2.0), 1e-3)
    gy, gx = np.gradient(z0s)
    gy, gx = gy[yy, xx], gx[yy, xx]
    dy, dx = (yy - yy.mean()).astype(np.float32), (xx - xx.mean()).astype(np.float32)
    base = z0[yy, xx]
    steps = np.arange(-int(search_mm / spacing), int(search_mm / spacing) + 1)
    # the atlas border's own slope (mm per mm) and its direction u (for an oblique fissure: rising posteriorly)
    design = np.stack([np.ones(yy.size), dy, dx], axis=1)
    _, ay, ax = np.linalg.lstsq(design, base, rcond=None)[0]
    m = float(np.hypot(ay, ax))
    u = np.array([ay, ax]) / m if m > 1e-6 else np.array([1.0, 0.0])
    along, across = u[0] * dy + u[1] * dx, -u[1] * dy + u[0] * dx
    lo, hi = slope
    slopes = np.arange(lo, hi + 1e-6, TILT_STEP)
    tilts = np.linspace(-cross_tilt, cross_tilt, 2 * int(round(cross_tilt / TILT_STEP)) + 1)
    pseudo = 0.1 * yy.size
    weight = 1.0 - PRIOR * (steps / steps[-1]) ** 2
    yb, xb = np.broadcast_to(yy, (steps.size, yy.size)), np.broadcast_to(xx, (steps.size, yy.size))
    if pair is not None:  # voxels of the pair at or below each height, per sampled column
        below_cum = np.cumsum(pair[:, yy, xx], axis=0, dtype=np.int32)
        cols_idx = np.broadcast_to(np.arange(yy.size), (steps.size, yy.size))
        total = max(int(below_cum[-1].sum()), 1)
    best, best_score, scores = (0.0, 0.0, 0.0), -np.inf, []
    for sl in slopes:
        for tl in tilts:  # every offset of this plane at once: (offsets, columns)
            ty, tx = (sl - m) * u[0] - tl * u[1], (sl - m) * u[1] + tl * u[0]  # added to the atlas slopes
            normal = np.stack([np.ones(yy.size), -(gy + ty), -(gx + tx)], axis=1)
            normal /= np.linalg.norm(normal, axis=1, keepdims=True)
            zi = np.round(base + (sl - m) * along + tl * across + steps[:, None]).astype(np.int64)
            ok = (zi >= 0) & (zi < nz)
            zi = np.clip(zi, 0, nz - 1)
            ok &= lung[zi, yb, xb]
            r = evidence.response(zi[ok], yb[ok], xb[ok], np.broadcast_to(normal, (steps.size,) + normal.shape)[ok])
            resp = np.zeros(zi.shape, np.float32)
            resp[ok] = r
            count = (ok & evidence.valid[zi, yb, xb]).sum(axis=1)
            sc = np.where(ok.any(axis=1), resp.sum(axis=1) / (count + pseudo) * weight, -np.inf)
            if pair is not None:
                raw = np.round(base + (sl - m) * along + tl * across + steps[:, None]).astype(np.int64)
                below = np.where(raw < 0, 0, below_cum[np.clip(raw, 0, nz - 1), cols_idx]).sum(axis=1) / total
                sc = np.where((below < MIN_SHARE) | (below > 1 - MIN_SHARE), -np.inf, sc)
            scores.append(sc[np.isfinite(sc)])
            i = int(np.argmax(sc))
            if np.isfinite(sc[i]) and sc[i] > best_score:
                best_score, best = float(sc[i]), (float(steps[i]), float(ty), float(tx))
    scores = np.concatenate(scores)
    if scores.size < 10:
        return z0, 0.0
    med = float(np.median(scores))
    spread = float(np.median(np.abs(scores - med))) * 1.4826 + 1e-9
    contrast = (best_score - med) / spread
    if contrast < min_contrast:
        return z0, contrast
    d, ty, tx = best
    log.debug("plane: offset %.0f mm, slope %.2f + (%.2f, %.2f), contrast %.1f", d * spacing, m, ty, tx, contrast)
    gyy, gxx = np.mgrid[: z0.shape[0], : z0.shape[1]].astype(np.float32)
    moved = z0 + d + ty * (gyy - yy.mean()) + tx * (gxx - xx.mean())
    return np.where(cols, moved, np.nan), contrast


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
        moved = None  # how far the oblique fissure moved, per column (the horizontal one starts from it)
        for upper, lower in pairs:
            oblique = len(upper) > 1 or side == labels.LEFT_LUNG
            reach = search_mm if oblique else min(search_mm, HORIZONTAL_SEARCH_MM)
            z0 = atlas_border_height(np.where(lung, out, 0), upper, lower, columns)
            if z0 is None:
                continue
            if moved is not None:
                # the horizontal fissure meets the oblique one: it moves as the oblique fissure moved where
                # both are (the columns holding the middle lobe), before its own search
                lab = np.where(lung, out, 0)
                junction = np.isin(lab, upper).any(axis=0) & np.isin(lab, lower).any(axis=0) & np.isfinite(moved)
                if junction.any():
                    z0 = z0 + float(np.median(moved[junction]))
            pair = lung & np.isin(out, upper + lower)
            # evidence only inside the pair's lobes, away from the other lobes' fissures (the horizontal
            # fissure's search must not find the oblique one)
            other = lung & ~pair
            where = pair & (distance_to(other, (spacing,) * 3) > OTHER_MARGIN_MM) if other.any() else lung
            z_atlas = z0
            least = MIN_CONTRAST if oblique else MIN_CONTRAST_HORIZONTAL
            z0, contrast = fit_plane_offset(evidence, where, z0, reach, spacing,
                                            OBLIQUE_SLOPE if oblique else HORIZONTAL_SLOPE,
                                            min_contrast=least, pair=pair)
            log.debug("fissure %s|%s: contrast %.1f%s", upper, lower, contrast,
                      "" if contrast >= least else " (not found: kept)")
            zf = z0 if contrast < least else search_surface(evidence, where, z0, spacing, LOCAL_MM, sigma_mm, prior)
            if len(upper) > 1:
                moved = zf - z_atlas
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

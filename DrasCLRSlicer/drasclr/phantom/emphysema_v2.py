"""Generator version 2 of the lung parenchyma and the three emphysema subtypes, shaped after real HRCT
(../shared/notes/real-data.md, docs/realism.md); version 1 stays in :mod:`.emphysema`.

- Parenchyma: inspiratory density (about -895 HU median at a 512 matrix) with a mild supine gradient and weak
  4 mm texture; the fine grain comes from the scanner noise.
- CLE: graded, ill-defined centrilobular lucencies (soft-edged, partial density loss deepening with severity,
  no hard floor) around the centre of the secondary lobule, each lobule with a visible central dot (the
  centrilobular artery) and a faint halo of density loss; lesions coalesce at the severe end.
- PSE: one row of thin-walled subpleural (and fewer perifissural) bullae of 1-2 cm, tangent to the pleura,
  upper-zone predominant.
- PLE: whole lobules of homogeneous density loss (about -975 HU, weak texture) with soft borders and pruned,
  thinned vessels (see ``PLE_PRUNE_MM`` / ``PLE_THIN``), lower-zone predominant.

Placement (lobule lattice, zones, patchiness) reuses :class:`.emphysema.Lobules` and :func:`.emphysema.zone`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .emphysema import Lobules, lobe_surfaces, lobule_zones, pack_balls, zone
from .fields import coarse_field, sample_field
from .grid import Grid

PLE_PRUNE_MM = 3.0  # vessels thinner than this (radius) vanish inside panlobular lobules
PLE_THIN = 0.6  # the remaining vessels there are thinned by this factor
PARENCHYMA_HU = -912.0  # anterior (non-dependent) lung
GRAVITY_HU = 28.0  # added towards the dependent (posterior) lung
TEXTURE_HU = 10.0
VESSEL_SCALE = 0.6  # vessel radii against version 1 (real cross-sections 2-3 mm²)
CLE_HU = -985.0  # the lucency core of a fully developed lesion
PLE_HU = -982.0
PSE_AIR_HU = -990.0
PSE_WALL_HU = -450.0
PSE_WALL_MM = 0.5


def parenchyma(yn: np.ndarray, tex: np.ndarray) -> np.ndarray:
    """Lung density before disease: gradient along the normalised posterior axis ``yn`` plus texture."""
    # positively skewed texture (mean zero, bounded below at about -TEXTURE_HU): interstitium and sub-resolution
    # vessels add density, nothing removes it, so normal lung keeps its sharp lower edge (real: 2 % < -950 HU)
    return (PARENCHYMA_HU + GRAVITY_HU * np.clip(yn, 0, 1) ** 1.5) + TEXTURE_HU * (tex + 0.6 * tex * tex - 0.6)


def cle_lesions(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float):
    """Centrilobular lesions: ``(centres (N, 3), radii (N,), depth (N,))`` and the chosen lobule centres
    ``(M, 3)`` (mm, z y x). Depth is the fraction of the way from parenchyma to ``CLE_HU`` at the core."""
    empty = (np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 3)))
    if sev <= 0:
        return empty
    keys = lob.key(lung_pts[:: max(1, len(lung_pts) // 200000)])
    uk = np.unique(keys)
    cen = lob.centre(uk)
    zn = zone(cen, z_base, height)
    patch, pax = coarse_field(rng, cen.min(0) - 20, cen.max(0) + 20, 50.0)
    f = sample_field(patch, pax, cen)
    w = np.clip(zn - 0.1, 0, 1) ** 1.0
    p = np.clip(sev * 2.4 * w * (0.7 + 0.5 * f) + 0.05 * sev, 0, 0.97)
    chosen = cen[rng.uniform(size=len(cen)) < p]
    if len(chosen) == 0:
        return empty
    n_les = 1 + rng.poisson(2.0 + 6.0 * sev, len(chosen))
    centres = np.repeat(chosen, n_les, axis=0)
    centres = centres + rng.normal(0, (0.08 + 0.1 * sev) * lob.L, centres.shape)
    radii = rng.uniform(2.5, 4.0 + 5.5 * sev, len(centres))
    depth = np.clip(rng.uniform(0.75, 0.95, len(centres)) + 0.15 * sev, 0, 1.0)
    return centres, radii, depth, chosen


def pse_bullae(rng, grid: Grid, lobes: np.ndarray, z_base: dict, height: float, sev: float):
    """Subpleural / perifissural bullae, 1-2 cm, one row: centres ``(N, 3)`` and radii ``(N,)`` mm, each
    tangent to the pleura (most) or a fissure (fewer), placed without overlap."""
    if sev <= 0:
        return np.zeros((0, 3)), np.zeros(0)
    step = 2
    pts, nrm, idx = lobe_surfaces(grid, lobes, step)
    is_outer = ndi.binary_dilation(lobes[::step, ::step, ::step] == 0)[tuple(idx.T)]
    zn = zone(pts, z_base, height)
    patch, pax = coarse_field(rng, pts.min(0) - 20, pts.max(0) + 20, 60.0)
    f = sample_field(patch, pax, pts)
    prob = sev * 0.05 * np.clip(zn - 0.25, 0, 1) * (f > 0.0) * np.where(is_outer, 1.0, 0.15)
    pick = np.flatnonzero(rng.uniform(size=len(pts)) < np.clip(prob, 0, 1))
    rng.shuffle(pick)
    radii = rng.uniform(7.0, 9.0 + 3.0 * sev, len(pick))
    pick, radii = pick[:3000], radii[:3000]
    # the pleura cuts each ball: a flat-based subpleural bulla
    return pack_balls(pts[pick] + nrm[pick] * (0.5 * radii)[:, None], radii, 0.98)


def ple_lobules(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float):
    """Boolean per lung point inside a panlobular lobule (lower zones, confluent over neighbouring lobules) and
    the chosen lobule keys."""
    if sev <= 0:
        return np.zeros(len(lung_pts), bool), np.zeros(0, np.int64)
    keys, uk, zn, f = lobule_zones(rng, lob, lung_pts, z_base, height, 70.0)
    score = 2.0 * sev * (1.0 - zn) ** 1.5 + 0.6 * f - 0.9 + 0.15 * rng.standard_normal(len(uk))
    chosen = uk[score > 0]
    return np.isin(keys, chosen), chosen

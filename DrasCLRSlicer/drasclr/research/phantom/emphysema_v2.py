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

from .emphysema import Lobules, lobe_surfaces, lobule_centres, lobule_zones, pack_balls, zone
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
CLE_HALO = (0.15, 0.25)  # density loss over a CLE lobule: a + b * severity of the way to CLE_HU
PLE_TEXTURE = 0.2  # share of the parenchyma's variation kept inside PLE
AIRWAY_MIN_R = 0.9  # mm lumen radius of the smallest airway drawn
AIRWAY_WALL = (0.3, 0.18)  # wall thickness = a + b * lumen radius, mm
FISSURE_HU = -760.0
PRUNE_IN_REGION = False  # prune PLE vessels per lattice cell holding some PLE (version 3: in the region itself)
DOTS_IN_PLE = True  # centrilobular dots drawn inside PLE too
AVASCULAR_BULLAE = False  # vessels may cross bullae


def parenchyma(yn: np.ndarray, tex: np.ndarray) -> np.ndarray:
    """Lung density before disease: gradient along the normalised posterior axis ``yn`` plus texture."""
    # positively skewed texture (mean zero, bounded below at about -TEXTURE_HU): interstitium and sub-resolution
    # vessels add density, nothing removes it, so normal lung keeps its sharp lower edge (real: 2 % < -950 HU)
    return (PARENCHYMA_HU + GRAVITY_HU * np.clip(yn, 0, 1) ** 1.5) + TEXTURE_HU * (tex + 0.6 * tex * tex - 0.6)


def cle_lesions(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float):
    """Centrilobular lesions: ``(centres (N, 3), radii (N,), depth (N,))`` and the chosen lobule centres
    ``(M, 3)`` (mm, z y x). Depth is the fraction of the way from parenchyma to ``CLE_HU`` at the core."""
    return cle_lesions_drawn(rng, lob, lung_pts, z_base, height, sev, n_per=(2.0, 6.0), radius=(2.5, 4.0, 5.5),
                             density=2.4)


def cle_lesions_drawn(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float,
                      n_per: tuple[float, float], radius: tuple[float, float, float], density: float):
    """:func:`cle_lesions` with its size parameters: lesions per chosen lobule ``1 + Poisson(a + b * sev)`` for
    ``n_per = (a, b)``, radii uniform in ``[r0, r1 + r2 * sev]`` mm for ``radius = (r0, r1, r2)``; a lobule is
    affected with probability about ``density * sev * zone weight``."""
    empty = (np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 3)))
    if sev <= 0:
        return empty
    cen, zn, f = lobule_centres(rng, lob, lung_pts, z_base, height)
    w = np.clip(zn - 0.1, 0, 1) ** 1.0
    p = np.clip(sev * density * w * (0.7 + 0.5 * f) + 0.05 * sev, 0, 0.97)
    chosen = cen[rng.uniform(size=len(cen)) < p]
    if len(chosen) == 0:
        return empty
    n_les = 1 + rng.poisson(n_per[0] + n_per[1] * sev, len(chosen))
    centres = np.repeat(chosen, n_les, axis=0)
    centres = centres + rng.normal(0, (0.08 + 0.1 * sev) * lob.L, centres.shape)
    radii = rng.uniform(radius[0], radius[1] + radius[2] * sev, len(centres))
    depth = np.clip(rng.uniform(0.75, 0.95, len(centres)) + 0.15 * sev, 0, 1.0)
    return centres, radii, depth, chosen


def pse_bullae(rng, grid: Grid, lobes: np.ndarray, z_base: dict, height: float, sev: float,
               fissure_share: float = 0.15, depth: float = 0.5, radius: tuple[float, float, float] = (7.0, 9.0, 3.0)):
    """Subpleural / perifissural bullae, 1-2 cm, one row: centres ``(N, 3)`` and radii ``(N,)`` mm, each
    tangent to the pleura (most) or a fissure (``fissure_share`` times as likely per surface point), placed
    without overlap; the centre lies ``depth`` radii inside the surface (the pleura cuts the rest); radii
    uniform in ``[r0, r1 + r2 * sev]`` mm for ``radius = (r0, r1, r2)``."""
    if sev <= 0:
        return np.zeros((0, 3)), np.zeros(0)
    step = 2
    pts, nrm, idx = lobe_surfaces(grid, lobes, step)
    is_outer = ndi.binary_dilation(lobes[::step, ::step, ::step] == 0)[tuple(idx.T)]
    zn = zone(pts, z_base, height)
    patch, pax = coarse_field(rng, pts.min(0) - 20, pts.max(0) + 20, 60.0)
    f = sample_field(patch, pax, pts)
    prob = sev * 0.05 * np.clip(zn - 0.25, 0, 1) * (f > 0.0) * np.where(is_outer, 1.0, fissure_share)
    pick = np.flatnonzero(rng.uniform(size=len(pts)) < np.clip(prob, 0, 1))
    rng.shuffle(pick)
    radii = rng.uniform(radius[0], radius[1] + radius[2] * sev, len(pick))
    pick, radii = pick[:3000], radii[:3000]
    # the pleura cuts each ball: a flat-based subpleural bulla
    return pack_balls(pts[pick] + nrm[pick] * (depth * radii)[:, None], radii, 0.98)


def ple_lobules(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float,
                field_mm: float = 70.0, weights: tuple[float, float, float] = (2.0, 0.6, 0.15)):
    """Boolean per lung point inside a panlobular lobule (lower zones, confluent over neighbouring lobules) and
    the chosen lobule keys. A lobule is chosen when ``a * sev * (1 - zone) ** 1.5 + b * field - 0.9 + c * N(0, 1)``
    is positive, ``weights = (a, b, c)``; ``field`` is smooth with scale ``field_mm``."""
    if sev <= 0:
        return np.zeros(len(lung_pts), bool), np.zeros(0, np.int64)
    a, b, c = weights
    keys, uk, zn, f = lobule_zones(rng, lob, lung_pts, z_base, height, field_mm)
    score = a * sev * (1.0 - zn) ** 1.5 + b * f - 0.9 + (c * rng.standard_normal(len(uk)) if c else 0.0)
    chosen = uk[score > 0]
    return np.isin(keys, chosen), chosen

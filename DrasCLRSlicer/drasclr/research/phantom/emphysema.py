"""The three emphysema subtypes, placed by anatomy (secondary lobules, pleura, fissures, zones), not by HU alone.

- CLE: clusters of small round holes (radius 1.4-5.5 mm, about -1000 HU, no wall) at secondary-lobule centres of a
  jittered 10-25 mm lattice, upper-zone predominant; severity raises hole count and size until they coalesce.
- PSE: one row of subpleural / perifissural spaces (radius 2.5-7 mm) with a thin wall, each tangent to the
  pleura or a fissure, upper zones.
- PLE: whole lobules (lattice cells) with a uniform density loss to about -960..-990 HU and pruned small
  vessels, lower-zone predominant, patchy to confluent.

Lobule cells: ``floor((p + w(p)) / L)`` with a smooth warp ``w`` (amplitude ~0.25 L) so cells are irregular.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .fields import coarse_field, sample_field
from .grid import Grid

SUBTYPE_NAMES = ("cle", "pse", "ple")


@dataclass
class Disease:
    """Per-case severities in [0, 1] (0 = absent) and the lobule size."""

    cle: float = 0.0
    pse: float = 0.0
    ple: float = 0.0
    lobule_mm: float = 15.0
    counts: dict = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.cle == 0 and self.pse == 0 and self.ple == 0


def sample_disease(rng: np.random.Generator, healthy: bool, force: tuple[str, ...] | None = None,
                   severity: float | None = None) -> Disease:
    d = Disease(lobule_mm=float(rng.uniform(10.0, 25.0)))
    draws = rng.uniform(size=6)  # always drawn: the stream does not depend on the choices
    if healthy and not force:
        return d
    present = {"cle": draws[0] < 0.7, "pse": draws[1] < 0.5, "ple": draws[2] < 0.4}
    if force:
        present = {k: k in force for k in present}
    if not any(present.values()):
        present[("cle", "pse", "ple")[int(draws[3] * 3)]] = True
    for i, k in enumerate(("cle", "pse", "ple")):
        if present[k]:
            s = severity if severity is not None else float(0.1 + 0.9 * draws[3 + i] ** 1.3)
            setattr(d, k, round(float(s), 3))
    return d


class Lobules:
    """Jittered secondary-lobule lattice over the lung bounding box."""

    def __init__(self, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, size_mm: float):
        self.L = size_mm
        self.warp = [coarse_field(rng, lo - 10, hi + 10, 24.0) for _ in range(3)]
        self.amp = 0.25 * size_mm

    def key(self, pts: np.ndarray) -> np.ndarray:
        """Cell key (int64) of ``(N, 3)`` points (mm, z y x)."""
        w = np.stack([sample_field(v, a, pts) for v, a in self.warp], 1) * self.amp
        c = np.floor((pts + w) / self.L).astype(np.int64) + 4096
        return (c[:, 0] << 26) | (c[:, 1] << 13) | c[:, 2]

    def centre(self, keys: np.ndarray) -> np.ndarray:
        c = np.stack([(keys >> 26) & 8191, (keys >> 13) & 8191, keys & 8191], 1) - 4096
        p = (c + 0.5) * self.L
        for _ in range(2):
            w = np.stack([sample_field(v, a, p) for v, a in self.warp], 1) * self.amp
            p = (c + 0.5) * self.L - w
        return p


def zone(pts: np.ndarray, z_base: dict, height: float) -> np.ndarray:
    """Fraction of the lung height (0 base .. 1 apex) of points (mm, z y x), per side by the sign of x."""
    base = np.where(pts[:, 2] > 0, z_base[1], z_base[-1])
    return np.clip((pts[:, 0] - base) / height, 0, 1)


def lobule_zones(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, field_mm: float):
    """Per lung point its lobule key; per lobule (unique keys) its zone (0 top .. 1 bottom) and a smooth random
    field of scale ``field_mm`` sampled at its centre: ``(keys, unique keys, zones, field)``."""
    keys = lob.key(lung_pts)
    uk = np.unique(keys)
    cen = lob.centre(uk)
    patch, pax = coarse_field(rng, cen.min(0) - 20, cen.max(0) + 20, field_mm)
    return keys, uk, zone(cen, z_base, height), sample_field(patch, pax, cen)


def choose_ple(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float):
    """Boolean per lung point: inside a chosen panlobular lobule; plus the chosen keys."""
    if sev <= 0:
        return np.zeros(len(lung_pts), bool), np.zeros(0, np.int64)
    keys, uk, zn, f = lobule_zones(rng, lob, lung_pts, z_base, height, 60.0)
    w = (1.0 - zn) ** 1.5
    score = 1.6 * sev * w + 0.45 * f - 0.9 + 0.35 * rng.standard_normal(len(uk))
    chosen = uk[score > 0]
    return np.isin(keys, chosen), chosen


def lobule_centres(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float):
    """The centres ``(N, 3)`` of the lobules the lung touches, their cranio-caudal zone (0 base .. 1 apex) and a
    smooth random field (0..1) at each: what decides where centrilobular lesions fall."""
    keys = lob.key(lung_pts[:: max(1, len(lung_pts) // 200000)])
    cen = lob.centre(np.unique(keys))
    zn = zone(cen, z_base, height)
    patch, pax = coarse_field(rng, cen.min(0) - 20, cen.max(0) + 20, 50.0)
    return cen, zn, sample_field(patch, pax, cen)


def cle_holes(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float):
    """Hole centres ``(N, 3)`` and radii ``(N,)`` (mm) of centrilobular emphysema."""
    if sev <= 0:
        return np.zeros((0, 3)), np.zeros(0)
    cen, zn, f = lobule_centres(rng, lob, lung_pts, z_base, height)
    w = np.clip(zn - 0.15, 0, 1) ** 1.2
    p = np.clip(sev * 2.0 * w * (0.7 + 0.4 * f), 0, 0.97)
    chosen = cen[rng.uniform(size=len(cen)) < p]
    n_holes = 1 + rng.poisson(2.0 + 10.0 * sev, len(chosen))
    centres = np.repeat(chosen, n_holes, axis=0)
    spread = 0.1 + 0.12 * sev
    centres = centres + rng.normal(0, spread * lob.L, centres.shape)
    r_max = 2.5 + 3.0 * sev
    radii = rng.uniform(1.4, r_max, len(centres))
    return centres, radii


def lobe_surfaces(grid: Grid, lobes: np.ndarray, step: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on every lobe's surface (pleura and fissures) on a ``step``-times coarser fine grid: their positions
    ``(N, 3)`` mm (z, y, x), unit inward normals ``(N, 3)`` and their indices ``(N, 3)`` on the coarse grid."""
    sub = lobes[::step, ::step, ::step]
    sp = grid.fine_spacing_zyx() * step
    origin = np.array([grid.zf[0], grid.y[0], grid.x[0]])
    cands, normals, where = [], [], []
    for v in range(1, 6):
        m = sub == v
        if not m.any():
            continue
        idx = np.argwhere(m & ~ndi.binary_erosion(m))
        if len(idx) == 0:
            continue
        sm = ndi.gaussian_filter(m.astype(np.float32), 1.5)
        g = np.stack([np.gradient(sm, axis=a)[tuple(idx.T)] / sp[a] for a in range(3)], 1)
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
        cands.append(origin + idx * sp)
        normals.append(g)
        where.append(idx)
    return np.concatenate(cands), np.concatenate(normals), np.concatenate(where)


def pse_spaces(rng, grid: Grid, lobes: np.ndarray, z_base: dict, height: float, sev: float):
    """Subpleural / perifissural spaces: centres ``(N, 3)`` and radii ``(N,)`` mm, each tangent to the surface."""
    if sev <= 0:
        return np.zeros((0, 3)), np.zeros(0)
    pts, nrm, _ = lobe_surfaces(grid, lobes)
    zn = zone(pts, z_base, height)
    patch, pax = coarse_field(rng, pts.min(0) - 20, pts.max(0) + 20, 45.0)
    f = sample_field(patch, pax, pts)
    prob = np.clip(sev * 0.15 * np.clip(zn - 0.3, 0, 1) * (f > 0.3), 0, 1)
    pick = np.flatnonzero(rng.uniform(size=len(pts)) < prob)
    rng.shuffle(pick)
    radii = rng.uniform(2.5, 3.5 + 3.5 * sev, len(pick))
    pick, radii = pick[:4000], radii[:4000]
    return pack_balls(pts[pick] + nrm[pick] * (radii - 0.6 * grid.spacing)[:, None], radii, 0.95)


def pack_balls(centres: np.ndarray, radii: np.ndarray, overlap: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy packing: keep each candidate ball ``(centre, radius)`` in order unless it comes closer to a kept one
    than ``overlap`` times the sum of their radii. Returns the kept centres ``(N, 3)`` and radii ``(N,)``."""
    acc_c, acc_r = [], []
    for c, r in zip(centres, radii):
        if acc_c:
            d = np.linalg.norm(np.asarray(acc_c) - c, axis=1)
            if np.any(d < (np.asarray(acc_r) + r) * overlap):
                continue
        acc_c.append(c)
        acc_r.append(r)
    if not acc_c:
        return np.zeros((0, 3)), np.zeros(0)
    return np.asarray(acc_c), np.asarray(acc_r)

"""Thorax and lungs as analytic shapes in LPS millimetres: body wall, ribs, spine, sternum, mediastinum, heart,
aorta, vena cava, pulmonary arteries, oesophagus, diaphragm with liver/stomach/spleen below, table; two lungs
with apex, costal curvature, cardiac notch; five lobes split by the oblique and horizontal fissures.

Everything is evaluated on the fine grid with numpy broadcasting (2-D templates where the shape does not
change with z). Patient parameters are plain floats kept in ``meta.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .grid import Grid
from .render import splat_tubes

# lobe values (docs/contracts.md: lungmask LTRCLobes numbering)
LUL, LLL, RUL, RML, RLL = 1, 2, 3, 4, 5
P_EXP = 2.3  # superellipse exponent of the thoracic cavity


@dataclass
class Patient:
    """Body and lung dimensions (mm). ``side`` +1 = left (LPS +x), -1 = right."""

    half_width: float  # body half-width A
    depth_ratio: float  # body half-depth / half-width
    fat: float  # subcutaneous fat thickness
    muscle: float
    rib_layer: float
    lung_height: float  # right lung: deepest recess to apex
    z_base: float  # deepest point of the right lung (costophrenic recess), mm
    left_drop: float  # left lung base is this much lower (right dome is higher)
    dome_height: float
    carina_frac: float  # carina height as a fraction of lung height
    med_width: float  # half-width of the mediastinal band at its widest (mm)
    heart_size: float  # heart semi-axis scale (mm)
    heart_angle: float  # heart long axis rotation about z (deg)
    rib_pitch: float
    rib_drop: float  # how much a rib descends from back to front (mm)
    rib_phase: float
    fissure_left: tuple[float, float]  # oblique fissure height = z_base + H * (a + b * yn)
    fissure_right: tuple[float, float]
    horizontal: float  # right horizontal fissure height fraction
    fissure_wave: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else round(float(v), 3)) for k, v in asdict(self).items()}


def sample_patient(rng: np.random.Generator, half_width: float, lung_height: float,
                   z_extent: tuple[float, float]) -> Patient:
    """Draw one patient of the given body half-width and lung height placed inside ``z_extent`` (mm)."""
    a, h = float(half_width), float(lung_height)
    z_lo, z_hi = z_extent
    free = (z_hi - z_lo) - h
    z_base = z_lo + max(12.0, 0.62 * free) if free > 24 else z_lo + free / 2
    return Patient(
        half_width=a, depth_ratio=float(rng.uniform(0.68, 0.78)), fat=float(rng.uniform(6, 30)),
        muscle=float(rng.uniform(8, 14)), rib_layer=float(rng.uniform(10, 13)), lung_height=h, z_base=float(z_base),
        left_drop=float(rng.uniform(8, 20)), dome_height=float(rng.uniform(55, 80)),
        carina_frac=float(rng.uniform(0.64, 0.72)), med_width=float(rng.uniform(20, 27)),
        heart_size=float(rng.uniform(0.9, 1.1)), heart_angle=float(rng.uniform(30, 45)),
        rib_pitch=float(rng.uniform(24, 30)), rib_drop=float(rng.uniform(35, 60)),
        rib_phase=float(rng.uniform(0, 30)),
        fissure_left=(float(rng.uniform(-0.08, 0.02)), float(rng.uniform(0.68, 0.8))),
        fissure_right=(float(rng.uniform(-0.1, 0.0)), float(rng.uniform(0.64, 0.74))),
        horizontal=float(rng.uniform(0.45, 0.55)),
        fissure_wave=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, 4)),
    )


class Thorax:
    """Geometry of one patient on one grid. Call :meth:`build` for the fine-grid tissue HU and lobe volumes."""

    def __init__(self, grid: Grid, p: Patient):
        self.g, self.p = grid, p
        a = p.half_width
        b = a * p.depth_ratio
        self.body_b = b
        wall = p.fat + p.muscle + p.rib_layer + 2.0
        self.ac = a - wall  # cavity half-width
        self.bc_ant = b - 0.7 * p.fat - p.muscle - p.rib_layer - 2.0
        self.bc_post = b - 0.3 * p.fat - p.muscle - p.rib_layer - 6.0
        self.z_top = p.z_base + p.lung_height  # right apex
        self.carina = np.array([p.z_base + p.carina_frac * p.lung_height, -0.05 * self.bc_ant, 0.0])
        self.spine_c = (self.bc_post - 20.0, 18.0)  # vertebral body centre y, radius

    # --- 2-D helpers (ny, nx) -----------------------------------------------------------------------
    def _xy(self):
        return self.g.y[:, None].astype(np.float32), self.g.x[None, :].astype(np.float32)

    def cavity_delta(self) -> np.ndarray:
        """Along-ray distance (mm) outside the cavity superellipse (negative inside), ``(ny, nx)``."""
        y, x = self._xy()
        by = np.where(y < 0, self.bc_ant, self.bc_post)
        rho = (np.abs(x / self.ac) ** P_EXP + np.abs(y / by) ** P_EXP) ** (1.0 / P_EXP)
        r = np.hypot(x, y)
        return (rho - 1.0) * r / np.maximum(rho, 1e-3)

    def lung_delta(self, z: np.ndarray) -> np.ndarray:
        """Distance outside the pleural surface, which narrows towards the apex, ``(nz, ny, nx)``."""
        y, x = self._xy()
        zn = ((z - self.p.z_base) / self.p.lung_height)[:, None, None]
        f = (1.0 - 0.42 * np.clip((zn - 0.3) / 0.7, 0, 1) ** 1.7).astype(np.float32)
        fy = 1.0 - 0.45 * (1.0 - f)
        by = np.where(y < 0, self.bc_ant, self.bc_post)
        xp = (np.abs(x / self.ac) ** P_EXP).astype(np.float32)  # (1, nx)
        yp = (np.abs(y / by) ** P_EXP).astype(np.float32)  # (ny, 1)
        rho = (xp * f ** -P_EXP + yp * fy ** -P_EXP) ** np.float32(1.0 / P_EXP)
        r = np.hypot(x, y)
        return (rho - 1.0) * r / np.maximum(rho, 1e-3)

    def yn(self) -> np.ndarray:
        """0 at the anterior cavity wall, 1 at the posterior wall, ``(ny, 1)``."""
        y = self.g.y[:, None]
        return np.clip((y + self.bc_ant) / (self.bc_ant + self.bc_post), -0.2, 1.2).astype(np.float32)

    def diaphragm(self, side: int) -> np.ndarray:
        """Dome height z(x, y) for one side, ``(ny, nx)``: highest under the dome centre, lowest in the
        lateral and posterior costophrenic recesses."""
        p = self.p
        y, x = self._xy()
        base = p.z_base - (p.left_drop if side > 0 else 0.0)
        u = (x - side * 0.42 * self.ac) / (0.62 * self.ac)
        v = (y + 0.2 * self.bc_ant) / (0.8 * self.bc_post)
        return base + p.dome_height * np.clip(1.0 - u * u - v * v, 0.0, 1.0) ** 0.6

    def apex(self, side: int) -> np.ndarray:
        y, x = self._xy()
        top = self.z_top - (6.0 if side > 0 else 0.0)
        return top - ((x - side * 0.36 * self.ac) ** 2 + (y - 0.1 * self.bc_post) ** 2) / (2 * 26.0)

    def med_halfwidth(self, z: np.ndarray) -> np.ndarray:
        """Mediastinal band half-width (mm) as a function of (z, y), ``(nz, ny, 1)``."""
        yn = self.yn()[None]
        zn = ((z - self.p.z_base) / self.p.lung_height)[:, None, None]
        upper = np.clip((zn - 0.45) / 0.3, 0, 1)
        w_mid = self.p.med_width * (1.0 - 0.25 * upper)
        return (9.0 + (w_mid - 9.0) * np.exp(-(((yn - 0.55) / 0.3) ** 2))).astype(np.float32)

    def heart_q(self, z: np.ndarray) -> np.ndarray:
        """Quadratic form of the heart ellipsoid (< 1 inside), ``(nz, ny, nx)``."""
        p, s = self.p, self.p.heart_size
        y, x = self._xy()
        c = np.deg2rad(p.heart_angle)
        hx, hy, hz = 24.0, -0.38 * self.bc_ant, p.z_base + 0.22 * p.lung_height
        u = np.cos(c) * (x - hx) - np.sin(c) * (y - hy)
        v = np.sin(c) * (x - hx) + np.cos(c) * (y - hy)
        w = (z - hz)[:, None, None]
        return (u / (66 * s)) ** 2 + (v / (44 * s)) ** 2 + w * w / (52 * s) ** 2

    def great_vessels(self):
        """Mediastinal tubes as segments ``(p0 (M, 3), p1 (M, 3), r (M,))`` in mm (z y x): aorta (ascending,
        arch, descending), superior vena cava, pulmonary trunk with right and left pulmonary arteries, oesophagus.
        """
        p = self.p
        zc, cy = self.carina[0], self.carina[1]
        hz_top = p.z_base + 0.22 * p.lung_height + 40.0 * p.heart_size
        top_z = self.g.zf[-1] + 5.0
        asc = np.array([p.z_base + 0.38 * p.lung_height, -0.3 * self.bc_ant, -8.0])
        top = np.array([zc + 22.0, -0.3 * self.bc_ant, -6.0])
        desc_y = self.spine_c[0] - 8.0
        t = np.linspace(0, np.pi, 9)
        arch = np.stack([zc + 22.0 + 14 * np.sin(t), top[1] + (desc_y - top[1]) * (1 - np.cos(t)) / 2,
                         -6.0 + 26.0 * (1 - np.cos(t)) / 2], 1)
        low = np.array([p.z_base - 40.0, desc_y, 20.0])
        aorta = [asc, top, *arch[1:], low]
        segs = [(aorta[i], aorta[i + 1], 13.0) for i in range(len(aorta) - 1)]
        w = p.med_width
        bif = np.array([zc - 12.0, -0.15 * self.bc_ant, 8.0])
        segs += [
            (np.array([hz_top - 10.0, -0.5 * self.bc_ant, 14.0]), bif, 12.0),  # pulmonary trunk
            (bif, np.array([zc - 12.0, cy + 2.0, -(w - 3.0)]), 9.0),  # right pulmonary artery
            (bif, np.array([zc - 6.0, cy + 10.0, w - 3.0]), 9.0),  # left pulmonary artery
            (np.array([top_z, -0.1 * self.bc_ant, -30.0]), np.array([hz_top, -0.22 * self.bc_ant, -24.0]), 9.0),
            (np.array([top_z, cy + 19.0, 5.0]), np.array([p.z_base + 10.0, cy + 20.0, 12.0]), 7.0),  # oesophagus
            (np.array([p.z_base + 10.0, cy + 20.0, 12.0]),
             np.array([p.z_base - 25.0, -0.1 * self.bc_ant, 0.35 * self.ac]), 7.0),
        ]
        p0 = np.array([a for a, _, _ in segs])
        p1 = np.array([b for _, b, _ in segs])
        return p0, p1, np.array([r for _, _, r in segs])

    # --- volumes ------------------------------------------------------------------------------------
    def build(self, rng: np.random.Generator):
        """Return ``(hu, lobes, info)``: fine-grid tissue HU without lung parenchyma (float32), lobe labels
        (uint8, 0 outside lung) and a dict of geometry for the trees and disease."""
        nz, ny, nx = self.g.fine_shape
        y2, x2 = self._xy()
        delta = self.cavity_delta()
        theta = np.arctan2(y2, x2)
        post = np.sin(theta)  # +1 posterior
        hu = np.broadcast_to(self._slice_template(y2, x2, delta, theta), (nz, ny, nx)).copy()
        vb = self._skeleton(hu, y2, x2, delta, post)
        sy, sr = self.spine_c
        spine_keep = (x2 ** 2 + (y2 - sy) ** 2) < (sr + 5.0) ** 2
        hq = self.heart_q(self.g.zf)
        vessels = self.great_vessels()
        lobes, fissure, dph, yn = self._lungs(hu, y2, x2, spine_keep, hq, vessels)
        self._organs(hu, lobes, dph, y2, x2, delta, vb | spine_keep, hq, vessels)
        info = {"diaphragm": dph, "delta": delta, "yn": yn, "fissure": fissure}
        return hu, lobes, info

    def _slice_template(self, y2, x2, delta, theta) -> np.ndarray:
        """One axial slice of the chest wall: skin, fat, muscle, the cavity's fat, and the table under the back."""
        p = self.p
        post = np.sin(theta)
        muscle = p.muscle * (1 + 0.9 * np.clip(post, 0, 1) ** 6) + 4 * np.exp(-((x2 / 60.0) ** 2)) * (y2 > 0)
        fat = p.fat * (1 + 0.3 * np.cos(2 * theta) + 0.2 * np.clip(-post, 0, 1))
        w = p.fissure_wave
        r_body = p.rib_layer + muscle + fat + 2.0 + 4.0 * np.sin(2 * theta + w[0]) + 3.0 * np.cos(3 * theta + w[1])
        t2 = np.full(delta.shape, -1000.0, np.float32)
        body = delta < r_body
        t2[body] = 30.0  # skin
        t2[delta < r_body - 2.0] = -100.0  # subcutaneous fat
        t2[delta < p.rib_layer + muscle] = 45.0  # muscle
        t2[delta < p.rib_layer] = 40.0  # intercostal muscle
        t2[delta < 0] = -80.0  # mediastinal / extrapleural fat default
        # table under the back
        y_back = float(np.max(np.where(body, y2, -1e9)))
        ty = y_back + 8.0 + 0.0012 * x2 ** 2
        table = (y2 > ty) & (y2 < ty + 22) & (np.abs(x2) < 0.8 * p.half_width + 40)
        t2[table] = -550.0
        t2[table & ((y2 < ty + 2) | (y2 > ty + 20))] = 180.0
        return t2

    def _skeleton(self, hu, y2, x2, delta, post) -> np.ndarray:
        """Spine (vertebrae with discs, arches, canal), ribs and sternum painted into ``hu``; returns the 2-D
        vertebral-body mask."""
        p, z = self.p, self.g.zf
        zz = z[:, None, None]
        sy, sr = self.spine_c
        vb = (x2 ** 2 + (y2 - sy) ** 2) < sr ** 2
        canal_y = sy + sr + 9.0
        canal = (x2 ** 2 + (y2 - canal_y) ** 2) < 8.0 ** 2
        arch = ((x2 ** 2 + (y2 - canal_y) ** 2) < 13.0 ** 2) & ~canal
        spinous = (np.abs(x2) < 4.0) & (y2 > canal_y) & (y2 < canal_y + 32)
        transverse = (np.abs(y2 - (canal_y - 2)) < 5.0) & (np.abs(x2) < 32) & (np.abs(x2) > 8)
        # vertebrae: cancellous body with cortex, discs every ~27 mm
        disc = (((z - p.z_base) % 27.0) < 5.0)[:, None, None]
        rim = (x2 ** 2 + (y2 - sy) ** 2) > (sr - 2.0) ** 2
        vb3 = np.broadcast_to(vb, hu.shape)
        hu[vb3] = np.where(disc, 90.0, np.where(rim, 650.0, 230.0))[vb3]
        hu[np.broadcast_to(arch | spinous, hu.shape) & ~disc] = 500.0
        mid_vert = (np.abs(((z - p.z_base) % 27.0) - 16.0) < 6.0)[:, None, None]
        hu[np.broadcast_to(transverse, hu.shape) & mid_vert] = 450.0
        hu[np.broadcast_to(canal, hu.shape)] = 15.0
        # ribs in the rib layer: bands descending from back to front
        ring = (delta > 0) & (delta < p.rib_layer)
        jj, ii = np.nonzero(ring)
        ant = (1 - post[jj, ii]) / 2  # 0 back, 1 front
        u = ((zz[:, :, 0] + p.rib_drop * ant[None, :] - p.rib_phase) % p.rib_pitch) - p.rib_pitch / 2
        v = (delta[jj, ii] - p.rib_layer / 2)[None, :]
        q = (u / 6.5) ** 2 + (v / 4.5) ** 2
        in_rib = (q < 1) & (zz[:, :, 0] < self.z_top + 25)
        midline = (np.abs(x2[0, ii]) < 28) & (y2[jj, 0] < 0)
        cart = ant > 0.78
        val = np.where(cart[None, :], 110.0, np.where(q > 0.45, 750.0, 230.0))
        col = hu[:, jj, ii]
        col[in_rib & ~midline[None, :]] = val[in_rib & ~midline[None, :]]
        hu[:, jj, ii] = col
        # sternum
        st = ((x2 / 15.0) ** 2 + ((y2 + self.bc_ant + p.rib_layer / 2) / 6.0) ** 2) < 1
        zst = ((z > p.z_base + 25) & (z < self.z_top - 25))[:, None, None]
        hu[np.broadcast_to(st, hu.shape) & zst] = 420.0
        return vb

    def _lungs(self, hu, y2, x2, spine_keep, hq, vessels):
        """The lobes (LTRC values) and fissure lines inside the pleural cavity, around mediastinum, heart (``hq``),
        great vessels and spine -> (lobes, fissure mask, diaphragm height per side, normalised antero-posterior yn)."""
        g, p, z = self.g, self.p, self.g.zf
        zz = z[:, None, None]
        band = self.med_halfwidth(z)
        gv0, gv1, gvr = vessels
        ao_dil = splat_tubes(g, gv0, gv1, gvr + 4.0)
        inside = (self.lung_delta(z) < -1.5) & ~spine_keep[None] & (np.abs(x2)[None] > band)
        inside &= (hq > 1.25) & (ao_dil < 0.5)
        lobes = np.zeros(hu.shape, np.uint8)
        fissure = np.zeros(hu.shape, bool)
        half = 0.5 * max(g.dz_fine, 0.8)
        yn = self.yn()[None]  # (1, ny, 1)
        w = p.fissure_wave
        wave = (4.0 * np.sin(x2 / 31.0 + w[0]) * np.cos(y2 / 27.0 + w[1])
                + 3.0 * np.sin(y2 / 19.0 + w[2] + x2 / 45.0))[None].astype(np.float32)
        dph = {}
        for side in (-1, 1):
            d_s = self.diaphragm(side)
            dph[side] = d_s
            lung = inside & ((side * x2)[None] > 0) & (zz < self.apex(side)[None]) & (zz > d_s[None])
            base = p.z_base - (p.left_drop if side > 0 else 0.0)
            h = p.lung_height
            fa, fb = p.fissure_left if side > 0 else p.fissure_right
            z_obl = base + h * (fa + fb * yn) + wave
            lower = zz < z_obl
            cos_t = 1.0 / np.sqrt(1.0 + (h * fb / (self.bc_ant + self.bc_post)) ** 2)
            fissure |= lung & (np.abs(zz - z_obl) * cos_t < half)
            if side > 0:
                lab = np.where(lower, LLL, LUL)
            else:
                z_hor = base + h * (p.horizontal - 0.05 * yn) + 0.6 * wave
                lab = np.where(lower, RLL, np.where(zz < z_hor, RML, RUL))
                fissure |= lung & ~lower & (np.abs(zz - z_hor) < half)
            lobes[lung] = lab[lung]
        return lobes, fissure, dph, yn

    def _organs(self, hu, lobes, dph, y2, x2, delta, spine, hq, vessels) -> None:
        """Heart, pericardial fat, aorta, and the abdomen under the diaphragm (liver, stomach with its gas, spleen)
        painted into ``hu``; ``spine``: the 2-D spine mask the abdomen leaves out."""
        zz = self.g.zf[:, None, None]
        gv0, gv1, gvr = vessels
        ao = splat_tubes(self.g, gv0, gv1, gvr)
        heart = hq < 1.0
        hu[(hq < 1.25) & ~heart & (lobes == 0) & (delta < 0)[None]] = -95.0
        hu[heart] = 42.0
        hu[ao >= 0.5] = 40.0
        # abdomen below the diaphragm (either dome)
        d_max = np.where(x2 > 0, dph[1], dph[-1])[None]
        belly = (delta < 0)[None] & (zz < d_max) & ~np.broadcast_to(spine, hu.shape)
        hu[belly & (zz > d_max - 5)] = 48.0  # diaphragm muscle
        deep = belly & (zz <= d_max - 5)
        hu[deep] = 25.0
        liver = deep & (x2[None] < 45 - 0.3 * (y2[None] + 0)) & (zz > d_max - 160)
        hu[liver] = 60.0
        st_q = ((x2 - 0.5 * self.ac) / 50.0) ** 2 + ((y2 + 0.25 * self.bc_ant) / 40.0) ** 2
        stomach = deep & (st_q[None] < 1) & ~liver & (zz < d_max - 10)
        gas = stomach & ((((zz - d_max + 24.0) / 12.0) ** 2 + st_q[None] / 0.5) < 1)
        hu[stomach] = 15.0
        hu[gas] = -1000.0
        spl_q = ((x2 - 0.65 * self.ac) / 35.0) ** 2 + ((y2 - 0.55 * self.bc_post) / 35.0) ** 2
        hu[deep & (spl_q[None] < 1) & ~stomach] = 50.0

"""One synthetic chest CT with exact truth: :func:`generate_case` -> :class:`PhantomCase`.

Order of work (all on the fine grid, see :mod:`.grid`): thorax and lobes -> parenchyma (density gradient,
texture) -> emphysema (PLE lobules, CLE holes, PSE spaces) -> airway and vessel trees -> fissures -> scanner
(PSF, slice averaging, noise) -> labels on the output grid -> outcomes. Every random draw comes from
``SeedSequence(seed, spawn_key=(index,))`` so a case depends only on ``(seed, index, options)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from ...core import labels
from ...core.errors import InputError
from ...core.image import CTImage
from . import acquisition as clinical
from . import anatomy, emphysema, emphysema_v2, emphysema_v3, trees
from .fields import smooth_field
from .grid import Grid
from .outcomes import outcomes
from .render import splat_balls, splat_tubes
from .scanner import KERNELS, KERNELS_V2, NOISE_V2, acquire, downsample_labels

GENERATOR_VERSION = "3"  # the default; "1" and "2" stay reproducible (``PhantomOptions(generator="2")``)
GENERATORS = ("1", "2", "3")
EMPHYSEMA_MODELS = {"2": emphysema_v2, "3": emphysema_v3}  # the HRCT generators (version 1: inline below)
THICKNESSES = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
THICKNESS_P = (0.08, 0.22, 0.18, 0.17, 0.12, 0.08, 0.15)
THICKNESSES_V2 = (0.625, 0.75, 1.0, 1.25)  # versions 2 and 3 draw thin-section HRCT protocols
THICKNESS_P_V2 = (0.3, 0.2, 0.3, 0.2)
MATRIX_V2 = 512  # versions 2 and 3: default in-plane matrix (version 1: 256)
MAX_AIR_OFFSET = 100.0
MIN_HALF_WIDTH = 120.0  # mm: the smallest thorax the generator draws
MIN_LUNG_HEIGHT = 150.0


@dataclass(frozen=True)
class PhantomOptions:
    """What a cohort may fix; everything left ``None`` is drawn per case from the seed.

    size: (X, Y, Z) voxels (Z None = as many slices as the lungs need); spacing: in-plane mm; thickness: slice
    mm; kernel: soft | sharp | mixed; noise: HU std; healthy_fraction: share of cases without emphysema;
    subtypes: force these subtypes present (e.g. ``("cle", "pse", "ple")``); severity: force it (0..1);
    generator: "3" (default, realistic HRCT emphysema, docs/phantom.md and docs/realism.md), "2" (its
    predecessor) or "1" (the first generator); 1 and 2 are kept so old cohorts rebuild bit-identically;
    air_offset: HU added to the whole image, a miscalibrated scanner (air then reads about -1000 + offset;
    |offset| <= 100); acquisition: "standard" (default) or "clinical" (generators 2 and 3: real kernels with their
    noise texture incl. the sharp lung kernel, low dose, 0.6-5 mm slices, a stronger supine gradient, denser
    vessels; :mod:`.acquisition`, docs/acquisition.md)."""

    size: tuple[int, int, int | None] | None = None
    spacing: float | None = None
    thickness: float | None = None
    kernel: str = "mixed"
    noise: float | None = None
    healthy_fraction: float = 0.3
    subtypes: tuple[str, ...] | None = None
    severity: float | None = None
    vessel_points: int = 1400  # territory points per lung per tree
    generator: str = GENERATOR_VERSION
    air_offset: float = 0.0
    acquisition: str = "standard"

    def validate(self) -> PhantomOptions:
        if str(self.generator) not in GENERATORS:
            raise InputError(f"--generator {self.generator}: choose 1, 2 or 3")
        if not (abs(float(self.air_offset)) <= MAX_AIR_OFFSET):
            raise InputError(f"--air-offset {self.air_offset}: must be between -{MAX_AIR_OFFSET:.0f} and "
                             f"{MAX_AIR_OFFSET:.0f} HU")
        if self.size is not None:
            if len(self.size) != 3:
                raise InputError(f"--size needs three numbers X Y Z, got {self.size}")
            x, y, z = self.size
            if x < 32 or y < 32 or (z is not None and z < 16):
                raise InputError(f"--size {x} {y} {z}: too small (need X, Y >= 32 and Z >= 16 voxels)")
            if max(x, y, z or 0) > 1024:
                raise InputError(f"--size {x} {y} {z}: too large (at most 1024 voxels per axis)")
        if self.spacing is not None and not (0.3 <= self.spacing <= 4.0):
            raise InputError(f"--spacing {self.spacing}: impossible in-plane spacing (0.3-4 mm)")
        if self.thickness is not None and not (0.5 <= self.thickness <= 10.0):
            raise InputError(f"--thickness {self.thickness}: impossible slice thickness (0.5-10 mm)")
        if self.acquisition not in clinical.ACQUISITIONS:
            raise InputError(f"--acquisition {self.acquisition}: choose standard or clinical")
        if self.acquisition == "clinical" and str(self.generator) == "1":
            raise InputError("--acquisition clinical needs --generator 2 or 3")
        lung_ok = self.acquisition == "clinical"
        if self.kernel not in ("soft", "sharp", "mixed") + (("lung",) if lung_ok else ()):
            raise InputError(f"--kernel {self.kernel}: choose soft, sharp{', lung' if lung_ok else ''} or mixed")
        if self.noise is not None and not (0.0 <= self.noise <= 200.0):
            raise InputError(f"--noise {self.noise}: must be 0-200 HU")
        if not (0.0 <= self.healthy_fraction <= 1.0):
            raise InputError(f"--healthy-fraction {self.healthy_fraction}: must be between 0 and 1")
        if self.subtypes and not set(self.subtypes) <= set(emphysema.SUBTYPE_NAMES):
            raise InputError(f"subtypes {self.subtypes}: choose from cle, pse, ple")
        if self.severity is not None and not (0.0 < self.severity <= 1.0):
            raise InputError(f"severity {self.severity}: must be in (0, 1]")
        nx, ny = (self.size[0], self.size[1]) if self.size else (self.matrix(), self.matrix())
        if self.spacing is not None and self._max_half_width(nx, ny, self.spacing) < MIN_HALF_WIDTH:
            raise InputError(f"impossible spacing: a {nx * self.spacing:.0f} x {ny * self.spacing:.0f} mm field "
                             f"of view cannot hold a thorax (needs about {2 * MIN_HALF_WIDTH / 0.98:.0f} x "
                             f"{2 * (0.72 * MIN_HALF_WIDTH + 30):.0f} mm)")
        if self.size and self.size[2] and not self.thickness and self.size[2] * 10.0 - 40 < MIN_LUNG_HEIGHT:
            raise InputError(f"impossible slices: {self.size[2]} slices of at most 10 mm cannot hold the lungs "
                             f"(needs >= {MIN_LUNG_HEIGHT + 40:.0f} mm)")
        if self.size and self.size[2] and self.thickness:
            if self.size[2] * self.thickness - 40 < MIN_LUNG_HEIGHT:
                raise InputError(f"impossible slices: {self.size[2]} x {self.thickness} mm = "
                                 f"{self.size[2] * self.thickness:.0f} mm cannot hold the lungs "
                                 f"(needs >= {MIN_LUNG_HEIGHT + 40:.0f} mm)")
        return self

    def matrix(self) -> int:
        """Default in-plane matrix of this generator version."""
        return 256 if str(self.generator) == "1" else MATRIX_V2

    def meta_options(self) -> dict:
        """The options as recorded in meta.json (version 1 without an air offset records exactly what it always
        did, so old cohorts rebuild byte-identically)."""
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        if str(self.generator) == "1" and self.air_offset == 0:
            d.pop("generator")
            d.pop("air_offset")
        if self.acquisition == "standard":  # the default keeps the meta.json bytes of earlier cohorts
            d.pop("acquisition")
        return d

    @staticmethod
    def _max_half_width(nx: int, ny: int, sp: float) -> float:
        return min(0.49 * nx * sp, (0.5 * ny * sp - 30.0) / 0.72)


@dataclass
class PhantomCase:
    """A generated case: ``ct`` int16 HU, ``regions`` uint8 lobes 1-5, ``subtypes`` uint8 0-4 (CTImage each,
    same grid, LPS) and ``meta`` (every parameter, JSON-ready)."""

    ct: CTImage
    regions: CTImage
    subtypes: CTImage
    meta: dict


def case_rngs(seed: int, index: int, n: int = 8) -> list[np.random.Generator]:
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(index),))
    return [np.random.default_rng(s) for s in ss.spawn(n)]


def _plan(rng: np.random.Generator, o: PhantomOptions) -> tuple[Grid, float, float, str, float]:
    """Draw the protocol and the patient size -> (grid, half_width, lung_height, kernel, noise)."""
    hrct = str(o.generator) != "1"  # versions 2 and 3 share the HRCT protocol
    nx, ny = (o.size[0], o.size[1]) if o.size else (o.matrix(), o.matrix())
    nz = o.size[2] if o.size else None
    a = float(rng.uniform(140.0, 178.0))
    h = float(rng.uniform(215.0, 270.0))
    s_nom = float(rng.uniform(0.6, 0.9)) * 512.0 / nx
    t_draw = float(rng.choice(THICKNESSES_V2, p=THICKNESS_P_V2) if hrct else rng.choice(THICKNESSES, p=THICKNESS_P))
    k_draw = rng.uniform()
    n_draw = rng.uniform()
    if o.spacing is not None:
        sp = float(o.spacing)
        a = min(a, PhantomOptions._max_half_width(nx, ny, sp))
    else:
        sp = max(s_nom, 2.0 * a / (0.98 * nx), 2.0 * (0.72 * a + 30.0) / ny)
        sp = round(sp, 4)
    ext = h + 70.0
    if nz is not None and o.thickness is not None:
        t = float(o.thickness)
    elif nz is not None:
        t = round(min(10.0, max(0.5, ext / nz)), 4)
    else:
        t = float(o.thickness) if o.thickness is not None else t_draw
        nz = int(math.ceil(ext / t))
    fov_z = nz * t
    h = min(h, fov_z - 40.0)
    if h < MIN_LUNG_HEIGHT:
        raise InputError(f"impossible slices: {nz} x {t} mm = {fov_z:.0f} mm cannot hold the lungs")
    k = max(1, int(math.ceil(t / (1.6 * max(sp, 0.8)) - 1e-6)))
    grid = Grid(nx, ny, int(nz), sp, t, k, y_shift=0.0, z_top=fov_z / 2.0)
    kernel = o.kernel if o.kernel != "mixed" else ("sharp" if k_draw < 0.4 else "soft")
    if o.noise is not None:
        noise = float(o.noise)
    elif hrct:
        noise = NOISE_V2[kernel][0] + (NOISE_V2[kernel][1] - NOISE_V2[kernel][0]) * n_draw
    else:
        noise = 10.0 + 15.0 * n_draw if kernel == "soft" else 40.0 + 20.0 * n_draw
    return grid, a, h, kernel, round(noise, 2)


def generate_case(seed: int = 0, index: int = 0, options: PhantomOptions | None = None, healthy: bool | None = None,
                  **kwargs) -> PhantomCase:
    """Generate case ``index`` of the cohort ``seed``. ``options`` (or keyword arguments of
    :class:`PhantomOptions`) fix protocol or disease; ``healthy`` forces health (default: drawn with
    ``healthy_fraction``)."""
    o = (options or PhantomOptions(**kwargs)).validate()
    r_plan, r_pat, r_tex, r_dis, r_tree, r_scan, r_out, r_misc = case_rngs(seed, index)
    acq = _clinical(seed, index, o)
    grid, a, h, kernel, noise = _plan(r_plan, o if acq is None else _clinical_plan_options(o, acq))
    if acq is not None:
        kernel, noise = acq.kernel, acq.noise_hu
    p = anatomy.sample_patient(r_pat, a, h, (float(grid.zf[0]), float(grid.zf[-1])))
    th = anatomy.Thorax(grid, p)
    hu, lobes, info = th.build(r_pat)
    lung = lobes > 0
    z_base = {-1: p.z_base, 1: p.z_base - p.left_drop}
    em = EMPHYSEMA_MODELS.get(str(o.generator))  # None: version 1
    hrct = em is not None  # versions 2 and 3

    lung_idx = np.flatnonzero(lung)
    zi, yi, xi = np.unravel_index(lung_idx, lung.shape)
    lung_pts = np.stack([grid.zf[zi], grid.y[yi], grid.x[xi]], 1).astype(float)
    flat = hu.reshape(-1)
    if hrct:
        yn = info["yn"]
        paren = em.parenchyma(yn, smooth_field(r_tex, grid.fine_axes(), 4.0))
        flat[lung_idx] = np.broadcast_to(paren, hu.shape).reshape(-1)[lung_idx]
        del paren
        if acq is not None:  # the clinical draw's supine gradient instead of the generator's
            grad = np.broadcast_to(np.clip(yn, 0, 1) ** 1.5, hu.shape).reshape(-1)[lung_idx]
            flat[lung_idx] += np.float32(acq.gravity_hu - em.GRAVITY_HU) * grad
            del grad
        dis = _draw_disease(r_misc, r_dis, o, healthy)
        sub_flat, lob, ple_pt, dots, avascular = _disease_hrct(em, grid, lobes, flat, lung_idx, lung_pts, dis, r_dis,
                                                               z_base, p.lung_height)
    else:
        dots = avascular = None
        # parenchyma: -870 anterior to about -820 posterior (supine gravity gradient) plus fine texture
        yn = info["yn"]  # (1, ny, 1)
        tex = smooth_field(r_tex, grid.fine_axes(), 4.0)
        paren = (-898.0 + 72.0 * np.clip(yn, 0, 1) ** 1.5) + 20.0 * tex
        flat[lung_idx] = paren.reshape(-1)[lung_idx] if paren.shape == hu.shape else np.broadcast_to(
            paren, hu.shape).reshape(-1)[lung_idx]
        del tex, paren

        dis = _draw_disease(r_misc, r_dis, o, healthy)
        sub_flat, lob, ple_pt = _disease_v1(grid, lobes, flat, lung_idx, lung_pts, dis, r_dis, z_base, p.lung_height)

    # fissures (thin pleural lines)
    fis = info["fissure"]
    hu[fis] = np.maximum(hu[fis], em.FISSURE_HU if hrct else -760.0)

    # airway and vessel trees
    vess, wall, lumen = _trees(grid, th, lobes, r_tree, lob, ple_pt, lung_idx, o.vessel_points,
                               prune=(em.PLE_PRUNE_MM, em.PLE_THIN) if hrct else (1.3, 1.0),
                               vessel_scale=(em.VESSEL_SCALE if acq is None else acq.vessel_scale) if hrct else 1.0,
                               airway=(em.AIRWAY_MIN_R, *em.AIRWAY_WALL) if hrct else (0.9, 0.3, 0.18),
                               prune_in_region=hrct and em.PRUNE_IN_REGION)
    if dots is not None and len(dots):  # versions 2, 3: the centrilobular artery of each CLE lobule
        up = np.array([1.5, 0.0, 0.0])
        splat_tubes(grid, dots - up, dots + up, np.full(len(dots), 0.6), out=vess)
        vess = np.maximum(vess - lumen, 0)
    if avascular is not None:  # v3: no vessel crosses a bulla
        vess *= 1.0 - avascular.reshape(vess.shape)
    hu += (40.0 - hu) * vess
    hu += (30.0 - hu) * wall
    hu += (-1000.0 - hu) * lumen
    solid = (np.maximum(vess, wall) >= 0.5).reshape(-1)
    sub_flat[lung_idx[solid[lung_idx]]] = labels.NORMAL
    del vess, wall, lumen, solid

    if acq is None:
        ct = acquire(grid, hu, kernel, noise, r_scan, version="2" if hrct else "1", air_offset=float(o.air_offset))
    else:
        ct = clinical.acquire(grid, hu, acq, r_scan, air_offset=float(o.air_offset))
    del hu
    regions, subtypes = downsample_labels(grid, lobes, sub_flat.reshape(lobes.shape))
    meta = _meta(seed, index, o, grid, (kernel, noise, acq, hrct), p, dis, regions, subtypes, r_out)
    return PhantomCase(grid.image(ct), grid.image(regions), grid.image(subtypes), meta)


def _draw_disease(r_misc, r_dis, o: PhantomOptions, healthy: bool | None):
    """Healthy or not (drawn with ``healthy_fraction`` unless forced; never with forced subtypes), then the
    disease's severities."""
    healthy_case = (r_misc.uniform() < o.healthy_fraction) if healthy is None else healthy
    if o.subtypes:
        healthy_case = False
    return emphysema.sample_disease(r_dis, healthy_case, o.subtypes, o.severity)


def _disease_v1(grid, lobes, flat, lung_idx, lung_pts, dis, r_dis, z_base, height):
    """Version 1's emphysema painted into ``flat`` (HU, in place): PLE lobules, CLE holes, PSE spaces ->
    (subtype labels on the fine grid, flat; the lobules; the PLE mask over the lung points)."""
    sub_flat = np.zeros(lobes.size, np.uint8)
    sub_flat[lung_idx] = labels.NORMAL
    lob = emphysema.Lobules(r_dis, lung_pts.min(0), lung_pts.max(0), dis.lobule_mm)
    ple_pt, _ = emphysema.choose_ple(r_dis, lob, lung_pts, z_base, height, dis.ple)
    if ple_pt.any():
        ple_idx = lung_idx[ple_pt]
        depth = -982.0 - 15.0 * dis.ple
        flat[ple_idx] = depth + 0.25 * (flat[ple_idx] + 850.0)
        sub_flat[ple_idx] = labels.PLE
    c_cen, c_rad = emphysema.cle_holes(r_dis, lob, lung_pts, z_base, height, dis.cle)
    if len(c_cen):
        occ = splat_balls(grid, c_cen, c_rad, soft=0.5 * grid.spacing).reshape(-1)
        sel = lung_idx[occ[lung_idx] > 0]
        flat[sel] = flat[sel] * (1 - occ[sel]) + (-1010.0) * occ[sel]
        sub_flat[sel[occ[sel] >= 0.75]] = labels.CLE
        del occ
    s_cen, s_rad = emphysema.pse_spaces(r_dis, grid, lobes, z_base, height, dis.pse)
    if len(s_cen):
        outer = splat_balls(grid, s_cen, s_rad).reshape(-1)
        inner = splat_balls(grid, s_cen, np.maximum(s_rad - 0.9, 0.5)).reshape(-1)
        sel = lung_idx[outer[lung_idx] > 0]
        o_, i_ = outer[sel], inner[sel]
        flat[sel] = flat[sel] * (1 - o_) + (-620.0) * o_
        flat[sel] = flat[sel] * (1 - i_) + (-995.0) * i_
        sub_flat[sel[o_ >= 0.5]] = labels.PSE
        del outer, inner
    dis.counts = {"cle_holes": int(len(c_cen)), "pse_spaces": int(len(s_cen)),
                  "ple_lobules_voxels": int(ple_pt.sum())}
    return sub_flat, lob, ple_pt


def _meta(seed, index, o: PhantomOptions, grid, protocol, p, dis, regions, subtypes, r_out) -> dict:
    """``meta.json`` of a case: protocol, patient, disease, volumes and fractions (per lobe too), outcomes."""
    kernel, noise, acq, hrct = protocol
    fr = _fractions(subtypes)
    return {
        "generator": "drasclr.phantom", "generator_version": str(o.generator), "seed": int(seed),
        "index": int(index), "healthy": bool(dis.healthy),
        "protocol": {"size_xyz": [grid.nx, grid.ny, grid.nz], "spacing_mm": [grid.spacing, grid.spacing,
                     grid.thickness], "slice_thickness_mm": grid.thickness, "kernel": kernel, "noise_hu": noise,
                     "kernel_params": (KERNELS_V2 if hrct else KERNELS)[kernel] if acq is None else
                     {"fc_lpmm": acq.fc, "enhance": acq.enhance}, "fine_subslices": grid.k,
                     **({"acquisition": acq.to_dict()} if acq is not None else {}),
                     **({"air_offset_hu": float(o.air_offset)} if (hrct or o.air_offset) else {})},
        "patient": p.to_dict(),
        "disease": {"cle_severity": dis.cle, "pse_severity": dis.pse, "ple_severity": dis.ple,
                    "lobule_mm": round(dis.lobule_mm, 2), **dis.counts},
        "lung_volume_ml": round(float((regions > 0).sum()) * grid.spacing ** 2 * grid.thickness / 1000, 1),
        "fractions": {k: round(v, 5) for k, v in fr.items()},
        "lobe_voxels": {str(v): int((regions == v).sum()) for v in range(1, 6)},
        "lobe_fractions": {labels.LOBES[v]: {k: round(x, 5) for k, x in _fractions(subtypes[regions == v]).items()}
                           for v in range(1, 6)},
        "outcomes": outcomes(r_out, fr),
        "options": o.meta_options(),
    }


def _clinical(seed: int, index: int, o: PhantomOptions) -> clinical.Acquisition | None:
    """The clinical protocol draw of this case (None for the standard acquisition)."""
    if o.acquisition != "clinical":
        return None
    return clinical.draw(seed, index, o.kernel, o.noise)


def _clinical_plan_options(o: PhantomOptions, acq: clinical.Acquisition) -> PhantomOptions:
    """Options for :func:`_plan` that take the clinical slice thickness where the user fixed none."""
    z_fixed = o.size is not None and o.size[2] is not None
    kernel = "sharp" if o.kernel == "lung" else o.kernel
    return replace(o, kernel=kernel, thickness=o.thickness if (o.thickness is not None or z_fixed) else acq.thickness)


def _disease_hrct(em, grid: Grid, lobes, flat, lung_idx, lung_pts, dis, rng, z_base, height):
    """Generator version 2 or 3 emphysema (model ``em``: :mod:`.emphysema_v2` or :mod:`.emphysema_v3`) written
    into the fine-grid HU ``flat`` (in place): returns the fine-grid subtype labels, the lobule lattice, the PLE
    mask per lung point, the CLE lobule centres (central dots) and the fine-grid bullae-interior occupancy where
    the model makes bullae avascular (else None)."""
    sub_flat = np.zeros(flat.size, np.uint8)
    sub_flat[lung_idx] = labels.NORMAL
    lob = emphysema.Lobules(rng, lung_pts.min(0), lung_pts.max(0), dis.lobule_mm)
    ple_pt, _ = em.ple_lobules(rng, lob, lung_pts, z_base, height, dis.ple)
    if ple_pt.any():
        # homogeneous density loss over whole lobules, with soft borders (no box edges)
        m = np.zeros(flat.size, np.float32)
        m[lung_idx[ple_pt]] = 1.0
        sig = 1.2 / grid.fine_spacing_zyx()
        m = ndi.gaussian_filter(m.reshape(grid.fine_shape), sig, mode="nearest").reshape(-1)
        w = np.clip(1.6 * m[lung_idx], 0, 1)
        target = em.PLE_HU - 8.0 * dis.ple + em.PLE_TEXTURE * (flat[lung_idx] - em.PARENCHYMA_HU)
        flat[lung_idx] = flat[lung_idx] * (1 - w) + target * w
        sub_flat[lung_idx[ple_pt]] = labels.PLE
        del m, w, target
    c_cen, c_rad, c_dep, dots = em.cle_lesions(rng, lob, lung_pts, z_base, height, dis.cle)
    if len(c_cen):
        # ill-defined lucency: wide partial-volume ramp; depth scales the core's density loss
        soft = 2.2
        occ = np.zeros(grid.fine_shape, np.float32)
        for d in np.unique(np.round(c_dep, 1)):
            sel_d = np.round(c_dep, 1) == d
            occ = np.maximum(occ, d * splat_balls(grid, c_cen[sel_d], c_rad[sel_d], soft=soft))
        core = occ.reshape(-1)
        # faint halo of density loss over the affected lobule (graded, ill-defined)
        halo = splat_balls(grid, dots, np.full(len(dots), 0.35 * lob.L), soft=4.0).reshape(-1)
        occ = np.maximum(core, (em.CLE_HALO[0] + em.CLE_HALO[1] * dis.cle) * halo)
        del halo
        sel = lung_idx[occ[lung_idx] > 0]
        flat[sel] = flat[sel] * (1 - occ[sel]) + em.CLE_HU * occ[sel]
        sub_flat[sel[(core[sel] >= 0.45) & (sub_flat[sel] != labels.PLE)]] = labels.CLE
        del core
        del occ
    s_cen, s_rad = em.pse_bullae(rng, grid, lobes, z_base, height, dis.pse)
    avascular = None
    if len(s_cen):
        outer = splat_balls(grid, s_cen, s_rad).reshape(-1)
        inner = splat_balls(grid, s_cen, np.maximum(s_rad - em.PSE_WALL_MM, 0.5)).reshape(-1)
        sel = lung_idx[outer[lung_idx] > 0]
        o_, i_ = outer[sel], inner[sel]
        flat[sel] = flat[sel] * (1 - o_) + em.PSE_WALL_HU * o_
        flat[sel] = flat[sel] * (1 - i_) + em.PSE_AIR_HU * i_
        sub_flat[sel[o_ >= 0.5]] = labels.PSE
        if em.AVASCULAR_BULLAE:
            avascular = inner
        del outer, inner
    dis.counts = {"cle_lesions": int(len(c_cen)), "cle_lobules": int(len(dots)), "pse_bullae": int(len(s_cen)),
                  "ple_lobules_voxels": int(ple_pt.sum())}
    if not em.DOTS_IN_PLE and len(dots):  # no centrilobular artery is left to see inside panlobular emphysema
        dots = dots[sub_flat[_flat_of(grid, dots)] != labels.PLE]
    return sub_flat, lob, ple_pt, dots, avascular


def _fractions(subtypes: np.ndarray) -> dict[str, float]:
    counts = np.bincount(subtypes.reshape(-1), minlength=5)
    total = max(1, int(counts[1:].sum()))
    return {"normal": counts[1] / total, "cle": counts[2] / total, "pse": counts[3] / total,
            "ple": counts[4] / total}


def _trees(grid: Grid, th: anatomy.Thorax, lobes: np.ndarray, rng: np.random.Generator, lob, ple_pt, lung_idx,
           n_points: int, prune: tuple[float, float] = (1.3, 1.0), vessel_scale: float = 1.0,
           airway: tuple[float, float, float] = (0.9, 0.3, 0.18), prune_in_region: bool = False):
    """Occupancy volumes (vessels, airway wall, airway lumen) on the fine grid. ``prune = (radius, factor)``:
    inside panlobular lobules vessels thinner than ``radius`` mm are dropped and the others thinned by
    ``factor`` (``prune_in_region``: inside the panlobular region itself, every vessel point tested, else in
    every lattice cell that holds some of it); ``vessel_scale`` scales every vessel radius; ``airway = (r_min,
    a, b)``: airways are drawn from lumen radius ``r_min`` mm, with walls ``a + b * r`` mm thick."""
    p = th.p
    car = th.carina
    top = np.array([grid.zf[-1] + 5.0, car[1] + 4.0, 0.0])
    seg0, seg1, r_air = [top], [car], [8.5]
    vp0, vp1, vr = [], [], []
    lung_vol = {v: int((lobes[::2, ::2, ::2] == v).sum()) for v in range(1, 6)}
    for side, lobe_ids in ((-1, (anatomy.RUL, anatomy.RML, anatomy.RLL)), (1, (anatomy.LUL, anatomy.LLL))):
        hil = np.array([car[0] - (14.0 if side < 0 else 26.0), car[1] + 6.0, side * (p.med_width + 6.0)])
        seg0.append(car)
        seg1.append(hil)
        r_air.append(6.5 if side < 0 else 5.8)
        tot = sum(lung_vol[v] for v in lobe_ids)
        groups = [trees.sample_points(rng, grid, lobes, v, max(4, int(n_points * lung_vol[v] / max(tot, 1))))
                  for v in lobe_ids]
        t = trees.grow(hil, groups, r_root=5.5)
        vis = t["r"] >= airway[0]
        w = airway[1] + airway[2] * t["r"]
        r_a = 0.95 * t["r"]
        a0, a1 = trees.artery_beside(t, t["r"], w, r_a, vis)
        seg0 += list(t["p0"][vis])
        seg1 += list(t["p1"][vis])
        r_air += list(t["r"][vis])
        vp0.append(a0)
        vp1.append(a1)
        vr.append(r_a)
        # veins: own tree from the lower hilum (towards the left atrium)
        vhil = np.array([car[0] - 45.0, car[1] - 12.0, side * (p.med_width + 4.0)])
        vg = [trees.sample_points(rng, grid, lobes, v, max(4, int(0.8 * n_points * lung_vol[v] / max(tot, 1))))
              for v in lobe_ids]
        tv = trees.grow(vhil, [np.concatenate(vg)], r_root=6.0)
        vp0.append(tv["p0"])
        vp1.append(tv["p1"])
        vr.append(tv["r"])
    vp0, vp1, vr = np.concatenate(vp0), np.concatenate(vp1), np.concatenate(vr)
    from .render import tube_points

    pts, rad = tube_points(vp0, vp1, vr, min_step=0.5 * min(grid.spacing, grid.dz_fine))
    if vessel_scale != 1.0:
        rad = rad * vessel_scale
    if len(lung_idx) and ple_pt.any() and prune_in_region:  # prune vessels inside the panlobular region
        region = np.zeros(int(np.prod(grid.fine_shape)), bool)
        region[lung_idx[ple_pt]] = True
        inside = region[_flat_of(grid, pts)]
        del region
        drop = inside & (rad < prune[0])
        rad = np.where(inside, rad * prune[1], rad)
        pts, rad = pts[~drop], rad[~drop]
    elif len(lung_idx) and ple_pt.any():  # prune small vessels inside panlobular lobules
        small = rad < prune[0]
        keys = lob.key(pts[small])
        ple_keys = np.unique(lob.key(_pts_of(grid, lung_idx[ple_pt][:: max(1, int(ple_pt.sum()) // 100000)])))
        drop = np.zeros(len(pts), bool)
        drop[np.flatnonzero(small)[np.isin(keys, ple_keys)]] = True
        if prune[1] != 1.0:
            inside = np.isin(lob.key(pts), ple_keys)
            rad = np.where(inside, rad * prune[1], rad)
        pts, rad = pts[~drop], rad[~drop]
    vess = splat_balls(grid, pts, rad)
    a0, a1, ar = np.array(seg0), np.array(seg1), np.array(r_air)
    wall = splat_tubes(grid, a0, a1, ar + airway[1] + airway[2] * ar)
    lumen = splat_tubes(grid, a0, a1, ar)
    wall = np.maximum(wall - lumen, 0)
    vess = np.maximum(vess - lumen - wall, 0)
    return vess, wall, lumen


def _flat_of(grid: Grid, pts: np.ndarray) -> np.ndarray:
    """Fine-grid flat index of the voxel nearest to each point ``(N, 3)`` mm (z y x), clipped to the grid."""
    origin = np.array([grid.zf[0], grid.y[0], grid.x[0]])
    ijk = np.rint((pts - origin) / grid.fine_spacing_zyx()).astype(np.int64)
    ijk = np.clip(ijk, 0, np.array(grid.fine_shape) - 1)
    return np.ravel_multi_index(tuple(ijk.T), grid.fine_shape)


def _pts_of(grid: Grid, flat_idx: np.ndarray) -> np.ndarray:
    zi, yi, xi = np.unravel_index(flat_idx, grid.fine_shape)
    return np.stack([grid.zf[zi], grid.y[yi], grid.x[xi]], 1).astype(float)

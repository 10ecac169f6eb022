"""A follow-up series of one synthetic patient with exact truth (``drasclr phantom --followup N``).

The baseline is an ordinary case (:func:`~drasclr.research.phantom.case.generate_case`) rendered without noise.
Each later
scan starts from the previous one's noise-free image and labels on the baseline grid and adds:

- **progression** (cumulative, scaled by ``progression``; 0 = none): new CLE lesions (balls of 2.5-5 mm in normal
  lung, upper lobes first), enlarging CLE (existing CLE grows by about 1.5 mm), CLE turning confluent (CLE lesions
  closer than about 4 mm merge: the lung between them turns CLE), the largest CLE clusters (15 %) turning advanced
  destructive, panlobular-like (a subtype change, CLE -> PLE), and PLE spreading (the PLE region grows by about
  3 mm into its neighbours, CLE included);
- **a different inspiration level**: the whole image is deformed so that the lung volume changes by
  ``volume_change`` (anisotropic scaling about the lung centre, mostly cranio-caudal as the diaphragm moves, plus a
  smooth 2 mm perturbation), and lung voxels change density by mass conservation (the "sponge model":
  ``HU + 1000`` divided by the local volume ratio; solid voxels above -500 HU keep their density);
- optionally another kernel or noise level; then the scanner (PSF, kernel noise) of :mod:`.scanner`.

Truth written per scan: ``ct``, ``regions``, ``subtypes`` (on that scan's grid), ``meta.json``; for each follow-up
``landmarks.csv`` (exact baseline <-> follow-up point pairs, LPS mm) and on the baseline grid
``change_truth.nii.gz`` (the change map labels of :mod:`drasclr.followup.changemap`) and ``series.json`` with the
per-lobe truth of every scan.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ...core import labels
from ...core.errors import InputError
from ...core.image import CTImage, resample_to
from ...core.io import write_image
from ...core.outputs import staged_dir
from ...followup.changemap import change_labels
from . import emphysema_v3 as em
from .case import PhantomOptions, generate_case
from .grid import Grid
from .scanner import acquire

SOLID_HU = -500.0  # voxels above this are vessels/walls: they keep their density when the lung inflates
FIELD_MM = 4.0  # spacing of the deformation field


@dataclass(frozen=True)
class FollowupOptions:
    """``scans``: time points including the baseline; ``volume_change``: lung volume change of each follow-up vs
    the baseline (fraction, e.g. 0.15; default alternating +0.15, -0.12); ``progression``: size of the planted
    disease change per interval (0 = none: a pure inspiration change; 1 = default); ``kernel`` / ``noise``: the
    follow-ups' kernel and noise (default: the baseline's)."""

    scans: int = 2
    volume_change: tuple[float, ...] | None = None
    progression: float = 1.0
    kernel: str | None = None
    noise: float | None = None

    def validate(self) -> FollowupOptions:
        if not 2 <= self.scans <= 6:
            raise InputError(f"--followup {self.scans}: a series has 2 to 6 scans")
        if self.volume_change is not None:
            if len(self.volume_change) != self.scans - 1:
                raise InputError(f"--volume-change: give one value per follow-up scan ({self.scans - 1})")
            if any(not -0.3 <= v <= 0.3 for v in self.volume_change):
                raise InputError("--volume-change: each value must be between -0.3 and 0.3 (a fraction)")
        if not 0.0 <= self.progression <= 3.0:
            raise InputError(f"--progression {self.progression}: must be between 0 and 3")
        if self.kernel not in (None, "soft", "sharp"):
            raise InputError(f"--followup-kernel {self.kernel}: choose soft or sharp")
        if self.noise is not None and not 0.0 <= self.noise <= 200.0:
            raise InputError(f"--followup-noise {self.noise}: must be 0-200 HU")
        return self

    def changes(self) -> tuple[float, ...]:
        if self.volume_change is not None:
            return tuple(float(v) for v in self.volume_change)
        return tuple(0.15 if k % 2 == 0 else -0.12 for k in range(self.scans - 1))


@dataclass
class Scan:
    ct: CTImage
    regions: CTImage
    subtypes: CTImage
    meta: dict
    landmarks: np.ndarray | None = None  # (N, 6): baseline x y z, follow-up x y z (LPS mm)


def _balls(shape, spacing_zyx, centres, radii) -> np.ndarray:
    """Occupancy ``(Z, Y, X)`` float32 of balls (voxel centres ``(N, 3)`` z y x index, radii mm), soft 1-voxel
    edge."""
    occ = np.zeros(shape, np.float32)
    sp = np.asarray(spacing_zyx)
    for c, r in zip(centres, radii):
        h = np.ceil((r + 1.5 * sp.max()) / sp).astype(int)
        lo = np.maximum(c - h, 0)
        hi = np.minimum(c + h + 1, shape)
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        d = np.sqrt(((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + ((xx - c[2]) * sp[2]) ** 2)
        o = np.clip(r + 0.5 * sp.min() - d, 0, sp.min()) / sp.min()
        box = occ[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        np.maximum(box, o, out=box)
    return occ


def progress_disease(hu: np.ndarray, sub: np.ndarray, lobes: np.ndarray, spacing_zyx, rng: np.random.Generator,
                     amount: float) -> tuple[np.ndarray, np.ndarray]:
    """One interval of progression on noise-free HU and subtype labels (output grid) -> new (hu, sub)."""
    hu, sub = hu.astype(np.float32).copy(), sub.copy()
    if amount <= 0:
        return hu, sub
    sp = np.asarray(spacing_zyx, float)
    soft_lung = (sub > 0) & (hu < SOLID_HU)
    # new CLE lesions in normal lung away from existing emphysema, upper lobes three times as likely
    emph = sub >= labels.CLE
    far = ndi.distance_transform_edt(~emph, sampling=sp) > 6.0
    cand = np.argwhere(soft_lung & (sub == labels.NORMAL) & far)
    if len(cand):
        w = np.where(np.isin(lobes[tuple(cand.T)], (1, 3)), 3.0, 1.0)
        n = int(round(amount * max(4, min(40, lobes.size // 40000))))
        pick = cand[rng.choice(len(cand), size=min(n, len(cand)), replace=False, p=w / w.sum())]
        occ = _balls(hu.shape, sp, pick, rng.uniform(2.5, 5.0, len(pick)) * min(1.0, amount) ** 0.3)
        _set(hu, sub, soft_lung & (occ > 0), occ, em.CLE_HU, labels.CLE)
    # enlarging CLE and CLE turning confluent
    cle = sub == labels.CLE
    grow = cle | (ndi.distance_transform_edt(~cle, sampling=sp) <= 1.5 * amount)
    confluent = ndi.binary_closing(cle, ndi.generate_binary_structure(3, 1), iterations=max(1, int(round(
        2.0 * amount / sp.min()))))
    add = (grow | confluent) & ~cle & soft_lung & (sub == labels.NORMAL)
    _set(hu, sub, add, np.ones_like(hu), em.CLE_HU, labels.CLE)
    # the largest CLE clusters turn advanced destructive (panlobular-like): a subtype change
    comp, n = ndi.label(sub == labels.CLE)
    if n:
        sizes = np.bincount(comp.reshape(-1))[1:]
        top = np.argsort(sizes)[::-1][: max(1, int(round(0.15 * amount * n)))] + 1
        _set(hu, sub, np.isin(comp, top), np.full(hu.shape, 0.5, np.float32), em.PLE_HU, labels.CLE)
        sub[np.isin(comp, top)] = labels.PLE
    # PLE spreading into its neighbours (CLE there becomes PLE)
    ple = sub == labels.PLE
    if ple.any():
        near = (ndi.distance_transform_edt(~ple, sampling=sp) <= 3.0 * amount) & ~ple & soft_lung
        target = em.PLE_HU + em.PLE_TEXTURE * (hu - em.PARENCHYMA_HU)
        hu[near] = np.minimum(hu[near], target[near])
        sub[near] = labels.PLE
    return hu, sub


def _set(hu, sub, mask, occ, value, label) -> None:
    hu[mask] = hu[mask] * (1 - occ[mask]) + value * occ[mask]
    sub[mask & (occ >= 0.5)] = label


def _inspiration(base: CTImage, lung: np.ndarray, change: float, rng: np.random.Generator) -> sitk.Transform:
    """Transform mapping follow-up points to baseline points (what resampling the follow-up needs): the lung
    volume changes by ``1 + change`` (z takes 60 % of the log-change, y 25 %, x 15 %) plus a smooth perturbation."""
    idx = np.argwhere(lung).mean(0)[::-1]
    centre = np.asarray(base.origin) + base.direction @ (idx * np.asarray(base.spacing))
    logv = np.log1p(change)
    scale = np.exp(logv * np.array([0.15, 0.25, 0.60]))  # x, y, z: follow-up = centre + scale * (base - centre)
    aff = sitk.AffineTransform(3)
    aff.SetCenter(tuple(centre))
    aff.SetMatrix(tuple(np.diag(1.0 / scale).ravel()))
    ref = sitk.Image([max(2, int(np.ceil(n * s / FIELD_MM))) for n, s in zip(base.shape_xyz, base.spacing)],
                     sitk.sitkVectorFloat64, 3)
    ref.SetSpacing((FIELD_MM,) * 3)
    ref.SetOrigin(base.origin)
    ref.SetDirection(tuple(base.direction.ravel()))
    zz, yy, xx = np.meshgrid(*[np.arange(n) * FIELD_MM for n in ref.GetSize()[::-1]], indexing="ij")
    disp = np.zeros((*zz.shape, 3))
    for axis in range(3):  # one low-frequency sine per axis, 2 mm amplitude
        k = rng.uniform(0.5, 1.0, 3) * 2 * np.pi / 300.0
        phase = rng.uniform(0, 2 * np.pi, 3)
        disp[..., axis] = 2.0 * np.sin(k[0] * xx + phase[0]) * np.sin(k[1] * yy + phase[1]) * np.sin(
            k[2] * zz + phase[2])
    field = sitk.GetImageFromArray(disp, isVector=True)
    field.CopyInformation(ref)
    smooth = sitk.DisplacementFieldTransform(field)
    return sitk.CompositeTransform([aff, smooth])  # smooth first, then the affine (ITK applies the last first)


def _volume_ratio(transform: sitk.Transform, reference: CTImage) -> np.ndarray:
    """Local follow-up/baseline volume ratio on ``reference``'s grid: 1 / det of the follow-up -> baseline map."""
    ref = sitk.Image([max(2, int(np.ceil(n * s / FIELD_MM))) for n, s in zip(reference.shape_xyz,
                                                                            reference.spacing)], sitk.sitkFloat32)
    ref.SetSpacing((FIELD_MM,) * 3)
    ref.SetOrigin(reference.origin)
    ref.SetDirection(tuple(reference.direction.ravel()))
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, ref.GetSize(), ref.GetOrigin(),
                                              ref.GetSpacing(), ref.GetDirection())
    det = sitk.DisplacementFieldJacobianDeterminant(field)
    full = CTImage.from_sitk(det)

    return 1.0 / np.maximum(resample_to(full, reference, 1.0, sitk.sitkLinear).array, 1e-3)


def deform(img: CTImage, hu: np.ndarray, sub: np.ndarray, lobes: np.ndarray, transform: sitk.Transform):
    """Noise-free HU and labels of the baseline grid -> the follow-up (same grid, deformed; sponge-model
    density)."""
    ref = img.to_sitk()

    def warp(a, interp, default):
        moving = img.with_array(a).to_sitk()
        # outside the baseline's field of view the edge continues (a shrinking lung would otherwise pull air slabs
        # in at the image edges)
        return sitk.GetArrayFromImage(sitk.Resample(moving, ref, transform, interp, default, moving.GetPixelID(),
                                                    useNearestNeighborExtrapolator=True))

    # nearest neighbour: linear interpolation would mix chest wall into the (nearest-neighbour) lung border voxels
    hu_f = warp(hu.astype(np.float32), sitk.sitkNearestNeighbor, -1000.0)
    sub_f = warp(sub, sitk.sitkNearestNeighbor, 0)
    lobes_f = warp(lobes, sitk.sitkNearestNeighbor, 0)
    ratio = _volume_ratio(transform, img)
    air = (sub_f > 0) & (hu_f < SOLID_HU)
    hu_f[air] = (hu_f[air] + 1000.0) / ratio[air] - 1000.0
    return hu_f, sub_f, lobes_f


def _landmarks(img: CTImage, lung: np.ndarray, transform: sitk.Transform, rng, n: int = 200) -> np.ndarray:
    """Exact pairs: follow-up lung points ``y`` and the baseline points ``x = T(y)`` they come from."""
    idx = np.argwhere(lung)
    pick = idx[rng.choice(len(idx), size=min(n, len(idx)), replace=False)][:, ::-1].astype(float)
    pts = np.asarray(img.origin) + pick * np.asarray(img.spacing) @ img.direction.T
    base = np.array([transform.TransformPoint(tuple(p)) for p in pts])
    return np.concatenate([base, pts], 1)


def _acquire(img: CTImage, hu: np.ndarray, kernel: str, noise: float, rng) -> np.ndarray:
    nz, ny, nx = hu.shape
    grid = Grid(nx, ny, nz, float(img.spacing[0]), float(img.spacing[2]), 1)
    return acquire(grid, hu.astype(np.float32), kernel, noise, rng, version="2")


def _lobe_truth(sub: np.ndarray, lobes: np.ndarray, voxel_ml: float) -> dict:
    out = {}
    for name, mask in [*((labels.LOBES[v], lobes == v) for v in range(1, 6)), ("whole_lung", lobes > 0)]:
        n = max(1, int(mask.sum()))
        counts = np.bincount(sub[mask].astype(np.int64), minlength=5)
        out[name] = {"volume_ml": round(n * voxel_ml, 2),
                     **{f"{k}_pct": round(100.0 * counts[v] / n, 4) for v, k in labels.SUBTYPES.items()},
                     "emphysema_pct": round(100.0 * counts[2:].sum() / n, 4)}
    return out


def generate_series(seed: int, options: PhantomOptions, follow: FollowupOptions, index: int = 0) -> list[Scan]:
    """The baseline and its follow-ups (see the module docstring)."""
    follow = follow.validate()
    if str(options.generator) == "1":
        raise InputError("--followup needs generator 2 or 3")
    quiet = dataclasses.replace(options, noise=0.0, healthy_fraction=0.0)
    case = generate_case(seed, index, quiet)
    seeds = np.random.SeedSequence([int(seed), int(index), 31]).spawn(3 * follow.scans)
    rngs = [np.random.default_rng(s) for s in seeds]
    img, kernel, noise = case.ct, case.meta["protocol"]["kernel"], float(options.noise if options.noise is not None
                                                                             else 18.0)
    hu, sub, lobes = case.ct.array.astype(np.float32), case.subtypes.array, case.regions.array
    base_meta = {**case.meta, "followup": {"scan": 0, "volume_change": 0.0, "kernel": kernel, "noise_hu": noise}}
    base_meta["lobe_truth"] = _lobe_truth(sub, lobes, img.voxel_volume_ml)
    scans = [Scan(img.with_array(_acquire(img, hu, kernel, noise, rngs[0])), case.regions, case.subtypes, base_meta)]
    for k, change in enumerate(follow.changes(), start=1):
        hu, sub = progress_disease(hu, sub, lobes, img.spacing[::-1], rngs[3 * k], follow.progression)
        t = _inspiration(img, lobes > 0, change, rngs[3 * k + 1])
        hu_f, sub_f, lobes_f = deform(img, hu, sub, lobes, t)
        k_kernel, k_noise = follow.kernel or kernel, follow.noise if follow.noise is not None else noise
        ct = img.with_array(_acquire(img, hu_f, k_kernel, k_noise, rngs[3 * k + 2]))
        meta = {"followup": {"scan": k, "volume_change": change, "progression": follow.progression,
                             "kernel": k_kernel, "noise_hu": k_noise},
                "lobe_truth": _lobe_truth(sub_f, lobes_f, img.voxel_volume_ml),
                "lung_volume_ml": round(float((lobes_f > 0).sum()) * img.voxel_volume_ml, 1)}
        scans.append(Scan(ct, img.with_array(lobes_f), img.with_array(sub_f), meta,
                          _landmarks(img, lobes_f > 0, t, rngs[3 * k + 2])))
        scans[-1].meta["change_truth"] = _change_truth(scans[0].subtypes.array, sub)
    return scans


def _change_truth(base: np.ndarray, later: np.ndarray) -> np.ndarray:
    return change_labels(base, later, base > 0)


def write_series(out: str | os.PathLike, seed: int, options: PhantomOptions, follow: FollowupOptions,
                 index: int = 0) -> list[dict]:
    """Write ``out/scan_K/{ct,regions,subtypes}.nii.gz + meta.json`` (+ ``landmarks.csv``,
    ``change_truth.nii.gz`` for K >= 1) and ``out/series.json``; returns the metas."""
    scans = generate_series(seed, options, follow, index)
    out = Path(out)
    with staged_dir(out) as tmp:
        metas = []
        for k, s in enumerate(scans):
            d = tmp / f"scan_{k}"
            d.mkdir()
            write_image(s.ct, d / "ct.nii.gz", dtype=np.int16)
            write_image(s.regions, d / "regions.nii.gz", dtype=np.uint8)
            write_image(s.subtypes, d / "subtypes.nii.gz", dtype=np.uint8)
            change = s.meta.pop("change_truth", None)
            if change is not None:
                write_image(scans[0].ct.with_array(change), d / "change_truth.nii.gz", dtype=np.uint8)
            if s.landmarks is not None:
                np.savetxt(d / "landmarks.csv", s.landmarks, fmt="%.3f", delimiter=",", comments="",
                           header="base_x,base_y,base_z,followup_x,followup_y,followup_z")
            (d / "meta.json").write_text(json.dumps(s.meta, indent=1, sort_keys=True, default=float) + "\n")
            metas.append(s.meta)
        series = {"seed": seed, "index": index, "options": options.meta_options(),
                  "followup": {**dataclasses.asdict(follow), "volume_change": list(follow.changes())},
                  "scans": [{"folder": f"scan_{k}", **m["followup"], "lobe_truth": m["lobe_truth"]}
                            for k, m in enumerate(metas)]}
        (tmp / "series.json").write_text(json.dumps(series, indent=1, default=float) + "\n")
    return metas

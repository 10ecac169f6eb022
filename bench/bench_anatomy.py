"""Anatomy benchmark: lung-mask Dice on phantoms, timings on a real CT, registration accuracy and coverage.

    PYTHONPATH=$PWD/DrasCLRSlicer .venv/bin/python bench/bench_anatomy.py [--phantoms N] [--seed S]
        [--real ../shared/data/real] [--skip-phantoms] [--skip-real]

Prints plain lines (copy them into docs/anatomy.md):
- phantom Dice of ``segment_lungs`` against ``regions > 0`` over N generated cases (every scanner setting the
  generator draws: slice thickness 0.625-5 mm, soft/sharp kernel, noise), with per-side Dice and time;
- affine-consistency error: each phantom CT is also warped by a known affine A (rotation ≤ 8°, scale 0.9-1.1,
  shift ≤ 20 mm), both versions are masked and registered; for the atlas patch centres p the error is
  |T_warped(p) - A·T_original(p)| in mm (median and 95th percentile);
- on each real CT: lung-mask time and volumes, registration time, and the share of atlas patch centres that map
  inside the subject's lung mask (all centres, and centres that lie inside the atlas lung itself);
- lidc_idri_0001 resampled to 512×512×300: lung-mask and registration time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from drasclr.anatomy.atlas import load_atlas
from drasclr.anatomy.coords import atlas_centres_in_subject
from drasclr.anatomy.lungs import segment_lungs
from drasclr.anatomy.registration import register_to_atlas
from drasclr.core.image import CTImage
from drasclr.core.io import read_ct


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / s) if s else 1.0


def random_affine(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """4×4 LPS affine: rotation ≤ 8° per axis, scale 0.9–1.1 per axis, shift ≤ 20 mm, about ``centre``."""
    ang = np.radians(rng.uniform(-8, 8, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = rz @ ry @ rx @ np.diag(rng.uniform(0.9, 1.1, 3))
    a = np.eye(4)
    a[:3, :3] = m
    a[:3, 3] = centre - m @ centre + rng.uniform(-20, 20, 3)
    return a


def warp_ct(ct: CTImage, a: np.ndarray) -> CTImage:
    """The CT as seen after the body moved by ``a`` (subject point p -> a·p), on the same grid."""
    inv = np.linalg.inv(a)
    t = sitk.AffineTransform(3)
    t.SetMatrix(tuple(inv[:3, :3].ravel()))
    t.SetTranslation(tuple(inv[:3, 3]))
    img = ct.to_sitk()
    out = sitk.Resample(img, img, t, sitk.sitkLinear, -2048.0, img.GetPixelID())  # padding, not air
    return CTImage.from_sitk(out)


def centres_inside(lungs: CTImage, centres_lps: np.ndarray) -> np.ndarray:
    ijk = np.round(lungs.lps_to_index(centres_lps)).astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.array(lungs.shape_xyz)), axis=1)
    inside = np.zeros(len(ijk), bool)
    inside[ok] = lungs.array[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]] > 0
    return inside


def bench_phantoms(n: int, seed: int) -> None:
    from drasclr.research.phantom import generate_case

    atlas = load_atlas()
    centres = atlas.grid_image.index_to_lps(atlas.centres[:, ::-1])
    rng = np.random.default_rng(seed)
    dices, errs = [], []
    for i in range(n):
        case = generate_case(seed=seed, index=i)
        truth = case.regions.array > 0
        t0 = time.perf_counter()
        lungs = segment_lungs(case.ct)
        dt = time.perf_counter() - t0
        d = dice(lungs.array > 0, truth)
        right = dice(lungs.array == 1, np.isin(case.regions.array, (3, 4, 5)))
        left = dice(lungs.array == 2, np.isin(case.regions.array, (1, 2)))
        dices.append(d)
        p = case.meta["protocol"]
        sp = p["spacing_mm"]
        line = (f"phantom {i:2d} size {tuple(p['size_xyz'])} spacing {sp[0]:.2f}x{sp[2]:.3g} mm "
                f"kernel {p['kernel']:5s} noise {p['noise_hu']:5.1f}  dice {d:.4f} (right {right:.4f}, left {left:.4f})"
                f"  mask {dt:.1f}s")
        if i < max(5, n // 4):  # affine consistency on a subset (each needs a second mask + two registrations)
            centre = np.asarray(case.ct.index_to_lps(np.array(case.ct.shape_xyz) / 2.0))[0]
            a = random_affine(rng, centre)
            warped = warp_ct(case.ct, a)
            t_orig = register_to_atlas(lungs, atlas)
            t_warp = register_to_atlas(segment_lungs(warped), atlas)
            pred = t_warp.atlas_to_subject(centres)
            true = t_orig.atlas_to_subject(centres) @ a[:3, :3].T + a[:3, 3]
            e = np.linalg.norm(pred - true, axis=1)
            errs.append(e)
            line += f"  affine error median {np.median(e):.2f} mm p95 {np.percentile(e, 95):.2f} mm"
        print(line, flush=True)
    print(f"PHANTOM DICE over {n} cases: mean {np.mean(dices):.4f} min {np.min(dices):.4f} "
          f"(cases >= 0.98: {sum(d >= 0.98 for d in dices)}/{n})")
    if errs:
        e = np.concatenate(errs)
        print(f"AFFINE LOCATION ERROR over {len(errs)} warped phantoms x {len(centres)} atlas centres: "
              f"median {np.median(e):.2f} mm, p95 {np.percentile(e, 95):.2f} mm, max {e.max():.2f} mm")


def bench_real(folder: Path) -> None:
    atlas = load_atlas()
    g = atlas.grid_image.array
    c = atlas.centres.astype(int)
    self_in = g[c[:, 0], c[:, 1], c[:, 2]] > 0
    print(f"atlas: {len(atlas)} locations (threshold {atlas.threshold}); "
          f"{self_in.mean() * 100:.1f}% of their centres lie inside the atlas lung")
    for path in sorted(folder.glob("*.nii.gz")):
        ct = read_ct(path)
        t0 = time.perf_counter()
        lungs = segment_lungs(ct)
        t_mask = time.perf_counter() - t0
        vol = [(lungs.array == v).sum() * ct.voxel_volume_ml for v in (1, 2)]
        t0 = time.perf_counter()
        tr = register_to_atlas(lungs, atlas)
        t_reg = time.perf_counter() - t0
        inside = centres_inside(lungs, atlas_centres_in_subject(tr, atlas))
        print(f"{path.name}: mask {t_mask:.1f}s right {vol[0]:.0f} ml left {vol[1]:.0f} ml; register {t_reg:.1f}s; "
              f"atlas centres inside lung: all {inside.mean() * 100:.1f}%, "
              f"of those inside the atlas lung {inside[self_in].mean() * 100:.1f}%")
    lidc = folder / "lidc_idri_0001.nii.gz"
    if lidc.exists():
        ct = read_ct(lidc)
        img = ct.to_sitk()
        size = list(img.GetSize())
        spacing = list(img.GetSpacing())
        spacing[2] = spacing[2] * size[2] / 300.0
        size[2] = 300
        big = CTImage.from_sitk(sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(),
                                              spacing, img.GetDirection(), -2048, img.GetPixelID()))
        t0 = time.perf_counter()
        lungs = segment_lungs(big)
        t_mask = time.perf_counter() - t0
        t0 = time.perf_counter()
        register_to_atlas(lungs, atlas)
        t_reg = time.perf_counter() - t0
        print(f"lidc_idri_0001 resampled to {big.shape_xyz}: mask {t_mask:.1f}s, register {t_reg:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--real", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"))
    ap.add_argument("--skip-phantoms", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    load_atlas()
    print(f"atlas load + location grid: {time.perf_counter() - t0:.1f}s")
    if not args.skip_real and Path(args.real).is_dir():
        bench_real(Path(args.real))
    if not args.skip_phantoms:
        bench_phantoms(args.phantoms, args.seed)


if __name__ == "__main__":
    main()

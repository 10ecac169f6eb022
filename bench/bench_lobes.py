"""Lobe estimation benchmark: accuracy on phantoms (atlas only vs atlas + fissures), real CTs, time.

    PYTHONPATH=$PWD/DrasCLRSlicer .venv/bin/python bench/bench_lobes.py phantoms PHANTOM_DIR [PHANTOM_DIR ...]
        [--json OUT.json]
    PYTHONPATH=$PWD/DrasCLRSlicer .venv/bin/python bench/bench_lobes.py real ../shared/data/real [--images docs/images]
    PYTHONPATH=$PWD/DrasCLRSlicer .venv/bin/python bench/bench_lobes.py time ../shared/data/real/lidc_idri_0001.nii.gz

``phantoms``: any folder of ``case_*/{ct,regions}.nii.gz`` (``drasclr phantom`` output, any generator version):
the lung mask is computed from the CT (as ``analyze`` does), lobes estimated both ways, and compared with the
truth in ``regions.nii.gz``: Dice per lobe and the symmetric mean surface distance of each fissure (mm).
``real``: lobe volume fractions of each real CT beside adult norms, coronal/sagittal overlays (PNG).
``time``: wall time of lung mask and of each lobe step on one CT, and the CPU seconds of both (all threads of
the process: on a shared machine the load-independent number; best of ``--repeat`` runs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from drasclr.anatomy.lobes import estimate_lobes
from drasclr.anatomy.lobes.metrics import dice_per_lobe, fissure_distances
from drasclr.anatomy.lungs import segment_lungs
from drasclr.core import labels
from drasclr.core.io import read_ct, read_image

METHODS = ("atlas", "atlas+fissures")
# Adult lobe volume fractions (% of total lung volume): CT at deep inspiration, supine, 32 healthy volunteers,
# Yamada et al., Respiration 2020;99:598-605, doi:10.1159/000507265, table 3 (mean; SD 1.6-2.6 points)
NORMS = {"left_upper_lobe": 23.1, "left_lower_lobe": 23.2, "right_upper_lobe": 17.9, "right_middle_lobe": 9.3,
         "right_lower_lobe": 26.5}


def eval_case(case: Path, search_mm: float | None = None) -> dict:
    ct = read_ct(case / "ct.nii.gz")
    truth = read_image(case / "regions.nii.gz").array.astype(np.uint8)
    lungs = segment_lungs(ct)
    spacing_zyx = ct.spacing[::-1]
    box = ndimage.find_objects(((truth > 0) | (lungs.array > 0)).astype(np.uint8))[0]  # metrics in the lungs' box
    row = {"case": case.name}
    affine = None
    for method in METHODS:
        t0 = time.perf_counter()
        kw = {} if search_mm is None else {"search_mm": search_mm}
        est = estimate_lobes(ct, lungs, method=method, affine=affine, **kw)
        affine = est.affine
        pred = est.lobes.array[box]
        row[method] = {"dice": dice_per_lobe(pred, truth[box]),
                       "fissure_mm": fissure_distances(pred, truth[box], spacing_zyx),
                       "problems": est.problems, "seconds": round(time.perf_counter() - t0, 2)}
    return row


def summarise(rows: list[dict]) -> None:
    for method in METHODS:
        dice = np.array([[r[method]["dice"][n] for n in labels.LOBES.values()] for r in rows])
        fis = np.array([[r[method]["fissure_mm"][n] for n in ("left_oblique", "right_oblique", "right_horizontal")]
                        for r in rows])
        print(f"== {method}: {len(rows)} cases")
        print("  Dice per lobe (mean / min): " + ", ".join(
            f"{n} {np.nanmean(dice[:, i]):.3f}/{np.nanmin(dice[:, i]):.3f}"
            for i, n in enumerate(labels.LOBES.values())))
        print(f"  mean lobe Dice {np.nanmean(dice):.3f}; worst case mean {np.nanmin(np.nanmean(dice, 1)):.3f}")
        print("  fissure mean surface distance mm (mean / max): " + ", ".join(
            f"{n} {np.nanmean(fis[:, i]):.2f}/{np.nanmax(fis[:, i]):.2f}"
            for i, n in enumerate(("left_oblique", "right_oblique", "right_horizontal"))))
        print(f"  all fissures mean {np.nanmean(fis):.2f} mm; cases with problems: "
              f"{sum(bool(r[method]['problems']) for r in rows)}")


def cmd_phantoms(args) -> None:
    cases = sorted(p for d in args.folders for p in Path(d).glob("case_*") if (p / "regions.nii.gz").exists())
    rows = []
    for case in cases:
        row = eval_case(case, args.search_mm)
        rows.append(row)
        print(f"{case.parent.name}/{case.name}: " + "  ".join(
            f"{m}: Dice {np.nanmean(list(row[m]['dice'].values())):.3f} "
            f"fissure {np.nanmean(list(row[m]['fissure_mm'].values())):.2f} mm ({row[m]['seconds']} s)"
            for m in METHODS), flush=True)
    summarise(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def overlay(ct, lobes, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    a = np.clip(ct.array.astype(np.float32), -1350, 150)
    lab = lobes.array
    zz, yy, xx = np.nonzero(lab)
    y = int(np.median(yy))  # coronal through the middle of the lungs
    x_right = int(np.median(xx[lab[zz, yy, xx] >= 3]))  # sagittal through each lung
    x_left = int(np.median(xx[lab[zz, yy, xx] <= 2]))
    colors = ListedColormap([(0, 0, 0, 0), (0.95, 0.8, 0.1, 1), (0.2, 0.8, 0.3, 1), (0.9, 0.3, 0.3, 1),
                             (0.3, 0.6, 1.0, 1), (0.8, 0.4, 0.9, 1)])
    sx, sy, sz = ct.spacing
    views = [("coronal", a[:, y, :], lab[:, y, :], sz / sx), ("sagittal right", a[:, :, x_right],
             lab[:, :, x_right], sz / sy), ("sagittal left", a[:, :, x_left], lab[:, :, x_left], sz / sy)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    for col, (name, img, lb, aspect) in enumerate(views):
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", origin="lower", aspect=aspect)
            if row == 1:
                ax.imshow(np.ma.masked_equal(lb, 0), cmap=colors, vmin=0, vmax=5, origin="lower",
                          aspect=aspect, alpha=0.35, interpolation="nearest")
                edges = np.zeros(lb.shape, bool)  # lobe borders (the estimated fissures) as lines
                edges[1:, :] |= (lb[1:, :] != lb[:-1, :]) & (lb[1:, :] > 0) & (lb[:-1, :] > 0)
                edges[:, 1:] |= (lb[:, 1:] != lb[:, :-1]) & (lb[:, 1:] > 0) & (lb[:, :-1] > 0)
                ax.imshow(np.ma.masked_equal(edges.astype(float), 0), cmap=ListedColormap(["red"]),
                          origin="lower", aspect=aspect, interpolation="nearest")
            ax.set_title(f"{name}{' + lobes' if row else ''}")
            ax.axis("off")
    fig.suptitle(f"{title}: LUL yellow, LLL green, RUL red, RML blue, RLL purple; borders red")
    fig.tight_layout()
    fig.savefig(out, dpi=70)
    plt.close(fig)


def cmd_real(args) -> None:
    files = sorted(p for p in Path(args.folder).glob("*.nii.gz") if not p.name.endswith("_lungs.nii.gz"))
    print("| CT | " + " | ".join(NORMS) + " | problems | lobe time |")
    print("|---|" + "---|" * (len(NORMS) + 2))
    print("| adult norm | " + " | ".join(f"{v:.1f}" for v in NORMS.values()) + " | | |")
    for path in files:
        ct = read_ct(path)
        lungs = segment_lungs(ct)
        t0 = time.perf_counter()
        est = estimate_lobes(ct, lungs)
        sec = time.perf_counter() - t0
        counts = np.bincount(est.lobes.array.ravel(), minlength=6)[1:6].astype(float)
        frac = 100 * counts / counts.sum()
        name = path.name[: -len(".nii.gz")]
        print(f"| {name} | " + " | ".join(f"{f:.1f}" for f in frac) +
              f" | {'; '.join(est.problems) or 'none'} | {sec:.1f} s |", flush=True)
        if args.images:
            overlay(ct, est.lobes, Path(args.images) / f"lobes_{name}.png", name)


def cmd_time(args) -> None:
    ct = read_ct(args.ct)
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        lungs = segment_lungs(ct)
        t1, c1 = time.perf_counter(), time.process_time()
        est = estimate_lobes(ct, lungs)
        t2, c2 = time.perf_counter(), time.process_time()
        run = {"lung_mask_s": t1 - t0, "lobes_s": t2 - t1, **est.timings,
               "lung_mask_cpu_s": c1 - c0, "lobes_cpu_s": c2 - c1}
        best = {k: min(v, best.get(k, np.inf)) for k, v in run.items()}
    # wall times depend on the machine's load; CPU seconds (all threads of this process) do not
    print(" ".join(f"{k}={v:.2f}" for k, v in best.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("phantoms")
    p.add_argument("folders", nargs="+")
    p.add_argument("--json")
    p.add_argument("--search-mm", type=float, default=None, help="fissure search range (default: the package's)")
    p.set_defaults(run=cmd_phantoms)
    p = sub.add_parser("real")
    p.add_argument("folder")
    p.add_argument("--images")
    p.set_defaults(run=cmd_real)
    p = sub.add_parser("time")
    p.add_argument("ct")
    p.add_argument("--repeat", type=int, default=2)
    p.set_defaults(run=cmd_time)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

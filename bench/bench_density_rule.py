"""Benchmark: what the density rule (drasclr.dense.density) costs and buys, threshold by threshold.

    PYTHONPATH=DrasCLRSlicer python bench/bench_density_rule.py -o OUT.json CASE [CASE ...] \
        [--cle 0,0.04,0.08,0.1,0.15] [--other 0,0.15] [--hu=-950,-970] [--smooth 0,1] [--report OUT.json ...]

A CASE is ``CT:PRED`` or ``CT:PRED:TRUTH``: ``CT`` the scan, ``PRED`` an ``analyze --no-density-veto`` output folder
of it (the map without the rule), ``TRUTH`` a phantom case folder (``subtypes.nii.gz``). For each case the scan is
calibrated and harmonized as ``analyze`` does it, the rule's local share of lung below -950 HU (10 x 20 x 20 mm) is
computed once, and the rule is applied offline at every pair of thresholds: CLE calls need ``--cle``, PSE/PLE calls
``--other`` (the shipped rule: 0.15 for all); ``--hu`` counts the share below other cuts, ``--smooth`` on the scan
smoothed in-plane first (Gaussian sigma, mm; the card's ``smooth_mm``). Per pair: whole-lung emphysema % (real
scans: what is called on a normal lung) and, with a truth, the voxel counts for pooled Dice. ``--report`` prints the
pooled table of one or more result files instead.

    PYTHONPATH=DrasCLRSlicer python bench/bench_density_rule.py --real-patches [DIR] [--cle 0.02,0.04,0.1,0.15] \
        [--hu=-950] [--smooth 0,1]

``--real-patches``: the rule's statistic on the real expert-labelled CIP patches (DIR, default
../shared/data/real_labels/cip_emphysema_patches): per patch (31 x 31 pixels, about 20 mm: the rule's in-plane
window) the share of its lung pixels below -950 HU, lung pixels being those below -500 HU (vessels and chest wall
left out, so the share is if anything larger than the rule's, which counts vessels as lung; ``--smooth``: on the
patch smoothed at :data:`PATCH_MM` a pixel); per class (normal, CLE
mild / moderate / severe, PSE, PLE) the fraction of patches at or above each threshold: how much real emphysema a
threshold would keep, and how much real normal lung it would let a false call stand in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def local_shares(ct_path: Path, lung: np.ndarray, hus: list[float],
                 smooths: tuple[float, ...] = (0.0,)) -> dict[tuple[float, float], np.ndarray]:
    """Per attenuation cut in ``hus`` and in-plane smoothing in ``smooths`` (mm), the rule's statistic
    (:meth:`DensityVeto.local_share`, the shipped window) on the scan as the model sees it (HU-calibrated,
    harmonized), 1 outside the lung's box (no call there to turn)."""
    from drasclr.acquisition.harmonize import for_analysis
    from drasclr.anatomy.hu_calibration import calibrate_and_segment
    from drasclr.anatomy.lungs import segment_lung_slices
    from drasclr.core.io import read_ct
    from drasclr.dense.density import DensityVeto

    used, lungs, _ = calibrate_and_segment(read_ct(ct_path), "auto", segment=segment_lung_slices)
    seen, _ = for_analysis(used, lungs, "auto", False)
    shares = {}
    for hu in hus:
        for sm in smooths:
            lo, hi, share, _ = DensityVeto(laa_hu=hu, smooth_mm=sm).local_share(seen, lung)
            shares[hu, sm] = np.ones(lung.shape, np.float32)
            shares[hu, sm][tuple(slice(a, b) for a, b in zip(lo, hi))] = share
    return shares


def rule_key(cle: float, other: float, hu: float, smooth: float = 0.0) -> str:
    """A row's name: ``CLE/other`` thresholds, ``@HU`` when the share is counted below another HU than -950,
    ``~MM`` when on the scan smoothed in-plane."""
    return f"{cle}/{other}" + ("" if hu == -950 else f"@{hu:g}") + (f"~{smooth:g}" if smooth else "")


def sweep(spec: str, cle: list[float], other: list[float], hus: tuple[float, ...] = (-950.0,),
          smooths: tuple[float, ...] = (0.0,)) -> dict:
    from drasclr.core.io import read_image

    ct_path, pred_dir, *truth_dir = spec.split(":")
    pred = read_image(Path(pred_dir) / "subtypes.nii.gz").array
    lung = pred > 0
    shares = local_shares(Path(ct_path), lung, list(hus), smooths)
    truth = read_image(Path(truth_dir[0]) / "subtypes.nii.gz").array if truth_dir else None
    emph = (pred >= 2) & (pred <= 4)
    rows = {}
    for (hu, sm), share in shares.items():
        for tc in cle:
            for to in other:
                thr = np.where(pred == 2, np.float32(tc), np.float32(to))
                p = np.where(emph & (share < thr), 1, pred)
                row = {"emphysema_pct": round(100 * float((p[lung] >= 2).mean()), 3),
                       "by_subtype_pct": [round(100 * float((p[lung] == c).mean()), 3) for c in (2, 3, 4)]}
                if truth is not None:
                    row["tp_pred_true"] = [[int(((truth == c) & (p == c)).sum()), int((p == c).sum()),
                                            int((truth == c).sum())] for c in (1, 2, 3, 4)]
                rows[rule_key(tc, to, hu, sm)] = row
    out = {"rows": rows}
    if truth is not None:
        tl = truth > 0
        out["true_emphysema_pct"] = round(100 * float((truth[tl] >= 2).mean()), 3)
    return out


REAL_PATCHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_labels" / "cip_emphysema_patches"
PATCH_CLASSES = (("NT", "normal"), ("CL1", "CLE mild"), ("CL2", "CLE moderate"), ("CL3", "CLE severe"),
                 ("PS", "PSE"), ("PL", "PLE"))


PATCH_MM = 0.65  # the patches' pixel size (not stored; COPDGene HRCT, about 0.6-0.7 mm: the folder's README)


def real_patch_shares(folder: Path, hu: float = -950.0, smooth: float = 0.0) -> dict[str, np.ndarray]:
    """Per CIP class, each real patch's share of lung pixels (below -500 HU) below ``hu``; ``smooth`` > 0: below
    ``hu`` on the patch smoothed with a Gaussian of that sigma (mm), as the rule's ``smooth_mm`` smooths a slice."""
    from scipy import ndimage as ndi

    d = np.load(folder / "patches.npz")
    p, cls = d["patches"], d["cip_class"]
    lung = p < -500
    seen = p if not smooth else ndi.gaussian_filter(p.astype(np.float32), (0, smooth / PATCH_MM, smooth / PATCH_MM),
                                                    mode="nearest")
    share = ((seen < hu) & lung).sum((1, 2)) / np.maximum(lung.sum((1, 2)), 1)
    return {c: share[cls == c] for c, _ in PATCH_CLASSES}


def specificity_point(shares: dict[str, np.ndarray], specificity: float = 0.97) -> float:
    """The threshold at which ``specificity`` of the real normal patches fall below it (the shipped 0.15 is this
    point of the -950 HU share)."""
    return round(float(np.quantile(shares["NT"], specificity)), 3)


def real_patch_table(folder: Path, thresholds: list[float], hu: float = -950.0, smooth: float = 0.0) -> list[dict]:
    shares = real_patch_shares(folder, hu, smooth)
    rows = []
    print(f"share of lung below {hu:g} HU" + (f" smoothed in-plane at {smooth:g} mm" if smooth else "")
          + f"; 97 % of real normal patches lie below {specificity_point(shares)}")
    for t in thresholds:
        row = {"threshold": t, "hu": hu, "smooth_mm": smooth}
        for c, name in PATCH_CLASSES:  # None: no patch of that class in the set
            row[name] = round(float((shares[c] >= t).mean()), 3) if len(shares[c]) else None
        rows.append(row)
    print("threshold | " + " | ".join(f"{name} (n={len(shares[c])})" for c, name in PATCH_CLASSES))
    for row in rows:
        print(f"{row['threshold']:9.2f} | " + " | ".join("-" if row[name] is None else f"{row[name]:.2f}"
                                                        for _, name in PATCH_CLASSES))
    print("(fraction of real patches whose share reaches the threshold: the calls the rule would keep)")
    return rows


def report(paths: list[str]) -> None:
    for path in paths:
        cases = json.loads(Path(path).read_text())
        first = next(iter(cases.values()))["rows"]
        print(f"{path}: {len(cases)} case(s); thresholds CLE/other")
        for key in first:
            line = f"  {key:>10}  emphysema % " + " ".join(f"{c['rows'][key]['emphysema_pct']:6.2f}"
                                                          for c in cases.values())
            counts = [np.array(c["rows"][key]["tp_pred_true"]) for c in cases.values() if "tp_pred_true" in
                      c["rows"][key]]
            if counts:
                t = np.sum(counts, axis=0)
                dice = 2 * t[:, 0] / np.maximum(t[:, 1] + t[:, 2], 1)
                line += (f"  | Dice N/CLE/PSE/PLE {' '.join(f'{d:.3f}' for d in dice)}  macro {dice[1:].mean():.3f}"
                         + "  | error " + " ".join(f"{c['rows'][key]['emphysema_pct'] - c['true_emphysema_pct']:+.1f}"
                                                   for c in cases.values()))
            print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*")
    ap.add_argument("-o", "--output")
    ap.add_argument("--cle", default="0,0.04,0.08,0.1,0.15")
    ap.add_argument("--other", default="0,0.15")
    ap.add_argument("--hu", default="-950", help="attenuation cut(s) the share is counted below, comma-separated")
    ap.add_argument("--smooth", default="0", help="in-plane Gaussian sigma(s) in mm the scan is smoothed with "
                    "before the share is counted (the card's smooth_mm), comma-separated")
    ap.add_argument("--report", nargs="+")
    ap.add_argument("--real-patches", nargs="?", const=str(REAL_PATCHES), default=None, metavar="DIR")
    args = ap.parse_args(argv)
    from drasclr.dense.density import DensityVeto

    try:  # the cuts and smoothings the rule accepts
        hus = [float(v) for v in args.hu.split(",")]
        smooths = [float(v) for v in args.smooth.split(",")]
        for hu in hus:
            for sm in smooths:
                DensityVeto(laa_hu=hu, smooth_mm=sm)
    except ValueError as e:
        print(f"error: --hu {args.hu} --smooth {args.smooth}: {e}", file=sys.stderr)
        return 2
    if args.real_patches:
        if not (Path(args.real_patches) / "patches.npz").is_file():
            print(f"error: no patches.npz in {args.real_patches}", file=sys.stderr)
            return 2
        rows = [row for hu in hus for sm in smooths
                for row in real_patch_table(Path(args.real_patches), [float(v) for v in args.cle.split(",")], hu, sm)]
        if args.output:
            Path(args.output).write_text(json.dumps(rows, indent=1))
        return 0
    if args.report:
        report(args.report)
        return 0
    if not args.cases or not args.output:
        ap.error("give CASE ... and -o OUT.json (or --report FILE ...)")
    cle = [float(v) for v in args.cle.split(",")]
    other = [float(v) for v in args.other.split(",")]
    results = {}
    for spec in args.cases:
        results[spec] = sweep(spec, cle, other, tuple(hus), tuple(smooths))
        print(f"{spec}: done", file=sys.stderr)
    Path(args.output).write_text(json.dumps(results, indent=1))
    report([args.output])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

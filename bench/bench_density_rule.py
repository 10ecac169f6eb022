"""Benchmark: what the density rule (drasclr.dense.density) costs and buys, threshold by threshold.

    PYTHONPATH=DrasCLRSlicer python bench/bench_density_rule.py -o OUT.json CASE [CASE ...] \
        [--cle 0,0.04,0.08,0.1,0.15] [--other 0,0.15] [--report OUT.json ...]

A CASE is ``CT:PRED`` or ``CT:PRED:TRUTH``: ``CT`` the scan, ``PRED`` an ``analyze --no-density-veto`` output folder
of it (the map without the rule), ``TRUTH`` a phantom case folder (``subtypes.nii.gz``). For each case the scan is
calibrated and harmonized as ``analyze`` does it, the rule's local share of lung below -950 HU (10 x 20 x 20 mm) is
computed once, and the rule is applied offline at every pair of thresholds: CLE calls need ``--cle``, PSE/PLE calls
``--other`` (the shipped rule: 0.15 for all). Per pair: whole-lung emphysema % (real scans: what is called on a
normal lung) and, with a truth, the voxel counts for pooled Dice. ``--report`` prints the pooled table of one or
more result files instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def local_share(ct_path: Path, lung: np.ndarray) -> np.ndarray:
    """The rule's statistic (:meth:`DensityVeto.local_share`, the shipped window) on the scan as the model sees it
    (HU-calibrated, harmonized), 1 outside the lung's box (no call there to turn)."""
    from drasclr.acquisition.harmonize import for_analysis
    from drasclr.anatomy.hu_calibration import calibrate_and_segment
    from drasclr.anatomy.lungs import segment_lung_slices
    from drasclr.core.io import read_ct
    from drasclr.dense.density import DensityVeto

    used, lungs, _ = calibrate_and_segment(read_ct(ct_path), "auto", segment=segment_lung_slices)
    seen, _ = for_analysis(used, lungs, "auto", False)
    lo, hi, share, _ = DensityVeto().local_share(seen, lung)
    out = np.ones(lung.shape, np.float32)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = share
    return out


def sweep(spec: str, cle: list[float], other: list[float]) -> dict:
    from drasclr.core.io import read_image

    ct_path, pred_dir, *truth_dir = spec.split(":")
    pred = read_image(Path(pred_dir) / "subtypes.nii.gz").array
    lung = pred > 0
    share = local_share(Path(ct_path), lung)
    truth = read_image(Path(truth_dir[0]) / "subtypes.nii.gz").array if truth_dir else None
    emph = (pred >= 2) & (pred <= 4)
    rows = {}
    for tc in cle:
        for to in other:
            thr = np.where(pred == 2, np.float32(tc), np.float32(to))
            p = np.where(emph & (share < thr), 1, pred)
            row = {"emphysema_pct": round(100 * float((p[lung] >= 2).mean()), 3),
                   "by_subtype_pct": [round(100 * float((p[lung] == c).mean()), 3) for c in (2, 3, 4)]}
            if truth is not None:
                row["tp_pred_true"] = [[int(((truth == c) & (p == c)).sum()), int((p == c).sum()),
                                        int((truth == c).sum())] for c in (1, 2, 3, 4)]
            rows[f"{tc}/{to}"] = row
    out = {"rows": rows}
    if truth is not None:
        tl = truth > 0
        out["true_emphysema_pct"] = round(100 * float((truth[tl] >= 2).mean()), 3)
    return out


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
    ap.add_argument("--report", nargs="+")
    args = ap.parse_args(argv)
    if args.report:
        report(args.report)
        return 0
    if not args.cases or not args.output:
        ap.error("give CASE ... and -o OUT.json (or --report FILE ...)")
    cle = [float(v) for v in args.cle.split(",")]
    other = [float(v) for v in args.other.split(",")]
    results = {}
    for spec in args.cases:
        results[spec] = sweep(spec, cle, other)
        print(f"{spec}: done", file=sys.stderr)
    Path(args.output).write_text(json.dumps(results, indent=1))
    report([args.output])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

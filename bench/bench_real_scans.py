"""A subtype model on real CTs, where no voxel truth exists: what can be measured (issue 15, item 3).

For every real CT (default: the five in ../shared/data/real) the model and the reference classifier trained on real
expert labels (cip-lh) each analyse the scan (``drasclr analyze``, outputs cached under OUT so a run resumes); then:

- whole-lung subtype percentages of both side by side, LAA-950;
- agreement with cip-lh over the lung voxels: Cohen's kappa overall and per class (one class against the rest);
- specificity on lungs without visible emphysema (A0001 kernel B and L, A0002): total emphysema called (goal ≤ 2 %);
- kernel robustness: A0001 kernel B vs kernel L, the largest difference of a whole-lung percentage (goal ≤ 2 points).

    PYTHONPATH=DrasCLRSlicer python bench/bench_real_scans.py --models demo-v4 -o /tmp/real-scans [--real DIR]

Prints a markdown table and writes OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

from drasclr.analysis.stats import by_region, read_json
from drasclr.core import labels
from drasclr.core.io import image_stem, read_image

ROOT = Path(__file__).resolve().parents[1]
NORMAL_LUNGS = ("lungpetctdx_A0001_5mm_kernelB", "lungpetctdx_A0001_5mm_kernelL", "lungpetctdx_A0002_8mm_B40f")
KERNEL_PAIR = ("lungpetctdx_A0001_5mm_kernelB", "lungpetctdx_A0001_5mm_kernelL")
CLASSES = [(v, n) for v, n in labels.SUBTYPES.items() if v > 0]


def analyse(ct: Path, model: str, out: Path) -> Path:
    """``drasclr analyze`` into ``out`` unless it is there already (a rerun resumes)."""
    if (out / "stats.json").is_file():
        return out
    env = dict(os.environ, PYTHONPATH=str(ROOT / "DrasCLRSlicer"))
    cmd = [sys.executable, "-m", "drasclr", "analyze", str(ct), "-o", str(out), "--model", model, "--regions",
           "zones"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return out


def whole_lung(folder: Path) -> dict:
    row = by_region(read_json(folder / "stats.json")["regions"])["whole_lung"]
    return {k: round(float(row[k]), 2) for k in ("laa950_pct", "normal_pct", "cle_pct", "pse_pct", "ple_pct")}


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Kappa of two subtype maps over the voxels both call lung: overall and per class (one against the rest)."""
    lung = (a > 0) & (b > 0)
    x, y = a[lung].astype(np.int64), b[lung].astype(np.int64)
    if len(x) > 2_000_000:  # a fixed subsample: kappa to three decimals, memory bounded
        pick = np.random.default_rng(0).choice(len(x), 2_000_000, replace=False)
        x, y = x[pick], y[pick]
    out = {"overall": _kappa(x, y)}
    for v, name in CLASSES:
        out[name] = _kappa(x == v, y == v)
    return out


def _kappa(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(np.unique(np.concatenate([np.unique(x), np.unique(y)]))) < 2:
        return None  # one class everywhere in both: kappa undefined
    return round(float(cohen_kappa_score(x, y)), 3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["demo-v4"])
    p.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real"))
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    cts = sorted(Path(args.real).glob("*.nii.gz"))
    cts = [c for c in cts if not c.name.endswith("_lungs.nii.gz")]
    if not cts:
        raise SystemExit(f"no real CTs in {args.real}")
    out = Path(args.output)
    summary: dict = {"cases": {}, "models": args.models}
    for ct in cts:
        case = image_stem(ct)
        ref = analyse(ct, "cip-lh", out / "cip-lh" / case)
        ref_map = read_image(ref / "subtypes.nii.gz").array
        row = {"cip-lh": whole_lung(ref)}
        for m in args.models:
            res = analyse(ct, m, out / Path(m).name / case)
            row[Path(m).name] = {**whole_lung(res),
                                 "kappa_vs_cip_lh": agreement(read_image(res / "subtypes.nii.gz").array, ref_map)}
        summary["cases"][case] = row
        print(f"{case}: done", file=sys.stderr)
    for m in ["cip-lh", *[Path(m).name for m in args.models]]:
        rows = summary["cases"]
        emph = {c: round(100 - rows[c][m]["normal_pct"], 2) for c in NORMAL_LUNGS if c in rows}
        pair = [rows[c][m] for c in KERNEL_PAIR if c in rows]
        kernel = (max(abs(pair[0][k] - pair[1][k]) for k in ("normal_pct", "cle_pct", "pse_pct", "ple_pct"))
                  if len(pair) == 2 else None)
        summary.setdefault("per_model", {})[m] = {"emphysema_on_normal_lungs_pct": emph,
                                                  "kernel_B_vs_L_max_points": None if kernel is None
                                                  else round(kernel, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table(summary))
    return 0


def table(summary: dict) -> str:
    models = ["cip-lh", *[Path(m).name for m in summary["models"]]]
    lines = ["| case | model | LAA-950 % | normal % | CLE % | PSE % | PLE % | kappa vs cip-lh (overall / CLE / PSE / "
             "PLE) |", "|---|---|---|---|---|---|---|---|"]
    for case, row in summary["cases"].items():
        for m in models:
            r = row[m]
            k = r.get("kappa_vs_cip_lh")
            ks = " / ".join("–" if k[c] is None else f"{k[c]:.2f}" for c in ("overall", "cle", "pse", "ple")) if k \
                else "(reference)"
            lines.append(f"| {case} | {m} | {r['laa950_pct']:.1f} | {r['normal_pct']:.1f} | {r['cle_pct']:.1f} | "
                         f"{r['pse_pct']:.1f} | {r['ple_pct']:.1f} | {ks} |")
    lines += ["", "| model | emphysema called on lungs without visible emphysema (goal ≤ 2 %) | kernel B vs L, max "
              "difference of a whole-lung % (goal ≤ 2) |", "|---|---|---|"]
    for m in models:
        s = summary["per_model"][m]
        e = ", ".join(f"{c.split('_', 1)[1]} {v:.1f}" for c, v in s["emphysema_on_normal_lungs_pct"].items())
        lines.append(f"| {m} | {e} | {s['kernel_B_vs_L_max_points']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

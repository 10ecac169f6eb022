"""Densitometry baselines on a phantom cohort, for the subtype model and the embedding to beat.

    drasclr phantom -o COHORT --n 40 --seed 11 --size 128 128 80
    PYTHONPATH=DrasCLRSlicer .venv/bin/python bench/phantom_baseline.py COHORT WORK

For every case: ``analyze`` without a model, with the truth lobes; a baseline subtype map "CLE where HU < -950,
normal elsewhere in the lung"; a stand-in embedding = the normalised lung HU histogram (24 bins, -1024..-700 HU),
NOT a DrasCLR embedding. Then ``evaluate`` (macro Dice of the baseline) and the outcome cross-validation (C-index of
LAA-950 alone vs the stand-in embedding). Prints the numbers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from drasclr.analysis.analyze import analyze, write_analysis
from drasclr.anatomy.regions import read_lobes
from drasclr.core.io import read_ct
from drasclr.research.evaluate import evaluate_dirs
from drasclr.research.outcome import cross_validate, load_cohort

cohort_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
pred_dir = work / "pred"
t0 = time.perf_counter()
for case in sorted(p for p in cohort_dir.iterdir() if (p / "ct.nii.gz").exists()):
    out = pred_dir / case.name
    if out.exists():
        continue
    ct = read_ct(case / "ct.nii.gz")
    res = analyze(ct, read_lobes(case / "regions.nii.gz", ct))
    lung = res.regions.array > 0
    res.subtypes = ct.with_array(np.where(lung, np.where(ct.array < -950, 2, 1), 0).astype(np.uint8))
    hist, _ = np.histogram(ct.array[lung], bins=24, range=(-1024, -700))
    res.embedding = (hist / max(1, lung.sum())).astype(np.float32)
    write_analysis(res, out, report=False)  # writes subtypes.nii.gz and embedding.npy too
print(f"analyze {len(list(pred_dir.iterdir()))} cases: {time.perf_counter() - t0:.1f} s")

ev = evaluate_dirs(pred_dir, cohort_dir)["pooled"]
print(f"baseline (HU < -950 -> CLE): pooled macro Dice {ev['macro_dice']:.3f}; per class "
      + ", ".join(f"{k} {v:.3f}" for k, v in ev["dice"].items())
      + f"; whole-lung CLE fraction error {ev['fractions']['whole_lung']['cle']['mean_error_pct']:+.1f} pp")
cohort = load_cohort(pred_dir, cohort_dir, "both")
cv = cross_validate(cohort, "both", k=8, folds=5, seed=0)
print(f"{len(cohort.features.cases)} cases, {int(cohort.event.sum())} events, 5-fold CV")
for fs, r in cv.items():
    name = fs.replace("embedding", "hist-embedding")
    print(f"  {name:<24} C-index {r['c_index_mean']:.3f} ± {r['c_index_sd']:.3f} "
          f"(pooled {r['c_index_pooled']:.3f})   FEV1 R2 {r['fev1_r2']:.3f} MAE {r['fev1_mae']:.1f}")

"""Timings of the reporting pieces: report.html on real CTs, evaluate_case on a full-size volume pair, and the
outcome model's cross-validation on a synthetic cohort. Plain script, prints numbers.

    PYTHONPATH=DrasCLRSlicer .venv/bin/python bench/bench_reporting.py [REAL_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from drasclr.analysis.analyze import analyze
from drasclr.analysis.report import write_report
from drasclr.core.io import read_ct
from drasclr.research.evaluate import evaluate_case

real = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/real")


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


for name in ("lidc_idri_0001", "lungpetctdx_A0002_8mm_B40f"):
    path = real / f"{name}.nii.gz"
    if not path.exists():
        print(f"{name}: not found, skipped")
        continue
    ct = read_ct(path)
    res = analyze(ct)
    with tempfile.TemporaryDirectory() as tmp:
        _, s = timed(write_report, tmp, ct, None, res.regions, res.rows, {})
        size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1024
    print(f"write_report {name} {ct.shape_xyz}: {s:.2f} s, {size:.0f} KiB")

rng = np.random.default_rng(0)
shape = (133, 512, 512)
truth = rng.integers(0, 5, shape, dtype=np.uint8)
pred = np.where(rng.random(shape) < 0.9, truth, rng.integers(0, 5, shape, dtype=np.uint8)).astype(np.uint8)
regions = np.where(truth > 0, rng.integers(1, 6, shape, dtype=np.uint8), 0).astype(np.uint8)
_, s = timed(evaluate_case, pred, truth, regions)
print(f"evaluate_case {shape[::-1]} (35 M voxels): {s:.2f} s")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "engine"))
from test_outcome import make_cohort  # noqa: E402

from drasclr.research.outcome import cross_validate, load_cohort  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    feats, outs = make_cohort(Path(tmp), n=160, dim=32)
    cohort = load_cohort(feats, outs)
    cv, s = timed(cross_validate, cohort)
print(f"outcome cross_validate n=160 D=32, 5 folds x 3 feature sets, Cox + ridge: {s:.2f} s; "
      f"C-index LAA-950 {cv['laa950']['c_index_mean']:.3f}, embedding {cv['embedding']['c_index_mean']:.3f}, "
      f"both {cv['embedding+laa950']['c_index_mean']:.3f}")

"""How strong the harmonization should be: subtype Dice on labelled phantoms and the emphysema called on real scans
at several band-gain strengths, the model and everything else as ``drasclr analyze`` runs it (docs/acquisition.md,
"Strength").

    OMP_NUM_THREADS=1 PYTHONPATH=DrasCLRSlicer python bench/bench_harmonize_strength.py \\
        --strengths off 1 0.7 0.5 --cases PHANTOM_CASE_DIR ... ../shared/data/real/lungpetctdx_A0001_5mm_kernelL.nii.gz

A case is a phantom case folder (``ct.nii.gz`` + ``subtypes.nii.gz``: Dice per subtype, called vs true emphysema %)
or a CT file (emphysema % called). ``off`` is ``--harmonize off``; a number ``s`` is ``--harmonize auto`` with the
band gains ``min(1, target / measured) ** s``. One JSON line per case and strength.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from drasclr.acquisition import harmonize as H
from drasclr.analysis.analyze import analyze
from drasclr.analysis.loaded_model import load_for_analysis
from drasclr.core import labels
from drasclr.core.io import read_ct, read_image
from drasclr.core.settings import AnalysisSettings

EMPHYSEMA = (labels.CLE, labels.PSE, labels.PLE)


def score(sub: np.ndarray, truth: np.ndarray | None, lung: np.ndarray) -> dict:
    out = {"called_pct": round(100 * float(np.isin(sub[lung], EMPHYSEMA).mean()), 2)}
    if truth is None:
        return out
    inside = truth > 0
    for v in EMPHYSEMA:
        p, t = (sub == v) & inside, truth == v
        if p.any() or t.any():
            out[labels.SUBTYPES[v]] = round(2 * float((p & t).sum()) / float(p.sum() + t.sum()), 3)
    out["true_pct"] = round(100 * float(np.isin(truth[inside], EMPHYSEMA).mean()), 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strengths", nargs="+", default=["off", "1", "0.7"])
    ap.add_argument("--cases", nargs="+", required=True)
    ap.add_argument("--model", default=None, help="default: the bundled default model")
    args = ap.parse_args(argv)
    model = load_for_analysis(AnalysisSettings(model=args.model))
    default = H.STRENGTH
    for strength in args.strengths:
        H.STRENGTH = default if strength == "off" else float(strength)
        for case in map(Path, args.cases):
            real = case.is_file()
            ct = read_ct(case if real else case / "ct.nii.gz")
            truth = None if real else read_image(case / "subtypes.nii.gz").array
            t0 = time.perf_counter()
            res = analyze(ct, model=model, settings=AnalysisSettings(
                model=args.model, harmonize="off" if strength == "off" else "auto", regions="zones"))
            print(json.dumps({"case": case.name if real else f"{case.parent.name}/{case.name}", "strength": strength,
                              **score(res.subtypes.array, truth, res.lungs.array > 0),
                              "harmonized": bool(res.harmonization.get("applied")),
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    H.STRENGTH = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

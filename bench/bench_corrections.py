"""Measure fine-tuning from corrections on a deliberately weakened model (the issue-6 evidence).

    PYTHONPATH=DrasCLRSlicer python bench/bench_corrections.py PHANTOM_CASE_DIR WORK_DIR [--seconds 30]

Weakens the bundled demo model so it under-calls panlobular emphysema (PLE classifier bias -4), predicts
the case, "corrects" PLE in the lobe that holds the most PLE (truth copied there), fine-tunes for ``--seconds``
and reports accuracy and PLE Dice on the corrected voxels before and after, plus the new model's PLE Dice in
the lobes that were *not* corrected.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from drasclr.core import labels
from drasclr.core.io import read_ct, read_image
from drasclr.dense import predict
from drasclr.dense.corrections import finetune_from_corrections
from drasclr.dense.locate import locator_for
from drasclr.dense.store import load_segmenter, save_segmenter


def ple_dice(pred, truth, mask):
    p, t = pred[mask] == labels.PLE, truth[mask] == labels.PLE
    return float(2 * (p & t).sum() / max(p.sum() + t.sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("work")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    case, work = Path(args.case), Path(args.work)
    ct = read_ct(case / "ct.nii.gz")
    truth = read_image(case / "subtypes.nii.gz").array
    lobes = read_image(case / "regions.nii.gz").array
    lungs = ct.with_array((truth > 0).astype(np.uint8))
    model, card, _ = load_segmenter(None)
    with torch.no_grad():
        model.classifier.bias[labels.PLE] -= 4.0
    weak = save_segmenter(model, work / "weak-v1", {"name": "weak", "version": "weak-v1"})
    locator, _ = locator_for(lungs)
    pred = predict(ct, lungs, model, "cpu", locator=locator, tta=False).subtypes.array
    lobe = max(range(1, 6), key=lambda v: int(((lobes == v) & (truth == labels.PLE)).sum()))
    corrected = pred.copy()
    corrected[lobes == lobe] = truth[lobes == lobe]
    t0 = time.perf_counter()
    res = finetune_from_corrections(weak, ct, ct.with_array(pred), ct.with_array(corrected), lungs,
                                    max_seconds=args.seconds)
    wall = time.perf_counter() - t0
    new, new_card, _ = load_segmenter(res.model_dir)
    card = new_card["finetune"]
    after = predict(ct, lungs, new, "cpu", locator=locator, tta=False).subtypes.array
    other = (truth > 0) & (lobes != lobe)
    out = {"corrected_lobe": labels.LOBES[lobe], "corrected_voxels": res.corrected_voxels,
           "train_seconds_bound": args.seconds, "finetune_wall_seconds": round(wall, 1),
           "corrected_region_before": res.before, "corrected_region_after": res.after,
           "ple_dice_uncorrected_lobes_before": ple_dice(pred, truth, other),
           "ple_dice_uncorrected_lobes_after": ple_dice(after, truth, other),
           "new_model": res.model_dir.name,
           "steps": {k: card[k] for k in ("steps", "kept_step", "stopped_by_guard", "train_seconds")}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""Score a comparison against a phantom series' truth (``drasclr phantom --followup``): tests and bench."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.io import read_image
from . import changemap

LOBES = ("left_upper_lobe", "left_lower_lobe", "right_upper_lobe", "right_middle_lobe", "right_lower_lobe")


def score(change_dir: str | Path, series_dir: str | Path) -> dict:
    """Per later scan: worst and mean |measured - true| change in emphysema % over the lobes (and whole lung),
    Dice of the new-emphysema voxels against the truth, lung Dice after registration, landmark error."""
    change_dir, series_dir = Path(change_dir), Path(series_dir)
    doc = json.loads((change_dir / "change.json").read_text())
    series = json.loads((series_dir / "series.json").read_text())
    truth0 = series["scans"][0]["lobe_truth"]
    n_later = len(series["scans"]) - 1
    out = []
    d_true = {k: truth_k["whole_lung"]["emphysema_pct"] - truth0["whole_lung"]["emphysema_pct"]
              for k, truth_k in ((k, series["scans"][k]["lobe_truth"]) for k in range(1, n_later + 1))}
    for k in range(1, n_later + 1):
        truth = series["scans"][k]["lobe_truth"]
        rows = {r["region"]: r for r in doc["rows"] if r["scan"] == k}
        err = {name: abs(rows[name]["d_emphysema_pct"] - (truth[name]["emphysema_pct"] - truth0[name]["emphysema_pct"]))
               for name in (*LOBES, "whole_lung") if name in rows}
        true_map = read_image(series_dir / f"scan_{k}" / "change_truth.nii.gz").array
        name = "change_map.nii.gz" if k == n_later else f"change_map_scan_{k}.nii.gz"
        pred_map = read_image(change_dir / name).array
        reg = next(q for q in doc["registration"] if q["scan"] == k)
        whole = rows["whole_lung"]
        out.append({"scan": k, "lobe_emphysema_error_max": max(err[n] for n in LOBES if n in err),
                    "lobe_emphysema_error_mean": float(np.mean([err[n] for n in LOBES if n in err])),
                    "whole_emphysema_error": err.get("whole_lung"),
                    "true_d_emphysema_pct": d_true[k],
                    "d_emphysema_pct": whole["d_emphysema_pct"],
                    "new_emphysema_dice": changemap.dice(pred_map == changemap.NEW, true_map == changemap.NEW),
                    "d_perc15_raw": whole["d_perc15_hu"], "d_perc15_adj": whole["d_perc15_hu_adj"],
                    "d_laa950_raw": whole["d_laa950_pct"], "d_laa950_adj": whole["d_laa950_adj_pct"],
                    "lung_dice": reg["lung_dice"], "landmark_error_mm": reg.get("landmark_error_mm"),
                    "registration_s": reg["seconds"]})
    return {"scans": out}

"""Writing cases and cohorts: ``case_XXX/{ct,regions,subtypes}.nii.gz`` + ``meta.json`` per case (each folder
written all-or-nothing), a cohort ``meta.json`` and ``cohort.csv`` with the outcomes, parallel across cores.

Each case is seeded from ``(seed, index)`` alone, so the files do not depend on the worker count.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ... import DATA_DIR
from ...core.io import write_image
from ...core.outputs import staged_dir
from ...core.progress import progress
from .case import PhantomCase, PhantomOptions, generate_case

DATA_DIR = DATA_DIR
DEMO_CASE = {"seed": 7, "index": 0, "options": PhantomOptions(size=(144, 144, 112), spacing=2.2, thickness=2.2,
                                                              kernel="soft", noise=12.0, subtypes=("cle", "pse", "ple"),
                                                              severity=0.75, vessel_points=1000,
                                                              generator="1")}


def write_case(case: PhantomCase, folder: str | os.PathLike) -> Path:
    """Write ``ct.nii.gz`` (int16), ``regions.nii.gz`` and ``subtypes.nii.gz`` (uint8) and ``meta.json``."""
    folder = Path(folder)
    with staged_dir(folder) as tmp:
        os.chmod(tmp, 0o755)
        write_image(case.ct, tmp / "ct.nii.gz", dtype=np.int16)
        write_image(case.regions, tmp / "regions.nii.gz", dtype=np.uint8)
        write_image(case.subtypes, tmp / "subtypes.nii.gz", dtype=np.uint8)
        (tmp / "meta.json").write_text(json.dumps(case.meta, indent=1, sort_keys=True) + "\n")
    return folder


def _one(args) -> dict:
    out, seed, index, options = args
    case = generate_case(seed, index, options)
    write_case(case, Path(out) / f"case_{index:03d}")
    return case.meta


CSV_FIELDS = ["case", "seed", "index", "healthy", "kernel", "spacing_mm", "thickness_mm", "noise_hu", "lung_volume_ml",
              "cle_severity", "pse_severity", "ple_severity", "normal_frac", "cle_frac", "pse_frac", "ple_frac",
              "age", "fev1_pct_pred", "survival_years", "event"]


def write_cohort(out: str | os.PathLike, n: int, seed: int = 0, options: PhantomOptions | None = None,
                 workers: int | None = None) -> list[dict]:
    """Generate ``n`` cases into ``out`` in parallel (``workers`` processes, default: all cores).

    Returns the list of case metas; also writes ``out/meta.json`` and ``out/cohort.csv``."""
    options = (options or PhantomOptions()).validate()
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    jobs = [(str(out), seed, i, options) for i in range(n)]
    try:
        if workers == 1:
            metas = [_one(j) for j in progress(jobs, total=n, desc="phantom")]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                metas = list(progress(pool.map(_one, jobs), total=n, desc="phantom"))
    except BaseException:
        if created:  # no partial outputs: remove what this call made
            shutil.rmtree(out, ignore_errors=True)
        raise
    rows = [_row(m) for m in metas]
    tmp = out / ".cohort.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / "cohort.csv")
    summary = {"generator": "drasclr.phantom", "seed": seed, "n": n, "cases": rows}
    if str(options.generator) != "1" or options.air_offset:  # version 1 keeps its old cohort meta.json bytes
        summary["generator_version"] = str(options.generator)
        summary["air_offset_hu"] = float(options.air_offset)
    if options.acquisition != "standard":
        summary["acquisition"] = options.acquisition
    tmp = out / ".meta.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, out / "meta.json")
    return metas


def _row(m: dict) -> dict:
    pr, d, fr, oc = m["protocol"], m["disease"], m["fractions"], m["outcomes"]
    return {"case": f"case_{m['index']:03d}", "seed": m["seed"], "index": m["index"], "healthy": int(m["healthy"]),
            "kernel": pr["kernel"], "spacing_mm": pr["spacing_mm"][0], "thickness_mm": pr["slice_thickness_mm"],
            "noise_hu": pr["noise_hu"], "lung_volume_ml": m["lung_volume_ml"], "cle_severity": d["cle_severity"],
            "pse_severity": d["pse_severity"], "ple_severity": d["ple_severity"], "normal_frac": fr["normal"],
            "cle_frac": fr["cle"], "pse_frac": fr["pse"], "ple_frac": fr["ple"], "age": oc["age"],
            "fev1_pct_pred": oc["fev1_pct_pred"], "survival_years": oc["survival_years"], "event": oc["event"]}


def demo_case() -> PhantomCase:
    """The bundled demo case (144 x 144 x 112 at 2.2 mm, all three subtypes), regenerated from its seed."""
    return generate_case(DEMO_CASE["seed"], DEMO_CASE["index"], DEMO_CASE["options"])


def demo_paths() -> dict[str, Path]:
    """Paths of the bundled demo files: ``ct``, ``regions``, ``subtypes``."""
    return {k: DATA_DIR / f"demo_{k}.nii.gz" for k in ("ct", "regions", "subtypes")}


def write_demo(folder: str | os.PathLike = DATA_DIR) -> dict[str, Path]:
    """(Re)write the bundled demo files ``demo_{ct,regions,subtypes}.nii.gz`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    case = demo_case()
    paths = {k: folder / f"demo_{k}.nii.gz" for k in ("ct", "regions", "subtypes")}
    write_image(case.ct, paths["ct"], dtype=np.int16)
    write_image(case.regions, paths["regions"], dtype=np.uint8)
    write_image(case.subtypes, paths["subtypes"], dtype=np.uint8)
    return paths

"""Acquisition robustness: how much emphysema %, LAA-950 and Perc15 move with kernel, dose, slice thickness and the
supine gradient, raw and harmonized (issue 26; docs/acquisition.md).

For every scan (real CTs in ../shared/data/real by name, phantom case folders by path) and perturbation, the
perturbed CT is written once (OUT/inputs) and ``drasclr analyze`` runs with ``--harmonize off`` (raw) and
``--harmonize auto`` for every model (outputs cached under OUT/runs, so a rerun resumes and subsets add up):

- ``kernel_pair``: Lung-PET-CT-Dx A0001 kernel L against its kernel B reconstruction (the same acquisition);
- ``dose2`` / ``dose4``: noise of the scan's own texture (drasclr.acquisition.perturb.lower_dose) at 2x / 4x the
  variance
  (``dose4`` = twice the noise SD, about a quarter of the dose);
- ``slice2.5`` / ``slice5``: slices averaged to 2.5 / 5 mm where the scan is thinner;
- ``soften`` / ``sharpen``: a simulated kernel change (Gaussian MTF 0.6 mm; unsharp mask 1.0 mm, gain 1);
- ``gradient``: a supine antero-posterior gradient of +60 HU added to the normal parenchyma (phantoms only: their
  true normal lung; the air spaces of emphysema are left as they are).

Each row is the change against the unperturbed scan (kernel_pair: against kernel B) of the whole-lung CLE, PSE,
PLE and total emphysema % (model), and of LAA-950 / Perc15 (raw densitometry; in the harmonized run also
``harmonized_laa950_pct`` / ``harmonized_perc15_hu``, equal to the raw ones where analyze left the scan
unchanged). Phantoms also give the called vs true emphysema %.
The machine is a shared 2-core box: run subsets (``--scans``, ``--perturb``, ``--models``, ``--modes``) with one
thread::

    OMP_NUM_THREADS=1 PYTHONPATH=DrasCLRSlicer python bench/bench_acquisition.py -o OUT \\
        --scans lidc_idri_0001 lungpetctdx_A0001_5mm_kernelB --perturb dose4 slice5 --models demo-v5 cip-lh

Prints a markdown table and writes OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from drasclr.acquisition.perturb import add_gradient, change_kernel, lower_dose, thicker_slices
from drasclr.analysis.stats import by_region, read_json
from drasclr.core.io import read_ct, read_image, write_image
from drasclr.core.labels import NORMAL

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
REAL_SCANS = ("lidc_idri_0001", "lungpetctdx_A0001_5mm_kernelB", "lungpetctdx_A0002_8mm_B40f",
              "copdgene_10002K_ct64")
PAIR = ("lungpetctdx_A0001_5mm_kernelB", "lungpetctdx_A0001_5mm_kernelL")
PERTURBATIONS = ("kernel_pair", "dose2", "dose4", "slice2.5", "slice5", "soften", "sharpen", "gradient")
MODES = ("off", "auto")
KEYS = ("cle_pct", "pse_pct", "ple_pct", "laa950_pct", "perc15_hu", "harmonized_laa950_pct", "harmonized_perc15_hu")


def perturbed(scan: str, src: Path, pert: str, out: Path) -> Path | None:
    """The perturbed CT of ``scan`` (written once), or None where the perturbation does not apply."""
    if pert == "none":
        return src
    if pert == "kernel_pair":
        return REAL / f"{PAIR[1]}.nii.gz" if scan == PAIR[0] else None
    path = out / "inputs" / scan / f"{pert}.nii.gz"
    if path.is_file():
        return path
    ct = read_ct(src)
    if pert.startswith("dose"):
        new = lower_dose(ct, float(pert[4:]), seed=26)
    elif pert.startswith("slice"):
        t = float(pert[5:])
        if max(ct.spacing) * 1.5 > t:
            return None
        new = thicker_slices(ct, t)
    elif pert in ("soften", "sharpen"):
        new = change_kernel(ct, 0.6) if pert == "soften" else change_kernel(ct, -1.0, 1.0)
    elif pert == "gradient":
        # the normal parenchyma only (the phantom's true normal lung): gravity loads tissue and blood, and the
        # air spaces of emphysema hold neither, so a gradient over every lung voxel would erase the true disease
        truth = src.parent / "subtypes.nii.gz"
        if not truth.is_file():
            return None
        new = add_gradient(ct, read_image(truth).array == NORMAL, 60.0)
    else:
        raise SystemExit(f"unknown perturbation {pert}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp_" + path.name)
    write_image(new, tmp)
    os.replace(tmp, path)
    return path


def analyse(ct: Path, model: str, mode: str, out: Path, regions: str, tta: bool) -> dict:
    """``drasclr analyze`` into ``out`` unless done already; the whole-lung row."""
    if not (out / "stats.json").is_file():
        env = dict(os.environ, PYTHONPATH=str(ROOT / "DrasCLRSlicer"))
        cmd = [sys.executable, "-m", "drasclr", "analyze", str(ct), "-o", str(out), "--regions", regions,
               "--harmonize", mode, "--quiet", *([] if model == "default" else ["--model", model]),
               *([] if tta else ["--no-tta"])]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    stats = read_json(out / "stats.json")
    rows = by_region(stats["regions"])
    whole = rows["whole_lung"]
    row = {k: _num(whole.get(k, whole.get(k.removeprefix("harmonized_")) if mode == "auto" else None)) for k in KEYS}
    row["emph_pct"] = round(sum(row[k] or 0.0 for k in ("cle_pct", "pse_pct", "ple_pct")), 2)
    row["lobes"] = {name: round(sum(float(r.get(k) or 0.0) for k in ("cle_pct", "pse_pct", "ple_pct")), 2)
                    for name, r in rows.items() if name not in ("whole_lung", "left_lung", "right_lung")}
    h = stats.get("harmonization") or {}
    row["harmonized"] = bool(h.get("applied"))
    row["noise_sd_hu"] = (h.get("before") or {}).get("tissue_sd_hu")
    return row


def _num(v):
    return None if v is None else round(float(v), 2)


def truth(src: Path) -> dict | None:
    sub = src.parent / "subtypes.nii.gz"
    if not sub.is_file():
        return None
    s = read_image(sub).array
    n = max(int((s > 0).sum()), 1)
    return {k: round(100.0 * float((s == v).sum()) / n, 2) for v, k in ((2, "cle_pct"), (3, "pse_pct"),
                                                                          (4, "ple_pct"))}


def sources(names: list[str]) -> dict[str, Path]:
    out = {}
    for n in names:
        p = Path(n)
        if p.is_dir() and (p / "ct.nii.gz").is_file():  # a phantom case folder
            out[f"{p.parent.name}_{p.name}"] = p / "ct.nii.gz"
        elif (REAL / f"{n}.nii.gz").is_file():
            out[n] = REAL / f"{n}.nii.gz"
        else:
            raise SystemExit(f"scan not found: {n}")
    return out


def delta(a, b):
    return None if a is None or b is None else round(b - a, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--scans", nargs="+", default=list(REAL_SCANS), help="real scan names or phantom case folders")
    ap.add_argument("--perturb", nargs="+", default=list(PERTURBATIONS), choices=PERTURBATIONS)
    ap.add_argument("--models", nargs="+", default=["default", "cip-lh"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--regions", default="zones", choices=["zones", "lobes"])
    ap.add_argument("--no-tta", action="store_true", help="analyze without mirrored TTA (about twice as fast)")
    args = ap.parse_args(argv)
    results = []
    for scan, src in sources(args.scans).items():
        for pert in args.perturb:
            ct = perturbed(scan, src, pert, args.output)
            if ct is None:
                continue
            for model in args.models:
                for mode in args.modes:
                    runs = args.output / "runs" / scan
                    tag = f"{Path(model).name}_{mode}"  # a model given as a folder: its name (a path would escape)
                    base = analyse(src, model, mode, runs / "none" / tag, args.regions, not args.no_tta)
                    new = analyse(ct, model, mode, runs / pert / tag, args.regions, not args.no_tta)
                    results.append({"scan": scan, "perturbation": pert, "model": model, "harmonize": mode,
                                    "base": base, "perturbed": new, "truth": truth(src),
                                    "delta": {k: delta(base[k], new[k]) for k in ("emph_pct", *KEYS)}})
                    print(line(results[-1]), flush=True)
    (args.output / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n" + table(results))
    return 0


def line(r: dict) -> str:
    d = r["delta"]
    return (f"info: {r['scan']} {r['perturbation']} {r['model']} harmonize={r['harmonize']}: emphysema "
            f"{r['base']['emph_pct']} -> {r['perturbed']['emph_pct']} ({d['emph_pct']:+}), "
            f"LAA-950 Δ {d['laa950_pct']}, "
            f"harmonized LAA-950 Δ {d['harmonized_laa950_pct']}")


def _f(v, signed=False):
    return "–" if v is None else (f"{v:+.1f}" if signed else f"{v:.1f}")


def table(results: list[dict]) -> str:
    head = ("| scan | perturbation | model | harmonize | emphysema % base → perturbed (Δ) | ΔCLE | ΔPSE | ΔPLE | "
            "ΔLAA-950 | ΔPerc15 | Δharmonized LAA-950 | Δharmonized Perc15 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        d, b, p = r["delta"], r["base"], r["perturbed"]
        lines.append(f"| {r['scan']} | {r['perturbation']} | {r['model']} | {r['harmonize']} | {_f(b['emph_pct'])} → "
                     f"{_f(p['emph_pct'])} ({_f(d['emph_pct'], True)}) | {_f(d['cle_pct'], True)} | "
                     f"{_f(d['pse_pct'], True)} | {_f(d['ple_pct'], True)} | {_f(d['laa950_pct'], True)} | "
                     f"{_f(d['perc15_hu'], True)} | {_f(d['harmonized_laa950_pct'], True)} | "
                     f"{_f(d['harmonized_perc15_hu'], True)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

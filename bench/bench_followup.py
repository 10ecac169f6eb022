"""Benchmark: ``drasclr compare`` on held-out phantom follow-up series against their exact truth.

    PYTHONPATH=DrasCLRSlicer python bench/bench_followup.py -o WORK [--seeds 801,802,803] [--inspiration 811,812]
        [--model M] [--no-model] [--oracle-only] [--size 160 160 72 --spacing 2.0 --thickness 3.0]

For each progression seed: a baseline and one follow-up (planted progression, +15 % lung volume); for each
inspiration seed: a pure inspiration change (no disease change; -12 % and +15 % alternately). Each series is
compared twice: with the subtype model analysing every scan (``model``) and with the scans' truth labels standing
in for their analyses (``oracle``: isolates the registration, carried lobes and adjustment from the model's
errors). Prints one line per run and writes WORK/results.json. Goals (issue 31): per-lobe emphysema % change
within 2 points of truth, new-emphysema Dice >= 0.7; pure inspiration: adjusted Perc15 change within +-3 HU and
emphysema % change within +-1.5 points; lung Dice >= 0.95; <= 60 s registration per pair on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from drasclr.cli import main
from drasclr.followup.truth import score
from drasclr.research.phantom import PhantomOptions
from drasclr.research.phantom.followup import FollowupOptions, write_series

KEYS = ("lobe_emphysema_error_max", "true_d_emphysema_pct", "d_emphysema_pct", "new_emphysema_dice", "d_perc15_raw",
        "d_perc15_adj", "d_laa950_raw", "d_laa950_adj", "lung_dice", "landmark_error_mm", "registration_s")


def _series(work: Path, seed: int, opts: PhantomOptions, change: float, progression: float) -> Path:
    out = work / f"series_{seed}"
    if not (out / "series.json").exists():
        write_series(out, seed, opts, FollowupOptions(scans=2, volume_change=(change,), progression=progression))
    return out


def _compare(series: Path, out: Path, mode: str, args) -> dict:
    if not (out / "change.json").exists():
        scans = [series / "scan_0", series / "scan_1"]
        if mode == "model":
            scans = [s / "ct.nii.gz" for s in scans]
        argv = ["compare", *map(str, scans), "-o", str(out), "--landmarks", str(series / "scan_1" / "landmarks.csv")]
        argv += (["--model", args.model] if args.model else []) + (["--no-model"] if args.no_model else [])
        t0 = time.perf_counter()
        if main(argv) != 0:
            raise SystemExit(f"compare failed on {series}")
        (out / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return score(out, series)["scans"][0]


def main_(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--work", required=True)
    ap.add_argument("--seeds", default="801,802,803")
    ap.add_argument("--inspiration", default="811,812")
    ap.add_argument("--model", default=None)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--oracle-only", action="store_true")
    ap.add_argument("--size", type=int, nargs=3, default=(160, 160, 72))
    ap.add_argument("--spacing", type=float, default=2.0)
    ap.add_argument("--thickness", type=float, default=3.0)
    ap.add_argument("--severity", type=float, default=0.3)
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    opts = PhantomOptions(size=tuple(args.size), spacing=args.spacing, thickness=args.thickness, kernel="soft",
                          noise=18.0, subtypes=("cle", "pse", "ple"), severity=args.severity)
    plan = [(int(s), 0.15, 1.0, "progression") for s in args.seeds.split(",") if s]
    plan += [(int(s), 0.15 if i % 2 else -0.12, 0.0, "inspiration")
             for i, s in enumerate(x for x in args.inspiration.split(",") if x)]
    results = []
    for seed, change, prog, kind in plan:
        series = _series(work, seed, opts, change, prog)
        for mode in ("oracle",) if args.oracle_only else ("oracle", "model"):
            r = _compare(series, work / f"compare_{seed}_{mode}", mode, args)
            results.append({"seed": seed, "kind": kind, "volume_change": change, "mode": mode, **r})
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in results[-1].items()
                              if k in ("seed", "kind", "mode", *KEYS)}), flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())

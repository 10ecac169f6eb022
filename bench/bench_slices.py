"""Benchmark: time and peak memory of ``drasclr analyze`` against the slice count, the same lung throughout.

    PYTHONPATH=DrasCLRSlicer python bench/bench_slices.py [CT] [--slices 133,266,533] \
        [--engines before=../before/DrasCLRSlicer,after=DrasCLRSlicer] [--repeat 1] [--work DIR] [-- ANALYZE_ARGS]

CT (default ../shared/data/real/lidc_idri_0001.nii.gz) is resampled along the cranio-caudal axis to each slice
count (linear interpolation over the same extent: the same lung, thinner slices; the files are kept in ``--work``,
default build/bench-slices). Each analysis runs as its own child process (``python -m drasclr analyze``, default
settings unless ANALYZE_ARGS are given), so its peak resident memory is its own (``wait4``). ``--engines`` runs
two checkouts of the engine side by side in one run (name=path of the folder holding ``drasclr``), interleaved;
``name=path@MODEL`` runs that engine with ``--model MODEL`` (two models side by side:
``--engines v5=DrasCLRSlicer@demo-v5,light=DrasCLRSlicer@demo-v5-light``); ``name=path+ARG+ARG`` adds analyze
arguments to that engine only (one engine two ways:
``--engines native=DrasCLRSlicer+--thin-slices+native,slabs=DrasCLRSlicer``).

Prints per engine and slice count: wall time, peak RSS, the stage timings from stats.json; the ratio of each slice
count's time to the first's; and, between the first and every other engine, the whole-lung emphysema % difference
and the share of lung voxels whose subtype differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CT = ROOT.parent / "shared" / "data" / "real" / "lidc_idri_0001.nii.gz"


def resampled(ct_path: Path, n: int, work: Path) -> Path:
    """``ct_path`` resampled to ``n`` slices over the same cranio-caudal extent (int16), cached in ``work``."""
    import SimpleITK as sitk

    out = work / f"{ct_path.name.split('.')[0]}_{n}.nii.gz"
    if out.exists():
        return out
    img = sitk.ReadImage(str(ct_path))
    size, spacing = list(img.GetSize()), list(img.GetSpacing())
    if size[2] != n:
        extent = size[2] * spacing[2]
        spacing[2], size[2] = extent / n, n
        # keep the first slice centre's position shifted by half the change of thickness: same slab
        origin = img.TransformContinuousIndexToPhysicalPoint((0, 0, -0.5 + 0.5 * spacing[2] / img.GetSpacing()[2]))
        img = sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, origin, spacing, img.GetDirection(),
                            -1024, sitk.sitkInt16)
    work.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.nii.gz")
    sitk.WriteImage(img, str(tmp), True)
    tmp.replace(out)
    return out


def run(engine: Path, ct: Path, out: Path, extra: list[str]) -> dict:
    """One ``drasclr analyze`` in a child process: wall s, peak RSS GiB, stats.json's timings and whole lung."""
    shutil.rmtree(out, ignore_errors=True)  # a rerun replaces its own outputs
    env = {**os.environ, "PYTHONPATH": str(engine)}
    cmd = [sys.executable, "-m", "drasclr", "analyze", str(ct), "-o", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{err[-2000:]}")
    stats = json.loads((out / "stats.json").read_text())
    whole = next(r for r in stats["regions"] if r["region"] == "whole_lung")
    return {"wall_s": wall, "rss_gib": usage.ru_maxrss / 2**20, "timings": stats["timings_s"], "whole": whole,
            "out": out}


def emphysema(row: dict) -> float:
    return sum(row.get(k, 0.0) for k in ("cle_pct", "pse_pct", "ple_pct"))


def differing_share(a: Path, b: Path) -> float:
    """Share of lung voxels (subtype map > 0 in either) whose subtype differs between two output folders."""
    import SimpleITK as sitk

    x = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "subtypes.nii.gz")))
    y = sitk.GetArrayFromImage(sitk.ReadImage(str(b / "subtypes.nii.gz")))
    lung = (x > 0) | (y > 0)
    return float((x[lung] != y[lung]).mean()) if lung.any() else 0.0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ct", nargs="?", default=str(DEFAULT_CT))
    ap.add_argument("--slices", default="133,266,533")
    ap.add_argument("--engines", default=f"this={ROOT / 'DrasCLRSlicer'}")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", default=str(ROOT / "build" / "bench-slices"))
    args = ap.parse_args(argv)
    ct = Path(args.ct)
    if not ct.exists():
        print(f"skip: {ct} not found", file=sys.stderr)
        return 0
    work = Path(args.work)
    engines = dict(e.split("=", 1) for e in args.engines.split(","))
    own_args = {name: path.split("+")[1:] for name, path in engines.items()}
    engines = {name: path.split("+")[0] for name, path in engines.items()}
    models = {name: path.split("@", 1)[1] if "@" in path else None for name, path in engines.items()}
    engines = {name: path.split("@", 1)[0] for name, path in engines.items()}
    counts = [int(s) for s in args.slices.split(",")]
    cts = {n: resampled(ct, n, work) for n in counts}
    results: dict[tuple[str, int], list[dict]] = {}
    for rep in range(args.repeat):
        for n in counts:
            for name, path in engines.items():  # interleaved: a drift of the machine hits every engine alike
                own = (["--model", models[name]] if models[name] else []) + own_args[name]
                r = run(Path(path).resolve(), cts[n], work / f"out_{name}_{n}_{rep}", [*extra, *own])
                results.setdefault((name, n), []).append(r)
                print(f"{name:>8} {n:4d} slices: {r['wall_s']:6.1f} s  {r['rss_gib']:.2f} GiB", file=sys.stderr)
    best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in results.items()}
    stages = list(dict.fromkeys(s for r in best.values() for s in r["timings"]))  # in the order they ran
    print(f"| engine | slices | wall s | × {counts[0]} slices | peak RSS GiB | " + " | ".join(
        s.removesuffix("_s") for s in stages) + " | emphysema % | Δ vs first engine | subtype differs |")
    print("|" + "---|" * (7 + len(stages)))
    first = next(iter(engines))
    for n in counts:
        for name in engines:
            r = best[(name, n)]
            ratio = r["wall_s"] / best[(name, counts[0])]["wall_s"]
            base = best[(first, n)]
            delta = emphysema(r["whole"]) - emphysema(base["whole"])
            share = differing_share(base["out"], r["out"]) if name != first else 0.0
            print(f"| {name} | {n} | {r['wall_s']:.1f} | {ratio:.2f} | {r['rss_gib']:.2f} | "
                  + " | ".join(f"{r['timings'].get(s, 0):.1f}" for s in stages)
                  + f" | {emphysema(r['whole']):.2f} | {delta:+.2f} | {100 * share:.2f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

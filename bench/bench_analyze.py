"""Benchmark: ``drasclr analyze`` on one CT, stage by stage, with wall time and peak memory.

    PYTHONPATH=DrasCLRSlicer python bench/bench_analyze.py CT [--model M] [--device auto|cpu|cuda] [--threads N]
        [--no-tta] [--regions lobes|zones] [--paths fast,reference] [--models demo-v4,demo-v5] [--repeat R]

Prints one line per stage (read, lung mask, regions, registration, subtypes, embedding, stats, write+report),
the total, and the process's peak resident memory (and peak CUDA memory on a GPU).

``--paths fast,reference``: the dense-inference implementations side by side in one run, each analysis in its own
child process (its own peak memory), the paths interleaved ``--repeat`` times; prints the per-stage median of
each path, the ratio to the last path, CPU seconds, and how many lung voxels' subtypes differ between the paths.
``reference`` is the unfused model run the old way (``DRASCLR_DENSE_PATH=reference``, see drasclr/dense/fused.py).
``--models demo-v4,demo-v5``: the same for models (names or folders); with ``--paths`` too, every path × model.
The last variant is the base of the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("ct")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--no-tta", action="store_true", help="no mirrored test-time augmentation (analyze's default)")
    ap.add_argument("--regions", choices=("lobes", "zones"), default="lobes", help="analyze's --regions")


def run_once(args) -> dict:
    """One analysis in this process: stage timings (s), CPU seconds, peak RSS (GiB), run facts."""
    import torch

    from drasclr.analysis.analyze import analyze, write_analysis
    from drasclr.analysis.loaded_model import LoadedModel
    from drasclr.core.device import describe_device, pick_device
    from drasclr.core.io import read_ct
    from drasclr.core.settings import AnalysisSettings
    from drasclr.dense.store import load_segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    model = card = None
    if not args.no_model:
        model, card, _ = load_segmenter(args.model, device)
    t_model = time.perf_counter() - t0
    t1 = time.perf_counter()
    ct = read_ct(args.ct)
    t_read = time.perf_counter() - t1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    loaded = LoadedModel(model, card, None, device) if model is not None else None
    result = analyze(ct, model=loaded, settings=AnalysisSettings(tta=not args.no_tta, regions=args.regions))
    keep = getattr(args, "keep", None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(keep) if keep else Path(tmp) / "out"
        t2 = time.perf_counter()
        write_analysis(result, out)
        t_write = time.perf_counter() - t2
    rows = [("model load", t_model), ("read", t_read)] + [(k[:-2].replace("_", " "), v)
                                                         for k, v in result.timings.items()]
    rows.append(("write + report", t_write))
    whole = next(r for r in result.rows if r["region"] == "whole_lung")
    return {"stages": rows, "total": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024,
            "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "device": describe_device(device), "threads": torch.get_num_threads(),
            "ct": f"{ct.shape_xyz} {tuple(round(s, 3) for s in ct.spacing)} mm",
            "whole_lung": f"{whole['volume_ml']:.0f} ml, LAA-950 {whole['laa950_pct']:.1f} %, CLE/PSE/PLE "
                          + "/".join(f"{whole.get(k + '_pct', float('nan')):.1f}" for k in ("cle", "pse", "ple"))
                          + " %"}


def print_single(args, r: dict) -> None:
    print(f"device: {r['device']}, torch threads {r['threads']}, CT {r['ct']}, "
          f"mirrored TTA {'off' if args.no_tta else 'on'}, regions {args.regions}")
    for name, sec in r["stages"]:
        print(f"  {name:<16} {sec:8.2f} s")
    print(f"  {'total':<16} {r['total']:8.2f} s   (CPU {r['cpu']:.1f} s)")
    print(f"peak RSS: {r['peak_rss_gib']:.2f} GiB")
    if r["peak_cuda_gib"] is not None:
        print(f"peak CUDA memory: {r['peak_cuda_gib']:.2f} GiB")
    print(f"whole lung: {r['whole_lung']}")


def _child_argv(args) -> list[str]:
    argv = [args.ct, "--device", args.device, "--regions", args.regions]
    argv += ["--threads", str(args.threads)] if args.threads else []
    return argv + ["--no-model"] * args.no_model + ["--no-tta"] * args.no_tta


def variants(args) -> list[tuple[str, str, str | None]]:
    """``(label, dense path, model)`` for every path × model compared (``--paths`` and ``--models``)."""
    paths = [p.strip() for p in (args.paths or "fast").split(",") if p.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else [args.model]
    out = []
    for p in paths:
        for m in models:
            label = "/".join(x for x, many in ((p, len(paths) > 1), (Path(m or "default").name, len(models) > 1))
                             if many) or p
            out.append((label, p, m))
    return out


def _child(argv: list[str], path: str, model: str | None, out_dir: Path) -> dict:
    env = dict(os.environ, DRASCLR_DENSE_PATH=path)
    js = out_dir / "result.json"
    cmd = [sys.executable, __file__, *argv, *(["--model", model] if model else []), "--child-json", str(js),
           "--keep", str(out_dir / "out")]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(js.read_text())


def _differing_voxels(a: Path, b: Path) -> tuple[int, int]:
    """Lung voxels whose subtype differs between two analysis folders, and the lung voxels."""

    from drasclr.core.io import read_image

    sa, sb = read_image(a / "subtypes.nii.gz").array, read_image(b / "subtypes.nii.gz").array
    lung = (sa > 0) | (sb > 0)
    return int((sa[lung] != sb[lung]).sum()), int(lung.sum())


def compare(args, argv: list[str]) -> None:
    todo = variants(args)
    paths = [label for label, _, _ in todo]
    runs: dict[str, list[dict]] = {p: [] for p in paths}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for label, path, model in todo:
                d = Path(tmp) / f"{label.replace('/', '_')}-{rep}"
                d.mkdir()
                runs[label].append(_child(argv, path, model, d))
                print(f"  ({label} run {rep + 1}: {runs[label][-1]['total']:.1f} s)", file=sys.stderr, flush=True)
        first_out = {p: Path(tmp) / f"{p.replace('/', '_')}-0" / "out" for p in paths}
        diffs = {p: _differing_voxels(first_out[p], first_out[paths[-1]]) for p in paths[:-1]}
    first = runs[paths[0]][0]
    print(f"device: {first['device']}, torch threads {first['threads']}, CT {first['ct']}, "
          f"mirrored TTA {'off' if args.no_tta else 'on'}, regions {args.regions}; medians of {args.repeat} "
          f"interleaved run(s) per path, each in its own process; load average before: {args.load_before}")
    names = list(dict.fromkeys(n for p in paths for n, _ in runs[p][0]["stages"]))  # union, first-seen order
    base = paths[-1]

    def med(p, f):
        return statistics.median(f(r) for r in runs[p])

    print(f"  {'stage':<16}" + "".join(f" {p:>11}" for p in paths) + "".join(f" {p + '/' + base:>18}"
                                                                          for p in paths[:-1]))
    table = [(n, {p: med(p, lambda r, n=n: dict(r["stages"]).get(n, 0.0)) for p in paths}) for n in names]
    table += [("total", {p: med(p, lambda r: r["total"]) for p in paths}),
              ("CPU seconds", {p: med(p, lambda r: r["cpu"]) for p in paths})]
    for name, v in table:
        ratios = "".join(f" {v[p] / v[base]:>17.2f}x" if v[base] > 0 else f" {'-':>18}" for p in paths[:-1])
        print(f"  {name:<16}" + "".join(f" {v[p]:>9.2f} s" for p in paths) + ratios)
    print("  peak RSS        " + "".join(f" {max(r['peak_rss_gib'] for r in runs[p]):>7.2f} GiB" for p in paths))
    for p, (n, total) in diffs.items():
        print(f"subtype map {p} vs {base}: {n} of {total} lung voxels differ ({100.0 * n / max(total, 1):.4f} %)")
    for p in paths:
        print(f"whole lung ({p}): {runs[p][0]['whole_lung']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    _options(ap)
    ap.add_argument("--paths", default=None, help="compare dense-inference paths, e.g. fast,reference")
    ap.add_argument("--models", default=None, help="compare models, e.g. demo-v4,demo-v5 (names or folders)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child-json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--keep", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_json:
        Path(args.child_json).write_text(json.dumps(run_once(args)))
    elif args.paths or args.models:
        args.load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
        compare(args, _child_argv(args))
    else:
        print_single(args, run_once(args))


if __name__ == "__main__":
    main()

"""Benchmark: ``drasclr analyze`` on one CT, stage by stage, with wall time and peak memory.

    PYTHONPATH=DrasCLRSlicer python bench/bench_analyze.py CT [--model M] [--device auto|cpu|cuda] [--threads N]
        [--no-tta]

Prints one line per stage (read, lung mask, regions, registration, subtypes, embedding, stats, write+report),
the total, and the process's peak resident memory (and peak CUDA memory on a GPU).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ct")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--no-tta", action="store_true", help="no mirrored test-time augmentation (analyze's default)")
    args = ap.parse_args()
    import torch

    from drasclr.analyze import analyze, write_analysis
    from drasclr.dense.store import load_segmenter
    from drasclr.device import describe_device, pick_device
    from drasclr.io import read_ct

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
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
    result = analyze(ct, model=model, device=device, model_card=card, tta=not args.no_tta)
    with tempfile.TemporaryDirectory() as tmp:
        t2 = time.perf_counter()
        write_analysis(result, Path(tmp) / "out")
        t_write = time.perf_counter() - t2
    total = time.perf_counter() - t0
    print(f"device: {describe_device(device)}, torch threads {torch.get_num_threads()}, CT {ct.shape_xyz} "
          f"{tuple(round(s, 3) for s in ct.spacing)} mm, mirrored TTA {'off' if args.no_tta else 'on'}")
    rows = [("model load", t_model), ("read", t_read)] + [(k[:-2].replace("_", " "), v)
                                                         for k, v in result.timings.items()]
    rows.append(("write + report", t_write))
    for name, sec in rows:
        print(f"  {name:<16} {sec:8.2f} s")
    print(f"  {'total':<16} {total:8.2f} s")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GiB")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    whole = next(r for r in result.rows if r["region"] == "whole_lung")
    print(f"whole lung: {whole['volume_ml']:.0f} ml, LAA-950 {whole['laa950_pct']:.1f} %")


if __name__ == "__main__":
    main()

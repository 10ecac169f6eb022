"""Benchmark: DrasCLR encoder forward on N patches at N different locations (the feature-extraction case).

Compares, in one run and interleaved (median of --repeat rounds):
  (a) naive  — the reference's per-sample loop (one mixed kernel and one conv3d per sample, every layer)
  (b) ours   — drasclr.model.CondConv3d mode "auto" (grouped convolution on large maps, mixed expert outputs on
               small ones; one shared kernel when a batch holds one location)
  (c) floor  — the same network with plain batched nn.Conv3d layers and no conditioning
and, with --train, one training step (forward + backward) at a single location, ours vs floor.

    PYTHONPATH=DrasCLRSlicer python bench/bench_condconv.py [--n 581] [--batch 581] [--repeat 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from drasclr.model import DrasCLREncoder, PlainEncoder


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_forward(model, x, loc, batch, device):
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            model(x[i:i + batch], loc[i:i + batch])
    _sync(device)
    return time.perf_counter() - t0


def run_train_step(model, x, loc, device):
    _sync(device)
    t0 = time.perf_counter()
    model(x, loc).square().mean().backward()
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=581, help="patches (each at its own location)")
    ap.add_argument("--batch", type=int, default=581, help="patches per forward call")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-naive", action="store_true", help="skip the slow naive loop")
    ap.add_argument("--train", action="store_true", help="also time a training step at one location")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = DrasCLREncoder().to(device).eval()
    naive = DrasCLREncoder().to(device).eval().set_condconv_mode("loop")
    naive.load_state_dict(ours.state_dict())
    floor = PlainEncoder().to(device).eval()
    x = torch.randn(args.n, 1, 32, 32, 32, device=device)
    loc = torch.rand(args.n, 3, device=device) * 2 - 1
    variants = {"floor": floor, "ours": ours} | ({} if args.no_naive else {"naive": naive})
    with torch.no_grad():  # warm-up, and check (b) equals (a)
        for m in variants.values():
            m(x[:8], loc[:8])
        if not args.no_naive:
            err = (ours(x[:16], loc[:16]) - naive(x[:16], loc[:16])).abs().max().item()
            print(f"max |ours - naive| on 16 patches: {err:.2e}")
    times = {k: [] for k in variants}
    for _ in range(args.repeat):
        for k, m in variants.items():
            times[k].append(run_forward(m, x, loc, args.batch, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {args.n} patches at {args.n} locations, batch {args.batch}")
    for k in variants:
        rounds = ", ".join(f"{t:.2f}" for t in times[k])
        print(f"  {k:6s} {med[k]:8.3f} s  ({args.n / med[k]:7.1f} patches/s)  rounds: {rounds}")
    for label, t in (("median", med), ("best", best)):
        line = f"  {label:6s} ours / floor = {t['ours'] / t['floor']:.2f}x"
        if "naive" in t:
            line += f"; naive / floor = {t['naive'] / t['floor']:.2f}x; naive / ours = {t['naive'] / t['ours']:.1f}x"
        print(line)
    if args.train:
        b = min(32, args.n)
        xt, lt = x[:b], loc[:1].repeat(b, 1)
        tr = {"floor": PlainEncoder().to(device).train(), "ours": DrasCLREncoder().to(device).train()}
        tt = {k: [] for k in tr}
        for m in tr.values():
            run_train_step(m, xt, lt, device)
        for _ in range(args.repeat):
            for k, m in tr.items():
                tt[k].append(run_train_step(m, xt, lt, device))
        mt = {k: statistics.median(v) for k, v in tt.items()}
        print(f"train step, batch {b} at one location: ours {mt['ours']:.3f} s, floor {mt['floor']:.3f} s, "
              f"ratio {mt['ours'] / mt['floor']:.2f}x")


if __name__ == "__main__":
    main()

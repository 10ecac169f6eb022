"""Phantom benchmarks and doc figures (plain script, prints numbers).

    PYTHONPATH=DrasCLRSlicer python bench/bench_phantom.py speed            # one 256x256x200 case, one core (v1)
    PYTHONPATH=DrasCLRSlicer python bench/bench_phantom.py speed --generator 3   # default v3 HRCT cases (or 2)
    PYTHONPATH=DrasCLRSlicer python bench/bench_phantom.py cohort --n 20    # a cohort across all cores
    PYTHONPATH=DrasCLRSlicer python bench/bench_phantom.py kernels          # soft vs sharp vs real kernel B/L
    PYTHONPATH=DrasCLRSlicer python bench/bench_phantom.py figures          # docs/images/phantom_*.png (v1)
    PYTHONPATH=DrasCLRSlicer python bench/bench_phantom.py figures --generator 2   # docs/images/phantom_v2_*.png
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # "one core" for the speed figure
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL = next((Path(d) for d in (os.environ.get("DRASCLR_REAL_DATA", ""), REPO.parent / "shared" / "data" / "real",
                                REPO.parents[1] / "shared" / "data" / "real") if d and Path(d).exists()),
            REPO.parent / "shared" / "data" / "real")


def speed(args):
    import resource

    from drasclr.research.phantom import PhantomOptions, generate_case, write_case

    hrct = args.generator != "1"
    opts = PhantomOptions(generator=args.generator) if hrct else PhantomOptions(size=(256, 256, 200), generator="1")
    if args.size:  # e.g. the realism bench protocol: --size 512 512 160 --thickness 1.25 --sick
        opts = dataclasses.replace(opts, size=tuple(args.size), thickness=args.thickness)
    if args.sick:
        opts = dataclasses.replace(opts, subtypes=("cle", "pse", "ple"))
    for seed in args.seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        case = generate_case(seed, 0, opts)
        t1, c1 = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            write_case(case, Path(tmp) / "c")
        t2 = time.perf_counter()
        pr = case.meta["protocol"]
        print(f"seed {seed}: {'x'.join(map(str, pr['size_xyz']))} generate {t1 - t0:.1f} s, write {t2 - t1:.1f} s "
              f"(kernel {pr['kernel']}, {pr['fine_subslices']} sub-slices, healthy {case.meta['healthy']}); "
              f"generate CPU {c1 - c0:.1f} s, peak memory so far "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


def cohort(args):
    from drasclr.research.phantom import PhantomOptions, write_cohort

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        metas = write_cohort(Path(tmp) / "cohort", args.n, seed=args.seed, workers=args.workers,
                             options=PhantomOptions(generator=args.generator))
        dt = time.perf_counter() - t0
    sizes = [tuple(m["protocol"]["size_xyz"]) for m in metas]
    has = {k: sum(m["disease"][f"{k}_severity"] > 0 for m in metas) for k in ("cle", "pse", "ple")}
    print(f"cohort of {args.n} default cases (sizes {min(sizes)}..{max(sizes)}), "
          f"workers {args.workers or os.cpu_count()}: {dt:.0f} s ({dt / args.n:.1f} s per case); "
          f"healthy {sum(m['healthy'] for m in metas)}, with CLE {has['cle']}, PSE {has['pse']}, PLE {has['ple']}")


def _lung_stats(ct, mask) -> dict:
    v = ct.array[mask].astype(np.float32)
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return {"median": q50, "q25": q25, "q75": q75, "laa950": 100 * float((v < -950).mean()),
            "laa910": 100 * float((v < -910).mean())}


def kernels(args):
    from drasclr.anatomy.lungs import segment_lungs
    from drasclr.core.io import read_ct
    from drasclr.research.phantom import PhantomOptions, generate_case

    rows = []
    for name in ("lungpetctdx_A0001_5mm_kernelB", "lungpetctdx_A0001_5mm_kernelL"):
        path = REAL / f"{name}.nii.gz"
        if path.exists():
            ct = read_ct(path)
            rows.append((f"real {name[-7:]}", _lung_stats(ct, segment_lungs(ct).array > 0)))
    for kernel, noise in (("soft", 12.0), ("sharp", 50.0)):
        for seed in range(args.seeds):
            opts = PhantomOptions(size=(512, 512, 64), spacing=0.842, thickness=5.0, kernel=kernel, noise=noise,
                                  generator="1")
            case = generate_case(seed, 0, opts, healthy=True)
            rows.append((f"phantom {kernel} seed {seed}", _lung_stats(case.ct, segment_lungs(case.ct).array > 0)))
    print("| scan | median HU | IQR HU | LAA-950 % | LAA-910 % |")
    print("|---|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['median']:.0f} | {s['q25']:.0f} .. {s['q75']:.0f} | {s['laa950']:.2f} | "
              f"{s['laa910']:.1f} |")


def figures(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from drasclr.research.phantom import PhantomOptions, generate_case

    out = REPO / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    g = args.generator
    tag = "" if g == "1" else f"_v{g}"
    cases = [(3, PhantomOptions(size=(320, 320, None), thickness=1.25, kernel="soft", healthy_fraction=1.0,
                                generator=g)),
             (8, PhantomOptions(size=(320, 320, None), thickness=1.25, kernel="soft", subtypes=("cle", "pse"),
                                severity=0.8, generator=g)),
             (5, PhantomOptions(size=(320, 320, None), thickness=1.25, kernel="sharp", subtypes=("ple", "cle"),
                                severity=0.8, generator=g))]
    if args.only_subtypes:
        cases = []
    cmap = ListedColormap([(0, 0, 0, 0), (0, 0, 0, 0), (1, 0.2, 0.2, 0.8), (0.2, 0.8, 1, 0.8), (1, 0.85, 0.1, 0.8)])
    fig, ax = plt.subplots(max(1, len(cases)), 4, figsize=(20, 5.2 * max(1, len(cases))), squeeze=False)
    for row, (seed, opts) in enumerate(cases):
        c = generate_case(seed, 0, opts)
        a, reg, sub = c.ct.array, c.regions.array, c.subtypes.array
        sx, _, sz = c.ct.spacing
        lz = np.argwhere(reg > 0)
        z0, z1 = lz[:, 0].min(), lz[:, 0].max()
        yc = int(np.median(lz[:, 1]))
        for col, f in enumerate((0.75, 0.45)):
            z = int(z0 + f * (z1 - z0))
            ax[row, col].imshow(a[z], cmap="gray", vmin=-1350, vmax=150)
            ax[row, col].set_title(f"seed {seed} axial {int(f * 100)} % height, {c.meta['protocol']['kernel']} "
                                   f"kernel")
        ax[row, 2].imshow(a[::-1, yc, :], cmap="gray", vmin=-1350, vmax=150, aspect=sz / sx)
        ax[row, 2].set_title("coronal (lung window)")
        ax[row, 3].imshow(a[::-1, yc, :], cmap="gray", vmin=-1350, vmax=150, aspect=sz / sx)
        ax[row, 3].imshow(sub[::-1, yc, :], cmap=cmap, vmin=0, vmax=4, aspect=sz / sx, interpolation="nearest")
        d = c.meta["disease"]
        ax[row, 3].set_title(f"truth: CLE red {d['cle_severity']}, PSE blue {d['pse_severity']}, "
                             f"PLE yellow {d['ple_severity']}")
        for a_ in ax[row]:
            a_.axis("off")
    fig.tight_layout()
    if cases:
        fig.savefig(out / f"phantom{tag}_cases.png", dpi=args.dpi)
        print(f"wrote {out / f'phantom{tag}_cases.png'}")
    plt.close(fig)
    # close-up of the three subtypes: upper zone (CLE, PSE) and lower zone (PLE), narrow lung window
    sz = 384 if g == "1" else 512
    c = generate_case(8, 0, PhantomOptions(size=(sz, sz, None), thickness=1.0, kernel="soft", noise=15.0,
                                           subtypes=("cle", "pse", "ple"), severity=0.6, generator=g))
    a, reg, sub = c.ct.array, c.regions.array, c.subtypes.array
    lz = np.argwhere(reg > 0)
    z0, z1 = lz[:, 0].min(), lz[:, 0].max()
    y0, y1 = lz[:, 1].min() - 5, lz[:, 1].max() + 5
    x0, x1 = lz[:, 2].min() - 5, lz[:, 2].max() + 5
    fig, ax = plt.subplots(2, 2, figsize=(16, 11))
    for row, f in enumerate((0.75, 0.3)):
        z = int(z0 + f * (z1 - z0))
        for col in range(2):
            ax[row, col].imshow(a[z, y0:y1, x0:x1], cmap="gray", vmin=-1100, vmax=-500)
            ax[row, col].axis("off")
        ax[row, 1].imshow(sub[z, y0:y1, x0:x1], cmap=cmap, vmin=0, vmax=4, interpolation="nearest")
        ax[row, 0].set_title(f"seed 8, {int(f * 100)} % of lung height, window -1100..-500 HU")
        ax[row, 1].set_title("truth: CLE red, PSE blue, PLE yellow")
    fig.tight_layout()
    fig.savefig(out / f"phantom{tag}_subtypes.png", dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {out / f'phantom{tag}_subtypes.png'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--generator", default="1", choices=["1", "2", "3"])
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    s.add_argument("--thickness", type=float, default=None)
    s.add_argument("--sick", action="store_true", help="all three subtypes present")
    c = sub.add_parser("cohort")
    c.add_argument("--generator", default="3", choices=["1", "2", "3"])
    c.add_argument("--n", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--workers", type=int, default=None)
    k = sub.add_parser("kernels")
    k.add_argument("--seeds", type=int, default=2)
    f = sub.add_parser("figures")
    f.add_argument("--dpi", type=int, default=45)
    f.add_argument("--generator", default="1", choices=["1", "2", "3"])
    f.add_argument("--only-subtypes", action="store_true", help="only the subtype close-up")
    args = p.parse_args(argv)
    {"speed": speed, "cohort": cohort, "kernels": kernels, "figures": figures}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())

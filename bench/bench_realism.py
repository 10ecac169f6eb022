"""Realism of the phantom emphysema against real expert-labelled patches (Chest Imaging Platform).

    PYTHONPATH=DrasCLRSlicer python bench/bench_realism.py windows --generator 2 --seed 300 --n 12 --work DIR
    PYTHONPATH=DrasCLRSlicer python bench/bench_realism.py report --work DIR [--json OUT.json]
    PYTHONPATH=DrasCLRSlicer python bench/bench_realism.py montage --work DIR --png docs/images/realism_montage.png

``windows`` generates phantom cases one at a time (all three subtypes present, severity drawn per case) and keeps
31 x 31 axial windows of pure label resampled to 0.7 mm in-plane, one ``.npz`` per case in ``--work`` (a case
already there is not generated again: the run resumes). ``report`` compares them with the real patches
(``../shared/data/real_labels/cip_emphysema_patches/patches.npz``, licence ``CIP-License.txt`` beside it):
per-class HU statistics (median, IQR, % < -950, % > -500, area-weighted size of the < -950 HU clusters) and
the cross-domain balanced accuracy both ways of the shipped reference classifier ``cip-lh`` (drasclr.reference):
real -> phantom is cip-lh as shipped (trained on the real patches) reading the phantom windows; phantom -> real is
the same classifier with the phantom windows as its references reading the real patches. See docs/realism.md.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_LABELS = Path("data") / "real_labels" / "cip_emphysema_patches"
PATCH_DIR = next((Path(d) / _LABELS for d in (os.environ.get("DRASCLR_SHARED", ""), REPO.parent / "shared",
                                              REPO.parents[1] / "shared") if d and (Path(d) / _LABELS).exists()),
                 REPO.parent / "shared" / _LABELS)
CLASSES = (1, 2, 3, 4)
NAMES = {1: "normal", 2: "CLE", 3: "PSE", 4: "PLE"}
WIN = 31
PIXEL_MM = 0.7  # phantom windows are resampled to this in-plane pixel
REAL_PIXEL_MM = 0.65  # real patches: COPDGene HRCT, about 0.6-0.7 mm (not stored)
MIN_SHARE = {1: 1.0, 2: 0.15, 3: 0.15, 4: 0.7}  # least share of the window's lung in the centre's class


# ----------------------------------------------------------------------------------------------- real patches
def real_patches() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(patches int16 (N, 31, 31), subtype (N,), cip_class (N,))`` of the real set."""
    path = PATCH_DIR / "patches.npz"
    if not path.exists():
        raise SystemExit(f"real patches not found: {path} (set DRASCLR_SHARED to the shared folder)")
    with np.load(path, allow_pickle=False) as d:
        return d["patches"], d["subtype"].astype(int), d["cip_class"]


# ------------------------------------------------------------------------------------------- phantom windows
def case_windows(ct: np.ndarray, sub: np.ndarray, spacing: float, rng: np.random.Generator, per_class: int = 40,
                 tries: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """31 x 31 axial windows (resampled to ``PIXEL_MM``) centred on voxels of each class whose labels are pure:
    only that class, normal lung and non-lung inside; windows of normal, CLE and PLE lie at least 95 % in the
    lung (the real patches sit in the parenchyma), PSE windows may hold the chest wall. As an expert's region of
    interest sits inside the finding, the centre's class covers at least ``MIN_SHARE`` of the window's lung
    (normal: all of it; CLE and PSE 15 %; PLE, a whole-lobule finding, 70 %)."""
    offs = (np.arange(WIN) - WIN // 2) * PIXEL_MM / spacing
    wins, labs = [], []
    for c in CLASSES:
        cand = np.flatnonzero(sub.reshape(-1) == c)
        if len(cand) == 0:
            continue
        kept = 0
        for flat in rng.choice(cand, size=min(tries, len(cand)), replace=False):
            z, y, x = np.unravel_index(flat, sub.shape)
            yy, xx = np.meshgrid(y + offs, x + offs, indexing="ij")
            if yy.min() < 0 or xx.min() < 0 or yy.max() > sub.shape[1] - 1 or xx.max() > sub.shape[2] - 1:
                continue
            lab = ndi.map_coordinates(sub[z], [yy, xx], order=0)
            present = set(np.unique(lab).tolist()) - {0, 1}
            if present - {c}:
                continue
            if c != 3 and (lab > 0).mean() < 0.95:
                continue
            if (lab == c).sum() < MIN_SHARE[c] * (lab > 0).sum():
                continue
            wins.append(ndi.map_coordinates(ct[z].astype(np.float32), [yy, xx], order=1))
            labs.append(c)
            kept += 1
            if kept >= per_class:
                break
    if not wins:
        return np.zeros((0, WIN, WIN), np.int16), np.zeros(0, int)
    return np.rint(np.stack(wins)).astype(np.int16), np.asarray(labs)


def shown_ct(case, mode: str):
    """``(CT, harmonized?)``: the case's CT as stored (``off``) or as ``analyze`` hands it to the model (``auto``:
    :func:`drasclr.acquisition.harmonize.harmonize` with the case's lungs, as ``finetune cohort --harmonize auto``
    trains on it)."""
    if mode == "off":
        return case.ct, False
    from drasclr.acquisition.harmonize import harmonize

    lungs = case.regions.with_array((case.regions.array > 0).astype(np.uint8))
    out, record = harmonize(case.ct, lungs, mode)
    return out, bool(record.applied)


def make_windows(args) -> None:
    from drasclr.research.phantom import PhantomOptions, generate_case

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    kw = {"generator": args.generator, "subtypes": ("cle", "pse", "ple")}
    if args.size:
        kw["size"] = tuple(args.size)
    if args.thickness:
        kw["thickness"] = args.thickness
    if args.kernel:
        kw["kernel"] = args.kernel
    if args.acquisition != "standard":
        kw["acquisition"] = args.acquisition
    opts = PhantomOptions(**kw).validate()
    for i in range(args.n):
        out = work / f"seed{args.seed}_case{i:03d}.npz"
        if out.exists():
            continue
        t0 = time.perf_counter()
        case = generate_case(args.seed, i, opts)
        dt = time.perf_counter() - t0
        ct, harmonized = shown_ct(case, args.harmonize)
        rng = np.random.default_rng([args.seed, i, 77])
        w, lab = case_windows(ct.array, case.subtypes.array, float(case.ct.spacing[0]), rng, args.per_class)
        pr = case.meta["protocol"]
        info = {"seed": args.seed, "index": i, "generator": case.meta["generator_version"], "seconds": round(dt, 1),
                "size_xyz": pr["size_xyz"], "spacing_mm": pr["spacing_mm"], "kernel": pr["kernel"],
                "noise_hu": pr["noise_hu"], "disease": case.meta["disease"], "harmonized": harmonized,
                "windows": {NAMES[c]: int((lab == c).sum()) for c in CLASSES}}
        tmp = work / f".{out.name}.tmp.npz"
        np.savez_compressed(tmp, windows=w, subtype=lab, info=np.array(json.dumps(info)))
        os.replace(tmp, out)
        print(json.dumps(info), flush=True)


def load_windows(work: str | Path, with_case: bool = False):
    """``(windows, subtype, infos)`` of every case in ``work`` (plus the case number of each window)."""
    ws, ls, infos, case = [], [], [], []
    for j, f in enumerate(sorted(Path(work).glob("seed*_case*.npz"))):
        with np.load(f, allow_pickle=False) as d:
            ws.append(d["windows"])
            ls.append(d["subtype"])
            infos.append(json.loads(str(d["info"])))
            case.append(np.full(len(d["subtype"]), j))
    if not ws:
        raise SystemExit(f"no phantom windows in {work}: run the 'windows' step first")
    out = (np.concatenate(ws), np.concatenate(ls).astype(int), infos)
    return (*out, np.concatenate(case)) if with_case else out


# ------------------------------------------------------------------------------------------------ statistics
def laa_cluster_mm2(windows: np.ndarray, pixel_mm: float) -> float:
    """Area-weighted mean size (mm²) of the 8-connected clusters of pixels below -950 HU, pooled over windows."""
    sizes = []
    for w in windows:
        lab, n = ndi.label(w < -950, structure=np.ones((3, 3)))
        if n:
            sizes.append(np.bincount(lab.ravel())[1:])
    if not sizes:
        return 0.0
    s = np.concatenate(sizes).astype(float)
    return float((s ** 2).sum() / s.sum() * pixel_mm ** 2)


def class_stats(windows: np.ndarray, pixel_mm: float) -> dict:
    v = windows.reshape(-1).astype(float)
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return {"n": int(len(windows)), "median": float(q50), "iqr": float(q75 - q25),
            "below_950_pct": float(100 * (v < -950).mean()), "above_500_pct": float(100 * (v > -500).mean()),
            "laa_cluster_mm2": laa_cluster_mm2(windows, pixel_mm)}


# ------------------------------------------------------------------- the judge: the shipped reference classifier
def judge_trained_on(windows: np.ndarray | None = None, y: np.ndarray | None = None):
    """The shipped ``cip-lh`` (drasclr.reference, trained on the real CIP patches) when ``windows`` is None, else the
    same classifier (histogram spec, k, paraseptal rules) with ``windows``/``y`` as its references."""
    import dataclasses

    from drasclr.reference.features import patch_features
    from drasclr.reference.store import load_reference

    shipped, _, _ = load_reference()
    if windows is None:
        return shipped
    feats, _ = patch_features(windows, shipped.spec)
    return dataclasses.replace(shipped, features=feats, labels=np.asarray(y, np.uint8))


def knn_predict(judge, test_w: np.ndarray) -> np.ndarray:
    """The judge's subtype of each 31 x 31 window (its features at the window's centre)."""
    from drasclr.reference.features import patch_features

    feats, dense = patch_features(test_w, judge.spec)
    return judge.predict(feats, dense).astype(int)


def balanced(judge, test_w, test_y) -> dict:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, recall_score

    pred = knn_predict(judge, test_w)
    rec = recall_score(test_y, pred, labels=list(CLASSES), average=None, zero_division=0)
    return {"balanced_accuracy": float(balanced_accuracy_score(test_y, pred)),
            "recall": {NAMES[c]: float(r) for c, r in zip(CLASSES, rec)},
            "confusion": confusion_matrix(test_y, pred, labels=list(CLASSES)).tolist()}


def cap_per_class(y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    keep = [rng.permutation(np.flatnonzero(y == c))[:cap] for c in CLASSES]
    return np.sort(np.concatenate(keep))


def report(args) -> dict:
    rw, ry, _ = real_patches()
    pw, py, infos, case_of = load_windows(args.work, with_case=True)
    rng = np.random.default_rng(0)
    sel = cap_per_class(py, args.cap, rng)  # class-balanced phantom training / test set
    pw, py, case_of = pw[sel], py[sel], case_of[sel]
    out = {"work": str(args.work), "cases": len(infos),
           "generator": sorted({i["generator"] for i in infos}), "seeds": sorted({i["seed"] for i in infos}),
           "seconds_per_case": float(np.mean([i["seconds"] for i in infos])),
           "stats": {"real": {NAMES[c]: class_stats(rw[ry == c], REAL_PIXEL_MM) for c in CLASSES},
                     "phantom": {NAMES[c]: class_stats(pw[py == c], PIXEL_MM) for c in CLASSES if (py == c).any()}},
           "real_to_phantom": balanced(judge_trained_on(), pw, py),
           "phantom_to_real": balanced(judge_trained_on(pw, py), rw, ry)}
    print(f"{out['cases']} phantom cases (generator {out['generator']}, seeds {out['seeds']}), "
          f"{len(py)} windows {np.bincount(py, minlength=5)[1:].tolist()}, "
          f"{out['seconds_per_case']:.0f} s a case")
    print("\n| class | source | windows | median HU | IQR HU | % < -950 | % > -500 | LAA cluster mm² |")
    print("|---|---|---|---|---|---|---|---|")
    for c in CLASSES:
        for src in ("real", "phantom"):
            s = out["stats"][src].get(NAMES[c])
            if s:
                print(f"| {NAMES[c]} | {src} | {s['n']} | {s['median']:.0f} | {s['iqr']:.0f} | "
                      f"{s['below_950_pct']:.1f} | {s['above_500_pct']:.1f} | {s['laa_cluster_mm2']:.0f} |")
    print("\n| trained on -> tested on | balanced accuracy | recall normal | CLE | PSE | PLE |")
    print("|---|---|---|---|---|---|")
    for key, name in (("real_to_phantom", "real -> phantom"), ("phantom_to_real", "phantom -> real")):
        r = out[key]
        print(f"| {name} | {r['balanced_accuracy']:.2f} | " + " | ".join(f"{r['recall'][NAMES[c]]:.2f}"
                                                                      for c in CLASSES) + " |")
    print("\nphantom normal windows by kernel (real: 2.1 % below -950 HU):")
    for kern in ("soft", "sharp", "lung"):
        m = np.isin(case_of, [j for j, i in enumerate(infos) if i["kernel"] == kern]) & (py == 1)
        if m.any():
            s = class_stats(pw[m], PIXEL_MM)
            out.setdefault("normal_by_kernel", {})[kern] = s
            print(f"  {kern}: {s['n']} windows, median {s['median']:.0f} HU, IQR {s['iqr']:.0f}, "
                  f"{s['below_950_pct']:.1f} % < -950, {s['above_500_pct']:.1f} % > -500")
    for key in ("real_to_phantom", "phantom_to_real"):
        print(f"{key} confusion (rows truth normal/CLE/PSE/PLE): {out[key]['confusion']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


def montage(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rw, ry, _ = real_patches()
    pw, py, _ = load_windows(args.work)
    rng = np.random.default_rng(args.montage_seed)
    k = 8
    fig, axes = plt.subplots(8, k, figsize=(k * 1.2, 8 * 1.25))
    for r, (c, src) in enumerate([(c, s) for c in CLASSES for s in ("real", "phantom")]):
        w, y = (rw, ry) if src == "real" else (pw, py)
        idx = rng.permutation(np.flatnonzero(y == c))[:k]
        for j in range(k):
            ax = axes[r, j]
            ax.axis("off")
            if j < len(idx):
                ax.imshow(w[idx[j]], cmap="gray", vmin=-1100, vmax=-300, interpolation="nearest")
        axes[r, 0].text(-4, WIN // 2, f"{NAMES[c]}\n{src}", ha="right", va="center", fontsize=9)
    fig.suptitle("31 x 31 axial windows, -1100..-300 HU: real (CIP) vs phantom, per class", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.08)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=90)
    print(f"wrote {args.png}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("windows", help="generate phantoms and keep pure-label windows (resumable)")
    w.add_argument("--generator", default="3", choices=["1", "2", "3"])
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--n", type=int, default=12)
    w.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"))
    w.add_argument("--thickness", type=float, default=None)
    w.add_argument("--kernel", default=None, choices=["soft", "sharp", "mixed", "lung"])
    w.add_argument("--acquisition", default="standard", choices=["standard", "clinical"],
                   help="clinical: the clinical acquisition variety (kernels, dose, 0.6-5 mm slices; "
                        "docs/acquisition.md)")
    w.add_argument("--harmonize", default="off", choices=["off", "auto"],
                   help="window the CT as analyze shows it to the model (auto) instead of as generated (off)")
    w.add_argument("--per-class", type=int, default=40)
    w.add_argument("--work", required=True)
    r = sub.add_parser("report", help="statistics and cross-domain kNN")
    r.add_argument("--work", required=True)
    r.add_argument("--cap", type=int, default=150, help="phantom windows per class (class-balanced)")
    r.add_argument("--json", default=None)
    m = sub.add_parser("montage", help="real vs phantom windows per class (PNG)")
    m.add_argument("--work", required=True)
    m.add_argument("--png", default=str(REPO / "docs" / "images" / "realism_montage.png"))
    m.add_argument("--montage-seed", type=int, default=1)
    args = ap.parse_args(argv)
    {"windows": make_windows, "report": report, "montage": montage}[args.cmd](args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""cip-lh across scanners: balanced accuracy on the real CIP patches under acquisition perturbations, for the
shipped versions (docs/reference_classifier.md).

    python bench/bench_reference_robustness.py [--patches DIR]
    python bench/bench_reference_robustness.py --real NAME [NAME ...] [--kinds clean,sharp,...]

For each version (v1 = cip-lh, v2 = cip-lh-v2, built as scripts/build_cip_lh.py builds them): stratified 5-fold
CV (seed 0) scored on the clean test folds and on perturbed copies of them (noise x2 SD, a sharp-kernel filter,
+-40 HU: the conditions v2's references are augmented with; noise x2.5 and +-25 / +-60 HU: conditions no version
was trained on), then a hold-out "by acquisition": the patches carry no scanner or subject ids, so they are split
into terciles of their measured noise SD (drasclr.reference.perturb.noise_sd; dose and kernel set it) and each
tercile is predicted from the other two. ``--real``: whole-lung subtype % of both versions on 8 slices spread over
the lungs of real CTs (../shared/data/real/NAME.nii.gz), clean or perturbed, with the time per map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "DrasCLRSlicer"), str(ROOT / "scripts")]

from build_cip_lh import DEFAULT_PATCHES, PSE_DENSE_FRAC, SPEC, V2_AUGMENT, V2_K, V2_SPEC, K  # noqa: E402

from drasclr.reference.perturb import noise_sd  # noqa: E402
from drasclr.reference.validate import cross_validate  # noqa: E402

SEEN = ("clean", "noise_x2", "sharp", "offset_+40", "offset_-40")
UNSEEN = ("noise_x2.5", "offset_+25", "offset_-25", "offset_+60", "offset_-60")
VERSIONS = {"cip-lh (v1)": (SPEC, K, ()), "cip-lh-v2": (V2_SPEC, V2_K, V2_AUGMENT)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=Path, default=DEFAULT_PATCHES)
    ap.add_argument("--real", nargs="+", help="real CT names: map them instead of the patch CV")
    ap.add_argument("--kinds", default="clean", help="perturbations of the real CTs, comma-separated")
    args = ap.parse_args(argv)
    if args.real:
        return real(args.real, args.kinds.split(","))
    with np.load(args.patches / "patches.npz", allow_pickle=False) as d:
        patches, subtypes, cip_class = d["patches"].astype(np.float32), d["subtype"], d["cip_class"]
    sd = np.array([noise_sd(p) for p in patches])
    edges = np.quantile(sd, [1 / 3, 2 / 3])
    group = np.digitize(sd, edges)
    print(f"noise SD terciles (HU): <{edges[0]:.1f}, {edges[0]:.1f}-{edges[1]:.1f}, >{edges[1]:.1f}; "
          f"patches {np.bincount(group).tolist()}")
    print("| version | " + " | ".join(SEEN + UNSEEN) + " | held out by noise tercile (low / mid / high) |")
    print("|---" * (len(SEEN) + len(UNSEEN) + 2) + "|")
    for name, (spec, k, augment) in VERSIONS.items():
        kw = dict(k=k, pse_dense_frac=PSE_DENSE_FRAC, strata=cip_class, augment=augment)
        cv = cross_validate(patches, subtypes, spec, test_kinds=SEEN + UNSEEN, **kw)
        held = []
        for g in range(3):
            split = [(np.flatnonzero(group != g), np.flatnonzero(group == g))]
            r = cross_validate(patches, subtypes, spec, splits=split, **kw)
            held.append(r["recall"] and _bacc(subtypes[group == g], r["predictions"][group == g]))
        print(f"| {name} | " + " | ".join(f"{cv[kd]['balanced_accuracy']:.3f}" for kd in SEEN + UNSEEN)
              + " | " + " / ".join(f"{h:.3f}" for h in held) + " |", flush=True)
    return 0


def real(names: list[str], kinds: list[str]) -> int:
    import time

    from drasclr.anatomy.lungs import segment_lungs
    from drasclr.core.io import read_ct
    from drasclr.reference.perturb import perturb
    from drasclr.reference.predict import predict_subtypes
    from drasclr.reference.store import load_reference

    models = {m: load_reference(m)[0] for m in ("cip-lh", "cip-lh-v2")}
    print("| scan | perturbation | version | normal / CLE / PSE / PLE % | time (8 slices) |\n|---|---|---|---|---|")
    for name in names:
        ct = read_ct(ROOT.parent / "shared" / "data" / "real" / f"{name}.nii.gz")
        lungs = segment_lungs(ct)
        z = np.flatnonzero(lungs.array.any(axis=(1, 2)))
        keep = z[:: max(1, len(z) // 8)][:8]
        a, lung = ct.array[keep], lungs.array[keep]
        for kind in kinds:
            hu = perturb(a, kind, np.random.default_rng(0))
            img = type(ct)(np.where(a > -1500, np.rint(hu), a).astype(np.int16), ct.spacing, ct.origin, ct.direction)
            for version, clf in models.items():
                t0 = time.perf_counter()
                sub = predict_subtypes(img, img.with_array(lung), clf).array[lung > 0]
                pct = " / ".join(f"{100 * float((sub == c).mean()):.1f}" for c in (1, 2, 3, 4))
                print(f"| {name} | {kind} | {version} | {pct} | {time.perf_counter() - t0:.1f} s |", flush=True)
    return 0


def _bacc(y, p) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, p))


if __name__ == "__main__":
    raise SystemExit(main())

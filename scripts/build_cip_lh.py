#!/usr/bin/env python3
"""Rebuild the reference classifier ``cip-lh`` (DrasCLRSlicer/drasclr/data/models/cip-lh/) from the real patches.

    python scripts/build_cip_lh.py                       # from ../shared/data/real_labels/cip_emphysema_patches
                                                         # (or $DRASCLR_REAL_DATA/../real_labels/...)
    python scripts/build_cip_lh.py --patches DIR -o OUT  # elsewhere
    python scripts/build_cip_lh.py --variant v2          # cip-lh-v2: robust to noise, kernel and HU offset
                                                         # (docs/reference_classifier.md; about 1 min)

Reads ``patches.npz`` (1,337 expert-labelled 31 x 31 HU patches) and ``CIP-License.txt``, computes one local
histogram per patch, runs stratified 5-fold cross-validation (stratified on the CIP classes, seed 0) and writes
``model.json`` (spec, decision rule, CV figures), ``references.npz`` (histogram counts + labels, no patches) and
``LICENSE.txt`` (the CIP preamble and licence). Takes about 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "DrasCLRSlicer"))

from drasclr import __version__  # noqa: E402
from drasclr.reference.features import HistogramSpec, patch_counts  # noqa: E402
from drasclr.reference.perturb import KINDS  # noqa: E402
from drasclr.reference.store import NAME, PACKAGE_DIR, save_reference  # noqa: E402
from drasclr.reference.validate import augmented, cross_validate  # noqa: E402

# ../shared beside the checkout, or $DRASCLR_REAL_DATA/../real_labels (as the tests resolve it)
_REAL = Path(os.environ.get("DRASCLR_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))
DEFAULT_PATCHES = _REAL.parent / "real_labels" / "cip_emphysema_patches"
PIXEL_MM = 0.65  # COPDGene HRCT in-plane pixel size, about 0.6-0.7 mm (not stored with the patches)
PATCH_PX = 31
SPEC = HistogramSpec(lo_hu=-1050.0, bin_hu=10.0, n_bins=60, smooth_bins=1.0, dense_hu=-450.0, dense_weight=1.0,
                     lung_only=True)
K, PSE_DENSE_FRAC, PSE_NEEDS_EMPHYSEMA = 5, 0.28, True
# cip-lh-v2: offset-free shape (median-recentred histogram, fine-detail histogram) beside a down-weighted absolute
# histogram, references augmented with noise x2, a sharp kernel and +-40 HU copies of every patch
V2_SPEC = HistogramSpec(lo_hu=-1050.0, bin_hu=10.0, n_bins=60, smooth_bins=1.0, dense_hu=-450.0, dense_weight=1.0,
                        lung_only=True, absolute_weight=0.2, relative_weight=1.0, detail_bins=30, detail_weight=1.5)
V2_K, V2_AUGMENT = 9, ("noise_x2", "sharp", "offset_+40", "offset_-40")
VARIANTS = {"v1": (NAME, SPEC, K, ()), "v2": (f"{NAME}-v2", V2_SPEC, V2_K, V2_AUGMENT)}
PREAMBLE = ("All or portions of this data have been obtained under license from The Brigham and Women's Hospital, "
            "Inc. and are subject to the terms and conditions below.\n\n"
            "The reference histograms in references.npz (and the parameters in model.json) are derived from the "
            "expert-labelled emphysema patches of the Chest Imaging Platform (acil-bwh/ChestImagingPlatform, "
            "Resources/EmphysemaPatches.mat). The patches themselves are not distributed here.\n\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=Path, default=DEFAULT_PATCHES, help="folder with patches.npz + CIP-License.txt")
    ap.add_argument("-o", "--output", type=Path, default=None, help="classifier folder to write (default: the "
                    "bundled folder of the variant)")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="v1",
                    help="v1: cip-lh as shipped first; v2: cip-lh-v2, robust to noise, kernel and HU offset")
    args = ap.parse_args(argv)
    name, spec, k, augment = VARIANTS[args.variant]
    out = args.output or PACKAGE_DIR.parent / name
    src = args.patches / "patches.npz"
    if not src.is_file():
        print(f"error: {src} not found", file=sys.stderr)
        return 2
    with np.load(src, allow_pickle=False) as d:
        patches, subtypes, cip_class = d["patches"], d["subtype"], d["cip_class"]
    cv = cross_validate(patches, subtypes, spec, k=k, pse_dense_frac=PSE_DENSE_FRAC, strata=cip_class,
                        pse_needs_emphysema=PSE_NEEDS_EMPHYSEMA, augment=augment,
                        test_kinds=KINDS if augment else None)
    robust = {}
    if augment:
        robust = {kind: round(r["balanced_accuracy"], 4) for kind, r in cv.items()}
        cv = cv["clean"]
    cv.pop("predictions")
    train_p, train_y = augmented(patches, subtypes, augment)
    counts, _ = patch_counts(train_p, spec)
    classes, n_per = np.unique(cip_class, return_counts=True)
    card = {
        "name": name, "version": name, "format": "drasclr-reference", "format_version": 1,
        "drasclr_version": __version__,
        "description": "Local-histogram kNN emphysema classifier (after the Chest Imaging Platform's method, "
                       "re-implemented), trained on real expert-labelled axial HRCT patches. Reads 3-D CTs, single "
                       "axial slices and sparse series; no atlas registration, no embedding.",
        "classes": {"1": "normal", "2": "cle", "3": "pse", "4": "ple"},
        "spec": spec.to_dict(), "decision": {"k": k, "metric": "L1", "weights": "inverse distance",
                                             "pse_dense_frac": PSE_DENSE_FRAC,
                                             "pse_needs_emphysema": PSE_NEEDS_EMPHYSEMA},
        "window_mm": PATCH_PX * PIXEL_MM, "pixel_mm": PIXEL_MM,
        "training_data": {"source": "Chest Imaging Platform EmphysemaPatches (acil-bwh/ChestImagingPlatform "
                                    "c73ca30a, Resources/EmphysemaPatches.mat)", "n_patches": int(len(subtypes)),
                          "per_class": {str(c): int(n) for c, n in zip(classes, n_per)},
                          "licence": "CIP licence (LICENSE.txt)"},
        "metrics": {"cv5_balanced_accuracy": round(cv["balanced_accuracy"], 4),
                    "cv5_recall": {k: round(v, 4) for k, v in cv["recall"].items()},
                    "cv5_confusion": cv["confusion"], "cv_note": "stratified 5-fold on the CIP classes, seed 0; no "
                                                                  "subject ids in the data, so optimistic"},
    }
    if augment:
        card["metrics"]["cv5_balanced_accuracy_perturbed"] = robust
        card["training_data"]["augmentation"] = {"copies_per_patch": list(augment),
                                                 "note": "drasclr.reference.perturb; seed 0"}
    licence = PREAMBLE + (args.patches / "CIP-License.txt").read_text()
    save_reference(out, counts, train_y, card, licence)
    print(json.dumps(card["metrics"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

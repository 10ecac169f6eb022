"""Real CTs as training cases: labels from the reference classifier (``cip-lh``, trained on real expert-labelled
patches) where it is confident, ignored elsewhere, so a subtype model sees real lung texture beside the phantoms.

A pseudo-labelled case folder holds ``ct.nii.gz`` (the HU-calibrated scan), ``subtypes.nii.gz`` (0 outside the
lung, 1-4 where the classifier's winning probability reaches ``min_confidence``, ``UNSURE`` = 255 on other lung
voxels: ignored by training) and ``meta.json`` with ``"labels": "pseudo"``, the labeller, the threshold, the class
counts and the ``sample_weight`` the cohort sampler gives the case. Pseudo-labelled cases are never validation
cases: validation and calibration measure against true labels only (``drasclr.dense.recipe``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..anatomy.hu_calibration import calibrate_and_segment
from ..core import labels
from ..core.image import CTImage
from ..core.io import image_stem, read_ct, write_image
from ..core.outputs import staged_dir
from ..reference.predict import UNSURE, predict_subtypes
from ..reference.store import load_reference
from .density import DensityVeto


@dataclass
class PseudoCase:
    ct: CTImage
    subtypes: CTImage
    meta: dict


def pseudo_label(ct: CTImage, min_confidence: float = 0.8, reference: str | None = None,
                 sample_weight: float = 1.0, min_emphysema_laa: float = 0.15) -> PseudoCase:
    """HU calibration and lung mask as ``analyze`` does them, then the reference classifier's confident labels.

    Emphysema labels must also agree with densitometry: a CLE/PSE/PLE call is kept only where at least
    ``min_emphysema_laa`` of the lung around it (20 mm in-plane, 10 mm through-plane) is below -950 HU (on
    LIDC-IDRI-0001 the confident CLE calls have a median of -873 HU and a median local LAA-950 of 2.6 %: normal
    density, not emphysema)."""
    clf, card, _ = load_reference(reference)
    ct, lungs, calib = calibrate_and_segment(ct, "auto")
    sub = predict_subtypes(ct, lungs, clf, min_confidence=min_confidence)
    vetoed = DensityVeto(min_laa950=min_emphysema_laa).vetoed(sub.array, ct)  # the rule analyze can apply too
    sub = sub.with_array(np.where(vetoed, UNSURE, sub.array).astype(np.uint8))
    lung = sub.array > 0
    counts = {name: int((sub.array == value).sum()) for value, name in labels.SUBTYPES.items() if value > 0}
    counts["unsure"] = int((sub.array == UNSURE).sum())
    meta = {"labels": "pseudo", "labeller": card.get("name", "cip-lh"), "min_confidence": min_confidence,
            "min_emphysema_laa950": min_emphysema_laa, "emphysema_vetoed_by_density": int(vetoed.sum()),
            "sample_weight": sample_weight, "lung_voxels": int(lung.sum()), "counts": counts,
            "labelled_fraction": round(1 - counts["unsure"] / max(int(lung.sum()), 1), 4),
            "hu_offset_applied": calib.applied_hu}
    return PseudoCase(ct, sub, meta)


def normal_case(ct: CTImage, sample_weight: float = 1.0) -> PseudoCase:
    """A real CT of a lung without visible emphysema as a training case: every lung voxel (HU calibration and lung
    mask as ``analyze`` does them) labelled normal. Honest only where a reader found no emphysema in the scan."""
    ct, lungs, calib = calibrate_and_segment(ct, "auto")
    sub = lungs.with_array(np.where(lungs.array > 0, labels.NORMAL, 0).astype(np.uint8))
    n = int((sub.array > 0).sum())
    meta = {"labels": "pseudo", "labeller": "reader: no visible emphysema", "sample_weight": sample_weight,
            "lung_voxels": n, "counts": {"normal": n}, "labelled_fraction": 1.0,
            "hu_offset_applied": calib.applied_hu}
    return PseudoCase(ct, sub, meta)


def write_pseudo_case(case: PseudoCase, folder: str | Path, source: str | Path) -> Path:
    """Write a case folder (all or nothing); ``source`` is recorded by file name only."""
    folder = Path(folder)
    with staged_dir(folder) as tmp:
        write_image(case.ct, tmp / "ct.nii.gz")
        write_image(case.subtypes, tmp / "subtypes.nii.gz")
        (tmp / "meta.json").write_text(json.dumps({**case.meta, "source": Path(source).name}, indent=1) + "\n")
    return folder


def case_meta(folder: str | Path) -> dict:
    p = Path(folder) / "meta.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:
        return {}


def is_pseudo(folder: str | Path) -> bool:
    return case_meta(folder).get("labels") == "pseudo"


def sample_weight(folder: str | Path) -> float:
    """How much more often the cohort sampler draws this case than a phantom (1)."""
    return float(case_meta(folder).get("sample_weight", 1.0))


def main(argv=None) -> int:  # python -m drasclr.dense.pseudo CT... -o DIR
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ct", nargs="+")
    p.add_argument("-o", "--output", required=True, help="folder that receives one case folder per CT")
    p.add_argument("--min-confidence", type=float, default=0.8)
    p.add_argument("--sample-weight", type=float, default=1.0)
    p.add_argument("--all-normal", action="store_true",
                   help="label the whole lung normal (only for scans read as without visible emphysema)")
    args = p.parse_args(argv)
    for path in args.ct:
        case = (normal_case(read_ct(path), args.sample_weight) if args.all_normal else
                pseudo_label(read_ct(path), args.min_confidence, sample_weight=args.sample_weight))
        out = write_pseudo_case(case, Path(args.output) / f"real_{image_stem(path)}", path)
        print(json.dumps({"case": str(out), **case.meta}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

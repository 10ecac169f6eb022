"""Scanner calibration bench: a phantom and its miscalibrated twin through ``analyze``, and the reference
materials measured on the real CTs.

    python bench/bench_calibration.py twin --seed 41 --offset 75 [--no-model] [--no-tta] -o /tmp/calib-bench
    python bench/bench_calibration.py real [REAL_DIR]

``twin``: generates phantom case (seed, 0) with all three subtypes at a resolution inside the demo model's
validated range, and the same case with ``--air-offset offset`` (the generator's miscalibrated scanner),
analyzes both with the default ``--hu-calibration auto`` (and the offset copy once more with ``none``), and
prints whole-lung LAA-950 and subtype percentages side by side. ``real``: outside air, tracheal air and blood
pool on every CT in the folder (no correction applied), as in docs/calibration.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from drasclr.analysis.analyze import analyze_file
from drasclr.analysis.loaded_model import LoadedModel
from drasclr.anatomy.hu_calibration import calibrate_and_segment
from drasclr.core.io import find_images, read_ct, write_image
from drasclr.core.settings import AnalysisSettings
from drasclr.research.phantom import PhantomOptions, generate_case

COLS = ("laa950_pct", "perc15_hu", "normal_pct", "cle_pct", "pse_pct", "ple_pct")


def twin(args) -> None:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    opts = PhantomOptions(size=(192, 192, None), spacing=1.8, thickness=2.5, kernel=args.kernel, noise=None,
                          subtypes=("cle", "pse", "ple"), severity=0.8, generator=args.generator)
    case = generate_case(args.seed, 0, opts)
    ct = case.ct
    # the twin from the generator's own miscalibration option (same seed: the same scan read offset HU higher)
    off = generate_case(args.seed, 0, dataclasses.replace(opts, air_offset=float(args.offset))).ct
    write_image(ct, out / "twin.nii.gz")
    write_image(off, out / "offset.nii.gz")
    model = card = folder = None
    if not args.no_model:
        from drasclr.dense.store import load_segmenter

        model, card, folder = load_segmenter(None, "cpu")
    runs = {"calibrated twin (auto)": ("twin", "auto"), f"+{args.offset} HU (auto)": ("offset", "auto"),
            f"+{args.offset} HU (none)": ("offset", "none")}
    results = {}
    for label, (src, mode) in runs.items():
        t0 = time.perf_counter()
        res = analyze_file(out / f"{src}.nii.gz", out / f"{src}-{mode}",
                           AnalysisSettings(tta=not args.no_tta, hu_calibration=mode),
                           LoadedModel(model, card, folder, "cpu") if model is not None else None)
        whole = res.rows[-1]
        results[label] = {c: whole[c] for c in COLS} | {"applied_hu": res.calibration["applied_hu"],
                                                       "air_hu": res.calibration["outside_air"]["median_hu"],
                                                       "seconds": round(time.perf_counter() - t0, 1)}
    print(f"phantom seed {args.seed} (generator {args.generator}), {ct.shape_xyz} at {ct.spacing} mm, kernel "
          f"{case.meta['protocol']['kernel']}")
    print(f"{'run':<24}{'air HU':>8}{'applied':>9}" + "".join(f"{c:>12}" for c in COLS) + f"{'s':>7}")
    for label, r in results.items():
        print(f"{label:<24}{r['air_hu']:>8.1f}{r['applied_hu']:>9.1f}"
              + "".join(f"{r[c]:>12.2f}" for c in COLS) + f"{r['seconds']:>7.1f}")
    ref, cor = results["calibrated twin (auto)"], results[f"+{args.offset} HU (auto)"]
    print("max |corrected - twin| over LAA-950 and subtype %:",
          f"{max(abs(cor[c] - ref[c]) for c in COLS if c != 'perc15_hu'):.3f} points")
    (out / "bench.json").write_text(json.dumps(results, indent=1))


def real(args) -> None:
    folder = Path(args.folder or os.environ.get("DRASCLR_REAL_DATA", "../shared/data/real"))
    print(f"{'scan':<40}{'outside air':>22}{'tracheal air':>22}{'blood pool':>30}")
    for path in sorted(find_images(folder)):
        if "_lungs" in path.name:
            continue
        ct = read_ct(path)
        _, _, cal = calibrate_and_segment(ct, "none")

        def show(m, width=22):
            if m is None:
                return f"{'not found':>{width}}"
            text = f"{m.median_hu:.0f} (IQR {m.iqr_hu:.0f})" + ("" if m.usable else " *")
            return f"{text:>{width}}"

        blood = show(cal.blood, 30) if cal.blood is None or cal.blood.usable else \
            f"{f'{cal.blood.median_hu:.0f} (contrast)':>30}"
        print(f"{path.name.split('.')[0]:<40}{show(cal.outside_air)}{show(cal.tracheal_air)}{blood}")
    print("* not usable as a reference (see docs/calibration.md)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("twin")
    t.add_argument("--seed", type=int, default=41)
    t.add_argument("--offset", type=int, default=75)
    t.add_argument("--kernel", default="soft", choices=["soft", "sharp"])
    t.add_argument("--generator", default="2", choices=["1", "2"], help="phantom generator version")
    t.add_argument("--no-model", action="store_true")
    t.add_argument("--no-tta", action="store_true")
    t.add_argument("-o", "--output", default="calib-bench")
    t.set_defaults(run=twin)
    r = sub.add_parser("real")
    r.add_argument("folder", nargs="?")
    r.set_defaults(run=real)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

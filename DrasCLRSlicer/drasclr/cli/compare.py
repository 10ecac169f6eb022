"""``drasclr compare SCAN_1 SCAN_2 [...] -o OUT``: change over time per lobe (docs/followup.md).

Each SCAN is a CT file, a DICOM series folder, or an analysis folder to reuse (``drasclr analyze``/``compare``
output with ``source.json``, or a folder holding ``ct.nii.gz`` + ``regions.nii.gz`` [+ ``subtypes.nii.gz``] such
as a phantom case). The first is the baseline: give the scans oldest first.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..core.settings import AnalysisSettings
from ..core.settings import add_arguments as add_settings_arguments

log = logging.getLogger(__name__)


def add_parser(sub):
    p = sub.add_parser("compare", help="compare scans of one patient over time, per lobe, with a change map",
                       description="Writes OUT/change.csv, change.json, change_map.nii.gz, report.html and "
                                   "OUT/scans/scan_K/ (each analysis). The first scan is the baseline.")
    p.add_argument("scans", nargs="+", metavar="SCAN", help="CT files, DICOM folders or analysis folders, oldest first")
    p.add_argument("-o", "--output", required=True, help="output folder")
    add_settings_arguments(p)  # each scan is analysed as `drasclr analyze` would (--no-model: change from LAA-950)
    p.add_argument("--landmarks", nargs="+", default=None, metavar="CSV",
                   help="one CSV of baseline/follow-up point pairs per later scan (LPS mm), for the landmark error")
    p.add_argument("--affine-only", action="store_true", help="no deformable step (for comparison)")
    p.add_argument("--no-report", dest="report", action="store_false", help="no report.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    p.set_defaults(run=run)


def _check(args) -> list[Path]:
    from ..core.errors import InputError

    paths = [Path(s) for s in args.scans]
    if len(paths) < 2:
        raise InputError("compare needs at least two scans (the baseline first)")
    for p in paths:
        if not p.exists():
            raise InputError(f"scan not found: {p}")
    if args.landmarks and len(args.landmarks) != len(paths) - 1:
        raise InputError(f"--landmarks: give one file per later scan ({len(paths) - 1})")
    return paths


def run(args) -> int:
    from ..analysis.loaded_model import load_for_analysis
    from ..core.io import read_ct
    from ..core.outputs import claimed_output, staged_dir
    from ..followup.compare import (
        analyze_timepoint,
        compare,
        is_analysis_folder,
        load_analysis,
        read_landmarks,
        write_comparison,
    )

    paths = _check(args)
    settings = AnalysisSettings.from_args(args)
    landmarks = [read_landmarks(p) for p in args.landmarks] if args.landmarks else None
    reuse = [is_analysis_folder(p) for p in paths]
    for p, r in zip(paths, reuse):
        if not r:
            read_ct(p)  # every input readable before anything is analysed
    t0 = time.perf_counter()
    with claimed_output(args.output, overwrite=args.overwrite), staged_dir(args.output) as tmp:
        model = load_for_analysis(settings) if not all(reuse) else None
        tps = []
        for k, (p, r) in enumerate(zip(paths, reuse)):
            log.info("progress: scan %d/%d", k + 1, len(paths))
            name = f"scan_{k}"
            tps.append(load_analysis(p, name) if r else analyze_timepoint(p, tmp / "scans" / name, name, settings,
                                                                                     model))
        comp = compare(tps, landmarks, deformable=not args.affine_only, progress=lambda m: log.info("progress: %s", m))
        write_comparison(comp, tmp, {"inputs": [str(p) for p in paths], "seconds": round(time.perf_counter() - t0, 1),
                                     "adjustment": "sponge model per region: HU_adj = (HU + 1000) * V_t / V_0 - 1000"},
                         report=args.report)
    _print_change([r for r in comp.rows if r["scan"] == len(paths) - 1])
    for q in comp.registration:
        log.info("registration scan %d: lung Dice %.3f (%.1f s)", q["scan"], q["lung_dice"], q["seconds"])
    print(f"wrote {args.output}")
    return 0


TABLE = (("d_volume_ml", "dVol_ml"), ("d_perc15_hu", "dP15raw"), ("d_perc15_hu_adj", "dP15adj"),
         ("d_laa950_adj_pct", "dLAA950adj"), ("d_emphysema_pct", "dEmph%"), ("new_emphysema_ml", "new_ml"))


def _print_change(rows: list[dict]) -> None:
    """Change from the baseline to the last scan, one line per region."""
    print(f"{'region':<20}" + "".join(f"{h:>11}" for _, h in TABLE))
    for r in rows:
        print(f"{r['region']:<20}" + "".join(f"{r[c]:>11.1f}" for c, _ in TABLE))

#!/usr/bin/env python3
"""Two-reference HU calibration (docs/calibration.md): phantom twins and the real CTs.

    python bench/bench_two_reference.py phantoms        # seed 31, generator 2, 112 x 112 x 80 at 3.0 x 3.2 mm
    python bench/bench_two_reference.py real [DIR]      # ../shared/data/real

``phantoms``: the calibrated phantom, the generator's miscalibrated scanner (``--air-offset 40`` / ``75``: outside
and tracheal air both off), and the calibrated phantom with only its outside air +40 HU (a field-of-view edge);
each analysed (densitometry, ``auto``) and the whole-lung LAA-950 / Perc15 printed with what calibration did.
``real``: outside / tracheal air, their gap, blood and the decision on every real CT.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "DrasCLRSlicer"))

from drasclr.analysis.analyze import analyze  # noqa: E402
from drasclr.anatomy import hu_calibration as C  # noqa: E402
from drasclr.research.phantom import PhantomOptions, generate_case  # noqa: E402

SICK = PhantomOptions(size=(112, 112, 80), spacing=3.0, thickness=3.2, kernel="soft", noise=15.0,
                      subtypes=("cle", "pse", "ple"), severity=0.8, vessel_points=500)


def _m(m) -> str:
    return "–" if m is None else f"{m.median_hu:.0f}" + ("" if m.usable else " (unusable)")


def _row(name, ct, mode="auto") -> str:
    res = analyze(ct, model=None, regions="zones", hu_calibration=mode)
    w, cal = res.rows[-1], res.calibration
    before = (f"{w['uncorrected_laa950_pct']:.2f} / {w['uncorrected_perc15_hu']:.0f}" if cal["corrected"] else "–")
    out, tr = cal["outside_air"], cal["tracheal_air"]
    return (f"| {name} | {mode} | {out and out['median_hu']:.0f} | {tr and tr['median_hu']:.0f} | "
            f"{cal['applied_hu']:+.0f} | {w['laa950_pct']:.2f} | {w['perc15_hu']:.0f} | {before} | "
            f"{', '.join(x['code'] for x in res.warnings if x['code'] != 'regions') or '–'} |")


def phantoms() -> None:
    twin = generate_case(31, 0, SICK).ct
    body = C._hull(C._body(twin.array))
    print("| scan | mode | outside air | tracheal air | subtracted | LAA-950 % | Perc15 | as read: LAA-950 % / Perc15 "
          "| warnings |\n|---|---|---|---|---|---|---|---|---|")
    print(_row("calibrated", twin), flush=True)
    for off in (40.0, 75.0):
        ct = generate_case(31, 0, dataclasses.replace(SICK, air_offset=off)).ct
        print(_row(f"--air-offset {off:.0f}", ct), flush=True)
        print(_row(f"--air-offset {off:.0f}", ct, "none"), flush=True)
    edge = twin.with_array(np.where(body, twin.array, twin.array + 40).astype(np.int16))
    print(_row("outside air alone +40", edge), flush=True)


def real(folder: Path) -> None:
    from drasclr.core.io import read_ct

    print("| scan | outside air | tracheal air | gap | blood | decision |\n|---|---|---|---|---|---|")
    for path in sorted(folder.glob("*.nii.gz")):
        if path.name.endswith("_lungs.nii.gz"):
            continue
        _, _, cal = C.calibrate_and_segment(read_ct(path), "auto")
        gap = "–" if cal.agreement_hu is None else f"{cal.agreement_hu:+.0f}"
        what = f"{cal.applied_hu:+.0f} HU" if cal.corrected else "as read"
        warn = ", ".join(w["code"] for w in cal.warnings)
        print(f"| {path.name[:-7]} | {_m(cal.outside_air)} | {_m(cal.tracheal_air)} | {gap} | {_m(cal.blood)} | "
              f"{what}{' (' + warn + ')' if warn else ''} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["real"]:
        real(Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT.parent / "shared" / "data" / "real")
    else:
        phantoms()

#!/usr/bin/env python3
"""Timings of the MRML bridge on slicer-core (no Slicer app): node conversions, segmentations, storage,
and the Logic's in-process vs child-process analysis.

    PYTHONPATH=DrasCLRSlicer python bench/bridge.py [CT.nii.gz]

Without an argument it uses ../shared/data/real/lungpetctdx_A0002_8mm_B40f.nii.gz when present, else the
module's chest phantom. Prints one line per step: name, seconds (best of --repeat).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "DrasCLRSlicer"))


def best(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    real = ROOT.parent / "shared/data/real/lungpetctdx_A0002_8mm_B40f.nii.gz"
    parser.add_argument("ct", nargs="?", default=str(real))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import slicer  # noqa: F401

    print(f"import slicer                      {time.perf_counter() - t0:7.2f} s")
    from drasclr.analysis.analyze import analyze
    from drasclr.core import labels
    from drasclr.core.io import read_ct
    from DrasCLRSlicerLib import segmentations, storage, terminology, volumes
    from DrasCLRSlicerLib.logic import DrasCLRLogic, ensure_scene_logics
    from DrasCLRSlicerLib.phantom import chest_phantom

    ct = read_ct(args.ct) if Path(args.ct).exists() else chest_phantom()
    print(f"CT {Path(args.ct).name if Path(args.ct).exists() else 'phantom'}: {ct.shape_xyz} voxels (x, y, z)")
    scene = slicer.vtkMRMLScene()
    ensure_scene_logics(scene)
    tmp = Path(tempfile.mkdtemp(prefix="drasclr-bench-"))

    def row(name, fn):
        s, out = best(fn, args.repeat)
        print(f"{name:<34}{s:7.3f} s")
        return out

    node = row("CTImage -> volume node", lambda: volumes.add_volume_node(scene, ct, "ct"))
    row("volume node -> CTImage", lambda: volumes.image_from_volume_node(node))
    zones = analyze(ct).regions
    entries = terminology.region_entries(labels.ZONES)
    seg = row("labelmap -> segmentation (6 zones)",
              lambda: segmentations.labelmap_to_segmentation(scene, zones, node, entries))
    row("segmentation -> labelmap", lambda: segmentations.segmentation_to_labelmap(seg, node, entries))
    row("save .seg.nrrd", lambda: storage.save_node(seg, tmp / "z.seg.nrrd"))
    row("load .seg.nrrd", lambda: storage.load_segmentation(scene, tmp / "z.seg.nrrd"))
    row("save .nrrd (CT)", lambda: storage.save_node(node, tmp / "ct.nrrd"))
    logic = DrasCLRLogic(scene)
    row("Logic.analyze (in process)", lambda: logic.analyze(node, use_model=False))
    row("Logic.run_in_subprocess", lambda: logic.run_in_subprocess(node, use_model=False))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

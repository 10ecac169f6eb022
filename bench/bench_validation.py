"""What the up-front input checks cost: header + integrity check vs ITK's own read, on real CTs.

    PYTHONPATH=DrasCLRSlicer python bench/bench_validation.py [CT ...] [--repeat 3]

Default CTs: the real fixtures in ../shared/data/real (or $DRASCLR_REAL_DATA). Prints one line per CT: median
seconds of ``drasclr.core.input_files.check_image_file``, of ``SimpleITK.ReadImage`` alone, of
``drasclr.core.io.read_ct``
(checks + read + Hounsfield check), and the memory estimate the checks compare with available memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import SimpleITK as sitk

from drasclr.core.input_files import check_image_file, estimate_memory_bytes
from drasclr.core.io import read_ct

REAL = Path(os.environ.get("DRASCLR_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def _median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cts", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cts = args.cts or sorted(p for p in REAL.glob("*.nii.gz") if not p.name.endswith("_lungs.nii.gz"))
    print("| CT | grid (x, y, z) | check | ITK read alone | read_ct with checks | memory estimate |")
    print("|---|---|---|---|---|---|")
    for p in cts:
        header = check_image_file(p)
        check = _median_seconds(lambda: check_image_file(p), args.repeat)  # noqa: B023
        itk = _median_seconds(lambda: sitk.ReadImage(str(p)), args.repeat)  # noqa: B023
        full = _median_seconds(lambda: read_ct(p), args.repeat)  # noqa: B023
        est = estimate_memory_bytes(header.size, header.spacing) / 2**30
        print(f"| {p.name} | {'x'.join(map(str, header.size))} | {check:.2f} s | {itk:.2f} s | {full:.2f} s "
              f"| {est:.2f} GiB |")


if __name__ == "__main__":
    main()

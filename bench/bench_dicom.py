"""Time to write the DICOM outputs (SEG subtypes, SEG regions, TID 1500 SR) of one finished analysis.

    OMP_NUM_THREADS=1 python bench/bench_dicom.py SERIES_FOLDER ANALYSIS_OUT [--repeat 1]

SERIES_FOLDER: the DICOM series that was analysed; ANALYSIS_OUT: its ``drasclr analyze`` folder (subtypes.nii.gz,
regions.nii.gz, stats.csv, stats.json). Prints seconds per step and the file sizes; writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def main() -> None:
    from drasclr.analysis.stats import read_csv
    from drasclr.core.io import read_ct, read_image
    from drasclr.dicom import write_dicom
    from drasclr.dicom.source import source_slices

    p = argparse.ArgumentParser()
    p.add_argument("series", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(1)
    ct = read_ct(a.series)
    t0 = time.perf_counter()
    source = source_slices(a.series, ct)
    headers_s = time.perf_counter() - t0
    facts = json.loads((a.out / "stats.json").read_text())
    sub = a.out / "subtypes.nii.gz"
    result = SimpleNamespace(subtypes=read_image(sub) if sub.exists() else None,
                             regions=read_image(a.out / "regions.nii.gz"), rows=read_csv(a.out / "stats.csv"),
                             model_card=facts.get("model"), calibration=facts.get("calibration"))
    for _ in range(a.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            written = write_dicom(result, source, tmp)
            write_s = time.perf_counter() - t0
            sizes = {k: round(v.stat().st_size / 2**20, 2) for k, v in written.items()}
        print(json.dumps({"grid_zyx": list(ct.array.shape), "read_headers_s": round(headers_s, 2),
                          "write_seg_sr_s": round(write_s, 2), "size_mib": sizes}))


if __name__ == "__main__":
    main()

"""``drasclr analyze``: one CT in, subtype map + regions + per-region numbers out (on the input's own grid)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .image import CTImage
from .io import read_ct, write_image
from .lungs import segment_lungs
from .outputs import staged_dir
from .regions import read_lobes, zones_from_lungs
from .stats import region_stats, write_csv, write_json

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """Everything one analysis produces, on the CT's grid."""

    ct: CTImage
    lungs: CTImage
    regions: CTImage
    region_kind: str  # "lobes" or "zones"
    rows: list[dict]
    subtypes: CTImage | None = None
    embedding: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    model_card: dict | None = None


def load_lobes(path: str | Path, ct: CTImage, convention: str = "auto") -> CTImage:
    """A lobe labelmap (file or TotalSegmentator folder) in LTRC numbering 1–5 on ``ct``'s grid.

    See :func:`drasclr.regions.read_lobes` (conventions ltrc / totalseg / cip, nearest-neighbour resampling).
    """
    return read_lobes(path, ct, convention)


def analyze(ct: CTImage, lobes: CTImage | None = None) -> Analysis:
    """Run the analysis on a CT already in memory (used by the CLI and by the Slicer module's Logic)."""
    t = {}
    t0 = time.perf_counter()
    lungs = segment_lungs(ct)
    t["lung_mask_s"] = time.perf_counter() - t0
    if lobes is not None:
        regions = lobes.with_array(np.where(lungs.array > 0, lobes.array, 0).astype(np.uint8))
        kind = "lobes"
    else:
        regions = zones_from_lungs(lungs)
        kind = "zones"
    t1 = time.perf_counter()
    rows = region_stats(ct, regions)
    t["stats_s"] = time.perf_counter() - t1
    return Analysis(ct=ct, lungs=lungs, regions=regions, region_kind=kind, rows=rows, timings=t)


def write_analysis(result: Analysis, out_dir: str | Path) -> Path:
    """Write the output files of an analysis into ``out_dir`` all-or-nothing."""
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        write_image(result.regions, tmp / "regions.nii.gz", dtype=np.uint8)
        if result.subtypes is not None:
            write_image(result.subtypes, tmp / "subtypes.nii.gz", dtype=np.uint8)
        if result.embedding is not None:
            np.save(tmp / "embedding.npy", result.embedding)
        write_csv(result.rows, tmp / "stats.csv")
        extra = {"drasclr_version": __version__, "region_kind": result.region_kind,
                 "grid": {"size_xyz": list(result.ct.shape_xyz), "spacing_mm": list(result.ct.spacing)},
                 "timings_s": result.timings}
        if result.model_card:
            extra["model"] = {k: result.model_card.get(k) for k in ("name", "version", "sha256")}
        write_json(result.rows, tmp / "stats.json", extra)
    return out_dir


def analyze_file(path: str | Path, out_dir: str | Path, lobes_path: str | Path | None = None,
                 series_uid: str | None = None) -> Analysis:
    ct = read_ct(path, series_uid=series_uid)
    lobes = load_lobes(lobes_path, ct) if lobes_path else None
    result = analyze(ct, lobes)
    write_analysis(result, out_dir)
    return result

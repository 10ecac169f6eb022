"""Per-region densitometry and subtype fractions: the rows of ``stats.csv`` / ``stats.json``.

Each measurement family fills named columns of one row (as Slicer's SegmentStatistics plugins do).
LAA-x is the percentage of region voxels strictly below x HU; Perc15 is the 15th percentile of HU.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from ..anatomy.regions import region_histograms
from ..core import labels
from ..core.image import CTImage

COLUMNS = ["region", "volume_ml", "mean_hu", "perc15_hu", "laa950_pct", "laa910_pct", "laa856_pct",
           "normal_pct", "cle_pct", "pse_pct", "ple_pct"]
UNCERTAINTY_COLUMN = "mean_uncertainty"  # follows COLUMNS when a model ran: mean voxel uncertainty 0..1


def densitometry(hu: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Columns volume_ml … laa856_pct for the HU values of one region (1-D array)."""
    n = hu.size
    if n == 0:
        return {c: math.nan for c in COLUMNS[1:7]}
    hu = hu.astype(np.float32, copy=False)
    return {
        "volume_ml": n * voxel_ml,
        "mean_hu": float(hu.mean()),
        "perc15_hu": float(np.percentile(hu, 15)),
        "laa950_pct": 100.0 * float((hu < -950).sum()) / n,
        "laa910_pct": 100.0 * float((hu < -910).sum()) / n,
        "laa856_pct": 100.0 * float((hu < -856).sum()) / n,
    }


def subtype_fractions(sub: np.ndarray | None) -> dict[str, float]:
    """Columns normal_pct … ple_pct: percentage of region voxels per subtype (NaN without a subtype map)."""
    cols = {f"{name}_pct": math.nan for name in labels.SUBTYPES.values()}
    if sub is None or sub.size == 0:
        return cols
    counts = np.bincount(sub.astype(np.int64), minlength=labels.NUM_CLASSES)
    return {f"{name}_pct": 100.0 * counts[v] / sub.size for v, name in labels.SUBTYPES.items()}


def region_stats(ct: CTImage, regions: CTImage, subtypes: CTImage | None = None) -> list[dict]:
    """One row per lobe/zone present, then left_lung, right_lung, whole_lung. An integer CT (as read, calibrated or
    harmonized) is summed per region as a histogram of its HU values: one pass per region over the regions' box,
    no mask per region held, whatever the slice count."""
    if subtypes is None:
        hist, sub = region_histograms(regions.array, ct.array)[0], None
    else:
        hist, sub = region_histograms(regions.array, ct.array, subtypes.array, offsets=[None, 0])
    rows = []
    for name, (lo, counts) in hist.items():
        if counts is None:  # a float image: the values themselves
            dens = densitometry(lo, ct.voxel_volume_ml)
        else:
            dens = histogram_densitometry(lo, counts, ct.voxel_volume_ml)
        fractions = subtype_fractions(None) if sub is None else _fractions(sub[name][1])
        rows.append({"region": name, **dens, **fractions})
    return rows


def histogram_densitometry(lo: int, counts: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """:func:`densitometry` from a histogram of integer HU (``counts[i]`` voxels of value ``lo + i``): the same
    numbers (Perc15 interpolated between order statistics as ``numpy.percentile`` does)."""
    n = int(counts.sum())
    if n == 0:
        return {c: math.nan for c in COLUMNS[1:7]}
    values = np.arange(lo, lo + counts.size, dtype=np.float64)
    cum = np.cumsum(counts)
    pos = 0.15 * (n - 1)
    below, above = (int(np.searchsorted(cum, k, side="right")) for k in (math.floor(pos), math.ceil(pos)))
    perc = values[below] + (values[above] - values[below]) * (pos - math.floor(pos))

    def share_below(hu: float) -> float:
        k = int(np.clip(math.ceil(hu) - lo, 0, counts.size))
        return 100.0 * float(cum[k - 1] if k > 0 else 0) / n

    return {"volume_ml": n * voxel_ml, "mean_hu": float((values * counts).sum() / n), "perc15_hu": float(perc),
            "laa950_pct": share_below(-950), "laa910_pct": share_below(-910), "laa856_pct": share_below(-856)}


def _fractions(counts: np.ndarray) -> dict[str, float]:
    """Columns normal_pct … ple_pct from a histogram of subtype labels (counts from 0)."""
    n = int(counts.sum())
    counts = np.pad(counts, (0, max(0, labels.NUM_CLASSES - counts.size)))
    return {f"{name}_pct": (100.0 * counts[v] / n if n else math.nan) for v, name in labels.SUBTYPES.items()}


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def nan_to_none(x):
    """``x`` with every float NaN (in nested dicts, lists and tuples) replaced by None, for JSON."""
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [nan_to_none(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


# --- stats.csv / stats.json: written and read here only ---------------------------------------------------------
def write_csv(rows: list[dict], path: Path, columns: list[str] = COLUMNS) -> None:
    """``stats.csv``: ``columns`` (default :data:`COLUMNS`), one line per row, 4 decimals, NaN as an empty cell."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([_fmt(r[c]) for c in columns])


def read_csv(path: Path) -> list[dict]:
    """The rows of a ``stats.csv`` in file order: ``region`` plus every other column as float (empty -> NaN)."""
    with open(path, newline="") as fh:
        return [{k: (v if k == "region" else float(v) if v not in ("", None) else math.nan) for k, v in rec.items()}
                for rec in csv.DictReader(fh)]


def by_region(rows: list[dict]) -> dict[str, dict]:
    """Rows keyed by their region name."""
    return {r["region"]: r for r in rows}


def write_json(rows: list[dict], path: Path, extra: dict | None = None, columns: list[str] = COLUMNS) -> None:
    with open(path, "w") as fh:
        json.dump({**nan_to_none(extra or {}), "columns": columns, "regions": nan_to_none(rows)}, fh, indent=2)


def read_json(path: Path) -> dict:
    """``stats.json`` as written by :func:`write_json` (the run's facts plus ``regions``)."""
    with open(path) as fh:
        return json.load(fh)


def format_table(rows: list[dict]) -> str:
    """A plain-text table of the main columns, for the terminal."""
    cols = ["region", "volume_ml", "mean_hu", "perc15_hu", "laa950_pct", "normal_pct", "cle_pct", "pse_pct",
            "ple_pct"]
    head = ["region", "vol_ml", "mean_HU", "perc15", "LAA950%", "normal%", "CLE%", "PSE%", "PLE%"]
    lines = [f"{head[0]:<18}" + "".join(f"{h:>9}" for h in head[1:])]
    for r in rows:
        cells = []
        for c in cols[1:]:
            v = r[c]
            cells.append(f"{'-':>9}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>9.1f}")
        lines.append(f"{r['region']:<18}" + "".join(cells))
    return "\n".join(lines)


DENSITY_KEYS = ("mean_hu", "perc15_hu", "laa950_pct", "laa910_pct", "laa856_pct")
# after the contract columns: the scan as read when the HU calibration corrected it (docs/calibration.md), and the
# scan the model saw when analyze harmonized it (docs/acquisition.md)
UNCORRECTED_COLUMNS = [f"uncorrected_{c}" for c in DENSITY_KEYS]
HARMONIZED_COLUMNS = [f"harmonized_{c}" for c in DENSITY_KEYS]


def with_densitometry_of(rows: list[dict], ct: CTImage, regions: CTImage, prefix: str) -> list[dict]:
    """``rows`` with the densitometry of another version of the scan (``ct``) in ``<prefix>_*`` keys."""
    other = {r["region"]: r for r in region_stats(ct, regions)}
    return [{**r, **{f"{prefix}_{c}": other.get(r["region"], {}).get(c, float("nan")) for c in DENSITY_KEYS}}
            for r in rows]


def with_uncorrected(rows: list[dict], raw: CTImage, regions: CTImage) -> list[dict]:
    """``rows`` with the densitometry of the scan as read (before the HU correction) in ``uncorrected_*`` keys."""
    return with_densitometry_of(rows, raw, regions, "uncorrected")

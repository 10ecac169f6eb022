"""Per-region measures of one time point and their change from the baseline (the rows of ``change.csv``).

Inspiration-level adjustment (docs/followup.md): the **sponge model** (mass conservation), per region: a region
holding the same tissue at volume ``V_t`` instead of the baseline's ``V_0`` reads ``HU + 1000`` scaled by
``V_0 / V_t``, so every voxel of the later scan is adjusted to the baseline volume,
``HU_adj = (HU + 1000) * V_t / V_0 - 1000``, before mean HU, Perc15 and LAA-950 are taken again
(``*_adj`` columns). The region's volume at each time point comes from the lobes carried from the baseline.
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.stats import densitometry, subtype_fractions
from ..anatomy.regions import lung_side_masks
from ..core import labels
from ..core.image import CTImage
from . import changemap

SUBTYPES = ("cle", "pse", "ple")
VALUES = ["volume_ml", "volume_ratio", "mean_hu", "mean_hu_adj", "perc15_hu", "perc15_hu_adj", "laa950_pct",
          "laa950_adj_pct", "emphysema_pct", "cle_pct", "pse_pct", "ple_pct", "emphysema_ml", "cle_ml", "pse_ml",
          "ple_ml"]
DELTAS = [f"d_{c}" for c in VALUES if c != "volume_ratio"]
CHANGE_ML = [f"{name}_ml" for name in ("new_emphysema", "emphysema_gone", "subtype_changed")]
COLUMNS = ["scan", "name", "region", *VALUES, *DELTAS, *CHANGE_ML]


def region_masks(regions: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, mask) for each lobe/zone present, then left_lung, right_lung, whole_lung."""
    out = [(labels.REGION_NAMES[v], regions == v) for v in sorted(int(v) for v in np.unique(regions))
           if v in labels.REGION_NAMES]
    return out + list(lung_side_masks(regions).items())


def scan_rows(ct: CTImage, regions: CTImage, subtypes: CTImage | None, base_volume: dict | None = None) -> list[dict]:
    """Measures of one scan per region; ``base_volume`` (region -> baseline ml) for the adjusted columns."""
    rows = []
    for name, mask in region_masks(regions.array):
        hu = ct.array[mask].astype(np.float32)
        raw = densitometry(hu, ct.voxel_volume_ml)
        v0 = (base_volume or {}).get(name, raw["volume_ml"])
        ratio = raw["volume_ml"] / v0 if v0 and not math.isnan(raw["volume_ml"]) else math.nan
        adj = densitometry((hu + 1000.0) * np.float32(ratio) - 1000.0, ct.voxel_volume_ml)
        row = {"region": name, "volume_ml": raw["volume_ml"], "volume_ratio": ratio, "mean_hu": raw["mean_hu"],
               "mean_hu_adj": adj["mean_hu"], "perc15_hu": raw["perc15_hu"], "perc15_hu_adj": adj["perc15_hu"],
               "laa950_pct": raw["laa950_pct"], "laa950_adj_pct": adj["laa950_pct"]}
        fr = subtype_fractions(None if subtypes is None else subtypes.array[mask])
        row["emphysema_pct"] = sum(fr[f"{s}_pct"] for s in SUBTYPES)
        for s in ("emphysema", *SUBTYPES):
            pct = row["emphysema_pct"] if s == "emphysema" else fr[f"{s}_pct"]
            row[f"{s}_pct"] = pct
            row[f"{s}_ml"] = pct * raw["volume_ml"] / 100.0
        rows.append(row)
    return rows


def with_deltas(rows: list[dict], base_rows: list[dict]) -> list[dict]:
    """Add ``d_*`` (this scan minus the baseline, per region) to each row."""
    base = {r["region"]: r for r in base_rows}
    for r in rows:
        b = base.get(r["region"], {})
        for c in DELTAS:
            r[c] = r[c[2:]] - b.get(c[2:], math.nan)
    return rows


def with_change_volumes(rows: list[dict], change: np.ndarray, base_regions: np.ndarray, voxel_ml: float) -> list[dict]:
    """Add the change-map volumes (ml, on the baseline grid, in the baseline's regions) to each row."""
    masks = dict(region_masks(base_regions))
    for r in rows:
        mask = masks.get(r["region"])
        vols = changemap.volumes_ml(change[mask] if mask is not None else change[:0], voxel_ml)
        for c in CHANGE_ML:
            r[c] = vols[c[:-3]]
    return rows

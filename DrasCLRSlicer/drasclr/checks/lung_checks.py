"""Is the air the lung masker found really lung? Plausibility checks on the coarse lung mask.

Called by :func:`drasclr.anatomy.lungs.segment_lungs` before the mask is refined; each failed check is an
:class:`~drasclr.core.errors.InputError` naming what was found, because numbers computed on bowel gas or a slab
of lung would be read as findings. The limits (see docs/hostile_inputs.md):

- **density**: lung parenchyma is tissue plus air; its median is about -850 HU, and in severe emphysema it can
  fall to about -970 to -985 HU (a severe panlobular phantom reads -971 HU; real PLE patches -977 HU). Pure gas
  (bowel, stomach, outside air) has a median near -1000 HU on a calibrated scan (calibration runs first).
  Median below ``MAX_MEDIAN_HU`` -> refused; the position check below catches abdominal gas independently.
- **size**: at least ``MIN_TOTAL_ML`` in all; a one-lung scan (pneumonectomy, or a scan of one side) needs
  ``MIN_ONE_LUNG_ML`` in that lung.
- **position in the thorax**: in the thorax the lungs fill a large part of the body's cross-section (about
  40-70 % of the widest slice). Gas pockets in the abdomen fill a small part: ``MIN_BODY_FRACTION``.
  A **single slice** (``section``) has no widest slice: at the apex the shoulders and arms surround a small lung
  section (3-5 % of the body on real CTs at 10 % of the lung height, docs/hostile_inputs.md) and at the base the
  liver does, so a section only needs ``MIN_SECTION_FRACTION``; pure gas is still refused by its density.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError

MAX_MEDIAN_HU = -990.0  # severe emphysema must still be analysed
MIN_TOTAL_ML = 250.0
MIN_ONE_LUNG_ML = 400.0
MIN_BODY_FRACTION = 0.15
MIN_SECTION_FRACTION = 0.01  # one slice: any lung section, however small its share


def lung_facts(lungs: np.ndarray, hu: np.ndarray, body: np.ndarray, vox_ml: float) -> dict:
    """Volume per label, median HU and the largest per-slice share of the body's area (axis 0 = axial slices)."""
    inside = lungs > 0
    area = inside.sum(axis=(1, 2)).astype(np.float64)
    body_area = (body | inside).sum(axis=(1, 2)).astype(np.float64)
    frac = area / np.maximum(body_area, 1.0)
    return {"ml": {int(v): float((lungs == v).sum() * vox_ml) for v in np.unique(lungs[inside])},
            "median_hu": float(np.median(hu[inside])) if inside.any() else float("nan"),
            "body_fraction": float(frac.max()) if frac.size else 0.0}


def check_lungs(lungs: np.ndarray, hu: np.ndarray, body: np.ndarray, vox_ml: float, section: bool = False) -> dict:
    """Raise ``InputError`` when the mask is not plausibly lung; return the facts otherwise. ``section``: one
    slice (repeated into a slab), judged by ``MIN_SECTION_FRACTION``."""
    f = lung_facts(lungs, hu, body, vox_ml)
    total = sum(f["ml"].values())
    if not total:
        raise InputError("no lungs found: the mask is empty")
    if f["median_hu"] < MAX_MEDIAN_HU:
        raise InputError(f"no lungs found: the air-filled regions ({total:.0f} ml) have a median of "
                         f"{f['median_hu']:.0f} HU, pure gas rather than lung tissue (bowel or stomach gas? is "
                         "this a chest CT?)")
    if f["body_fraction"] < (MIN_SECTION_FRACTION if section else MIN_BODY_FRACTION):
        raise InputError(f"no lungs found: the air-filled regions ({total:.0f} ml) fill at most "
                         f"{100 * f['body_fraction']:.0f} % of the body's cross-section; lungs fill far more "
                         "(gas in the abdomen? is this a chest CT?)")
    if section:  # a single section: its size is checked by the masker (at least 8 cm² of lung)
        return f
    if total < MIN_TOTAL_ML:
        raise InputError(f"lungs too small: {total:.0f} ml found, at least {MIN_TOTAL_ML:.0f} ml needed for a "
                         "whole-lung analysis (partial scan or not a chest CT?)")
    if len(f["ml"]) == 1 and total < MIN_ONE_LUNG_ML:
        raise InputError(f"only one lung-like region of {total:.0f} ml found; a one-lung scan needs at least "
                         f"{MIN_ONE_LUNG_ML:.0f} ml (is this a chest CT?)")
    return f


MIN_LOBE_COVERAGE = 0.5  # a lobe file from the same scan covers > 90 % of the lung mask


def check_lobes_cover_lungs(regions: np.ndarray, lungs: np.ndarray, name: str = "lobe file") -> float:
    """Share of the lung voxels that carry a lobe label; ``InputError`` when below ``MIN_LOBE_COVERAGE`` (a lobe
    file of another scan or another grid would otherwise give a table of empty rows)."""
    lung = lungs > 0
    covered = float(np.count_nonzero(regions[lung] > 0)) / max(1, int(np.count_nonzero(lung)))
    if covered < MIN_LOBE_COVERAGE:
        raise InputError(f"the {name} covers only {100 * covered:.0f} % of the lungs (at least "
                         f"{100 * MIN_LOBE_COVERAGE:.0f} % expected): a lobe file of another scan or grid?")
    return covered

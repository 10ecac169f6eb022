"""Automatic lung lobes, offline and without downloaded weights: atlas transfer corrected along the fissures.

``estimate_lobes(ct, lungs)`` returns LTRC lobes (1 left upper, 2 left lower, 3 right upper, 4 right middle,
5 right lower) on the CT's grid that partition the lung mask (left lung: lobes 1–2, right lung: 3–5):

1. working grid: the lungs' box at 2 mm (:mod:`.grid`);
2. atlas transfer: the affine atlas registration refined by demons on the lung masks, atlas lobes resampled
   through both (:mod:`.transfer`); every lung voxel gets the nearest atlas lobe of its own lung;
3. fissures: bright thin sheets in vessel-free parenchyma, away from the pleura (:mod:`.fissures`);
4. relabelling: each fissure first as the atlas border moved and re-tilted as a whole (offset within
   ``SEARCH_MM``, anatomical slopes; kept where no plane stands out from noise), then refined column by column
   as a smooth height field (:mod:`.relabel`);
5. checks: stray pieces join the neighbouring lobe of the same lung; what is still wrong is listed
   (:mod:`.checks`).

``method="atlas"`` stops after step 2 (no fissure correction); accuracy of both in docs/lobes.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ...core import labels
from ...core.errors import InputError
from ...core.image import CTImage, bounding_box
from ..registration import AtlasTransform
from .checks import lobe_problems, make_connected
from .fissures import sheet_evidence
from .grid import WORK_MM, resample_onto, to_ct_grid, work_reference
from .relabel import SEARCH_MM, SIDES, relabel
from .transfer import atlas_lobes_on, subject_to_atlas

log = logging.getLogger(__name__)
METHODS = {"atlas": "atlas", "atlas+fissures": "atlas+fissures"}


@dataclass
class LobeEstimate:
    """Estimated lobes on the CT's grid and how they were made."""

    lobes: CTImage
    source: str  # "atlas" or "atlas+fissures"
    problems: list[str] = field(default_factory=list)  # remaining contract breaches (empty when none)
    timings: dict[str, float] = field(default_factory=dict)
    affine: AtlasTransform | None = None


def fill_sides(prior: np.ndarray, lungs: np.ndarray, margin: int = 2) -> dict[int, np.ndarray]:
    """Per lung side, the grid labelled with the nearest of that side's lobes in ``prior``: exactly so within
    ``margin`` voxels of the box holding that lung and those lobes (all that is read: the lung's voxels and, on the
    CT grid, their nearest work-grid voxels), that side's first lobe beyond."""
    out = {}
    for side, values in SIDES.items():
        have = np.isin(prior, values)
        filled = np.full(prior.shape, values[0], np.uint8)
        out[side] = filled
        if not have.any():
            if np.any(lungs == side):
                log.warning("atlas transfer gave no lobe of lung %d; its first lobe takes the whole lung", side)
            continue
        # every labelled voxel is in the box, so within it the nearest one is found exactly
        box = bounding_box(have | (lungs == side))
        box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, prior.shape))
        idx = ndimage.distance_transform_edt(~have[box], return_distances=False, return_indices=True)
        filled[box] = prior[box][tuple(idx)]
    return out


def _superior_first(axis: int, sign: int):
    """Functions that put array ``axis`` first pointing superior, and back."""
    def up(a):
        a = np.moveaxis(a, axis, 0)
        return a[::-1] if sign < 0 else a

    def down(a):
        return np.moveaxis(a[::-1] if sign < 0 else a, 0, axis)
    return up, down


def _by_side(filled: dict[int, np.ndarray], lungs: np.ndarray) -> np.ndarray:
    out = np.zeros(lungs.shape, np.uint8)
    for side, arr in filled.items():
        out[lungs == side] = arr[lungs == side]
    return out


def estimate_lobes(ct: CTImage, lungs: CTImage, method: str = "atlas+fissures",
                   affine: AtlasTransform | None = None, search_mm: float = SEARCH_MM,
                   deformable: bool = True) -> LobeEstimate:
    """LTRC lobes on ``ct``'s grid from the CT and its lung labelmap (1 right, 2 left; same grid).

    ``method``: ``atlas+fissures`` (default) or ``atlas``; ``affine``: an atlas registration already computed
    for these lungs (else it runs here). Raises :class:`InputError` for an empty lung mask or unknown method.
    """
    if method not in METHODS:
        raise InputError(f"unknown lobe method {method!r}; expected one of {', '.join(METHODS)}")
    if not np.any(lungs.array):
        raise InputError("cannot estimate lobes: the lung mask is empty")
    full_ct, full_lungs = ct, lungs
    box = bounding_box(lungs.array)  # every CT-grid step runs in the lungs' box
    lo, hi = [s.start for s in box], [s.stop for s in box]
    ct, lungs = ct.crop(lo, hi), lungs.crop(lo, hi)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ref = work_reference(lungs, WORK_MM)
    lungs_w = resample_onto(lungs, ref)
    to_atlas, affine = subject_to_atlas(lungs, ref, affine, deformable=deformable)
    prior = _by_side(fill_sides(atlas_lobes_on(ref, to_atlas), lungs_w), lungs_w)
    timings["atlas_s"] = round(time.perf_counter() - t0, 3)
    lab = prior
    if method == "atlas+fissures":
        t1 = time.perf_counter()
        ct_w = resample_onto(ct, ref, sitk.sitkLinear, -1000.0, pixel=sitk.sitkFloat32)
        axis, sign = lungs.superior_axis()
        up, down = _superior_first(axis, sign)
        evidence = sheet_evidence(up(ct_w), up(lungs_w) > 0, WORK_MM)
        lab = down(relabel(up(prior), up(lungs_w), evidence, WORK_MM, search_mm))
        timings["fissures_s"] = round(time.perf_counter() - t1, 3)
    t2 = time.perf_counter()
    lab = make_connected(lab)
    filled = fill_sides(lab, lungs_w)
    # one nearest-neighbour resampling carries both lungs' labels (left lobes 1-2 in the high bits)
    both = (filled[labels.LEFT_LUNG] << 4) | filled[labels.RIGHT_LUNG]
    on_ct = to_ct_grid(both, ref, ct)
    side = lungs.array
    out = np.bitwise_and(on_ct, 15, dtype=np.uint8)  # right lobes; the left lung's and outside the lungs below
    left = side == labels.LEFT_LUNG
    out[left] = on_ct[left] >> 4
    out[(side != labels.LEFT_LUNG) & (side != labels.RIGHT_LUNG)] = 0
    whole: set[int] = set()
    out = make_connected(out, whole=whole)
    problems = lobe_problems(out, lungs.array, whole)
    timings["ct_grid_s"] = round(time.perf_counter() - t2, 3)
    for p in problems:
        log.warning("estimated lobes: %s", p)
    full = np.zeros(full_ct.array.shape, np.uint8)
    full[box] = out
    return LobeEstimate(lobes=full_lungs.with_array(full), source=method, problems=problems, timings=timings,
                        affine=affine)


__all__ = ["LobeEstimate", "estimate_lobes", "METHODS"]

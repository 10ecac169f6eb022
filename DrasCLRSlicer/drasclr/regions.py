"""Regions for statistics: built-in cranio-caudal zones (11–16) or a supplied lobe labelmap (1–5).

Zone definition: each lung separately is cut into thirds of its *volume* along the cranio-caudal (S–I) axis.
Voxels are ordered by their physical S coordinate; the upper zone holds the most superior third of the lung's
voxels, the lower zone the most inferior third. Cuts fall between whole slices when slices are thick, so
each zone holds one third of the lung volume up to one slice.
"""

from __future__ import annotations

import numpy as np

from . import labels
from .image import CTImage


def zones_from_lungs(lungs: CTImage) -> CTImage:
    """Zone labelmap (11–16, uint8) from a lung labelmap (1 right, 2 left) on the same grid."""
    sup_axis, sign = lungs.superior_axis()
    out = np.zeros(lungs.array.shape, np.uint8)
    for lung, (upper, middle, lower) in ((labels.LEFT_LUNG, labels.LEFT_ZONES),
                                        (labels.RIGHT_LUNG, labels.RIGHT_ZONES)):
        mask = lungs.array == lung
        if not mask.any():
            continue
        other = tuple(a for a in range(3) if a != sup_axis)
        per_slice = mask.sum(axis=other)  # voxels per slice along the S-I axis, index order
        order = np.arange(per_slice.size)[::sign]  # from most superior slice down
        cum = np.cumsum(per_slice[order]) / per_slice.sum()
        zone_of_slice = np.empty(per_slice.size, np.uint8)
        # a slice belongs to the third that contains the middle of its voxels
        mid = cum - per_slice[order] / (2 * per_slice.sum())
        zone_of_slice[order] = np.where(mid < 1 / 3, upper, np.where(mid < 2 / 3, middle, lower))
        shape = [1, 1, 1]
        shape[sup_axis] = -1
        out[mask] = np.broadcast_to(zone_of_slice.reshape(shape), mask.shape)[mask]
    return lungs.with_array(out)


def lung_side_masks(regions: np.ndarray) -> dict[str, np.ndarray]:
    """Masks ``left_lung`` / ``right_lung`` / ``whole_lung`` from a lobe or zone labelmap."""
    left = np.isin(regions, labels.LEFT_LOBES + labels.LEFT_ZONES)
    right = np.isin(regions, labels.RIGHT_LOBES + labels.RIGHT_ZONES)
    return {"left_lung": left, "right_lung": right, "whole_lung": left | right}

"""Distances to a mask, multi-threaded: SimpleITK's exact Euclidean distance map (Maurer et al. 2003) instead of
``scipy.ndimage.distance_transform_edt``, which runs on one core and holds the GIL."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def distance_to(mask: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Per voxel, the Euclidean distance (mm, float32) to the nearest voxel of ``mask`` (0 inside it); the same
    values as ``scipy.ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)``. An empty mask: inf."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    img = sitk.GetImageFromArray(mask.view(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    d = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True,
                                     backgroundValue=0)
    return np.maximum(sitk.GetArrayViewFromImage(d), 0).astype(np.float32)


def within(mask: np.ndarray, mm: float, spacing_zyx=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Voxels closer than ``mm`` to ``mask`` (the mask itself included)."""
    return distance_to(mask, spacing_zyx) < mm

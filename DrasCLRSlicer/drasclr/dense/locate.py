"""Anatomical locations for patches: subject LPS patch centres -> normalised atlas coordinates in [-1, 1].

The subject's lung mask is registered to the shipped atlas (affine, :mod:`drasclr.registration`); a patch
centre is mapped into the atlas and normalised exactly as the atlas location grid is
(:func:`drasclr.coords.atlas_coordinates_points`), so dense inference, fine-tuning and pretraining all see the
same location code for the same anatomy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..atlas import load_atlas
from ..coords import atlas_coordinates_points, subject_patch_corners
from ..image import CTImage
from ..registration import AtlasTransform, register_to_atlas

Locator = Callable[[np.ndarray], np.ndarray]


def locator_for(lungs: CTImage) -> tuple[Locator, AtlasTransform]:
    """Register ``lungs`` to the atlas; return ``(locator, transform)``. The locator maps ``(N, 3)`` LPS patch
    centres to ``(N, 3)`` float32 normalised atlas locations (z, y, x)."""
    transform = register_to_atlas(lungs)
    return (lambda centres_lps: atlas_coordinates_points(centres_lps, transform)), transform


def atlas_patch_corners(transform: AtlasTransform, grid: CTImage) -> tuple[np.ndarray, np.ndarray]:
    """For every atlas location: the corner (z, y, x voxel index of ``grid``, a 1 mm grid) of its patch in the
    subject, and its normalised location ``(L, 3)``."""
    return subject_patch_corners(transform, grid), load_atlas().locations_normalised

"""Anatomical locations for patches: subject LPS patch centres -> normalised atlas coordinates in [-1, 1].

The subject's lung mask is registered to the shipped atlas (affine, :mod:`drasclr.anatomy.registration`); a patch
centre is mapped into the atlas and normalised exactly as the atlas location grid is
(:func:`drasclr.anatomy.coords.atlas_coordinates_points`), so dense inference, fine-tuning and pretraining all see the
same location code for the same anatomy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..anatomy.atlas import PATCH, load_atlas
from ..anatomy.coords import atlas_coordinates_points, subject_patch_corners
from ..anatomy.registration import AtlasTransform, register_to_atlas
from ..core.image import CTImage

Locator = Callable[[np.ndarray], np.ndarray]


def locator_for(lungs: CTImage, transform: AtlasTransform | None = None) -> tuple[Locator, AtlasTransform]:
    """Register ``lungs`` to the atlas (unless ``transform`` is that registration already); return
    ``(locator, transform)``. The locator maps ``(N, 3)`` LPS patch centres to ``(N, 3)`` float32 normalised atlas
    locations (z, y, x)."""
    transform = transform or register_to_atlas(lungs)
    return (lambda centres_lps: atlas_coordinates_points(centres_lps, transform)), transform


def atlas_patch_corners(transform: AtlasTransform, grid: CTImage) -> tuple[np.ndarray, np.ndarray]:
    """For every atlas location: the corner (z, y, x voxel index of ``grid``, a 1 mm grid) of its patch in the
    subject, and its normalised location ``(L, 3)``."""
    return subject_patch_corners(transform, grid), load_atlas().locations_normalised


@functools.cache
def _atlas_midline_x() -> float:
    """Normalised x of the atlas's left-right midline (the centre of the two lungs' bounding box)."""
    atlas = load_atlas()
    idx = np.argwhere(atlas.lungs.array > 0) * np.asarray(atlas.lungs.spacing_zyx)  # 1 mm grid index (z, y, x)
    centre = (idx.min(0) + idx.max(0)) / 2.0
    return float(atlas.normalise_index((centre - PATCH / 2.0)[None], clip=False)[0, 2])


def mirror_left_right(loc: np.ndarray) -> np.ndarray:
    """The location codes ``(N, 3)`` (z, y, x) of the mirror-image patches: x reflected about the atlas midline.
    A patch flipped left-right (last axis) with these codes shows the same anatomy as the other lung would."""
    out = np.array(loc, np.float32, copy=True)
    out[:, 2] = 2.0 * _atlas_midline_x() - out[:, 2]
    return out

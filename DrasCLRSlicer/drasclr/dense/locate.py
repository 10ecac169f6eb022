"""Anatomical locations for patches: subject LPS points -> normalised atlas coordinates in [-1, 1].

The subject's lung mask is registered to the shipped atlas (affine); a point is mapped into the atlas and
normalised exactly as the atlas location grid is (:meth:`drasclr.atlas.Atlas.normalise_index`), so dense
inference, fine-tuning and pretraining all see the same location code for the same anatomy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..atlas import load_atlas
from ..image import CTImage
from ..registration import AtlasTransform, register_to_atlas

Locator = Callable[[np.ndarray], np.ndarray]


def atlas_locator(transform: AtlasTransform) -> Locator:
    """``(N, 3)`` subject LPS points -> ``(N, 3)`` float32 normalised atlas locations (z, y, x order)."""
    atlas = load_atlas()

    def locate(points_lps: np.ndarray) -> np.ndarray:
        atlas_lps = transform.subject_to_atlas(np.atleast_2d(points_lps))
        zyx = atlas.grid_image.lps_to_index(atlas_lps)[:, ::-1]
        return atlas.normalise_index(zyx).astype(np.float32)

    return locate


def locator_for(lungs: CTImage) -> tuple[Locator, AtlasTransform]:
    """Register ``lungs`` to the atlas and return its locator and transform."""
    transform = register_to_atlas(lungs)
    return atlas_locator(transform), transform


def atlas_patch_corners(transform: AtlasTransform, grid: CTImage) -> tuple[np.ndarray, np.ndarray]:
    """For every atlas location: the corner (z, y, x voxel index of ``grid``, a 1 mm grid) of its patch in the
    subject, and its normalised location ``(L, 3)``."""
    atlas = load_atlas()
    lps = atlas.grid_image.index_to_lps(atlas.grid[:, ::-1].astype(float))
    corners = np.round(grid.lps_to_index(transform.atlas_to_subject(lps))[:, ::-1]).astype(int)
    return corners, atlas.locations_normalised

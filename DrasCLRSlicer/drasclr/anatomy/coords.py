"""Atlas-aligned anatomical coordinates: where a subject voxel or patch sits in the atlas, normalised to [-1, 1].

This is the conditioning input of the DrasCLR encoder. Conventions (see :mod:`drasclr.anatomy.atlas`):

- A normalised coordinate is in **(z, y, x)** order, the order of the atlas location grid.
- An atlas location is a 32³ patch with corner ``c`` (1 mm atlas voxel index, z y x); its normalised location is
  ``Atlas.normalise_index(c)``. A point at atlas index ``q`` gets the coordinate of the patch *centred* on it,
  ``normalise_index(q - 16)``, so a patch's centre voxel carries exactly the patch's location code. Points beyond
  the outermost patch centres are clipped to [-1, 1].
- Subject points are LPS millimetres ``(N, 3)`` in (x, y, z) order (as in :mod:`drasclr.anatomy.registration`).
"""

from __future__ import annotations

import numpy as np

from ..core.image import CTImage
from .atlas import PATCH, Atlas, load_atlas
from .registration import AtlasTransform


def atlas_coordinates_points(points_lps: np.ndarray, transform: AtlasTransform,
                             atlas: Atlas | None = None) -> np.ndarray:
    """Subject LPS points ``(N, 3)`` (x, y, z) → normalised atlas coordinates ``(N, 3)`` (z, y, x) in [-1, 1]."""
    atlas = atlas or load_atlas()
    q = atlas.grid_image.lps_to_zyx(transform.subject_to_atlas(points_lps))
    return atlas.normalise_index(q - PATCH / 2.0).astype(np.float32)


def atlas_coordinates(ct_grid: CTImage, transform: AtlasTransform, atlas: Atlas | None = None) -> np.ndarray:
    """A 3-channel map ``(3, Z, Y, X)`` float32 in [-1, 1]: the normalised atlas coordinate (channels z, y, x) of
    every voxel of ``ct_grid`` (any grid: the CT's own, a 1 mm resampling, a coarse grid).

    The map is affine in the voxel index, so it is computed by broadcasting (no per-voxel point list).
    """
    atlas = atlas or load_atlas()
    # voxel (z, y, x) of ct_grid -> normalised coordinate: n = A @ (z, y, x) + b, found from 4 points
    basis = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    lps = ct_grid.zyx_to_lps(basis)
    q = atlas.grid_image.lps_to_zyx(transform.subject_to_atlas(lps))
    n = atlas.normalise_index(q - PATCH / 2.0, clip=False)
    b = n[0]
    a = (n[1:] - b).T  # column c = change per step along array axis c
    nz, ny, nx = ct_grid.array.shape
    z = np.arange(nz, dtype=np.float32)[:, None, None]
    y = np.arange(ny, dtype=np.float32)[None, :, None]
    x = np.arange(nx, dtype=np.float32)[None, None, :]
    out = np.empty((3, nz, ny, nx), np.float32)
    for c in range(3):
        out[c] = a[c, 0] * z + a[c, 1] * y + a[c, 2] * x + b[c]
    np.clip(out, -1.0, 1.0, out=out)
    return out


def atlas_centres_in_subject(transform: AtlasTransform, atlas: Atlas | None = None) -> np.ndarray:
    """``(L, 3)`` LPS points (x, y, z): the atlas patch centres mapped into the subject."""
    atlas = atlas or load_atlas()
    return transform.atlas_to_subject(atlas.grid_image.zyx_to_lps(atlas.centres))


def subject_patch_corners(transform: AtlasTransform, subject: CTImage, patch_mm: int = PATCH,
                          atlas: Atlas | None = None) -> np.ndarray:
    """For every atlas location, the corner of the subject's ``patch_mm``³ patch, ``(L, 3)`` int64, **(z, y, x)**
    voxel index of ``resample_isotropic(subject, 1.0)`` (same origin and direction as ``subject``, 1 mm).

    The atlas patch *centre* is mapped through the affine into the subject and the patch is centred there
    (``corner = round(centre - patch_mm / 2)``); as in the reference code the patch content itself is not warped.
    Corners may fall outside the volume near its edges: pad when cutting (e.g. with -1024 HU).
    """
    centres = atlas_centres_in_subject(transform, atlas)
    idx = subject.lps_to_zyx(centres, spacing=1.0)
    return np.round(idx - patch_mm / 2.0).astype(np.int64)

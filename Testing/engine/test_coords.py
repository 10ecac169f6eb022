"""Registration to the atlas and anatomical coordinates: known affines recovered, inverse mapping exact,
coordinate maps consistent with the point function and the location grid; real CTs map atlas centres into lung."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from drasclr.anatomy.atlas import PATCH, load_atlas
from drasclr.anatomy.atlas.shape import canonical_lobes, lungs_from_lobes, synthetic_ct
from drasclr.anatomy.coords import (
    atlas_centres_in_subject,
    atlas_coordinates,
    atlas_coordinates_points,
    subject_patch_corners,
)
from drasclr.anatomy.lungs import segment_lungs
from drasclr.anatomy.registration import AtlasTransform, register_to_atlas
from drasclr.core.errors import InputError
from drasclr.core.image import resample_isotropic
from drasclr.core.io import read_ct
from realdata import real_ct_path


def known_affine(angles_deg=(5.0, -4.0, 6.0), scale=(1.08, 0.93, 1.05), shift=(12.0, -9.0, 15.0)) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rz @ ry @ rx @ np.diag(scale)
    a[:3, 3] = shift
    return a


@functools.lru_cache(maxsize=1)
def _warped_case():
    a = known_affine()
    lobes = canonical_lobes(3.0, affine=a)
    return a, lobes, synthetic_ct(lobes, seed=2, vessels=20)


def atlas_lung_points(step=40):
    atlas = load_atlas()
    return atlas.lungs.index_to_lps(np.argwhere(atlas.lungs.array > 0)[::step][:, ::-1])


def test_register_mask_recovers_known_affine():
    a, lobes, _ = _warped_case()
    tr = register_to_atlas(lobes.with_array(lungs_from_lobes(lobes.array)))
    p = atlas_lung_points()
    err = np.linalg.norm(tr.atlas_to_subject(p) - (p @ a[:3, :3].T + a[:3, 3]), axis=1)
    assert np.median(err) < 2.0 and np.percentile(err, 95) < 4.0
    # inverse mapping
    assert np.allclose(tr.subject_to_atlas(tr.atlas_to_subject(p)), p, atol=1e-6)
    assert np.allclose(tr.inverse().atlas_to_subject(tr.atlas_to_subject(p)), p, atol=1e-6)
    assert np.allclose(AtlasTransform.from_dict(tr.to_dict()).matrix, tr.matrix)
    sitk_t = tr.to_sitk()
    assert np.allclose(sitk_t.TransformPoint(tuple(p[0])), tr.atlas_to_subject(p[:1])[0])


def test_ct_to_atlas_pipeline_location_error_under_5mm():
    a, _, ct = _warped_case()
    tr = register_to_atlas(segment_lungs(ct))
    atlas = load_atlas()
    c = atlas.grid_image.index_to_lps(atlas.centres[:, ::-1])
    err = np.linalg.norm(tr.atlas_to_subject(c) - (c @ a[:3, :3].T + a[:3, 3]), axis=1)
    assert np.median(err) <= 5.0


def test_coordinate_map_matches_points_and_grid():
    atlas = load_atlas()
    ident = AtlasTransform(np.eye(3), np.zeros(3))
    # at the atlas patch centres, the coordinate is exactly the location code of the patch
    centres_lps = atlas.grid_image.index_to_lps(atlas.centres[:, ::-1])
    got = atlas_coordinates_points(centres_lps, ident)
    assert np.allclose(got, atlas.locations_normalised, atol=1e-5)
    # the 3-channel map on a coarse grid equals the point function at its voxels
    grid = resample_isotropic(atlas.lungs, 6.0, default=0)
    tr = AtlasTransform(known_affine()[:3, :3], known_affine()[:3, 3])
    m = atlas_coordinates(grid, tr)
    assert m.shape == (3, *grid.array.shape) and m.dtype == np.float32
    assert m.min() >= -1 and m.max() <= 1
    rng = np.random.default_rng(0)
    zyx = np.stack([rng.integers(0, n, 50) for n in grid.array.shape], 1)
    pts = grid.index_to_lps(zyx[:, ::-1])
    assert np.allclose(m[:, zyx[:, 0], zyx[:, 1], zyx[:, 2]].T, atlas_coordinates_points(pts, tr), atol=1e-4)
    # the z channel grows superiorly, x towards the patient's left (identity transform on the atlas grid)
    mi = atlas_coordinates(grid, ident)
    assert mi[0, -1].mean() > mi[0, 0].mean() and mi[2, :, :, -1].mean() > mi[2, :, :, 0].mean()


def test_subject_patch_corners():
    atlas = load_atlas()
    ident = AtlasTransform(np.eye(3), np.zeros(3))
    # the atlas itself as the subject: corners are the atlas grid
    assert (subject_patch_corners(ident, atlas.lungs) == atlas.grid).all()
    # a shifted subject (LPS +10 mm in x, +20 mm in z): corners move by (20, 0, 10) voxels in (z, y, x)
    shift = AtlasTransform(np.eye(3), np.array([10.0, 0.0, 20.0]))
    assert (subject_patch_corners(shift, atlas.lungs) - atlas.grid == [20, 0, 10]).all()
    assert (subject_patch_corners(ident, atlas.lungs, patch_mm=16) - atlas.grid == PATCH / 2 - 8).all()


def test_empty_mask_refused():
    atlas = load_atlas()
    with pytest.raises(InputError, match="empty"):
        register_to_atlas(atlas.lungs.with_array(np.zeros_like(atlas.lungs.array)))


@pytest.mark.real
def test_real_ct_atlas_centres_fall_in_lung():
    ct = read_ct(real_ct_path("lidc_idri_0001"))
    lungs = segment_lungs(ct)
    tr = register_to_atlas(lungs)
    atlas = load_atlas()
    g = atlas.grid_image.array
    c = atlas.centres.astype(int)
    in_atlas = g[c[:, 0], c[:, 1], c[:, 2]] > 0
    ijk = np.round(lungs.lps_to_index(atlas_centres_in_subject(tr))).astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.array(lungs.shape_xyz)), axis=1)
    inside = np.zeros(len(c), bool)
    inside[ok] = lungs.array[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]] > 0
    assert inside[in_atlas].mean() >= 0.8  # measured 85 % (docs/anatomy.md)
    corners = subject_patch_corners(tr, ct)
    iso_shape = np.array(resample_isotropic(lungs, 1.0, default=0).array.shape)
    centres = corners + PATCH / 2
    assert ((centres >= 0) & (centres < iso_shape)).all(axis=1).mean() > 0.95


def test_one_lung_subject_registers_to_that_lung():
    a = known_affine(angles_deg=(3.0, 2.0, -4.0), scale=(1.05, 0.95, 1.0), shift=(8.0, 5.0, -10.0))
    lobes = canonical_lobes(3.0, affine=a)
    lungs = lungs_from_lobes(lobes.array)
    lungs[lungs == 2] = 0  # only the right lung was scanned / is left
    tr = register_to_atlas(lobes.with_array(lungs))
    atlas = load_atlas()
    p = atlas.lungs.index_to_lps(np.argwhere(atlas.lungs.array == 1)[::20][:, ::-1])
    err = np.linalg.norm(tr.atlas_to_subject(p) - (p @ a[:3, :3].T + a[:3, 3]), axis=1)
    assert np.median(err) < 3.0

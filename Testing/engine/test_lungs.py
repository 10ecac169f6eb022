"""Automatic lung mask: Dice on synthetic chests, trachea removed, touching lungs split, one lung, a lung cut at
the scan edge, scanner padding, no lungs -> InputError; real CTs: both lungs, plausible volumes, no trachea."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage as ndi

from drasclr.anatomy.atlas.shape import canonical_lobes, lungs_from_lobes, synthetic_ct
from drasclr.anatomy.lungs import segment_lungs
from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage
from drasclr.core.io import read_ct
from realdata import REAL_CTS, real_ct_path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@functools.lru_cache(maxsize=1)
def _chest():
    lobes = canonical_lobes(2.5)
    return synthetic_ct(lobes, seed=3), lungs_from_lobes(lobes.array)


def test_synthetic_chest_dice_sides_and_no_trachea():
    ct, truth = _chest()
    lungs = segment_lungs(ct)
    assert lungs.array.dtype == np.uint8 and lungs.same_grid(ct)
    assert set(np.unique(lungs.array)) == {0, 1, 2}
    assert dice(lungs.array > 0, truth > 0) >= 0.98
    for v in (labels.RIGHT_LUNG, labels.LEFT_LUNG):
        assert dice(lungs.array == v, truth == v) >= 0.98
    # the right lung (label 1) lies at smaller LPS x (patient's right) than the left lung
    xr = ct.index_to_lps(np.argwhere(lungs.array == 1).mean(0)[::-1])[0, 0]
    xl = ct.index_to_lps(np.argwhere(lungs.array == 2).mean(0)[::-1])[0, 0]
    assert xr < 0 < xl
    # trachea and main bronchi (air outside the truth lungs) are not lung
    idx = np.argwhere((ct.array < -900) & (truth == 0))
    p = ct.index_to_lps(idx[:, ::-1])
    central = (np.abs(p[:, 0]) < 100) & (np.abs(p[:, 1]) < 80)  # inside the body: the airway tree
    airway = idx[central]
    assert len(airway) * ct.voxel_volume_ml > 10  # the synthetic chest has a trachea and bronchi
    labelled = lungs.array[tuple(airway.T)] > 0
    zs = np.nonzero(truth.any(axis=(1, 2)))[0]
    z_car = int(zs.min() + 0.62 * (zs.max() - zs.min()))  # carina level of synthetic_ct
    trachea = airway[:, 0] > z_car + 1
    assert trachea.sum() > 50 and labelled[trachea].mean() < 0.01  # trachea never lung
    assert labelled.mean() < 0.5  # bronchi: only their intrapulmonary part may be lung


def test_touching_lungs_are_split_left_right():
    ct, truth = _chest()
    a = ct.array.copy()
    # an anterior junction: lung density bridging the two lungs over 6 cm in front of the mediastinum
    pts = ct.index_to_lps(np.argwhere(np.ones(a.shape, bool))[:, ::-1]).reshape(*a.shape, 3)
    bridge = (np.abs(pts[..., 0]) < 30) & (pts[..., 1] > -95) & (pts[..., 1] < -80) & (np.abs(pts[..., 2] - 40) < 30)
    a[bridge] = -850
    lungs = segment_lungs(ct.with_array(a))
    for v in (1, 2):
        got, want = (lungs.array == v).sum(), (truth == v).sum()
        assert abs(got - want) / want < 0.05, (v, got, want)
    assert dice(lungs.array == 1, truth == 1) > 0.95 and dice(lungs.array == 2, truth == 2) > 0.95


def test_one_lung_scan():
    ct, truth = _chest()
    a = ct.array.copy()
    a[truth == labels.LEFT_LUNG] = 40  # left lung collapsed / removed: soft tissue
    lungs = segment_lungs(ct.with_array(a))
    assert not (lungs.array == labels.LEFT_LUNG).any()
    assert dice(lungs.array == labels.RIGHT_LUNG, truth == labels.RIGHT_LUNG) >= 0.97


def test_lung_cut_at_scan_edge_and_padding():
    ct, truth = _chest()
    # keep only the image columns from 20 mm inside the right lung's lateral border: the chest wall is gone there
    xs = np.nonzero((truth == 1).any(axis=(0, 1)))[0]
    x0 = xs[0] + int(20 / ct.spacing[0])
    a = np.ascontiguousarray(ct.array[:, :, x0:])
    origin = tuple(ct.index_to_lps(np.array([x0, 0, 0]))[0])
    cut = CTImage(a, ct.spacing, origin, ct.direction)
    t = truth[:, :, x0:]
    # scanner padding (-2048) in the corners, outside a scan circle
    ny, nx = a.shape[1:]
    yy, xx = np.mgrid[:ny, :nx]
    a = a.copy()
    a[:, ((yy - ny / 2) / (0.7 * ny)) ** 2 + ((xx - nx / 2) / (0.7 * nx)) ** 2 > 1] = -2048
    lungs = segment_lungs(cut.with_array(a))
    assert dice(lungs.array == 1, t == 1) >= 0.95
    assert dice(lungs.array == 2, t == 2) >= 0.97


def test_no_lungs_is_refused():
    # abdomen-like: a soft-tissue body with a few small gas pockets (bowel), no lungs
    rng = np.random.default_rng(0)
    shape = (40, 128, 128)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    a = np.full(shape, -1000.0)
    body = ((x - 64) / 55.0) ** 2 + ((y - 64) / 42.0) ** 2 < 1
    a[body] = 40
    for cz, cy, cx in rng.integers([5, 50, 40], [35, 80, 90], size=(6, 3)):
        a[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < 16] = -1000
    ct = CTImage((a + rng.normal(0, 10, shape)).astype(np.int16), spacing=(2.5, 2.5, 5.0))
    with pytest.raises(InputError, match="no lungs found"):
        segment_lungs(ct)
    with pytest.raises(InputError, match="no lungs found"):
        segment_lungs(ct.with_array(np.full(shape, -1000, np.int16)))


def test_phantom_case_dice():
    phantom = pytest.importorskip("drasclr.research.phantom")
    case = phantom.generate_case(seed=5, index=1, size=(128, 128, None), thickness=5.0)
    lungs = segment_lungs(case.ct)
    truth = case.regions.array
    assert dice(lungs.array > 0, truth > 0) >= 0.97
    assert dice(lungs.array == labels.LEFT_LUNG, np.isin(truth, labels.LEFT_LOBES)) >= 0.95
    assert dice(lungs.array == labels.RIGHT_LUNG, np.isin(truth, labels.RIGHT_LOBES)) >= 0.95


@pytest.mark.real
@pytest.mark.parametrize("name", REAL_CTS)
def test_real_ct_both_lungs_plausible_volume_no_trachea(name):
    ct = read_ct(real_ct_path(name))
    lungs = segment_lungs(ct)
    vols = [(lungs.array == v).sum() * ct.voxel_volume_ml for v in (1, 2)]
    assert all(700 <= v <= 4500 for v in vols), vols
    assert 2000 <= sum(vols) <= 8000
    # the right lung lies on the patient's right (smaller LPS x)
    xr = ct.index_to_lps(np.argwhere(lungs.array[::4, ::8, ::8] == 1).mean(0)[::-1] * [8, 8, 4])[0, 0]
    xl = ct.index_to_lps(np.argwhere(lungs.array[::4, ::8, ::8] == 2).mean(0)[::-1] * [8, 8, 4])[0, 0]
    assert xr < xl
    # no trachea: in slices at 70-85 % of the lungs' height, the trachea is an air hole (< -900 HU, 1-8 cm², mean
    # below -960 HU) within 30 mm of the body's centre; the one nearest the midline must not be labelled lung
    sup_axis, sign = ct.superior_axis()
    assert sup_axis == 0
    zs = np.nonzero(lungs.array.any(axis=(1, 2)))[0]
    px_cm2 = ct.spacing[0] * ct.spacing[1] / 100
    checked = 0
    for q in (0.7, 0.75, 0.8, 0.85):
        z = zs[int(q * (len(zs) - 1))] if sign > 0 else zs[int((1 - q) * (len(zs) - 1))]
        sl = ct.array[z]
        body = ndi.binary_fill_holes(sl > -500)
        cx_body = np.nonzero(body)[1].mean()
        lab, n = ndi.label((sl < -900) & body)
        near = []
        for i in range(1, n + 1):
            comp = lab == i
            area = comp.sum() * px_cm2
            cy, cx = ndi.center_of_mass(comp)
            if 1.0 <= area <= 8.0 and abs(cx - cx_body) * ct.spacing[0] < 30 and sl[comp].mean() < -960:
                near.append((abs(cx - cx_body), i))  # pure air (lumen), not a dark patch of lung
        if near:  # the hole nearest the midline: the trachea (intrapulmonary bronchi are lung and lie lateral)
            checked += 1
            comp = lab == min(near)[1]
            assert (lungs.array[z][comp] > 0).mean() < 0.05, z
    assert checked >= 1, "trachea not seen"


def test_orientation_does_not_change_the_answer():
    ct, _ = _chest()
    ref = segment_lungs(ct).array
    # the same voxels stored flipped along x and y (RAS-like storage): direction columns negated
    flipped = CTImage(np.ascontiguousarray(ct.array[:, ::-1, ::-1]), ct.spacing,
                      tuple(ct.index_to_lps(np.array([ct.shape_xyz[0] - 1, ct.shape_xyz[1] - 1, 0]))[0]),
                      ct.direction @ np.diag([-1.0, -1.0, 1.0]))
    got = segment_lungs(flipped).array[:, ::-1, ::-1]
    assert dice(got == 1, ref == 1) > 0.99 and dice(got == 2, ref == 2) > 0.99
    # stored with the cranio-caudal axis last (array axes permuted): still right = 1, left = 2
    perm = np.ascontiguousarray(np.transpose(ct.array, (2, 1, 0)))  # array (x, y, z): ITK index (z, y, x)
    d = ct.direction[:, ::-1]
    sag = CTImage(perm, ct.spacing[::-1], ct.origin, d)
    got = np.transpose(segment_lungs(sag).array, (2, 1, 0))
    assert dice(got == 1, ref == 1) > 0.97 and dice(got == 2, ref == 2) > 0.97

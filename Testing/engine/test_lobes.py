"""Estimated lobes: a chest whose fissures lie away from the atlas's is relabelled onto its fissures; the result
partitions the lung (two lobes left, three right, each connected); checks and metrics catch what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from drasclr.anatomy.atlas import shape
from drasclr.anatomy.lobes import estimate_lobes
from drasclr.anatomy.lobes.checks import lobe_problems, make_connected
from drasclr.anatomy.lobes.metrics import dice_per_lobe, fissure_distances, fissure_surface
from drasclr.anatomy.lobes.source import choose_regions
from drasclr.anatomy.lungs import segment_lungs
from drasclr.core import labels
from drasclr.core.errors import InputError

SHIFT = {"oblique_left": -14.0, "oblique_right": 12.0, "horizontal": -12.0}  # mm away from the atlas fissures


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    """A synthetic CT of the canonical lungs whose three fissures are moved 12–14 mm from the atlas's and drawn
    as thin bright sheets (-720 HU); truth = the moved lobes."""
    saved = dict(shape.FISSURES)
    try:
        for k, d in SHIFT.items():
            shape.FISSURES[k] += d
        truth = shape.canonical_lobes(2.5)
    finally:
        shape.FISSURES.update(saved)
    ct = shape.synthetic_ct(truth, seed=2, noise_hu=20.0)
    a = ct.array.astype(np.float32)
    sheet = np.zeros(a.shape, bool)
    for up, low in (((1,), (2,)), ((3, 4), (5,)), ((3,), (4,))):
        sheet |= fissure_surface(truth.array, up, low)
    a[sheet & (a < -700)] = -720.0
    return ct.with_array(a.astype(np.int16)), truth


@pytest.fixture(scope="module")
def estimates(chest):
    ct, _ = chest
    lungs = segment_lungs(ct)
    atlas = estimate_lobes(ct, lungs, method="atlas")
    fissures = estimate_lobes(ct, lungs, method="atlas+fissures", affine=atlas.affine)
    return lungs, atlas, fissures


def test_lobes_partition_the_lung_two_left_three_right(estimates):
    lungs, _, est = estimates
    lob = est.lobes.array
    assert est.source == "atlas+fissures" and est.problems == []
    assert est.lobes.same_grid(lungs) and lob.dtype == np.uint8
    np.testing.assert_array_equal(lob > 0, lungs.array > 0)
    assert set(np.unique(lob[lungs.array == labels.LEFT_LUNG])) == {1, 2}
    assert set(np.unique(lob[lungs.array == labels.RIGHT_LUNG])) == {3, 4, 5}
    assert lobe_problems(lob, lungs.array) == []


def test_fissures_move_the_borders_onto_the_sheets(chest, estimates):
    ct, truth = chest
    _, atlas, est = estimates
    sp = ct.spacing[::-1]
    d_atlas = fissure_distances(atlas.lobes.array, truth.array, sp)
    d_fis = fissure_distances(est.lobes.array, truth.array, sp)
    # the atlas's borders are 12-14 mm off; the found ones lie on the drawn sheets
    assert min(d_atlas.values()) > 6.0, d_atlas
    assert max(d_fis.values()) < 3.0, d_fis
    dice = dice_per_lobe(est.lobes.array, truth.array)
    assert min(dice.values()) > 0.9 and np.mean(list(dice.values())) > 0.95, dice
    assert np.mean(list(dice.values())) > np.mean(list(dice_per_lobe(atlas.lobes.array, truth.array).values()))


def test_empty_lungs_and_unknown_method_are_refused(chest):
    ct, _ = chest
    with pytest.raises(InputError, match="empty"):
        estimate_lobes(ct, ct.with_array(np.zeros(ct.array.shape, np.uint8)))
    with pytest.raises(InputError, match="unknown lobe method"):
        estimate_lobes(ct, ct.with_array(np.ones(ct.array.shape, np.uint8)), method="magic")


def test_checks_find_and_repair_broken_lobes():
    lungs = np.zeros((20, 20, 40), np.uint8)
    lungs[2:18, 2:18, 2:18] = labels.RIGHT_LUNG
    lungs[2:18, 2:18, 22:38] = labels.LEFT_LUNG
    lob = np.zeros_like(lungs)
    lob[2:10, 2:18, 2:18], lob[10:18, 2:18, 2:18] = 5, 3
    lob[12:14, 2:18, 8:12] = 4  # right middle lobe: one slab
    lob[2:10, 2:18, 22:38], lob[10:18, 2:18, 22:38] = 2, 1
    assert lobe_problems(lob, lungs) == []
    broken = lob.copy()
    broken[4:6, 4:6, 26:28] = 1  # a stray piece of LUL inside LLL
    broken[15, 15, 15] = 0  # an unlabelled lung voxel
    broken[15, 15, 30] = 4  # a right lobe in the left lung
    problems = lobe_problems(broken, lungs)
    assert any("left_upper_lobe is in 2 pieces" in p for p in problems)
    assert any("carry no lobe" in p for p in problems)
    assert any("right_middle_lobe: 1 voxels in the other lung" in p for p in problems)
    fixed = make_connected(lob.copy() | 0)
    np.testing.assert_array_equal(fixed, lob)  # nothing to repair
    stray = lob.copy()
    stray[4:6, 4:6, 26:28] = 1
    whole = set()
    repaired = make_connected(stray, whole=whole)
    assert np.all(repaired[4:6, 4:6, 26:28] == 2) and lobe_problems(repaired, lungs) == []
    # settled: every lobe, whose piece count lobe_problems then trusts; the other checks still run
    assert whole == {1, 2, 3, 4, 5} and lobe_problems(repaired, lungs, whole) == []
    repaired[15, 15, 15] = 0
    assert lobe_problems(repaired, lungs, whole) == lobe_problems(repaired, lungs) == ["1 lung voxels carry no lobe"]
    # not settled within the rounds allowed: nothing is promised
    unsettled = set()
    make_connected(stray, max_rounds=1, whole=unsettled)
    assert unsettled == set()


def test_metrics_measure_a_known_shift():
    truth = np.zeros((40, 10, 10), np.uint8)
    truth[:20], truth[20:] = 2, 1  # left lung: LLL below, LUL above
    pred = np.zeros_like(truth)
    pred[:25], pred[25:] = 2, 1  # border 5 voxels higher
    d = fissure_distances(pred, truth, (2.0, 1.0, 1.0))
    assert d["left_oblique"] == pytest.approx(10.0)  # 5 voxels of 2 mm
    assert np.isnan(d["right_oblique"])
    dice = dice_per_lobe(pred, truth)
    assert dice["left_lower_lobe"] == pytest.approx(2 * 200 / (250 + 200) * 1.0 * 10 * 10 / 100, rel=1e-6)
    assert np.isnan(dice["right_middle_lobe"])


def test_a_user_lobe_file_always_wins_and_zones_on_request(chest, estimates):
    ct, truth = chest
    lungs, _, _ = estimates
    user = choose_regions(ct, lungs, truth, regions="zones", lobes_from="lungmask")
    assert user.source == "file" and user.kind == "lobes"
    np.testing.assert_array_equal(user.image.array, np.where(lungs.array > 0, truth.array, 0))
    zones = choose_regions(ct, lungs, regions="zones")
    assert zones.source == "zones" and set(np.unique(zones.image.array)) == {0, *labels.ZONES}
    from drasclr.anatomy.adapters import lungmask_adapter

    if not lungmask_adapter.available():
        with pytest.raises(InputError, match="lungmask is not installed"):
            choose_regions(ct, lungs, lobes_from="lungmask")
    with pytest.raises(InputError, match="unknown regions"):
        choose_regions(ct, lungs, regions="segments")
    with pytest.raises(InputError, match="unknown lobe tool"):
        choose_regions(ct, lungs, lobes_from="magic")


@pytest.mark.real
def test_lobes_on_a_real_ct(real_ct_dir):
    from drasclr.core.io import read_ct

    ct = read_ct(real_ct_dir / "lidc_idri_0001.nii.gz")
    lungs = segment_lungs(ct)
    est = estimate_lobes(ct, lungs)
    assert est.problems == []
    counts = np.bincount(est.lobes.array.ravel(), minlength=6)[1:6]
    frac = counts / counts.sum()
    # every lobe within the range of healthy adults (Yamada et al. 2020: 6.6-34 % of the lung) widened by 5 points
    assert np.all(frac > 0.03) and np.all(frac < 0.40), frac
    # upper lobes above lower lobes: mean superior coordinate of each upper lobe exceeds its lower lobe's
    z = lambda v: est.lobes.index_to_lps(np.argwhere(est.lobes.array == v)[::97, ::-1])[:, 2].mean()  # noqa: E731
    assert z(1) > z(2) and z(3) > z(5) and z(3) > z(4)

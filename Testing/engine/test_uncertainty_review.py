"""Voxel uncertainty from the dense prediction and the review queue built on it (no model needed: the probability
maps are written by hand, so every expected value is known)."""

import json

import numpy as np
import pytest

from drasclr.analysis.review import build_queue, read_review, write_review
from drasclr.core import labels
from drasclr.core.image import CTImage
from drasclr.dense.predict import ProbabilityMap
from drasclr.dense.uncertainty import SCALE, measures_from_probabilities, region_mean_uncertainty, voxel_uncertainty


def test_measures_of_certain_and_uniform_voxels():
    p = np.zeros((4, 3), np.float32)
    p[1, 0] = 1.0  # certain CLE
    p[:, 1] = 0.25  # all four equally likely
    p[:, 2] = [0.5, 0.5, 0, 0]  # two-way tie
    m = measures_from_probabilities(p, disagreement=np.array([0.0, 0.3, 1.5], np.float32))
    np.testing.assert_allclose(m["entropy"], [0.0, 1.0, 0.5], atol=1e-6)  # log 2 / log 4
    np.testing.assert_allclose(m["margin"], [0.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(m["disagreement"], [0.0, 0.3, 1.0])  # clipped to 0..1
    # unnormalised input (an "outside" share removed) is renormalised over the four subtypes
    np.testing.assert_allclose(measures_from_probabilities(p * 0.4)["entropy"], m["entropy"], atol=1e-6)


def _case():
    """A 2 mm CT grid and a 1 mm probability grid over the same 40 mm cube: left half certain normal, right half
    an even CLE/PSE split with the mirrored pass disagreeing by 0.2."""
    ct = CTImage(np.zeros((20, 20, 20), np.int16), spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0))
    grid = CTImage(np.zeros((40, 40, 40), np.int16), spacing=(1.0, 1.0, 1.0), origin=(-0.5, -0.5, -0.5))
    probs = np.zeros((5, 40, 40, 40), np.float32)
    probs[1, :, :, :20] = 1.0
    probs[2, :, :, 20:] = 0.5
    probs[3, :, :, 20:] = 0.5
    dis = np.where(np.arange(40) >= 20, 0.2, 0.0).astype(np.float32)[None, None, :].repeat(40, 0).repeat(40, 1)
    lungs = ct.with_array(np.zeros((20, 20, 20), np.uint8))
    lungs.array[2:18, 2:18, 2:18] = 1
    sub = np.where(lungs.array > 0, np.where(np.arange(20) >= 10, labels.CLE, labels.NORMAL)[None, None, :], 0)
    return ct, lungs, ct.with_array(sub.astype(np.uint8)), ProbabilityMap(probs, grid, dis)


def test_voxel_uncertainty_on_the_ct_grid():
    ct, lungs, sub, pmap = _case()
    u = voxel_uncertainty(pmap, ct, lungs, sub, all_kinds=True)
    assert set(u.measures) == {"entropy", "margin", "disagreement"}
    assert set(voxel_uncertainty(pmap, ct, lungs, sub).measures) == {"entropy"}
    img = u.image()
    assert img.same_grid(ct) and img.array.dtype == np.uint8
    inside = lungs.array > 0
    assert (img.array[~inside] == 0).all()
    left, right = inside.copy(), inside.copy()
    left[:, :, 9:] = False  # away from the boundary, where linear interpolation mixes the halves
    right[:, :, :11] = False
    assert (img.array[left] == 0).all()
    assert (img.array[right] == SCALE // 2).all()  # entropy of an even two-way split = 0.5
    # kept in float16 (a thin-slice lung box holds tens of millions of voxels): 3 decimals
    np.testing.assert_allclose(u.full("disagreement")[right], 0.2, atol=1e-3)
    np.testing.assert_allclose(u.expected_errors()[right], 0.5, atol=1e-3)  # predicted CLE has p = 0.5
    np.testing.assert_allclose(u.expected_errors()[left], 0.0, atol=1e-3)
    with pytest.raises(ValueError, match="tta"):
        voxel_uncertainty(ProbabilityMap(pmap.array, pmap.grid), ct, lungs, sub, kind="disagreement")


def test_region_mean_uncertainty():
    ct, lungs, sub, pmap = _case()
    img = voxel_uncertainty(pmap, ct, lungs, sub).image()
    regions = ct.with_array(np.where(lungs.array > 0, np.where(np.arange(20) >= 10, 2, 3)[None, None, :], 0)
                            .astype(np.uint8))
    rows = region_mean_uncertainty(img, regions, [{"region": "left_lower_lobe"}, {"region": "right_upper_lobe"},
                                                  {"region": "whole_lung"}, {"region": "left_upper_lobe"}])
    means = {r["region"]: r["mean_uncertainty"] for r in rows}
    assert means["left_lower_lobe"] == pytest.approx(0.5, abs=0.03)
    assert means["right_upper_lobe"] == pytest.approx(0.0, abs=0.03)
    assert means["whole_lung"] == pytest.approx(0.25, abs=0.03)
    assert np.isnan(means["left_upper_lobe"])  # absent region: not measured


def _lobes_case():
    """A 90 x 60 x 60 mm box at (x 1.5, y 1, z 2) mm: lobe 3 for x < 45 mm, lobe 1 beyond; errors expected in one
    10 mm cube inside lobe 1 only."""
    shape = (30, 60, 60)
    ct = CTImage(np.zeros(shape, np.int16), spacing=(1.5, 1.0, 2.0), origin=(-10.0, 5.0, 20.0))
    reg = np.zeros(shape, np.uint8)
    reg[:, :, :30] = 3
    reg[:, :, 30:] = 1
    sub = np.where(reg > 0, labels.NORMAL, 0).astype(np.uint8)
    sub[5:10, 40:50, 40:47] = labels.CLE
    err = np.zeros(shape, np.float32)
    err[5:10, 40:50, 40:47] = 0.8
    err[reg > 0] += 0.01
    return ct.with_array(reg), ct.with_array(sub), err


def test_queue_units_are_connected_pieces_of_one_region_and_block():
    regions, sub, err = _lobes_case()
    q = build_queue(regions, sub, err, uncertainty=err, block_mm=30.0, min_ml=0.5)
    ranks = [u["rank"] for u in q.units]
    assert ranks == list(range(1, len(ranks) + 1))
    density = [u["expected_error_fraction"] for u in q.units]
    assert density == sorted(density, reverse=True) and q.rank_by == "density"
    by_score = build_queue(regions, sub, err, block_mm=30.0, rank_by="score")
    scores = [u["score"] for u in by_score.units]
    assert scores == sorted(scores, reverse=True)
    assert sorted(scores) == sorted(u["score"] for u in q.units)  # the same units, ranked differently
    with pytest.raises(ValueError, match="rank_by"):
        build_queue(regions, sub, err, rank_by="size")
    # 90 x 60 x 60 mm in 30 mm blocks: 3 x 2 x 2 blocks, the middle x-block split by the lobe border -> 16 units
    assert len(q.units) == 16
    # scores given over a box that holds the lung only (its origin said) build the same queue as whole-grid ones
    reg = regions.array.copy()
    reg[:2], reg[:, :5], reg[:, :, :3] = 0, 0, 0
    smaller = regions.with_array(reg)
    sub_small = sub.with_array(np.where(reg > 0, sub.array, 0).astype(np.uint8))
    whole = build_queue(smaller, sub_small, err, uncertainty=err, block_mm=30.0, min_ml=0.5)
    boxed = build_queue(smaller, sub_small, err[2:, 5:, 3:], uncertainty=err[2:, 5:, 3:], block_mm=30.0,
                        min_ml=0.5, origin=(2, 5, 3))
    assert len(whole.units) > 1 and boxed.units == whole.units
    assert np.array_equal(boxed.labels.array, whole.labels.array)
    lab = q.labels.array
    assert set(np.unique(lab).tolist()) == set(range(1, 17))  # the whole box is lung here
    assert (lab > 0).sum() == (regions.array > 0).sum()  # every lung voxel is in a unit here (no slivers)
    for u in q.units:
        m = lab == u["rank"]
        assert m.sum() == u["voxels"]
        assert set(np.unique(regions.array[m])) == {u["region_value"]}
        assert labels.REGION_NAMES[u["region_value"]] == u["region"]
        idx = np.argwhere(m)
        extent_mm = (idx.max(0) - idx.min(0) + 1) * np.array(regions.spacing_zyx)
        assert (extent_mm <= 30.0 + 1e-6).all()
        assert lab[tuple(u["centre_zyx"])] == u["rank"]  # the centre is a voxel of the unit
        np.testing.assert_allclose(regions.zyx_to_lps(np.array([u["centre_zyx"]], float))[0], u["centre_lps"],
                                   atol=0.01)
        assert u["score"] == pytest.approx(float(err[m].sum()), rel=1e-4)
        assert sum(u["predicted"].values()) == pytest.approx(1.0, abs=1e-3)
        (lo, hi) = u["bbox_lps"]
        assert all(a <= c <= b for a, c, b in zip(lo, u["centre_lps"], hi))
    top = q.units[0]  # the unit holding the error cube
    assert top["region"] == "left_upper_lobe" and top["predicted"]["cle"] > 0
    assert (lab[5:10, 40:50, 40:47] == 1).all()


def test_queue_drops_slivers_and_round_trips(tmp_path):
    regions, sub, err = _lobes_case()
    reg = regions.array.copy()
    reg[:, :, 29] = 5  # a 1-voxel-thick sheet of lobe 5: 30 x 60 x 1.5 mm pieces of 1.8 ml in each block
    q = build_queue(regions.with_array(reg), sub, err, block_mm=30.0, min_ml=2.0)
    assert all(u["region_value"] != 5 for u in q.units)
    assert not (q.labels.array[reg == 5]).any()
    path = write_review(q, tmp_path / "review.json", {"uncertainty_kind": "entropy"})
    data = read_review(path)
    assert data["units"] == json.loads(json.dumps(q.units)) and data["uncertainty_kind"] == "entropy"
    assert q.mask([1, 2]).sum() == q.units[0]["voxels"] + q.units[1]["voxels"]
    empty = build_queue(regions.with_array(np.zeros_like(reg)), sub, err)
    assert empty.units == [] and not empty.labels.array.any()


def test_map_to_ct_is_labels_veto_and_uncertainty_in_one_pass(monkeypatch):
    """``analyze``'s one pass over slabs gives the labels of ``ProbabilityMap.labels`` (with the card's weights),
    the density rule of ``DensityVeto.apply`` and the uncertainty of ``voxel_uncertainty`` on those labels."""
    from drasclr.dense import uncertainty as U
    from drasclr.dense.density import DensityVeto

    ct, lungs, _, pmap = _case()
    ct.array[:] = np.where(np.arange(20)[:, None, None] < 10, -990, -850)  # low density in the upper half only
    monkeypatch.setattr(U, "SLAB_VOXELS", 3 * 20 * 20)  # slabs of 3 slices: the seams are crossed
    weights = [1.0, 1.0, 1.2, 1.0]  # PSE wins the even CLE/PSE split
    veto = DensityVeto(0.15, (4.0, 4.0, 4.0))
    sub, u, record = U.map_to_ct(pmap, ct, lungs, weights, veto)
    expected, info = veto.apply(pmap.labels(ct, lungs.array, weights), ct)
    np.testing.assert_array_equal(sub.array, expected.array)
    assert record == info and sum(record["vetoed_voxels"].values()) > 0  # the normal-density half lost its PSE calls
    assert (sub.array[:10][lungs.array[:10] > 0] != labels.NORMAL).any()
    ref = voxel_uncertainty(pmap, ct, lungs, sub)
    np.testing.assert_array_equal(u.image().array, ref.image().array)
    np.testing.assert_allclose(u.expected_errors(), ref.expected_errors(), atol=1e-3)
    with_labels, _, none = U.map_to_ct(pmap, ct, lungs)
    np.testing.assert_array_equal(with_labels.array, pmap.labels(ct, lungs.array).array)
    assert none is None

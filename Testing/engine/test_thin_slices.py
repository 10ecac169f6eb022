"""Thin slices analysed as slabs (drasclr.analysis.thin_slices): which scans, the slab grid's geometry and values,
the way back to the native slices, and a whole analysis of a sub-millimetre scan: every output on the CT's own
grid, the contract densitometry measured on the native voxels, the review units in native voxels."""

import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from drasclr.analysis import thin_slices
from drasclr.analysis.analyze import analyze, write_analysis
from drasclr.analysis.review import read_review
from drasclr.analysis.stats import region_stats
from drasclr.core.image import CTImage
from drasclr.core.io import read_image
from drasclr.core.settings import AnalysisSettings
from synthetic import synthetic_chest, tiny_loaded_model


def _ct(nz=20, sz=0.625, direction=None):
    rng = np.random.default_rng(1)
    a = rng.integers(-1000, 100, (nz, 6, 5)).astype(np.int16)
    d = np.eye(3) if direction is None else direction
    return CTImage(a, spacing=(0.7, 0.8, sz), origin=(10.0, -20.0, 30.0), direction=d)


@pytest.mark.parametrize("sz,k", [(0.5, 4), (0.625, 3), (0.8, 3), (0.9, 2), (0.99, 2)])
def test_sub_millimetre_slices_become_slabs_of_about_2_mm(sz, k):
    s = thin_slices.plan(_ct(40, sz), "slabs")
    assert s is not None and s.k == k and s.axis == 0


@pytest.mark.parametrize("sz", [1.0, 1.25, 2.5, 5.0])
def test_slices_of_a_millimetre_or_more_are_read_natively(sz):
    assert thin_slices.plan(_ct(40, sz), "slabs") is None


def test_native_mode_the_default_and_too_few_slices_stay_native():
    assert thin_slices.plan(_ct(40), "native") is None and thin_slices.plan(_ct(40)) is None
    assert AnalysisSettings().thin_slices == "auto"
    assert thin_slices.plan(_ct(8), "slabs") is None  # under three slabs
    with pytest.raises(ValueError):
        thin_slices.plan(_ct(40), "thick")


def _interpolated(ct: CTImage, f: int) -> CTImage:
    """``ct`` resampled to slices ``f`` times thinner by linear interpolation (a scan resampled from thick slices:
    no detail finer than the thick slices). The thick slices' noise is first made to vary smoothly from slice to
    slice, as a real lung's structures do (white noise at the thick grid is the hardest case: docs)."""
    a = gaussian_filter1d(ct.array.astype(np.float32), 1.0, axis=0)
    z = np.arange((a.shape[0] - 1) * f + 1) / f
    i = np.minimum(np.floor(z).astype(int), a.shape[0] - 2)
    w = (z - i)[:, None, None]
    out = np.rint((1 - w) * a[i] + w * a[i + 1]).astype(np.int16)
    sx, sy, sz = ct.spacing
    return CTImage(out, spacing=(sx, sy, sz / f), origin=ct.origin, direction=ct.direction)


def test_auto_tells_true_thin_slices_from_slices_interpolated_from_thick_ones():
    true_thin, _ = synthetic_chest(shape=(100, 64, 64), spacing=(3.0, 3.0, 0.8), seed=3)
    resampled = _interpolated(synthetic_chest(shape=(26, 64, 64), spacing=(3.0, 3.0, 3.2), seed=3)[0], 4)
    s, record = thin_slices.decide(resampled, "auto")
    assert s is not None and s.k == 3 and record is None
    assert s.z_detail < thin_slices.Z_DETAIL_LIMIT / 2
    assert s.to_json()["mode"] == "auto" and s.to_json()["z_detail"] == s.z_detail
    s, record = thin_slices.decide(true_thin, "auto")
    assert s is None and record["kind"] == "native" and record["z_detail"] > 4 * thin_slices.Z_DETAIL_LIMIT
    # slices reconstructed with overlap (1.6 mm thick every 0.8 mm) still hold detail the slabs would remove
    a = true_thin.array.astype(np.float32)
    overlap = true_thin.with_array(np.rint((a + np.roll(a, 1, axis=0)) / 2).astype(np.int16))
    assert thin_slices.decide(overlap, "auto")[0] is None
    # the other modes measure nothing: slabs always, native never
    s, record = thin_slices.decide(true_thin, "slabs")
    assert s is not None and s.z_detail is None and record is None and "mode" not in s.to_json()
    assert thin_slices.decide(resampled, "native") == (None, None)


def test_slabs_auto_chose_take_their_centre_not_the_mean():
    # a band-limited scan is sampled at each slab's centre (averaging would blur it once more); asked-for slabs
    # (true thin slices) average their slices
    ct = _ct(20)
    sampled = thin_slices.Slabs(ct, 0, 3, z_detail=0.01).down()
    assert np.array_equal(sampled.array, ct.array[[1, 4, 7, 10, 13, 16, 19]])
    even = thin_slices.Slabs(ct, 0, 4, z_detail=0.01).down()  # centre between slices 4j+1 and 4j+2
    a = ct.array.astype(np.float64)
    assert np.array_equal(even.array, np.rint((a[[1, 5, 9, 13, 17]] + a[[2, 6, 10, 14, 18]]) / 2).astype(np.int16))
    assert sampled.spacing == thin_slices.Slabs(ct, 0, 3).down().spacing  # the same grid either way
    assert thin_slices.Slabs(ct, 0, 3, z_detail=0.01).to_json()["slab_values"].startswith("its centre")


def test_auto_records_its_choice_in_stats_json(tmp_path):
    true_thin, _ = synthetic_chest(shape=(100, 64, 64), spacing=(3.0, 3.0, 0.8), seed=4)
    resampled = _interpolated(synthetic_chest(shape=(26, 64, 64), spacing=(3.0, 3.0, 3.2), seed=4)[0], 4)
    grids = {}
    for name, ct in (("thin", true_thin), ("resampled", resampled)):
        res = analyze(ct, settings=AnalysisSettings(use_model=False))  # the default: auto
        write_analysis(res, tmp_path / name, report=False)
        grids[name] = json.loads((tmp_path / name / "stats.json").read_text())["analysis_grid"]
        assert res.regions.same_grid(ct) and res.lungs.same_grid(ct)
    assert grids["thin"]["kind"] == "native" and grids["thin"]["mode"] == "auto"
    assert grids["resampled"]["kind"] == "slabs" and grids["resampled"]["mode"] == "auto"
    assert grids["resampled"]["slices_per_slab"] == 3 and grids["resampled"]["native_slices"] == 101


def test_slab_values_are_the_mean_of_their_slices_and_sit_at_their_centre():
    ct = _ct(20)  # 20 slices of 0.625 mm: 6 slabs of 3, the last one of 2
    s = thin_slices.plan(ct, "slabs")
    d = s.down()
    assert d.array.shape == (7, 6, 5) and d.array.dtype == np.int16
    a = ct.array.astype(np.float64)
    assert np.array_equal(d.array[2], np.rint(a[6:9].mean(0)).astype(np.int16))
    assert np.array_equal(d.array[6], np.rint(a[18:20].mean(0)).astype(np.int16))
    assert d.spacing == pytest.approx((0.7, 0.8, 1.875))
    centre = ct.zyx_to_lps(np.array([[7.0, 2.0, 3.0]]))  # slab 2 holds slices 6, 7, 8
    assert d.zyx_to_lps(np.array([[2.0, 2.0, 3.0]])) == pytest.approx(centre)


def test_slabs_follow_the_cranio_caudal_axis_whatever_the_array_order():
    # array axis 1 is superior here (a coronal acquisition): the slabs must be cut along it
    direction = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])
    ct = CTImage(np.zeros((6, 30, 5), np.int16), spacing=(0.7, 0.625, 0.8), direction=direction)
    s = thin_slices.plan(ct, "slabs")
    assert s is not None and s.axis == 1 and s.down().array.shape == (6, 10, 5)


def test_up_gives_every_native_slice_its_slab_and_pick_the_middle_slice():
    ct = _ct(20)
    s = thin_slices.plan(ct, "slabs")
    slab_labels = s.grid(np.arange(7, dtype=np.uint8)[:, None, None] * np.ones((7, 6, 5), np.uint8))
    up = s.up(slab_labels)
    assert up.same_grid(ct) and up.array[:, 0, 0].tolist() == [i // 3 for i in range(20)]
    native = ct.with_array(np.arange(20, dtype=np.uint8)[:, None, None] * np.ones((20, 6, 5), np.uint8))
    assert s.pick(native).array[:, 0, 0].tolist() == [1, 4, 7, 10, 13, 16, 19]
    assert s.up(None) is None and s.native_weights().tolist() == [3, 3, 3, 3, 3, 3, 2]


@pytest.fixture(scope="module")
def thin_result(tmp_path_factory):
    """A synthetic chest at 0.8 mm slices analysed with a tiny untrained model, as slabs and natively."""
    ct, _ = synthetic_chest(shape=(100, 64, 64), spacing=(3.0, 3.0, 0.8))
    loaded = tiny_loaded_model()
    root = tmp_path_factory.mktemp("thin")
    out = {}
    for mode in ("slabs", "native"):
        res = analyze(ct, model=loaded, settings=AnalysisSettings(batch_size=32, thin_slices=mode))
        out[mode] = (res, write_analysis(res, root / mode, report=False))
    return ct, out


def test_slab_analysis_writes_every_map_on_the_native_grid(thin_result):
    ct, out = thin_result
    res, folder = out["slabs"]
    for name in ("subtypes", "regions", "uncertainty", "review_units"):
        assert read_image(folder / f"{name}.nii.gz").same_grid(ct, tol=1e-5), name
    assert res.ct.same_grid(ct) and res.lungs.same_grid(ct)
    grid = json.loads((folder / "stats.json").read_text())["analysis_grid"]
    assert grid["slices_per_slab"] == 3 and grid["native_slices"] == 100 and grid["slabs"] == 34
    assert "analysis_grid" not in json.loads((out["native"][1] / "stats.json").read_text())
    assert out["native"][0].analysis_grid is None


def test_slab_densitometry_is_measured_on_the_native_voxels(thin_result):
    ct, out = thin_result
    res, _ = out["slabs"]
    again = {r["region"]: r for r in region_stats(ct, res.regions, res.subtypes)}
    for row in res.rows:  # the rows are those of the native CT under the native-grid maps
        for key in ("volume_ml", "laa950_pct", "perc15_hu", "mean_hu"):
            if key in row:
                assert row[key] == pytest.approx(again[row["region"]][key], nan_ok=True), (row["region"], key)
    whole = {r["region"]: r for r in res.rows}["whole_lung"]
    native = {r["region"]: r for r in out["native"][0].rows}["whole_lung"]
    assert whole["volume_ml"] == pytest.approx(native["volume_ml"], rel=0.05)  # the same lung either way


def test_slab_review_units_are_in_native_voxels(thin_result):
    ct, out = thin_result
    res, folder = out["slabs"]
    units = read_review(folder / "review.json")["units"]
    lab = read_image(folder / "review_units.nii.gz").array
    assert units
    for u in units:
        m = lab == u["rank"]
        assert m.sum() == u["voxels"] and lab[tuple(u["centre_zyx"])] == u["rank"]
        idx = np.argwhere(m)
        assert (idx.min(0) >= u["bbox_zyx"][0]).all() and (idx.max(0) < u["bbox_zyx"][1]).all()
        assert u["volume_ml"] == pytest.approx(u["voxels"] * ct.voxel_volume_ml, abs=1e-3)
        assert ct.zyx_to_lps(np.array([u["centre_zyx"]], float))[0] == pytest.approx(u["centre_lps"], abs=0.01)


def test_a_given_lobe_file_keeps_its_own_boundaries_on_the_native_slices():
    ct, truth = synthetic_chest(shape=(100, 48, 48), spacing=(4.0, 4.0, 0.8))
    # two "lobes" per lung split at an odd native slice: a slab copy would move the boundary
    lobes = np.where(truth == 1, 4, np.where(truth == 2, 2, 0)).astype(np.uint8)
    lobes[:50][truth[:50] == 1] = 5
    lobes[:50][truth[:50] == 2] = 1
    lobes[50:][truth[50:] == 1] = 3  # right: upper 3 / lower 5; left: upper 2 / lower 1 (LTRC numbering)
    res = analyze(ct, ct.with_array(lobes), settings=AnalysisSettings(use_model=False, thin_slices="slabs"))
    assert res.analysis_grid is not None and res.region_source == "file"
    inside = res.lungs.array > 0
    assert np.array_equal(res.regions.array[inside], lobes[inside])

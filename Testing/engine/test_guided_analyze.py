"""``analyze`` with a model writes the voxel uncertainty, the review queue and a per-region mean uncertainty
column after the contract columns; densitometry-only runs write none of them."""

import csv
import json

import numpy as np
import pytest

from drasclr.analysis.analyze import analyze, write_analysis
from drasclr.analysis.review import read_review
from drasclr.analysis.stats import COLUMNS, UNCERTAINTY_COLUMN, read_json
from drasclr.core.io import read_image
from drasclr.core.settings import AnalysisSettings
from drasclr.dense.uncertainty import SCALE
from synthetic import synthetic_chest, tiny_loaded_model


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    ct, _ = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    loaded = tiny_loaded_model()
    res = analyze(ct, model=loaded, settings=AnalysisSettings(batch_size=32))
    out = write_analysis(res, tmp_path_factory.mktemp("guided") / "out", report=False)
    return res, out


def test_uncertainty_file_is_on_the_ct_grid_in_percent(result):
    res, out = result
    u = read_image(out / "uncertainty.nii.gz")
    assert u.same_grid(res.ct, tol=1e-5) and u.array.dtype == np.uint8
    lung = res.subtypes.array > 0
    assert (u.array[~lung] == 0).all() and u.array.max() <= SCALE
    assert u.array[lung].mean() > 0  # an untrained model is unsure somewhere
    facts = read_json(out / "stats.json")
    assert facts["uncertainty"]["kind"] == res.uncertainty_kind and facts["uncertainty"]["file"] == "uncertainty.nii.gz"


def test_review_queue_files_agree(result):
    res, out = result
    data = read_review(out / "review.json")
    units = data["units"]
    assert units and [u["rank"] for u in units] == list(range(1, len(units) + 1))
    density = [u["expected_error_fraction"] for u in units]
    assert density == sorted(density, reverse=True) and data["rank_by"] == "density"
    labels_img = read_image(out / "review_units.nii.gz")
    assert labels_img.same_grid(res.ct, tol=1e-5)
    lab = labels_img.array
    assert not lab[res.subtypes.array == 0].any()  # units lie inside the lung
    for u in units:
        m = lab == u["rank"]
        assert m.sum() == u["voxels"] and lab[tuple(u["centre_zyx"])] == u["rank"]
        assert set(np.unique(res.regions.array[m]).tolist()) == {u["region_value"]}
        assert set(u["predicted"]) == {"normal", "cle", "pse", "ple"} and 0 <= u["mean_uncertainty"] <= 1
        lps = res.ct.zyx_to_lps(np.array([u["centre_zyx"]], float))[0]
        np.testing.assert_allclose(lps, u["centre_lps"], atol=0.01)


def test_stats_get_the_mean_uncertainty_column_after_the_contract_columns(result):
    res, out = result
    header = next(csv.reader(open(out / "stats.csv")))
    assert header == [*COLUMNS, UNCERTAINTY_COLUMN]
    doc = json.load(open(out / "stats.json"))
    assert doc["columns"] == header
    whole = next(r for r in doc["regions"] if r["region"] == "whole_lung")
    u = read_image(out / "uncertainty.nii.gz").array.astype(float) / SCALE
    lung = res.regions.array > 0
    assert whole[UNCERTAINTY_COLUMN] == pytest.approx(u[lung].mean(), abs=1e-6)


def test_no_model_no_uncertainty(tmp_path):
    ct, _ = synthetic_chest(shape=(30, 64, 64), spacing=(3.0, 3.0, 4.0))
    res = analyze(ct)
    out = write_analysis(res, tmp_path / "o", report=False)
    assert not (out / "uncertainty.nii.gz").exists() and not (out / "review.json").exists()
    assert next(csv.reader(open(out / "stats.csv"))) == COLUMNS

"""Outcome models: a Cox model on embeddings finds a planted hazard direction, fit -> predict through files is
exact, models are never overwritten, and bad input exits 2."""

import csv
import json
import math

import numpy as np
import pytest

from cli_runner import run_cli
from drasclr.analysis.stats import COLUMNS, write_csv
from drasclr.research.outcome import FeatureMap, cross_validate, fit, fit_model, load_cohort, load_outcome_model


def make_cohort(root, n=160, dim=32, seed=0):
    """Embeddings from 4 strong latent factors + noise; factor 0 drives the hazard, factor 1 drives FEV1.
    LAA-950 is pure noise (a useless feature). Exponential survival with uniform censoring."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 4))
    mixing = rng.standard_normal((4, dim))
    emb = 3 * latent @ mixing / np.sqrt(dim) + 0.3 * rng.standard_normal((n, dim))
    log_hr = 1.2 * latent[:, 0]
    t_event = rng.exponential(1.0 / (0.15 * np.exp(log_hr)))
    t_censor = rng.uniform(2, 12, n)
    time = np.minimum(t_event, t_censor)
    event = (t_event <= t_censor).astype(int)
    fev1 = 75 - 12 * latent[:, 1] + 4 * rng.standard_normal(n)
    laa = rng.uniform(0, 20, n)
    feats, outs = root / "features", root / "outcomes"
    for i in range(n):
        name = f"case_{i:03d}"
        (feats / name).mkdir(parents=True)
        (outs / name).mkdir(parents=True)
        np.save(feats / name / "embedding.npy", emb[i].astype(np.float32))
        row = {c: math.nan for c in COLUMNS}
        row.update(region="whole_lung", volume_ml=5000.0, laa950_pct=float(laa[i]))
        write_csv([row], feats / name / "stats.csv")
        meta = {"seed": i, "outcomes": {"fev1_pct_pred": round(float(fev1[i]), 1),
                                        "survival_years": round(float(time[i]), 4) + 1e-4, "event": int(event[i])}}
        (outs / name / "meta.json").write_text(json.dumps(meta))
    return feats, outs


@pytest.fixture(scope="module")
def cohort_dirs(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("cohort"))


def test_cox_on_embeddings_finds_the_hazard_and_beats_a_useless_feature(cohort_dirs):
    feats, outs = cohort_dirs
    cohort = load_cohort(feats, outs)
    assert len(cohort.features.cases) == 160 and cohort.features.embedding.shape == (160, 32)
    assert 0.3 < cohort.event.mean() < 0.95
    cv = cross_validate(cohort, kind="both", k=8, folds=5, seed=0)
    emb, laa, both = cv["embedding"], cv["laa950"], cv["embedding+laa950"]
    assert emb["c_index_mean"] > 0.7 and emb["c_index_pooled"] > 0.7 and laa["c_index_pooled"] < 0.6
    assert laa["c_index_mean"] < 0.6
    assert emb["c_index_mean"] > laa["c_index_mean"] + 0.15
    assert both["c_index_mean"] > 0.7
    assert emb["fev1_r2"] > 0.6 and laa["fev1_r2"] < 0.1
    assert emb["fev1_mae"] < laa["fev1_mae"]
    assert len(emb["c_index_folds"]) == 5


def test_pca_is_fitted_on_training_cases_only():
    rng = np.random.default_rng(1)
    emb, laa = rng.standard_normal((40, 10)), rng.uniform(0, 10, 40)
    a = FeatureMap.fit("embedding", emb[:30], laa[:30], k=3)
    b = FeatureMap.fit("embedding", np.concatenate([emb[:30], 100 * emb[30:]]), laa, k=3)
    assert not np.allclose(a.pca_components, b.pca_components)  # test rows would change the map
    x = a.transform(emb[:30], laa[:30])
    assert x.shape == (30, 3) and np.allclose(x.mean(axis=0), 0) and np.allclose(x.std(axis=0), 1)


def test_fit_predict_round_trip_through_files_is_exact(cohort_dirs, tmp_path):
    feats, outs = cohort_dirs
    model_dir = tmp_path / "model"
    proc = run_cli("outcome", "fit", "--features", feats, "--outcomes", outs, "-o", model_dir, "--folds", "3")
    assert proc.returncode == 0, proc.stderr
    assert "embedding+laa950" in proc.stdout and "C-index" in proc.stdout
    card = json.loads((model_dir / "model.json").read_text())
    assert card["format"] == "drasclr-outcome-model" and len(card["cox"]["coefficients"]) == 9
    assert np.asarray(card["feature_map"]["pca_components"]).shape == (8, 32)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["cross_validation"]["embedding"]["c_index_mean"] > 0.7
    assert not list(model_dir.glob("*.pkl")) and sorted(p.name for p in model_dir.iterdir()) == \
        ["metrics.json", "model.json"]

    out_csv = tmp_path / "pred.csv"
    proc = run_cli("outcome", "predict", "--model", model_dir, "--features", feats, "-o", out_csv)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 160
    risk_file = np.array([float(r["risk_score"]) for r in rows])
    fev1_file = np.array([float(r["fev1_pct_pred"]) for r in rows])

    cohort = load_cohort(feats, outs)
    in_memory = fit_model(cohort, seed=0)
    e, laa = cohort.features.embedding, cohort.features.laa950
    assert np.array_equal(risk_file, in_memory.risk(e, laa))  # identical, not just close
    assert np.array_equal(fev1_file, in_memory.fev1(e, laa))
    assert np.array_equal(risk_file, load_outcome_model(model_dir).risk(e, laa))

    before = (model_dir / "model.json").read_text()
    proc = run_cli("outcome", "fit", "--features", feats, "--outcomes", outs, "-o", model_dir)
    assert proc.returncode == 2 and "never overwritten" in proc.stderr
    assert (model_dir / "model.json").read_text() == before


def _refused(proc, match):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], proc.stderr


def test_bad_input_exits_2(tmp_path):
    feats, outs = make_cohort(tmp_path, n=12, dim=6)
    other = tmp_path / "other"
    (other / "patient_x").mkdir(parents=True)
    (other / "patient_x" / "meta.json").write_text(json.dumps({"outcomes": {"event": 1}}))
    _refused(run_cli("outcome", "fit", "--features", feats, "--outcomes", other, "-o", tmp_path / "m1"),
             "no case")
    assert not (tmp_path / "m1").exists()

    _refused(run_cli("outcome", "fit", "--features", feats, "--outcomes", outs, "-o", tmp_path / "m2",
                     "--time-key", "outcomes.no_such_key"), "outcomes.no_such_key")

    (feats / "case_004" / "embedding.npy").unlink()
    _refused(run_cli("outcome", "fit", "--features", feats, "--outcomes", outs, "-o", tmp_path / "m3"),
             "case_004")
    assert not (tmp_path / "m3").exists()
    _refused(run_cli("outcome", "predict", "--model", tmp_path / "nomodel", "--features", feats, "-o",
                     tmp_path / "p.csv"), "no outcome model")


def test_fit_api_writes_metrics_with_fev1_only(cohort_dirs, tmp_path):
    feats, outs = cohort_dirs
    metrics = fit(feats, outs, tmp_path / "fev1model", kind="fev1", folds=3)
    assert set(metrics["cross_validation"]["embedding"]) == {"fev1_r2", "fev1_mae"}
    card = json.loads((tmp_path / "fev1model" / "model.json").read_text())
    assert card["cox"] is None and card["fev1"]["intercept"] > 50

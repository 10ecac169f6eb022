"""`drasclr evaluate`: Dice / confusion / fraction errors on hand-made label maps, folders, and the CLI contract."""

import csv
import json
import math

import numpy as np
import pytest

from cli_runner import run_cli
from drasclr.analysis.stats import region_stats, write_csv
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage
from drasclr.core.io import read_image, write_image
from drasclr.research.evaluate import (
    confusion_matrix,
    dice_from_confusion,
    dice_per_class,
    evaluate_case,
    evaluate_dirs,
    format_report,
    laa950_by_region,
)


def test_dice_by_hand_and_nan_when_class_absent_from_both():
    truth = np.array([1, 1, 2, 2, 2, 0, 0, 3])
    pred = np.array([1, 2, 2, 2, 0, 0, 3, 3])
    d = dice_per_class(pred, truth)
    assert d[1] == pytest.approx(2 * 1 / (2 + 1))  # truth {0,1}, pred {0}
    assert d[2] == pytest.approx(2 * 2 / (3 + 3))
    assert d[3] == pytest.approx(2 * 1 / (1 + 2))
    assert math.isnan(d[4])  # PLE in neither
    conf = confusion_matrix(pred, truth)
    assert conf.sum() == truth.size and conf[2, 2] == 2 and conf[2, 0] == 1 and conf[0, 3] == 1
    from_conf = dice_from_confusion(conf)
    for c in (1, 2, 3):
        assert from_conf[c] == pytest.approx(d[c])
    assert math.isnan(from_conf[4])


def _phantom_like(seed=0, shape=(12, 20, 24)):
    """Truth subtypes/regions/ct on a small grid: lobes 1..5 as slabs, subtypes as blocks."""
    rng = np.random.default_rng(seed)
    regions = np.zeros(shape, np.uint8)
    regions[2:10, 3:17, 2:11] = 3  # right lung at small x: lobes 3,4,5 by z
    regions[2:5, 3:17, 2:11] = 5
    regions[5:7, 3:17, 2:11] = 4
    regions[2:10, 3:17, 13:22] = 1
    regions[2:6, 3:17, 13:22] = 2
    sub = np.where(regions > 0, 1, 0).astype(np.uint8)
    sub[7:10, 4:8, 3:9] = 2  # CLE in right upper lobe
    sub[2:10, 3:5, 13:22] = 3  # PSE along one side of the left lung
    sub[2:4, 8:14, 14:20] = 4  # PLE in left lower lobe
    ct = rng.normal(-860, 40, shape)
    ct[sub == 2] = rng.normal(-960, 10, (sub == 2).sum())
    ct[regions == 0] = 40
    return sub, regions, ct.round().astype(np.int16)


def test_evaluate_case_perfect_and_known_error():
    truth, regions, _ = _phantom_like()
    perfect = evaluate_case(truth, truth, regions)
    assert perfect["dice"] == {"normal": 1.0, "cle": 1.0, "pse": 1.0, "ple": 1.0}
    assert perfect["macro_dice"] == 1.0
    conf = np.array(perfect["confusion"])
    assert (conf == np.diag(np.diag(conf))).all()
    for region, row in perfect["fractions"].items():
        for cls in ("normal", "cle", "pse", "ple"):
            assert row[cls]["error_pct"] == 0.0, region

    pred = truth.copy()
    pred[truth == 4] = 2  # all PLE predicted as CLE
    res = evaluate_case(pred, truth, regions)
    n_ple, n_cle = int((truth == 4).sum()), int((truth == 2).sum())
    assert math.isnan(res["dice"]["ple"]) is False and res["dice"]["ple"] == 0.0
    assert res["dice"]["cle"] == pytest.approx(2 * n_cle / (2 * n_cle + n_ple))
    assert res["macro_dice"] == pytest.approx((res["dice"]["cle"] + 1.0 + 0.0) / 3)
    assert np.array(res["confusion"])[4, 2] == n_ple
    lll = res["fractions"]["left_lower_lobe"]  # PLE lives in lobe 2 only
    n_lobe2 = int((regions == 2).sum())
    assert lll["ple"]["error_pct"] == pytest.approx(-100 * n_ple / n_lobe2)
    assert lll["cle"]["error_pct"] == pytest.approx(100 * n_ple / n_lobe2)
    assert res["fractions"]["right_upper_lobe"]["cle"]["error_pct"] == 0.0
    assert set(res["fractions"]) == {"left_upper_lobe", "left_lower_lobe", "right_upper_lobe",
                                     "right_middle_lobe", "right_lower_lobe", "left_lung", "right_lung",
                                     "whole_lung"}


def test_unknown_label_values_are_refused():
    truth, regions, _ = _phantom_like()
    bad = truth.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(InputError, match="unknown label"):
        evaluate_case(bad, truth, regions)


def _write_cohort(root, n=2, perturb=True):
    truth_dir, pred_dir = root / "truth", root / "pred"
    for i in range(n):
        sub, regions, ct = _phantom_like(seed=i)
        geo = dict(spacing=(0.8, 0.8, 2.5), origin=(-10.0, 5.0, -30.0))
        t = truth_dir / f"case_{i:03d}"
        t.mkdir(parents=True)
        ct_img = CTImage(ct, **geo)
        write_image(ct_img, t / "ct.nii.gz")
        write_image(ct_img.with_array(regions), t / "regions.nii.gz")
        write_image(ct_img.with_array(sub), t / "subtypes.nii.gz")
        (t / "meta.json").write_text(json.dumps({"seed": i}))
        pred = sub.copy()
        if perturb:
            pred[sub == 3] = 1  # PSE missed entirely
        p = pred_dir / f"case_{i:03d}"
        p.mkdir(parents=True)
        write_image(ct_img.with_array(pred), p / "subtypes.nii.gz")
        write_image(ct_img.with_array(regions), p / "regions.nii.gz")
        write_csv(region_stats(ct_img, ct_img.with_array(regions), ct_img.with_array(pred)), p / "stats.csv")
    return pred_dir, truth_dir


def test_evaluate_dirs_pools_cases_and_checks_laa950(tmp_path):
    pred_dir, truth_dir = _write_cohort(tmp_path)
    res = evaluate_dirs(pred_dir, truth_dir)
    pooled = res["pooled"]
    assert pooled["n_cases"] == 2 and [c["case"] for c in res["cases"]] == ["case_000", "case_001"]
    assert pooled["dice"]["pse"] == 0.0 and pooled["dice"]["cle"] == 1.0 and pooled["dice"]["ple"] == 1.0
    assert pooled["macro_dice"] == pytest.approx(2 / 3)
    conf = np.array(pooled["confusion"])
    assert conf.sum() == 2 * 12 * 20 * 24
    assert conf[3, 1] > 0 and conf[3, 3] == 0
    # PSE missed: the whole-lung PSE fraction error equals minus the true PSE %
    whole = res["cases"][0]["fractions"]["whole_lung"]["pse"]
    assert whole["error_pct"] == pytest.approx(-whole["true_pct"]) and whole["true_pct"] > 1
    # stats.csv was computed on identical regions: agreement up to its 4-decimal rounding
    laa = res["cases"][0]["laa950"]
    assert laa["matching_regions"] == 8
    assert laa["laa950_max_abs_diff"] < 1e-3 and laa["own_regions_max_abs_diff"] < 1e-3
    assert laa["regions"]["right_upper_lobe"]["independent"] > 5  # CLE block is below -950 HU
    # whole-lung checks: the worst case's error is the missed PSE; no emphysema-free case here
    worst = max(c["fractions"]["whole_lung"]["pse"]["true_pct"] for c in res["cases"])
    assert pooled["whole_lung_max_abs_error_pct"] == pytest.approx(worst)
    assert pooled["whole_lung_cases_within_3_points"] == sum(
        c["fractions"]["whole_lung"]["pse"]["true_pct"] <= 3 for c in res["cases"])
    assert pooled["emphysema_free_cases"] == 0 and np.isnan(pooled["emphysema_free_max_called_pct"])


def test_emphysema_called_on_an_emphysema_free_case(tmp_path):
    """A healthy truth case: every CLE/PSE/PLE voxel predicted is false, and the summary says how much."""
    pred_dir, truth_dir = _write_cohort(tmp_path, n=1, perturb=False)
    truth_path = truth_dir / "case_000" / "subtypes.nii.gz"
    truth = read_image(truth_path)
    healthy = np.where(truth.array > 0, 1, 0).astype(np.uint8)
    write_image(truth.with_array(healthy), truth_path)
    pred = healthy.copy()
    lung = np.argwhere(healthy > 0)
    for z, y, x in lung[: len(lung) // 40]:  # 2.5 % of the lung called PLE
        pred[z, y, x] = 4
    write_image(truth.with_array(pred), pred_dir / "case_000" / "subtypes.nii.gz")
    pooled = evaluate_dirs(pred_dir, truth_dir)["pooled"]
    called = 100 * (len(lung) // 40) / len(lung)
    assert pooled["emphysema_free_cases"] == 1
    assert pooled["emphysema_free_max_called_pct"] == pytest.approx(called)
    assert pooled["whole_lung_max_abs_error_pct"] == pytest.approx(called)
    assert f"emphysema called at most {called:.2f} % of the lung" in format_report(evaluate_dirs(pred_dir, truth_dir))


def test_laa950_check_detects_wrong_stats(tmp_path):
    pred_dir, truth_dir = _write_cohort(tmp_path, n=1)
    path = pred_dir / "case_000" / "stats.csv"
    rows = list(csv.reader(open(path)))
    col = rows[0].index("laa950_pct")
    rows[-1][col] = str(float(rows[-1][col]) + 3.0)  # whole_lung row off by 3 %
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    res = evaluate_dirs(pred_dir, truth_dir)
    assert res["cases"][0]["laa950"]["laa950_max_abs_diff"] == pytest.approx(3.0, abs=1e-3)
    assert res["cases"][0]["laa950"]["own_regions_max_abs_diff"] == pytest.approx(3.0, abs=1e-3)
    assert res["pooled"]["laa950_own_regions_max_abs_diff"] == pytest.approx(3.0, abs=1e-3)


def test_laa950_by_region_plain_numpy():
    ct = np.array([[[-1000, -951, -950, -900]]])
    reg = np.array([[[1, 1, 3, 3]]])
    out = laa950_by_region(ct, reg)
    assert out["left_upper_lobe"] == 100.0 and out["right_upper_lobe"] == 0.0 and out["whole_lung"] == 50.0


def test_cli_writes_outputs_and_prints_table(tmp_path):
    pred_dir, truth_dir = _write_cohort(tmp_path)
    out = tmp_path / "metrics"
    proc = run_cli("evaluate", "--pred", pred_dir, "--truth", truth_dir, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "macro Dice" in proc.stdout and "case_001" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["confusion.csv", "metrics.json", "per_case.csv"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pooled"]["macro_dice"] == pytest.approx(2 / 3)
    conf = list(csv.reader(open(out / "confusion.csv")))
    assert conf[0] == ["truth\\pred", "outside", "normal", "cle", "pse", "ple"] and len(conf) == 6
    per_case = list(csv.DictReader(open(out / "per_case.csv")))
    assert [r["case"] for r in per_case] == ["case_000", "case_001"]
    assert float(per_case[0]["dice_pse"]) == 0.0 and float(per_case[0]["dice_cle"]) == 1.0


def _assert_refused(proc, out, match):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert all(ln.startswith("progress:") for ln in lines[:-1]), proc.stderr
    assert match in errors[0], errors[0]
    assert not out.exists()


def test_cli_refuses_missing_cases_grid_mismatch_and_unknown_labels(tmp_path):
    import shutil

    pred_dir, truth_dir = _write_cohort(tmp_path, n=3, perturb=False)
    out = tmp_path / "metrics"
    shutil.rmtree(pred_dir / "case_001")
    shutil.rmtree(pred_dir / "case_002")
    _assert_refused(run_cli("evaluate", "--pred", pred_dir, "--truth", truth_dir, "-o", out), out,
                    "case_001, case_002")

    pred_dir, truth_dir = _write_cohort(tmp_path / "b", n=2, perturb=False)
    sub, _, _ = _phantom_like()
    write_image(CTImage(sub, spacing=(1.0, 1.0, 1.0)), pred_dir / "case_001" / "subtypes.nii.gz")
    _assert_refused(run_cli("evaluate", "--pred", pred_dir, "--truth", truth_dir, "-o", out), out,
                    "case case_001")

    pred_dir, truth_dir = _write_cohort(tmp_path / "c", n=1, perturb=False)
    sub[0, 0, 0] = 9
    write_image(CTImage(sub, spacing=(0.8, 0.8, 2.5), origin=(-10.0, 5.0, -30.0)),
                pred_dir / "case_000" / "subtypes.nii.gz")
    _assert_refused(run_cli("evaluate", "--pred", pred_dir, "--truth", truth_dir, "-o", out), out,
                    "unknown label values [9]")


def test_without_regions_the_whole_lung_is_truth_lung():
    truth, _, _ = _phantom_like()
    pred = truth.copy()
    pred[truth == 3] = 0  # PSE voxels predicted outside the lung
    res = evaluate_case(pred, truth)
    assert list(res["fractions"]) == ["whole_lung"]
    whole = res["fractions"]["whole_lung"]
    assert whole["voxels"] == int((truth > 0).sum())
    assert whole["pse"]["pred_pct"] == 0.0
    assert whole["pse"]["error_pct"] == pytest.approx(-100 * (truth == 3).sum() / (truth > 0).sum())
    assert whole["normal"]["error_pct"] == 0.0

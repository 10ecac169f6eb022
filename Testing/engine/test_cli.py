"""The command line contract: exit 0 with outputs, or exit 2 with one `error:` line and no output folder."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cli_runner import assert_refused, run_cli
from dicom_writer import write_dicom_series
from drasclr.analysis.stats import COLUMNS
from drasclr.core.image import CTImage
from drasclr.core.io import read_image, write_image
from synthetic import synthetic_chest


def _bad_inputs(tmp):
    (tmp / "truncated.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    (tmp / "notes.nrrd").write_text("hello")
    sitk.WriteImage(sitk.Image([32, 32], sitk.sitkInt16), str(tmp / "flat.nii.gz"))
    sitk.WriteImage(sitk.Image([16, 16, 16, 4], sitk.sitkInt16), str(tmp / "fourd.nii.gz"))
    mr = CTImage(np.random.default_rng(0).integers(0, 1200, (16, 32, 32)).astype(np.int16))
    write_image(mr, tmp / "mr.nii.gz")
    (tmp / "emptydicom").mkdir()
    a, _ = synthetic_chest(shape=(8, 32, 32))
    write_dicom_series(a, tmp / "two" / "s1")
    write_dicom_series(a, tmp / "two" / "s2")
    return {
        "missing": (tmp / "nope.nii.gz", "not found"),
        "truncated": (tmp / "truncated.nii.gz", "cannot read"),
        "non-image": (tmp / "notes.nrrd", "cannot read"),
        "2d": (tmp / "flat.nii.gz", "2-D"),
        "4d": (tmp / "fourd.nii.gz", "4-D"),
        "mr-like": (tmp / "mr.nii.gz", "Hounsfield"),
        "empty-dicom": (tmp / "emptydicom", "no DICOM"),
        "two-series": (tmp / "two", "series"),
    }


def test_bad_inputs_exit_2_with_one_error_line_and_no_output(tmp_path):
    cases = _bad_inputs(tmp_path)
    for name, (path, match) in cases.items():
        out = tmp_path / f"out_{name}"
        assert_refused(run_cli("analyze", path, "-o", out), out, match)


def test_bad_option_is_reported_as_error_line(tmp_path):
    out = tmp_path / "o"
    proc = run_cli("analyze", tmp_path, "-o", out, "--device", "tpu")
    assert_refused(proc, out, "device")


def test_analyze_synthetic_writes_contract_outputs(tmp_path):
    ct, truth = synthetic_chest()
    write_image(ct, tmp_path / "ct.nrrd")
    out = tmp_path / "res"
    proc = run_cli("analyze", tmp_path / "ct.nrrd", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "whole_lung" in proc.stdout
    regions = read_image(out / "regions.nii.gz")
    assert regions.same_grid(ct, tol=1e-5) and regions.array.dtype == np.uint8
    # no lobe file: estimated lobes, two in the left lung (truth 2) and three in the right (truth 1)
    assert set(np.unique(regions.array)) == {0, 1, 2, 3, 4, 5}
    assert np.all(truth[np.isin(regions.array, [1, 2])] == 2) and np.all(truth[np.isin(regions.array, [3, 4, 5])] == 1)
    rows = list(csv.DictReader(open(out / "stats.csv")))
    assert list(rows[0].keys())[:len(COLUMNS)] == COLUMNS  # further columns may follow (mean_uncertainty)
    names = [r["region"] for r in rows]
    assert names == ["left_upper_lobe", "left_lower_lobe", "right_upper_lobe", "right_middle_lobe",
                     "right_lower_lobe", "left_lung", "right_lung", "whole_lung"]
    whole = rows[-1]
    truth_ml = (truth > 0).sum() * ct.voxel_volume_ml
    assert abs(float(whole["volume_ml"]) - truth_ml) / truth_ml < 0.1
    assert sum(float(r["volume_ml"]) for r in rows[:5]) == pytest.approx(float(whole["volume_ml"]), rel=1e-3)
    doc = json.load(open(out / "stats.json"))
    assert doc["region_kind"] == "lobes" and doc["region_source"] == "atlas+fissures"
    assert len(doc["regions"]) == len(rows)
    assert "ct.nrrd" not in json.dumps(doc)  # no input names (they may carry identifiers)
    if (out / "subtypes.nii.gz").exists():  # with a model: uncertainty and the review queue come out too
        assert read_image(out / "uncertainty.nii.gz").same_grid(ct, tol=1e-5)
        assert json.load(open(out / "review.json"))["units"] and (out / "review_units.nii.gz").exists()
        assert list(rows[0].keys())[len(COLUMNS):] == ["mean_uncertainty"]
        assert not (out / "embedding.npy").exists()  # only with --embedding (test_stages)


def test_analyze_zones_on_request(tmp_path):
    ct, truth = synthetic_chest()
    write_image(ct, tmp_path / "ct.nrrd")
    out = tmp_path / "res"
    proc = run_cli("analyze", tmp_path / "ct.nrrd", "-o", out, "--regions", "zones", "--no-model", "--quiet")
    assert proc.returncode == 0, proc.stderr
    regions = read_image(out / "regions.nii.gz")
    assert set(np.unique(regions.array)) == {0, 11, 12, 13, 14, 15, 16}
    # zones sit on the right side of the body: 11-13 are the left lung (truth 2)
    assert np.all(truth[np.isin(regions.array, [11, 12, 13])] == 2)
    doc = json.load(open(out / "stats.json"))
    assert doc["region_kind"] == "zones" and doc["region_source"] == "zones"


def test_lobe_tool_that_is_not_installed_is_refused(tmp_path):
    from drasclr.anatomy.adapters import lungmask_adapter, totalseg_adapter

    ct, _ = synthetic_chest(shape=(24, 64, 64), spacing=(4.0, 4.0, 6.0))
    write_image(ct, tmp_path / "ct.nii.gz")
    for tool, adapter in (("lungmask", lungmask_adapter), ("totalsegmentator", totalseg_adapter)):
        if adapter.available():
            continue
        out = tmp_path / f"o_{tool}"
        assert_refused(run_cli("analyze", tmp_path / "ct.nii.gz", "-o", out, "--lobes-from", tool), out,
                       f"{tool} is not installed")
    out = tmp_path / "o_bad"
    assert_refused(run_cli("analyze", tmp_path / "ct.nii.gz", "-o", out, "--regions", "segments"), out, "regions")


@pytest.mark.real
def test_analyze_real_ct_through_cli(tmp_path, real_ct_dir):
    out = tmp_path / "lidc"
    proc = run_cli("analyze", real_ct_dir / "lidc_idri_0001.nii.gz", "-o", out)
    assert proc.returncode == 0, proc.stderr
    whole = list(csv.DictReader(open(out / "stats.csv")))[-1]
    assert 3000 < float(whole["volume_ml"]) < 8000
    assert 0 <= float(whole["laa950_pct"]) < 30


def test_batch_mode_is_resumable_and_shards_by_rank(tmp_path):
    import os

    src = tmp_path / "cohort"
    src.mkdir()
    for i in range(3):
        ct, _ = synthetic_chest(shape=(24, 64, 64), spacing=(4.0, 4.0, 6.0), seed=i)
        write_image(ct, src / f"p{i}.nii.gz")
    out = tmp_path / "res"
    # two "torchrun" ranks share the cohort: rank r takes cases r, r + 2, ...
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"}
        proc = subprocess.run([sys.executable, "-m", "drasclr", "analyze", str(src), "-o", str(out), "--no-model"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["p0", "p1", "p2"]
    stamp = (out / "p1" / "stats.json").stat().st_mtime_ns
    proc = run_cli("analyze", src, "-o", out, "--no-model")  # resumed: nothing left to do
    assert proc.returncode == 0 and "3/3" in proc.stdout
    assert (out / "p1" / "stats.json").stat().st_mtime_ns == stamp
    assert (out / "p0" / "report.html").exists()
    doc = json.load(open(out / "p0" / "stats.json"))  # batch mode estimates lobes too
    assert doc["region_kind"] == "lobes" and doc["region_source"] == "atlas+fissures"


def test_batch_list_paths_are_relative_to_the_list(tmp_path):
    cohort = tmp_path / "cohort"
    ct, _ = synthetic_chest(shape=(24, 64, 64), spacing=(4.0, 4.0, 6.0))
    for name in ("c1", "c2"):
        (cohort / name).mkdir(parents=True)
        write_image(ct, cohort / name / "ct.nii.gz")
    (cohort / "list.txt").write_text("# two cases\nc1/ct.nii.gz\nc2/ct.nii.gz\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("analyze", cohort / "list.txt", "-o", tmp_path / "res", "--no-model", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert all((tmp_path / "res" / n / "stats.csv").exists() for n in ("c1", "c2"))

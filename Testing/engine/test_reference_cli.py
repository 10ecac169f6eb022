"""`drasclr analyze --model cip-lh` end to end through the CLI: a single axial slice (synthetic, a 2-D file, and a
slice cut from a real CT) and a sparse series; the usual outputs, one-slice regions, no embedding."""

from __future__ import annotations

import csv
import json

import numpy as np
import SimpleITK as sitk

from cli_runner import run_cli
from drasclr.analysis.stats import COLUMNS
from drasclr.core import labels
from drasclr.core.image import CTImage
from drasclr.core.io import read_ct, read_image, write_image
from reference_synthetic import chest_slice


def _rows(out):
    with open(out / "stats.csv") as fh:
        return list(csv.DictReader(fh))


def test_single_synthetic_slice_through_the_cli(tmp_path):
    ct, truth = chest_slice(seed=5)
    write_image(ct, tmp_path / "slice.nii.gz")
    out = tmp_path / "out"
    proc = run_cli("analyze", tmp_path / "slice.nii.gz", "-o", out, "--model", "cip-lh", "--quiet")
    assert proc.returncode == 0, proc.stderr
    for name in ("subtypes.nii.gz", "regions.nii.gz", "stats.csv", "stats.json", "report.html",
                 "report_axial_middle.png"):
        assert (out / name).is_file(), name
    assert not (out / "embedding.npy").exists() and not (out / "report_coronal.png").exists()
    sub, reg = read_image(out / "subtypes.nii.gz", single_slice=True), read_image(out / "regions.nii.gz",
                                                                                   single_slice=True)
    assert sub.same_grid(ct) and reg.same_grid(ct)
    lung = truth > 0
    assert ((sub.array > 0) == lung).mean() > 0.99
    assert set(np.unique(reg.array)) == {0, 12, 15}
    rows = _rows(out)
    assert [r["region"] for r in rows] == ["left_lung", "right_lung", "whole_lung"]
    assert list(rows[0]) == COLUMNS
    left, right = rows[0], rows[1]
    assert float(left["ple_pct"]) + float(left["pse_pct"]) > 90  # dark lung: PLE, PSE along the wall
    assert float(right["normal_pct"]) > 90
    whole_ml = float(rows[2]["volume_ml"])
    assert abs(whole_ml - lung.sum() * ct.voxel_volume_ml) / whole_ml < 0.02
    info = json.loads((out / "stats.json").read_text())
    assert info["region_kind"] == "lungs"
    assert info["model"]["kind"] == "reference-local-histogram-knn" and info["model"]["tta"] is False
    assert "subtypes_s" in info["timings_s"] and "registration_s" not in info["timings_s"]


def test_a_2d_file_is_read_by_cip_lh_and_refused_by_the_3d_model(tmp_path):
    ct, _ = chest_slice(seed=6)
    img2d = sitk.GetImageFromArray(ct.array[0])
    img2d.SetSpacing(ct.spacing[:2])
    sitk.WriteImage(img2d, str(tmp_path / "flat.nii.gz"))
    proc = run_cli("analyze", tmp_path / "flat.nii.gz", "-o", tmp_path / "a", "--model", "cip-lh", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert read_image(tmp_path / "a" / "subtypes.nii.gz", single_slice=True).array.shape == (1, *ct.array.shape[1:])
    proc = run_cli("analyze", tmp_path / "flat.nii.gz", "-o", tmp_path / "b")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "cip-lh" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_sparse_series_gets_zones(tmp_path):
    ct, truth = chest_slice(seed=7, n_slices=6, slice_mm=10.0, size=256)
    write_image(ct, tmp_path / "sparse.nii.gz")
    out = tmp_path / "out"
    proc = run_cli("analyze", tmp_path / "sparse.nii.gz", "-o", out, "--model", "cip-lh", "--quiet",
                   "--regions", "zones")
    assert proc.returncode == 0, proc.stderr
    rows = {r["region"]: r for r in _rows(out)}
    assert {"left_upper_zone", "right_lower_zone", "whole_lung"} <= set(rows)
    assert float(rows["right_lung"]["normal_pct"]) > 90
    assert json.loads((out / "stats.json").read_text())["region_kind"] == "zones"


def test_single_slice_of_a_real_ct_through_the_cli(tmp_path, real_ct_dir):
    ct = read_ct(real_ct_dir / "lidc_idri_0001.nii.gz")
    one = ct.crop((66, 0, 0), (67, *ct.array.shape[1:]))
    write_image(CTImage(one.array, one.spacing, one.origin, one.direction), tmp_path / "slice.nii.gz")
    out = tmp_path / "out"
    proc = run_cli("analyze", tmp_path / "slice.nii.gz", "-o", out, "--model", "cip-lh", "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = {r["region"]: r for r in _rows(out)}
    assert set(rows) == {"left_lung", "right_lung", "whole_lung"}
    assert 30 < float(rows["whole_lung"]["volume_ml"]) < 90  # about 230 cm² of lung in a 2.5 mm slice
    pct = sum(float(rows["whole_lung"][f"{c}_pct"]) for c in labels.SUBTYPES.values())
    assert abs(pct - 100) < 0.01
    assert float(rows["whole_lung"]["normal_pct"]) > 40  # a non-emphysematous scan is mostly normal

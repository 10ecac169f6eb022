"""Resolution guard (drasclr.checks.resolution): voxel size vs the model card's validated range; flagged in
stats.json, the
report and the logic's warnings, refused with --strict; and the scanner calibration end to end through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cli_runner
from drasclr.checks import resolution as guard
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage
from drasclr.core.io import read_ct, write_image
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import DEMO_MODEL, save_segmenter
from drasclr.model import read_card
from drasclr.research.phantom import PhantomOptions, generate_case
from realdata import real_ct_path
from synthetic import synthetic_chest

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def run_cli(*args):
    """``drasclr analyze`` per zone (lobe estimation is not what these tests are about)."""
    args = [*args, "--regions", "zones"] if args and args[0] == "analyze" else list(args)
    return cli_runner.run_cli(*args)


def ct_with_spacing(spacing_xyz, direction=None) -> CTImage:
    return CTImage(np.zeros((4, 4, 4), np.int16), spacing_xyz, direction=np.eye(3) if direction is None else direction)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small random model whose card validates 0.5-2 mm in-plane and 0.5-3 mm slices."""
    card = {"name": "tiny", "version": "tiny-v1",
            "validated_spacing_mm": {"in_plane": [0.5, 2.0], "slice": [0.5, 3.0], "source": "test"}}
    return save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)),
                          tmp_path_factory.mktemp("m") / "tiny-v1", card)


# --- unit --------------------------------------------------------------------------------------------------------
def test_spacing_split_in_plane_and_slice():
    assert guard.scan_spacing((0.7, 0.8, 2.5)) == {"in_plane": 0.8, "slice": 2.5}
    # a coronal acquisition: index axis y runs cranio-caudal
    coronal = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)
    assert guard.scan_spacing((0.7, 3.0, 0.9), coronal) == {"in_plane": 0.9, "slice": 3.0}


def test_card_range_default_and_malformed():
    card = {"validated_spacing_mm": {"in_plane": [0.5, 2.0], "slice": [0.5, 3.0]}}
    assert guard.check_resolution(ct_with_spacing((1.0, 1.0, 2.0)), card).in_range
    out = guard.check_resolution(ct_with_spacing((1.0, 1.0, 4.0)), card)
    assert not out.in_range and out.from_card
    assert out.warning()["code"] == "resolution_outside_validated" and "4 mm slices" in out.warning()["message"]
    assert out.coarser() and "coarser" in out.warning()["message"]
    fine = guard.check_resolution(ct_with_spacing((0.3, 0.3, 1.0)), card)
    assert not fine.in_range and not fine.coarser() and "finer" in fine.warning()["message"]
    assert not guard.check_resolution(ct_with_spacing((2.5, 2.5, 1.0)), card).in_range
    default = guard.check_resolution(ct_with_spacing((4.17, 4.17, 3.99)), {"name": "old"})
    assert not default.from_card and not default.in_range
    assert guard.check_resolution(ct_with_spacing((0.7, 0.7, 1.25)), None).in_range
    for bad in ({"in_plane": [2.0]}, {"in_plane": [2, 1], "slice": [1, 2]}, "1-2 mm"):
        with pytest.raises(InputError, match="validated_spacing_mm"):
            guard.validated_spacing({"validated_spacing_mm": bad})
    with pytest.raises(InputError, match="--strict"):
        guard.require_resolution(ct_with_spacing((1.0, 1.0, 4.0)), card)


def test_demo_card_covers_its_training_cohort_and_the_demo_case():
    card = read_card(DEMO_MODEL)
    rng, from_card = guard.validated_spacing(card)
    assert from_card and rng["in_plane"][0] <= 1.2245 and rng["in_plane"][1] >= 2.2
    assert rng["slice"] == [0.625, 5.0]
    assert guard.check_resolution(ct_with_spacing((2.2, 2.2, 2.2)), card).in_range  # the bundled demo CT
    assert not guard.check_resolution(ct_with_spacing((4.17, 4.17, 3.99)), card).in_range


def test_finetune_card_records_the_cohort_range(tmp_path):
    """`finetune cohort` writes validated_spacing_mm from its cases' headers, widened by its parent's."""
    from drasclr.cli.finetune import _validated_spacing

    cases = []
    for i, sp in enumerate([(1.3, 1.3, 1.0), (1.7, 1.7, 2.5)]):
        folder = tmp_path / f"case_{i:03d}"
        folder.mkdir()
        write_image(ct_with_spacing(sp), folder / "ct.nii.gz")
        cases.append(folder)
    field = _validated_spacing(cases, {})
    assert field["in_plane"] == [1.3, 1.7] and field["slice"] == [1.0, 2.5]
    parent = {"validated_spacing_mm": {"in_plane": [0.8, 1.5], "slice": [0.625, 5.0]}}
    field = _validated_spacing(cases, parent)
    assert field["in_plane"] == [0.8, 1.7] and field["slice"] == [0.625, 5.0]


# --- end to end ---------------------------------------------------------------------------------------------------
@pytest.mark.real
@pytest.mark.slow
def test_coarse_real_scan_flagged_and_refused_with_strict(tmp_path, tiny_model):
    """COPDGene at 4 mm (real scan): the subtype map is written but flagged (stats.json, report); --strict refuses
    it with one error line and no outputs; densitometry-only still runs under --strict."""
    full = read_ct(real_ct_path("copdgene_10002K_ct64"))
    src = tmp_path / "copdgene_mid.nii.gz"  # the middle 16 cm of the real 4 mm scan: half the model time
    write_image(full.crop((20, 0, 0), (60, 64, 64)), src)
    out = tmp_path / "flagged"
    proc = run_cli("analyze", src, "-o", out, "--model", tiny_model, "--no-tta", "--quiet")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "stats.json").read_text())
    assert [w["code"] for w in doc["warnings"]] == ["resolution_outside_validated"]
    assert doc["resolution"]["in_range"] is False and doc["resolution"]["spacing_mm"]["in_plane"] > 4
    assert (out / "subtypes.nii.gz").exists()
    assert "outside the model" in (out / "report.html").read_text()
    assert doc["calibration"]["reference"] == "outside_air" and doc["calibration"]["corrected"] is False

    strict = tmp_path / "strict"
    proc = run_cli("analyze", src, "-o", strict, "--model", tiny_model, "--strict")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "validated range" in lines[0], proc.stderr
    assert not strict.exists()

    dens = tmp_path / "dens"
    proc = run_cli("analyze", src, "-o", dens, "--no-model", "--strict", "--quiet")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((dens / "stats.json").read_text())
    assert doc["warnings"] == [] and "resolution" not in doc and not (dens / "subtypes.nii.gz").exists()


@pytest.mark.slow
def test_in_range_scan_is_not_flagged(tmp_path, tiny_model):
    ct, _ = synthetic_chest(shape=(48, 96, 96), spacing=(2.0, 2.0, 2.5))  # lungs of about 450 ml
    write_image(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "res"
    proc = run_cli("analyze", tmp_path / "ct.nii.gz", "-o", out, "--model", tiny_model, "--no-tta", "--strict",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "stats.json").read_text())
    assert doc["warnings"] == [] and doc["resolution"]["in_range"] is True


@pytest.mark.slow
def test_miscalibrated_phantom_through_the_cli(tmp_path):
    """+75 HU phantom: auto corrects (stats.json, report) and its densitometry equals the calibrated twin's;
    --hu-calibration none keeps the offset and warns."""
    case = generate_case(31, 0, PhantomOptions(size=(112, 112, 80), spacing=3.0, thickness=3.2, kernel="soft",
                                               noise=15.0, subtypes=("cle", "pse", "ple"), severity=0.8,
                                               vessel_points=500))
    write_image(case.ct, tmp_path / "twin.nii.gz")
    write_image(case.ct.with_array((case.ct.array.astype(np.int32) + 75).astype(np.int16)), tmp_path / "off.nii.gz")
    docs, errs = {}, {}
    for name, src, mode in (("twin", "twin", "auto"), ("off", "off", "auto"), ("none", "off", "none")):
        proc = run_cli("analyze", tmp_path / f"{src}.nii.gz", "-o", tmp_path / name, "--no-model", "--quiet",
                       "--hu-calibration", mode)
        assert proc.returncode == 0, proc.stderr
        docs[name], errs[name] = json.loads((tmp_path / name / "stats.json").read_text()), proc.stderr
    whole = {k: d["regions"][-1] for k, d in docs.items()}
    cal = docs["off"]["calibration"]
    assert cal["corrected"] and abs(cal["applied_hu"] - 75) <= 1 and cal["mode"] == "auto"
    assert abs(whole["off"]["laa950_pct"] - whole["twin"]["laa950_pct"]) <= 0.5
    assert whole["twin"]["laa950_pct"] - whole["none"]["laa950_pct"] > 3
    assert [w["code"] for w in docs["none"]["warnings"]] == ["hu_offset_uncorrected"]
    assert docs["twin"]["calibration"]["corrected"] is False and docs["twin"]["warnings"] == []
    page = (tmp_path / "off" / "report.html").read_text()
    assert "Scanner calibration" in page and "+75 HU subtracted" in page
    # the correction is shown and the numbers of the scan as read are written beside the corrected ones
    from drasclr.analysis.stats import COLUMNS, UNCORRECTED_COLUMNS, read_csv

    header = (tmp_path / "off" / "stats.csv").read_text().splitlines()[0].split(",")
    assert header == [*COLUMNS, *UNCORRECTED_COLUMNS] and docs["off"]["columns"] == header
    assert (tmp_path / "twin" / "stats.csv").read_text().splitlines()[0].split(",") == COLUMNS
    as_read = read_csv(tmp_path / "off" / "stats.csv")[-1]
    assert abs(as_read["uncorrected_laa950_pct"] - whole["none"]["laa950_pct"]) <= 0.5  # same scan, same HU
    assert whole["off"]["uncorrected_perc15_hu"] - whole["off"]["perc15_hu"] == pytest.approx(75, abs=1.5)
    info = [ln for ln in errs["off"].splitlines() if ln.startswith("info: HU corrected")]
    assert len(info) == 1 and "-75 HU" in info[0] and "outside air -925 HU" in info[0] and "tracheal air" in info[0]
    assert "HU corrected" not in errs["twin"] + errs["none"]
    assert cal["summary"] == info[0][len("info: "):] and cal["summary"] in page
    assert "As read (uncorrected), whole lung: LAA-950" in page
    assert "Warnings" in (tmp_path / "none" / "report.html").read_text()


def test_bad_calibration_mode_is_an_error_line(tmp_path):
    ct, _ = synthetic_chest(shape=(24, 48, 48))
    write_image(ct, tmp_path / "ct.nii.gz")
    proc = run_cli("analyze", tmp_path / "ct.nii.gz", "-o", tmp_path / "o", "--hu-calibration", "twopoint")
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and not (tmp_path / "o").exists()

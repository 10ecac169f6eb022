"""``drasclr analyze SERIES --dicom``: DICOM SEG (subtypes, regions) and a TID 1500 SR, checked by three readers —
dciodvfy (Debian's dicom3tools), highdicom, and dcmqi's segimage2itkimage — against the NIfTI/CSV outputs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cli_runner import run_cli
from dicom_checks import assert_regions_equal, assert_sr_equals_csv, source_order
from dicom_writer import write_dicom_series
from drasclr.core import labels
from drasclr.core.io import read_image

hd = pytest.importorskip("highdicom", reason="highdicom not installed (pip install '.[dicom]')")
DEMO_CT = Path(__file__).resolve().parents[2] / "DrasCLRSlicer" / "drasclr" / "data" / "demo_ct.nii.gz"



@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The demo CT written as a real DICOM series and analysed with ``--dicom``."""
    tmp = tmp_path_factory.mktemp("dicom_out")
    series_uid = write_dicom_series(read_image(DEMO_CT), tmp / "series")
    proc = run_cli("analyze", tmp / "series", "-o", tmp / "out", "--dicom", "--no-tta", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {"series": tmp / "series", "series_uid": series_uid, "out": tmp / "out", "dicom": tmp / "out" / "dicom"}


@pytest.mark.slow
def test_dciodvfy_reports_no_errors(case):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    for name in ("seg_subtypes.dcm", "seg_regions.dcm", "sr_measurements.dcm"):
        proc = subprocess.run(["dciodvfy", str(case["dicom"] / name)], capture_output=True, text=True, timeout=120)
        said = (proc.stdout + proc.stderr).splitlines()
        assert any(line.strip() in ("Segmentation", "Comprehensive3DSR") for line in said), said[:5]
        errors = [line for line in said if line.startswith("Error")]
        assert not errors, f"{name}: {errors}"


@pytest.mark.slow
def test_highdicom_reads_segs_with_codes_and_source_references(case):
    seg = hd.seg.segread(case["dicom"] / "seg_subtypes.dcm")
    assert seg.SeriesInstanceUID != case["series_uid"]
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [case["series_uid"]]
    types = {d.SegmentNumber: d.segmented_property_type for d in seg.SegmentSequence}
    assert (types[labels.CLE].value, types[labels.CLE].scheme_designator) == ("68328006", "SCT")
    assert types[labels.PSE].value == "31898008" and types[labels.PLE].value == "4981000"
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(case["out"] / "subtypes.nii.gz")))
    uids = source_order(case["series"])
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    assert np.array_equal(frames, nifti)  # frames on the source slices, in the grid's order

    assert_regions_equal(hd.seg.segread(case["dicom"] / "seg_regions.dcm"), case["out"] / "regions.nii.gz", uids)


@pytest.mark.slow
def test_dcmqi_turns_the_seg_back_into_subtypes_nifti(case, tmp_path):
    tool = shutil.which("segimage2itkimage") or shutil.which("segimage2itkimage", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("dcmqi's segimage2itkimage not installed (pip install dcmqi)")
    proc = subprocess.run([tool, "--inputDICOM", str(case["dicom"] / "seg_subtypes.dcm"), "--outputDirectory",
                           str(tmp_path), "--outputType", "nii", "--mergeSegments"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ref = sitk.ReadImage(str(case["out"] / "subtypes.nii.gz"))
    (merged,) = tmp_path.glob("*.nii*")
    back = sitk.Resample(sitk.ReadImage(str(merged)), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                         sitk.sitkUInt8)  # dcmqi writes the frames' extent; outside it is 0 (no lung)
    a, b = sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ref)
    assert (b > 0).sum() > 1000 and np.array_equal(a, b)


@pytest.mark.slow
def test_sr_numbers_equal_stats_csv(case):
    sr = hd.sr.srread(case["dicom"] / "sr_measurements.dcm")
    assert sr.SeriesInstanceUID != case["series_uid"] and sr.StudyInstanceUID == hd.seg.segread(
        case["dicom"] / "seg_regions.dcm").StudyInstanceUID
    regions_uid = hd.seg.segread(case["dicom"] / "seg_regions.dcm").SOPInstanceUID
    assert_sr_equals_csv(sr, case["out"] / "stats.csv", regions_uid, set(source_order(case["series"])))


def test_nifti_input_with_dicom_is_refused(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("analyze", DEMO_CT, "-o", out, "--dicom", "--no-model")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "DICOM series" in lines[0], proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_sr_records_the_hu_calibration_only_where_applied(case):
    from drasclr.analysis.stats import read_csv
    from drasclr.core.io import read_ct
    from drasclr.dicom.codes import CALIBRATION
    from drasclr.dicom.identity import Algorithm
    from drasclr.dicom.source import source_slices
    from drasclr.dicom.sr import measurement_report

    source = source_slices(case["series"], read_ct(case["series"]))
    seg = hd.seg.segread(case["dicom"] / "seg_regions.dcm")
    names = [d.SegmentLabel.lower().replace(" ", "_") for d in seg.SegmentSequence]
    rows = read_csv(case["out"] / "stats.csv")
    for applied, want in ((0.0, None), (-31.0, -31.0)):
        sr = measurement_report(rows, seg, names, [seg, *source], Algorithm("DrasCLR test", "1"),
                                {"applied_hu": applied})
        sr = hd.sr.Comprehensive3DSR.from_dataset(sr)
        for g in sr.content.get_volumetric_roi_measurement_groups():
            offsets = [m.value for m in g.get_measurements(name=CALIBRATION)]
            assert offsets == ([] if want is None else [want])

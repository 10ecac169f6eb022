"""``drasclr analyze SERIES --dicom``: DICOM SEG (subtypes, regions) and a TID 1500 SR, checked by three readers —
dciodvfy (Debian's dicom3tools), highdicom, and dcmqi's segimage2itkimage — against the NIfTI/CSV outputs."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_writer import write_dicom_series
from drasclr import labels
from drasclr.io import read_image
from drasclr.stats import read_csv

hd = pytest.importorskip("highdicom", reason="highdicom not installed (pip install '.[dicom]')")
DEMO_CT = Path(__file__).resolve().parents[2] / "DrasCLRSlicer" / "drasclr" / "data" / "demo_ct.nii.gz"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "drasclr", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The demo CT written as a real DICOM series and analysed with ``--dicom``."""
    tmp = tmp_path_factory.mktemp("dicom_out")
    series_uid = write_dicom_series(read_image(DEMO_CT), tmp / "series")
    proc = run_cli("analyze", tmp / "series", "-o", tmp / "out", "--dicom", "--no-tta", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {"series": tmp / "series", "series_uid": series_uid, "out": tmp / "out", "dicom": tmp / "out" / "dicom"}


def _source_uids(case) -> dict[str, int]:
    """SOPInstanceUID -> slice index k of the analysed grid (read with the engine's own reader)."""
    import pydicom

    from drasclr.io import read_ct

    ct = read_ct(case["series"])
    inverse = np.linalg.inv(ct.direction @ np.diag(ct.spacing))
    out = {}
    for f in case["series"].iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[ds.SOPInstanceUID] = int(round((inverse @ (np.asarray(ds.ImagePositionPatient, float) - ct.origin))[2]))
    return out


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
    index = _source_uids(case)
    uids = sorted(index, key=index.get)
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, skip_overlap_checks=True)
    assert np.array_equal(frames, nifti)  # frames on the source slices, in the grid's order

    regions = hd.seg.segread(case["dicom"] / "seg_regions.dcm")
    lobes = sitk.GetArrayFromImage(sitk.ReadImage(str(case["out"] / "regions.nii.gz")))
    stack = regions.get_pixels_by_source_instance(uids)
    names = [d.SegmentLabel for d in regions.SegmentSequence]
    for i, name in enumerate(names):
        key = name.lower().replace(" ", "_")
        value = next((v for v, n in labels.REGION_NAMES.items() if n == key), None)
        expected = (lobes == value) if value is not None else {
            "left_lung": np.isin(lobes, labels.LEFT_LOBES), "right_lung": np.isin(lobes, labels.RIGHT_LOBES),
            "whole_lung": lobes > 0}[key]
        assert np.array_equal(stack[..., i] > 0, expected), name
    assert names[-3:] == ["Left lung", "Right lung", "Whole lung"] and len(names) == 8


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
    from drasclr.dicom.codes import MEASUREMENTS

    by_meaning = {concept.meaning: column for column, (concept, _u, _d) in MEASUREMENTS.items()}
    rows = {r["region"]: r for r in read_csv(case["out"] / "stats.csv")}
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert sorted(str(g.tracking_identifier) for g in groups) == sorted(rows)
    regions_uid = hd.seg.segread(case["dicom"] / "seg_regions.dcm").SOPInstanceUID
    source = set(_source_uids(case))
    for g in groups:
        row = rows[str(g.tracking_identifier)]
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == regions_uid  # the region's segment in the regions SEG ...
        cited = {im.referenced_sop_instance_uid for im in ref.source_images_for_segmentation}
        assert cited and cited <= source  # ... and through it the source CT slices
        got = {by_meaning[m.name.meaning]: m.value for m in g.get_measurements()}
        want = {c: v for c, v in row.items() if c in by_meaning.values() and not math.isnan(v)}
        assert set(got) == set(want), row["region"]
        for c, v in want.items():
            assert got[c] == pytest.approx(v, abs=6e-5), (row["region"], c)


def test_nifti_input_with_dicom_is_refused(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("analyze", DEMO_CT, "-o", out, "--dicom", "--no-model")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "DICOM series" in lines[0], proc.stderr
    assert not out.exists()

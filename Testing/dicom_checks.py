"""Checks of DICOM outputs against the NIfTI/CSV outputs, shared by the DICOM and DICOMweb tests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from drasclr.analysis.stats import read_csv
from drasclr.core import labels


def source_order(series: Path) -> list[str]:
    """The SOPInstanceUIDs of a DICOM series folder in the analysed grid's slice order (the engine's reader)."""
    from drasclr.core.io import read_ct

    ct = read_ct(series)
    inverse = np.linalg.inv(ct.direction @ np.diag(ct.spacing))
    index = {}
    for f in series.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        index[ds.SOPInstanceUID] = round((inverse @ (np.asarray(ds.ImagePositionPatient, float) - ct.origin))[2])
    return sorted(index, key=index.get)


def assert_regions_equal(seg, regions_path: Path, uids: list[str]) -> None:
    """Each segment of a regions SEG (highdicom) equals its region of ``regions.nii.gz`` voxel for voxel."""
    lobes = sitk.GetArrayFromImage(sitk.ReadImage(str(regions_path)))
    stack = seg.get_pixels_by_source_instance(uids)
    names = [d.SegmentLabel for d in seg.SegmentSequence]
    for i, name in enumerate(names):
        key = name.lower().replace(" ", "_")
        value = next((v for v, n in labels.REGION_NAMES.items() if n == key), None)
        expected = (lobes == value) if value is not None else {
            "left_lung": np.isin(lobes, (*labels.LEFT_LOBES, *labels.LEFT_ZONES)),
            "right_lung": np.isin(lobes, (*labels.RIGHT_LOBES, *labels.RIGHT_ZONES)), "whole_lung": lobes > 0}[key]
        assert np.array_equal(stack[..., i] > 0, expected), name
    present = [v for v in np.unique(lobes) if v in labels.REGION_NAMES]
    assert names[-3:] == ["Left lung", "Right lung", "Whole lung"] and len(names) == len(present) + 3


def assert_sr_equals_csv(sr, csv_path: Path, regions_uid: str, source_uids: set[str]) -> None:
    """Every stats.csv row is one measurement group of the SR with the same numbers, referencing its segment in the
    regions SEG and the source slices."""
    from drasclr.dicom.codes import MEASUREMENTS

    by_meaning = {concept.meaning: column for column, (concept, _u, _d) in MEASUREMENTS.items()}
    rows = {r["region"]: r for r in read_csv(csv_path)}
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert sorted(str(g.tracking_identifier) for g in groups) == sorted(rows)
    for g in groups:
        row = rows[str(g.tracking_identifier)]
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == regions_uid  # the region's segment in the regions SEG ...
        cited = {im.referenced_sop_instance_uid for im in ref.source_images_for_segmentation}
        assert cited and cited <= source_uids  # ... and through it the source CT slices
        got = {by_meaning[m.name.meaning]: m.value for m in g.get_measurements()}
        want = {c: v for c, v in row.items() if c in by_meaning.values() and not math.isnan(v)}
        assert set(got) == set(want), row["region"]
        for c, v in want.items():
            assert got[c] == pytest.approx(v, abs=6e-5), (row["region"], c)

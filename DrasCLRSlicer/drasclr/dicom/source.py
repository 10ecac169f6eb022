"""The source DICOM series of an analysis, its slices matched one to one with the CT grid's slices.

A DICOM SEG's frames must lie on the source slices, so the headers of the series are read back (no pixel data)
and each slice is placed on the analysed grid by its ImagePositionPatient; a series that does not match the grid
(resampled, cropped, another series) is refused with one ``InputError``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom

from ..core.errors import InputError
from ..core.image import CTImage

NOT_DICOM = ("--dicom needs a DICOM series as input (its patient, study and frame of reference are copied, never "
             "invented); {name} is not a DICOM folder")


def require_dicom_input(path: str | os.PathLike) -> None:
    """Refuse ``--dicom`` for a NIfTI/NRRD/MHA input before any work is done."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(NOT_DICOM.format(name=path.name))


# Type 2 attributes of the patient and study modules that highdicom copies into the SEG and SR: where the source
# lacks one it is added empty (DICOM's "unknown"), never filled with a made-up value
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _complete(ds: pydicom.Dataset) -> pydicom.Dataset:
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _headers(folder: Path) -> dict[str, list[pydicom.Dataset]]:
    """SeriesInstanceUID -> image headers (files with pixel data, read without it), searched recursively."""
    series: dict[str, list[pydicom.Dataset]] = {}
    for root, _dirs, files in os.walk(folder):
        for name in sorted(files):
            try:
                ds = pydicom.dcmread(os.path.join(root, name), stop_before_pixels=True)
            except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
                continue
            if "SeriesInstanceUID" in ds and "ImagePositionPatient" in ds:
                series.setdefault(str(ds.SeriesInstanceUID), []).append(_complete(ds))
    return series


def source_slices(folder: str | os.PathLike, ct: CTImage, series_uid: str | None = None) -> list[pydicom.Dataset]:
    """The headers of the series ``ct`` was read from, ordered like ``ct.array``'s first (slice) axis.

    ``series_uid`` names the series when the folder holds several; otherwise the series whose slices land on the
    grid is taken."""
    folder = Path(folder)
    require_dicom_input(folder)
    series = _headers(folder)
    if series_uid is not None:
        series = {series_uid: series.get(series_uid, [])}
    problems = []
    for uid, slices in sorted(series.items(), key=lambda kv: -len(kv[1])):
        ordered, why = _on_grid(slices, ct)
        if ordered is not None:
            return ordered
        problems.append(f"{uid}: {why}")
    raise InputError(f"--dicom: no DICOM series in {folder.name} matches the analysed grid slice for slice "
                     f"({'; '.join(problems) or 'no image series'}); a resampled series cannot be referenced")


def _on_grid(slices: list[pydicom.Dataset], ct: CTImage) -> tuple[list[pydicom.Dataset] | None, str]:
    nz, ny, nx = ct.array.shape
    if len(slices) != nz:
        return None, f"{len(slices)} slices, the grid has {nz}"
    inverse = np.linalg.inv(ct.direction @ np.diag(ct.spacing))
    ordered: list[pydicom.Dataset | None] = [None] * nz
    for ds in slices:
        if (int(ds.Rows), int(ds.Columns)) != (ny, nx):
            return None, f"slice size {ds.Rows}x{ds.Columns}, the grid has {ny}x{nx}"
        iop = np.asarray(ds.ImageOrientationPatient, float)
        if not (np.allclose(iop[:3], ct.direction[:, 0], atol=1e-3) and np.allclose(iop[3:], ct.direction[:, 1],
                                                                                       atol=1e-3)):
            return None, "slice orientation differs from the grid's"
        ijk = inverse @ (np.asarray(ds.ImagePositionPatient, float) - np.asarray(ct.origin))
        k = int(round(ijk[2]))
        if np.abs(ijk - (0, 0, k)).max() > 0.05 or not 0 <= k < nz or ordered[k] is not None:
            return None, "slice positions are not the grid's slices"
        ordered[k] = ds
    return ordered, ""

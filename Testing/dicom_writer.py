"""Write a CTImage as a real DICOM CT series with pydicom (for reader tests): stored values are
``(HU - intercept) / slope`` as uint16, with RescaleSlope/Intercept, positions along the slice normal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_dicom_series(img, folder: Path, series_uid: str | None = None, intercept: float = -2048.0,
                       slope: float = 1.0, modality: str = "CT", names=None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    d = img.direction
    row_dir, col_dir = d[:, 0], d[:, 1]
    nz = img.array.shape[0]
    names = names or [f"slice_{k:04d}.dcm" for k in range(nz)]
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / names[k]), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientID = "ANON"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = nz - k  # deliberately not in position order
        pos = np.asarray(img.origin) + d[:, 2] * img.spacing[2] * k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [f"{img.spacing[1]:.6f}", f"{img.spacing[0]:.6f}"]  # row spacing (y), column spacing (x)
        ds.SliceThickness = f"{img.spacing[2]:.6f}"
        ds.Rows, ds.Columns = img.array.shape[1], img.array.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept = f"{intercept}"
        ds.RescaleSlope = f"{slope}"
        stored = np.round((img.array[k].astype(np.float64) - intercept) / slope).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        ds.save_as(str(folder / names[k]), enforce_file_format=True)
    return series_uid

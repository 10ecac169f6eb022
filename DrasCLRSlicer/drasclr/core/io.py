"""Reading and writing CT volumes and labelmaps with SimpleITK (NIfTI, NRRD, MHA, DICOM series folders).

Every reader returns a :class:`~drasclr.core.image.CTImage`; every problem the user can fix raises
:class:`~drasclr.core.errors.InputError` with a message fit for one ``error:`` line.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .image import CTImage
from .input_files import (
    check_finite,
    check_geometry,
    check_image_header,
    check_image_stream,
    check_memory,
    native_stderr,
    stream_check_is_quick,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MIN_SERIES_SLICES = 3  # fewer is a localizer / scout, not a volume
SLICE_STEP_TOL = 0.05  # relative: a step more than 5 % (and 0.1 mm) off the median is a gap or an uneven series
SLICE_STEP_TOL_MM = 0.1


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in IMAGE_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def image_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``case_001.nii.gz`` -> ``case_001``); a folder's own name."""
    path = Path(path)
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix in IMAGE_SUFFIXES else path.name


def read_image(path: str | os.PathLike, allow_uneven: bool = False, single_slice: bool = False,
               analysis: bool = False) -> CTImage:
    """Read a 3-D image file or a DICOM series folder, with no check on its intensities (labelmaps too).
    ``single_slice``: also accept one slice (a 3-D image of one slice, or a 2-D image: one slice 1 mm thick).

    The file is checked first (header, geometry, memory estimate: ``drasclr.core.input_files``), so an absurd
    file, or one too short to hold its grid, is refused before any voxel is allocated; a gzip stream's integrity is
    checked while ITK reads it, and a truncated or corrupt one is refused before its voxels are used; NaN/Inf voxels
    are refused after.
    ``analysis``: the memory estimate is that of analysing this image (``read_ct``), else of holding it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        return read_dicom_series(path, allow_uneven=allow_uneven)
    if not path.is_file():
        raise InputError(f"cannot read image {path.name}: not a regular file")
    header = check_image_header(path, analysis=analysis)
    if stream_check_is_quick(path, header):
        check_image_stream(path, header)
        return _as_3d(_sitk_read(path), path.name, single_slice)
    # the pass over a gzip stream (integrity, declared length) runs beside ITK's own read: on a thin-slice .nii.gz
    # each is a full decompression. ITK reads a truncated or corrupt stream without complaint (zeros or garbage in
    # the missing part), so the stream's verdict comes first, before ITK's image or ITK's error is used. The grid
    # ITK allocates meanwhile has passed the memory check.
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(check_image_stream, path, header)
        try:
            image = _sitk_read(path)
        finally:
            if stream.exception() is not None:
                stream.result()
    return _as_3d(image, path.name, single_slice)


def _sitk_read(path: Path) -> sitk.Image:
    said: list[str] = []
    try:
        with native_stderr(said):
            return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = said[0].splitlines()[0].strip()[:120] if said else (str(exc).strip().splitlines() or ["?"])[-1]
        raise InputError(f"cannot read image {path.name}: not a readable NIfTI/NRRD/MHA/DICOM file "
                         f"({reason[:120]})") from None
    except MemoryError:
        raise InputError(f"cannot read image {path.name}: not enough memory") from None


def _as_3d(image: sitk.Image, name: str, single_slice: bool = False) -> CTImage:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "expected a scalar CT volume")
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
    elif dim == 4:
        raise InputError(f"{name} is a 4-D image {size}; expected one 3-D CT volume")
    elif dim == 2 and single_slice:
        image = sitk.JoinSeries([image])  # one axial slice, 1 mm thick
    elif dim != 3:
        raise InputError(f"{name} is a {dim}-D image {size}; expected a 3-D CT volume"
                         + (" (single slices: --model cip-lh)" if dim == 2 else ""))
    if min(image.GetSize()) < 2 and not (single_slice and sorted(image.GetSize())[1] >= 2):
        raise InputError(f"{name} has size {image.GetSize()}: a single slice, expected a 3-D CT volume "
                         "(single slices: --model cip-lh)")
    check_geometry(image.GetSize(), image.GetSpacing(), image.GetDirection(), name)
    out = CTImage.from_sitk(image)
    check_finite(out.array, name)
    return out


def read_ct(path: str | os.PathLike, series_uid: str | None = None, allow_uneven: bool = False,
            single_slice: bool = False) -> CTImage:
    """Read a chest CT in Hounsfield units (int16 or float) and check that it looks like CT.

    ``allow_uneven``: a DICOM series with uneven slice spacing is resampled to its median step (linear along the
    slice normal) instead of being refused. ``single_slice``: also accept a single slice (file inputs; see
    :func:`read_image`)."""
    path = Path(path)
    image = (read_dicom_series(path, series_uid, allow_uneven) if path.is_dir()
             else read_image(path, single_slice=single_slice, analysis=True))
    check_hounsfield(image, path.name)
    a = image.array
    if a.dtype.kind in "iu" and a.dtype != np.int16 and a.min() >= -32768 and a.max() <= 32767:
        image = image.with_array(a.astype(np.int16))  # HU fit int16: half the memory of int32
    return image


def check_hounsfield(image: CTImage, name: str = "input") -> None:
    """Refuse volumes whose intensities are not CT Hounsfield units (MR, PET, normalised arrays)."""
    a = image.array
    sample = a[:: max(1, a.shape[0] // 16), ::4, ::4].astype(np.float32)
    sample = sample[sample > -1500]  # ignore padding outside the scan circle (-2048, -3024)
    if sample.size == 0:
        raise InputError(f"{name} holds no intensities above -1500; not a CT in Hounsfield units")
    p1, p99 = np.percentile(sample, [1, 99])
    if p1 > -500 or p99 < -200 or p99 > 4000:
        raise InputError(f"{name} does not look like CT in Hounsfield units (1st/99th percentile "
                         f"{p1:.0f}/{p99:.0f}); expected air near -1000 and soft tissue near 40")


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None,
                      allow_uneven: bool = False) -> CTImage:
    """Read the CT series of a DICOM folder (searched recursively).

    Slices are sorted by their position along the slice normal (GDCM), not by file name; the rescale slope
    and intercept are applied. Localizers (fewer than 3 slices) are ignored; of several volumetric series the
    one with the most slices is taken, and a tie is refused (name one with ``series_uid``).

    The series must be complete: no unreadable ``.dcm`` file, one orientation, no two slices at one position,
    and even steps between slice positions (a gap means missing slices). ``allow_uneven`` accepts uneven steps
    and resamples the slices onto an even grid at the median step (linear interpolation along the normal).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input not found: {folder}")
    series: dict[str, list[str]] = {}
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns for every folder without DICOM files
    try:
        for root, _dirs, _files in os.walk(folder):
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root) or ():
                files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid)
                series.setdefault(uid, []).extend(files)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if not series:
        raise InputError(f"no DICOM series found in folder {folder}")
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"series {series_uid} not in {folder}; found: {', '.join(series)}")
        chosen = series_uid
    else:
        volumetric = {u: f for u, f in series.items() if len(f) >= MIN_SERIES_SLICES}
        if not volumetric:
            raise InputError(f"no volumetric DICOM series in {folder} (only localizers or single slices)")
        ranked = sorted(volumetric, key=lambda u: len(volumetric[u]), reverse=True)
        if len(ranked) > 1 and len(volumetric[ranked[0]]) == len(volumetric[ranked[1]]):
            listing = "; ".join(f"{u} ({len(volumetric[u])} slices)" for u in ranked)
            raise InputError(f"{len(ranked)} DICOM series of equal size in {folder}, cannot choose: {listing}; "
                             "pass --series UID")
        chosen = ranked[0]
        if len(ranked) > 1:
            log.info("folder holds %d series; taking the largest (%d slices)", len(ranked), len(series[chosen]))
    _check_stray_files(folder, series)
    files, positions, size, spacing = _sort_by_position(series[chosen])
    uneven = _uneven_steps(positions)
    if uneven and not allow_uneven:
        raise InputError(f"DICOM series in {folder} is incomplete or unevenly spaced: {uneven}; pass "
                         "--allow-uneven-slices to resample it to even spacing anyway")
    step = float(np.median(np.diff(positions))) if len(positions) > 1 else 1.0
    check_geometry((*size, len(files)), (*spacing, step), tuple(np.eye(3).ravel()), folder.name)
    check_memory((*size, len(files)), (*spacing, step), folder.name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    said: list[str] = []
    try:
        with native_stderr(said):
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series in {folder}: {str(exc).strip().splitlines()[-1][:120]}") \
            from None
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else "CT"
    if modality and modality != "CT":
        raise InputError(f"DICOM series in {folder} has modality {modality}; expected CT")
    if uneven:
        log.warning("DICOM series %s: %s; resampled to an even %.3f mm step as asked", folder.name, uneven, step)
        image = _resample_even(image, positions, step)
    return _as_3d(image, folder.name)


def _check_stray_files(folder: Path, series: dict[str, list[str]]) -> None:
    """Refuse DICOM files that GDCM left out of every series because they are corrupt or unreadable: a bad
    slice would otherwise silently leave a hole in the volume. Valid files of other kinds are ignored."""
    listed = {os.path.abspath(f) for files in series.values() for f in files}
    for root, _dirs, names in os.walk(folder):
        for n in names:
            f = os.path.abspath(os.path.join(root, n))
            if f in listed or n.startswith(".") or n.upper() == "DICOMDIR":
                continue
            dicomish = n.lower().endswith((".dcm", ".dicom", ".ima"))
            if not dicomish:
                try:
                    with open(f, "rb") as fh:
                        dicomish = fh.read(132)[128:132] == b"DICM"
                except OSError:
                    dicomish = False
            if not dicomish:
                continue
            r = sitk.ImageFileReader()
            r.SetFileName(f)
            try:
                with native_stderr([]):
                    r.ReadImageInformation()
                uid = r.GetMetaData("0020|000e").strip("\0 ") if r.HasMetaDataKey("0020|000e") else None
            except RuntimeError:
                raise InputError(f"DICOM file {n} in {folder} is unreadable or corrupt; remove or repair it") from None
            if uid in series:
                raise InputError(f"DICOM file {n} of series {uid} could not be read with the series (corrupt or "
                                 "truncated slice); remove or repair it")


def _sort_by_position(files: list[str]) -> tuple[list[str], np.ndarray, tuple[int, int], tuple[float, float]]:
    """Sort slice files by ImagePositionPatient projected on the slice normal (never by file name).

    Returns the sorted files, their positions (mm along the normal), the in-plane size and spacing; refuses
    unreadable slices, mixed orientations or slice sizes, and two slices at one position."""
    keyed, orientations, sizes = [], set(), set()
    spacing = (1.0, 1.0)
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(f)
        try:
            with native_stderr([]):
                r.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"DICOM file {Path(f).name} is unreadable (corrupt header)") from None
        try:
            ipp = np.array([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
            iop = np.array([float(v) for v in r.GetMetaData("0020|0037").split("\\")])
            pos = float(np.dot(ipp, np.cross(iop[:3], iop[3:])))
        except (RuntimeError, ValueError):
            raise InputError(f"DICOM file {Path(f).name} has no usable slice position/orientation") from None
        if not np.isfinite(pos) or ipp.size != 3 or iop.size != 6:
            raise InputError(f"DICOM file {Path(f).name} has no usable slice position/orientation")
        orientations.add(tuple(np.round(iop, 4)))
        sizes.add(tuple(r.GetSize()[:2]))
        spacing = tuple(r.GetSpacing()[:2])
        keyed.append((pos, f))
    if len(orientations) > 1:
        raise InputError(f"DICOM series mixes {len(orientations)} slice orientations (not one volume)")
    if len(sizes) > 1:
        raise InputError(f"DICOM series mixes slice sizes {sorted(sizes)} (not one volume)")
    keyed.sort()
    positions = np.array([k for k, _ in keyed])
    if len(set(np.round(positions, 3))) != len(positions):
        raise InputError("DICOM series has several slices at the same position (duplicate slices or mixed "
                         "acquisitions)")
    return [f for _, f in keyed], positions, next(iter(sizes)), spacing


def _uneven_steps(positions: np.ndarray) -> str:
    """'' when the slice positions are evenly spaced, else a description of the gaps / unevenness."""
    if len(positions) < 3:
        return ""
    steps = np.diff(positions)
    med = float(np.median(steps))
    tol = max(SLICE_STEP_TOL * med, SLICE_STEP_TOL_MM)
    bad = np.nonzero(np.abs(steps - med) > tol)[0]
    if bad.size == 0:
        return ""
    missing = int(sum(max(0, round(steps[i] / med) - 1) for i in bad))
    i = int(bad[0])
    where = f"{steps[i]:.2f} mm between slices at {positions[i]:.2f} and {positions[i + 1]:.2f} mm"
    what = f"about {missing} missing slice(s)" if missing else f"{bad.size} uneven step(s)"
    return f"{what}; slice step {med:.3f} mm, but {where}"


def _resample_even(image: sitk.Image, positions: np.ndarray, step: float) -> sitk.Image:
    """Slices at uneven ``positions`` -> an even grid from the first position at ``step`` (linear in between)."""
    a = sitk.GetArrayFromImage(image).astype(np.float32)
    rel = positions - positions[0]
    n = int(np.floor(rel[-1] / step + 1e-6)) + 1
    t = np.arange(n) * step
    hi = np.clip(np.searchsorted(rel, t, side="right"), 1, len(rel) - 1)
    lo = hi - 1
    w = ((t - rel[lo]) / (rel[hi] - rel[lo])).astype(np.float32)[:, None, None]
    out = a[lo] * (1 - w) + a[hi] * w
    if np.issubdtype(sitk.GetArrayViewFromImage(image).dtype, np.integer):
        out = np.round(out)
    res = sitk.GetImageFromArray(out.astype(sitk.GetArrayViewFromImage(image).dtype))
    res.SetOrigin(image.GetOrigin())
    res.SetDirection(image.GetDirection())
    res.SetSpacing((*image.GetSpacing()[:2], step))
    return res


def write_image(image: CTImage, path: str | os.PathLike, dtype=None, compress: bool = True) -> Path:
    """Write ``image`` (optionally cast to ``dtype``) to a NIfTI/NRRD/MHA file chosen by the suffix."""
    path = Path(path)
    out = image if dtype is None else image.with_array(image.array.astype(dtype, copy=False))
    sitk.WriteImage(out.to_sitk(), str(path), useCompression=compress)
    return path


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    """True when ``folder`` itself (not a sub-folder) holds a DICOM series."""
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` and DICOM series sub-folders, sorted by name (batch mode)."""
    folder = Path(folder)
    found = [p for p in sorted(folder.iterdir()) if p.is_file() and _suffix(p) in IMAGE_SUFFIXES]
    found += [p for p in sorted(folder.iterdir()) if p.is_dir() and is_dicom_folder(p)]
    return found

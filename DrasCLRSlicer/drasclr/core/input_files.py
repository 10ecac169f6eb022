"""Up-front checks of an image file before its voxels are read: integrity, geometry and a memory estimate.

``check_image_file(path)`` reads only the header (SimpleITK ``ReadImageInformation``; for NIfTI also the raw
header fields that ITK silently repairs) and the byte stream, and raises :class:`~drasclr.core.errors.InputError` for:

- a truncated or corrupt file (ITK would fill the missing voxels of a NIfTI file with zeros);
- spacing that is zero, negative, not finite, or outside ``SPACING_MM`` (0.1–10 mm);
- a direction matrix that is not orthonormal (sheared; oblique rotations are fine);
- a grid whose working memory would exceed what the machine has (refused before anything is allocated).

``check_finite`` refuses NaN/Inf voxels once the array is in memory. Options are checked with ``check_range``.
See docs/hostile_inputs.md for the catalogue and the reasons for each limit.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

try:  # Intel ISA-L's gzip: the same stream checks (CRC, length, truncation) at about 2.5x zlib's speed
    from isal import igzip as _gzip_module
    from isal.isal_zlib import error as _StreamError
except ImportError:  # optional: Slicer's Python without it reads with the standard library's gzip
    _gzip_module, _StreamError = gzip, zlib.error

SPACING_MM = (0.1, 10.0)  # micro-CT below, no usable lung texture (and absurd 1 mm resampling) above
MAX_EXTENT_MM = 2000.0  # per axis: a whole-body scan is < 2 m long and < 0.7 m wide
ORTHO_TOL = 1e-3  # |D^T D - I| beyond this is a shear, not rounding
# Memory estimate of an analysis, calibrated on a real CT (docs/hostile_inputs.md: 512x512x30 at 0.65/8 mm, peak
# RSS 1.43 GiB measured with the demo model, estimate 1.40 GiB). It exists to refuse absurd grids up front.
BASE_BYTES = 512 * 2**20  # interpreter, torch, SimpleITK and the model
BYTES_PER_VOXEL = 16  # analysis working set per input voxel (int16 CT, float copies, uint8 masks and maps)
BYTES_PER_MM3 = 32  # 1 mm model grid over the lung box (float32 volume, class probabilities, mirrored pass)
LUNG_BOX_MM = (400.0, 400.0, 400.0)  # the 1 mm model grid never exceeds the largest plausible lung box


@dataclass(frozen=True)
class Header:
    """What an image file declares, read without its voxels. Geometry in ITK (x, y, z) order."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]
    components: int
    bytes_per_pixel: int

    @property
    def voxels(self) -> int:
        return int(np.prod(np.asarray(self.size, dtype=np.float64)))


@contextlib.contextmanager
def native_stderr(sink: list[str]):
    """Capture what C++ code (ITK, MetaIO, GDCM) prints on file descriptor 2; the text is appended to ``sink``.

    Keeps the command line's contract (one ``error:`` line) while keeping the toolkit's words for messages.
    """
    try:
        fd = os.dup(2)
    except OSError:  # no real stderr (embedded interpreter): nothing to capture
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace").strip()
            if text:
                sink.append(text)


def _last_words(texts: list[str], exc: Exception | None = None) -> str:
    """A short reason from the toolkit's output (first useful line) or its exception."""
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith(("WARNING", "ERROR:")) and "itk" not in line.lower()[:6]:
                return line[:120]
    if exc is not None:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        return (lines[-1] if lines else "unreadable")[:120]
    return "unreadable"


def read_header(path: Path) -> Header:
    """The header of an image file (no voxels read); ``InputError`` when it is not a readable image."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    said: list[str] = []
    try:
        with native_stderr(said):
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read image {path.name}: not a readable NIfTI/NRRD/MHA/DICOM file "
                         f"({_last_words(said, exc)})") from None
    comps = reader.GetNumberOfComponents()
    one = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), comps)  # a 1-voxel image: its pixel size
    return Header(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetDirection()), comps,
                  one.GetSizeOfPixelComponent() * comps)


def check_geometry(size, spacing, direction, name: str) -> None:
    """Spacing within ``SPACING_MM`` and finite; extent within ``MAX_EXTENT_MM``; an orthonormal direction."""
    dim = len(size)
    sp = np.asarray(spacing[:3], dtype=np.float64)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{name}: voxel spacing {tuple(float(s) for s in sp)} mm is zero, negative or not a "
                         "number (a broken header; it is never guessed)")
    lo, hi = SPACING_MM
    if np.any(sp < lo) or np.any(sp > hi):
        raise InputError(f"{name}: voxel spacing {tuple(round(float(s), 4) for s in sp)} mm is outside the "
                         f"supported {lo}-{hi} mm per axis (not a clinical chest CT grid)")
    extent = sp * np.asarray(size[:3], dtype=np.float64)
    if np.any(extent > MAX_EXTENT_MM):
        raise InputError(f"{name}: the image spans {tuple(int(e) for e in extent)} mm, more than "
                         f"{MAX_EXTENT_MM:.0f} mm along an axis (a broken header?)")
    d = np.asarray(direction, dtype=np.float64).reshape(dim, dim)[:3, :3]
    if not np.all(np.isfinite(d)) or np.abs(d.T @ d - np.eye(3)).max() > ORTHO_TOL:
        raise InputError(f"{name}: the direction matrix is not orthonormal (sheared or scaled axes); oblique "
                         "rotations are supported, shear is not (resample the image first)")


def available_memory_bytes() -> int:
    """Memory this process may use: ``$DRASCLR_MAX_MEMORY_GB`` when set, else the OS's available memory."""
    env = os.environ.get("DRASCLR_MAX_MEMORY_GB")
    if env:
        try:
            return int(float(env) * 2**30)
        except ValueError:
            raise InputError(f"DRASCLR_MAX_MEMORY_GB={env!r} is not a number") from None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**63  # unknown (Windows without /proc): only the other checks apply


def estimate_memory_bytes(size, spacing) -> int:
    """Peak memory of an analysis of a grid (see BASE_BYTES, BYTES_PER_VOXEL, BYTES_PER_MM3)."""
    voxels = float(np.prod(np.asarray(size[:3], dtype=np.float64)))
    extent = np.minimum(np.asarray(spacing[:3], np.float64) * np.asarray(size[:3], np.float64), LUNG_BOX_MM)
    return int(BASE_BYTES + voxels * BYTES_PER_VOXEL + float(np.prod(extent)) * BYTES_PER_MM3)


def check_memory(size, spacing, name: str) -> None:
    _check_fits(estimate_memory_bytes(size, spacing), size, name)


def _check_fits(need: int, size, name: str) -> None:
    have = available_memory_bytes()
    if need > have:
        raise InputError(f"{name}: a {'x'.join(str(int(s)) for s in size)} grid needs about {need / 2**30:.1f} GiB "
                         f"of memory, {have / 2**30:.1f} GiB available (refused before reading the voxels)")


# --- file integrity -------------------------------------------------------------------------------------------
def _nifti_fields(head: bytes) -> dict | None:
    """vox_offset, pixdim and sform of a NIfTI-1/2 header (either byte order), or None if not NIfTI."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack_from(f"{endian}i", head, 0)[0] == 348:
            return {"vox_offset": int(struct.unpack_from(f"{endian}f", head, 108)[0]),
                    "pixdim": struct.unpack_from(f"{endian}8f", head, 76)[1:4],
                    "sform_code": struct.unpack_from(f"{endian}h", head, 254)[0],
                    "srow": struct.unpack_from(f"{endian}12f", head, 280)}
        if len(head) >= 540 and struct.unpack_from(f"{endian}i", head, 0)[0] == 540:
            return {"vox_offset": int(struct.unpack_from(f"{endian}q", head, 168)[0]),
                    "pixdim": struct.unpack_from(f"{endian}8d", head, 104)[1:4],
                    "sform_code": struct.unpack_from(f"{endian}i", head, 348 + 4 * 4)[0],
                    "srow": struct.unpack_from(f"{endian}12d", head, 400)}
    return None


def _gzip_stream(path: Path) -> tuple[bytes, int]:
    """The first 540 bytes and the total decompressed length of a gzip file; InputError when truncated/corrupt."""
    total, head = 0, b""
    try:
        with _gzip_module.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                if len(head) < 540:
                    head += chunk[: 540 - len(head)]
                total += len(chunk)
    except EOFError:
        raise InputError(f"{path.name} is truncated: the compressed stream ends early (incomplete download or "
                         "copy?)") from None
    except (OSError, zlib.error, _StreamError) as exc:
        raise InputError(f"{path.name} is corrupt: {str(exc)[:100]}") from None
    return head, total


def _check_nifti(path: Path, header: Header) -> None:
    compressed = path.name.lower().endswith(".gz")
    if compressed:
        head, total = _gzip_stream(path)
    else:
        with open(path, "rb") as f:
            head = f.read(540)
        total = path.stat().st_size
    fields = _nifti_fields(head)
    if fields is None:
        return
    px = np.asarray(fields["pixdim"], dtype=np.float64)
    if not np.all(np.isfinite(px)) or np.any(px <= 0):
        raise InputError(f"{path.name}: voxel spacing (pixdim) {tuple(float(v) for v in px)} is zero, negative "
                         "or not a number; ITK would read it as 1 mm, drasclr does not guess")
    if fields["sform_code"] > 0:
        m = np.asarray(fields["srow"], dtype=np.float64).reshape(3, 4)[:, :3]
        norms = np.linalg.norm(m, axis=0)
        if np.all(norms > 0):
            d = m / norms
            if np.abs(d.T @ d - np.eye(3)).max() > ORTHO_TOL:
                raise InputError(f"{path.name}: the sform matrix is sheared (not a rotation times spacing); ITK "
                                 "would silently fall back to another orientation. Resample the image first")
    need = max(fields["vox_offset"], 348) + header.voxels * header.bytes_per_pixel
    if total < need:
        raise InputError(f"{path.name} is truncated: it holds {total} bytes of image data, its header declares "
                         f"{need} (incomplete download or copy?)")


def check_image_file(path: str | os.PathLike, analysis: bool = True) -> Header:
    """All checks that need no voxels: readable header, geometry, memory estimate, then the byte stream.
    ``analysis``: the memory estimate is that of a whole analysis of this grid (the CT being analysed); otherwise
    (a labelmap, the atlas) that of holding the image itself."""
    header = check_image_header(path, analysis)
    check_image_stream(path, header)
    return header


def check_image_header(path: str | os.PathLike, analysis: bool = True) -> Header:
    """The checks of :func:`check_image_file` that read the header only (no pass over the byte stream)."""
    path = Path(path)
    header = read_header(path)
    if len(header.size) >= 3 and min(header.size[:3]) >= 1:
        check_geometry(header.size, header.spacing, header.direction, path.name)
        if analysis:
            check_memory(header.size[:3], header.spacing, path.name)
        else:
            _check_fits(header.voxels * max(header.bytes_per_pixel, 1) * 3, header.size[:3], path.name)
    return header


DEFLATE_MAX_RATIO = 1032  # deflate cannot expand a byte stream more than about 1032-fold


def stream_check_is_quick(path: str | os.PathLike, header: Header) -> bool:
    """Whether :func:`check_image_stream` is cheap here, or sure to refuse: a file that is not gzip-compressed (its
    length is known without reading it), or a gzip file too small to decompress to the voxels its header declares
    (a 4 KB file declaring 1024^3 voxels is refused without reading a byte of it, let alone allocating the grid)."""
    path = Path(path)
    if not path.name.lower().endswith(".gz"):
        return True
    return path.stat().st_size * DEFLATE_MAX_RATIO < header.voxels * max(header.bytes_per_pixel, 1)


def check_image_stream(path: str | os.PathLike, header: Header) -> None:
    """The checks of :func:`check_image_file` that pass over the file's bytes: a gzip stream decompresses to its
    end, a NIfTI file holds the voxels its header declares. (It reads 4 MiB at a time and may run beside the
    reader: ITK reads a truncated or corrupt .nii.gz without complaint, zeros or garbage in the missing part.)"""
    path = Path(path)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti(path, header)
    elif path.name.lower().endswith(".gz"):
        _gzip_stream(path)


def check_finite(array: np.ndarray, name: str) -> None:
    """Refuse NaN or infinite voxels (they would turn means and percentiles into empty cells)."""
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(f"{name} holds {bad} NaN or infinite voxel(s); CT values must be finite numbers")


# --- options --------------------------------------------------------------------------------------------------
def check_range(value, option: str, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False) -> None:
    """Refuse an option value outside ``[lo, hi]`` (open ends with ``lo_open`` / ``hi_open``) or not finite."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{option} {value}: must be a finite number")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    high_bad = hi is not None and (value >= hi if hi_open else value > hi)
    if low_bad or high_bad:
        left = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        right = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        raise InputError(f"{option} {value}: must be {' and '.join(s for s in (left, right) if s)}")

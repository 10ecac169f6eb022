"""The working grid of lobe estimation: the lungs' bounding box at a fixed isotropic spacing, CT orientation kept.

Every step (atlas transfer, fissure filter, relabelling) runs on this grid; only the final labels go back to the
CT's own grid (:func:`to_ct_grid`).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ...core.image import CTImage, bounding_box

# 2 mm since session 10 (1.5 mm before): half the time; on 8 held-out phantoms with lobe truth mean lobe Dice 0.914 ->
# 0.926 and on the 5 real CTs 99.0-99.5 % of lung voxels keep their lobe (docs/lobes.md, "Working grid")
WORK_MM = 2.0


def work_reference(lungs: CTImage, spacing_mm: float = WORK_MM, margin_mm: float = 6.0) -> sitk.Image:
    """An empty sitk image (uint8) covering the lungs' bounding box plus ``margin_mm``, ``spacing_mm`` isotropic."""
    found = bounding_box(lungs.array)
    lo_zyx, hi_zyx = np.array([s.start for s in found]), np.array([s.stop - 1 for s in found])
    lo = lungs.index_to_lps(lo_zyx[::-1])[0]
    extent = (hi_zyx - lo_zyx)[::-1] * np.asarray(lungs.spacing)  # (x, y, z) mm along the index axes
    origin = lo - lungs.direction @ np.full(3, margin_mm)
    size = [int(np.ceil((e + 2 * margin_mm) / spacing_mm)) + 1 for e in extent]
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetSpacing((spacing_mm,) * 3)
    ref.SetOrigin(tuple(origin))
    ref.SetDirection(tuple(lungs.direction.ravel()))
    return ref


def resample_onto(image: CTImage | sitk.Image, reference: sitk.Image, interpolator=sitk.sitkNearestNeighbor,
                  default: float = 0.0, transform: sitk.Transform | None = None,
                  pixel=sitk.sitkUInt8) -> np.ndarray:
    """``image`` resampled onto ``reference`` (array ``(Z, Y, X)``), through ``transform`` (reference→image)."""
    src = image.to_sitk() if isinstance(image, CTImage) else image
    out = sitk.Resample(src, reference, transform or sitk.Transform(), interpolator, default, pixel)
    return sitk.GetArrayFromImage(out)


def to_ct_grid(array: np.ndarray, reference: sitk.Image, ct: CTImage) -> np.ndarray:
    """A labelmap on the working grid → the CT's grid (nearest neighbour, 0 outside the working box)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(np.uint8)))
    img.CopyInformation(reference)
    ref = sitk.Image(ct.shape_xyz, sitk.sitkUInt8)
    ref.SetSpacing(ct.spacing)
    ref.SetOrigin(ct.origin)
    ref.SetDirection(tuple(ct.direction.ravel()))
    return sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))

"""Fissure evidence in the CT: thin bright sheets, in vessel-free parenchyma, facing the expected way.

Fissures are pleural sheets (about -800 to -600 HU, under 1 mm thick) in darker parenchyma; vessels are
bright tubes, the pleura a bright wall. On the working grid (2 mm):

1. vessels: HU above ``VESSEL_HU`` after a light Gaussian (σ = 1 mm), grown by one voxel, are replaced by the
   local parenchyma level (a normalised Gaussian mean over vessel-free lung), so tubes leave no ridge; the
   vessels and a band of ``PLEURA_MARGIN_MM`` inside the lung border carry no evidence (vessel-free bands);
2. Hessian of the cleaned HU (clipped to [-1000, -600]) at scale ``SIGMA_MM`` (Gaussian derivative filters,
   ``scipy.ndimage.gaussian_filter`` with derivative orders);
3. sheet response for an expected sheet normal ``n`` (known from the atlas border being searched):
   ``-nᵀHn - |tr H - nᵀHn|`` — a large negative curvature across the sheet and little along it (the plate
   condition of Frangi's measure for M = 2, with the orientation given instead of found), floored at 0.
   Noise blobs and texture, curved every way, score about zero; a sheet facing another way scores low.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

VESSEL_HU = -650.0
PLEURA_MARGIN_MM = 3.0
BACKGROUND_MM = 4.5
SIGMA_MM = 1.5


@dataclass
class SheetEvidence:
    """Hessian components (``hzz, hyy, hxx, hzy, hzx, hyx``, float32 ``(Z, Y, X)``) and where they count."""

    h: tuple[np.ndarray, ...]
    valid: np.ndarray

    def response(self, z: np.ndarray, y: np.ndarray, x: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Sheet response at voxels ``(z, y, x)`` (int arrays) for unit normals ``n`` ``(N, 3)`` in (z, y, x)."""
        hzz, hyy, hxx, hzy, hzx, hyx = (c[z, y, x] for c in self.h)
        nz, ny, nx = n[:, 0], n[:, 1], n[:, 2]
        across = (hzz * nz * nz + hyy * ny * ny + hxx * nx * nx
                  + 2 * (hzy * nz * ny + hzx * nz * nx + hyx * ny * nx))
        along = hzz + hyy + hxx - across
        r = -across - np.abs(along)
        return np.where(self.valid[z, y, x], np.maximum(r, 0.0), 0.0).astype(np.float32)


def sheet_evidence(ct_hu: np.ndarray, lung: np.ndarray, spacing_mm: float,
                   sigma_mm: float = SIGMA_MM) -> SheetEvidence:
    """The Hessian of the vessel-cleaned CT inside ``lung`` (see the module doc); ``ct_hu`` float HU
    ``(Z, Y, X)`` on an isotropic grid of ``spacing_mm``, ``lung`` boolean on the same grid."""
    ct_hu = ct_hu.astype(np.float32)
    light = ndimage.gaussian_filter(ct_hu, 1.0 / spacing_mm)
    vessel = ndimage.binary_dilation(light > VESSEL_HU)
    inner = ndimage.binary_erosion(lung, iterations=max(1, int(round(PLEURA_MARGIN_MM / spacing_mm))))
    valid = inner & ~vessel
    hu = np.clip(ct_hu, -1000.0, -600.0)
    w = valid.astype(np.float32)
    s = BACKGROUND_MM / spacing_mm
    bg = ndimage.gaussian_filter(hu * w, s) / np.maximum(ndimage.gaussian_filter(w, s), 1e-3)
    clean = np.where(valid, hu, np.where(lung, bg, -1000.0)).astype(np.float32)
    sig = sigma_mm / spacing_mm
    scale = sigma_mm ** 2 / spacing_mm ** 2  # scale-normalised second derivatives, per mm² → comparable scales
    orders = [(2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)]  # zz yy xx zy zx yx
    h = tuple((ndimage.gaussian_filter(clean, sig, order=o) * scale).astype(np.float32) for o in orders)
    return SheetEvidence(h=h, valid=valid)

"""Acquisition perturbations of a real or phantom CT, for the robustness bench (bench/bench_acquisition.py,
docs/acquisition.md): lower dose with the scan's own noise texture, thicker slices, a kernel change.

- :func:`lower_dose`: noise added so the noise variance becomes ``factor`` times the scan's; its spectrum is the
  scan's own, band by band (the in-plane bands of :mod:`drasclr.harmonize`, measured in uniform soft tissue; the
  coarse remainder from the local SD), so a soft-kernel scan gets coarse grain and a sharp one fine grain.
  Quantum noise variance goes as 1/dose: twice the SD is about a quarter of the dose.
- :func:`thicker_slices`: consecutive slices averaged to about ``thickness_mm`` (partial volume as a scanner
  reconstructing thicker slices from the same data).
- :func:`change_kernel`: a Gaussian MTF change, softer (``sigma_mm`` > 0: blur) or sharper (``sigma_mm`` < 0:
  unsharp masking with that width, gain ``amount``), applied in-plane to signal and noise alike.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .harmonize import NoiseMeasure, _axes, _sigma, bands, measure
from .image import CTImage


def _as_dtype(ct: CTImage, a: np.ndarray) -> CTImage:
    if np.issubdtype(ct.array.dtype, np.integer):
        info = np.iinfo(ct.array.dtype)
        a = np.clip(np.rint(a), info.min, info.max)
    return ct.with_array(a.astype(ct.array.dtype))


def textured_noise(ct: CTImage, noise: NoiseMeasure, sd_scale: float, rng: np.random.Generator) -> np.ndarray:
    """float32 noise on ``ct``'s grid whose band SDs are ``sd_scale`` times the measured ones (see module doc)."""
    axis, sp = _axes(ct)
    w = rng.standard_normal(ct.array.shape, dtype=np.float32)
    band_sd = list(noise.band_sd_hu or [])
    coarse = max(float(noise.tissue_sd_hu or 0.0) ** 2 - sum(b * b for b in band_sd), 0.0) ** 0.5
    out = np.zeros_like(w)
    for target, b in zip([*band_sd, coarse], bands(w, sp, axis)):
        sd = float(b[..., ::3].std())
        if sd > 0 and target > 0:
            out += b * np.float32(sd_scale * target / sd)
    return out


def lower_dose(ct: CTImage, variance_factor: float, seed: int = 0, lungs: CTImage | None = None,
               noise: NoiseMeasure | None = None) -> CTImage:
    """``ct`` with noise of its own texture added so the noise variance is ``variance_factor`` times (>= 1)."""
    noise = noise or measure(ct, lungs)
    if noise.band_sd_hu is None or variance_factor <= 1.0:
        return ct
    add = textured_noise(ct, noise, (variance_factor - 1.0) ** 0.5, np.random.default_rng(seed))
    body = ct.array > -1500  # never into the padding outside the scan circle
    return _as_dtype(ct, np.where(body, ct.array.astype(np.float32) + add, ct.array))


def thicker_slices(ct: CTImage, thickness_mm: float) -> CTImage:
    """Average groups of ``round(thickness_mm / slice spacing)`` consecutive slices (the through-plane axis)."""
    axis, sp = _axes(ct)
    n = int(round(thickness_mm / sp[axis]))
    if n <= 1:
        return ct
    a = np.moveaxis(ct.array.astype(np.float32), axis, 0)
    m = a.shape[0] // n
    avg = a[: m * n].reshape(m, n, *a.shape[1:]).mean(1)
    arr = np.moveaxis(avg, 0, axis)
    spacing = list(ct.spacing)
    spacing[2 - axis] = ct.spacing[2 - axis] * n
    # the new slice centre is the mean of the averaged ones: shift the origin by half the group minus one
    shift = np.zeros(3)
    shift[2 - axis] = 0.5 * (n - 1) * ct.spacing[2 - axis]
    origin = tuple(np.asarray(ct.origin) + ct.direction @ shift)
    out = CTImage(arr, tuple(spacing), origin, ct.direction)
    return _as_dtype(out, arr)


def change_kernel(ct: CTImage, sigma_mm: float, amount: float = 1.0) -> CTImage:
    """Softer (``sigma_mm`` > 0: Gaussian blur) or sharper (< 0: ``a + amount * (a - G|sigma|(a))``), in-plane."""
    axis, sp = _axes(ct)
    a = ct.array.astype(np.float32)
    g = ndi.gaussian_filter(a, _sigma(sp, axis, abs(sigma_mm)), mode="nearest")
    return _as_dtype(ct, g if sigma_mm > 0 else a + np.float32(amount) * (a - g))


def add_gradient(ct: CTImage, lung: np.ndarray, hu: float) -> CTImage:
    """A supine antero-posterior density gradient added inside ``lung`` (bool, on ``ct``'s grid): 0 HU at the most
    anterior lung voxel rising as ``((y - y_ant) / depth) ** 1.5`` to ``hu`` at the most posterior (LPS +y)."""
    k, j, i = np.indices(ct.array.shape, sparse=True)
    sx, sy, sz = ct.spacing
    d = ct.direction[1]
    y = ct.origin[1] + d[0] * sx * i + d[1] * sy * j + d[2] * sz * k
    y = np.broadcast_to(y, ct.array.shape)
    ly = y[lung]
    if ly.size == 0:
        return ct
    t = np.clip((y - ly.min()) / max(float(ly.max() - ly.min()), 1e-6), 0, 1) ** 1.5
    return _as_dtype(ct, np.where(lung, ct.array.astype(np.float32) + np.float32(hu) * t, ct.array))

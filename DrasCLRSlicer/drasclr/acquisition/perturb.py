"""Acquisition perturbations of a real or phantom CT, for the robustness bench (bench/bench_acquisition.py,
docs/acquisition.md): lower dose with the scan's own noise texture, thicker slices, a kernel change.

- :func:`lower_dose`: noise added so the noise variance becomes ``factor`` times the scan's; its spectrum is the
  scan's own noise power spectrum (:func:`noise_power_spectrum`: square ROIs in uniform soft tissue, mean plane
  removed, radially averaged), so a soft-kernel scan gets coarse grain and a sharp one fine grain.
  Quantum noise variance goes as 1/dose: twice the SD is about a quarter of the dose.
- :func:`thicker_slices`: consecutive slices averaged to about ``thickness_mm`` (partial volume as a scanner
  reconstructing thicker slices from the same data).
- :func:`change_kernel`: a Gaussian MTF change, softer (``sigma_mm`` > 0: blur) or sharper (``sigma_mm`` < 0:
  unsharp masking with that width, gain ``amount``), applied in-plane to signal and noise alike.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..core.image import CTImage
from .harmonize import _axes, _local, _sigma, _slices, _tissue_mask


def _as_dtype(ct: CTImage, a: np.ndarray) -> CTImage:
    if np.issubdtype(ct.array.dtype, np.integer):
        info = np.iinfo(ct.array.dtype)
        a = np.clip(np.rint(a), info.min, info.max)
    return ct.with_array(a.astype(ct.array.dtype))


def noise_power_spectrum(ct: CTImage, roi: int = 32, max_rois: int = 400) -> tuple[np.ndarray, np.ndarray, float]:
    """The scan's in-plane noise power spectrum from square ROIs (``roi`` pixels) inside uniform soft tissue (the
    region :func:`drasclr.acquisition.harmonize.measure` uses), each with its mean plane removed -> (radial
    frequencies lp/mm,
    radial NPS (relative), noise SD HU of the ROIs)."""
    axis, sp = _axes(ct)
    a, _ = _slices(ct.array.astype(np.float32), axis)
    m, _ = _local(a, sp, axis)
    tissue = np.moveaxis(_tissue_mask(a, m, sp, axis, None), axis, 0)
    a = np.moveaxis(a, axis, 0)
    psp = [sp[i] for i in range(3) if i != axis]
    yy, xx = np.mgrid[:roi, :roi].astype(np.float32)
    basis = np.stack([np.ones_like(yy), yy, xx], -1).reshape(-1, 3)
    spectra, var = [], []
    for z in range(a.shape[0]):
        full = ndi.minimum_filter(tissue[z], size=roi, mode="constant")  # ROI fully inside tissue, by its centre
        ys, xs = np.nonzero(full[roi // 2: -roi // 2: roi // 2, roi // 2: -roi // 2: roi // 2])
        for y, x in zip(ys * (roi // 2), xs * (roi // 2)):
            p = a[z, y: y + roi, x: x + roi].reshape(-1)
            p = p - basis @ np.linalg.lstsq(basis, p, rcond=None)[0]
            spectra.append(np.abs(np.fft.fft2(p.reshape(roi, roi))) ** 2)
            var.append(float(p.var()))
    if len(spectra) < 20 and roi > 8:  # too little uniform tissue for this ROI size: smaller ROIs
        return noise_power_spectrum(ct, roi // 2, max_rois)
    if not spectra:
        raise ValueError("no uniform soft-tissue region for a noise power spectrum")
    idx = np.random.default_rng(0).permutation(len(spectra))[:max_rois]
    nps = np.mean([spectra[i] for i in idx], 0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(roi, psp[0]), np.fft.fftfreq(roi, psp[1]), indexing="ij"))
    step = 1.0 / (roi * max(psp))
    bins = np.rint(f / step).astype(int)
    radial = np.bincount(bins.ravel(), nps.ravel()) / np.maximum(np.bincount(bins.ravel()), 1)
    return np.arange(radial.size) * step, radial, float(np.sqrt(np.median(var)))


def textured_noise(ct: CTImage, sd: float, rng: np.random.Generator, nps=None) -> np.ndarray:
    """float32 noise on ``ct``'s grid with the scan's own NPS (:func:`noise_power_spectrum`), SD ``sd`` HU."""
    axis, sp = _axes(ct)
    freqs, radial, _ = nps if nps is not None else noise_power_spectrum(ct)
    shape = np.moveaxis(np.empty(ct.array.shape, np.uint8), axis, 0).shape
    psp = [sp[i] for i in range(3) if i != axis]
    f = np.hypot(np.fft.fftfreq(shape[1], psp[0])[:, None], np.fft.rfftfreq(shape[2], psp[1])[None, :])
    amp = np.sqrt(np.interp(f, freqs, radial, right=0.0)).astype(np.float32)
    out = np.empty(shape, np.float32)
    for z in range(shape[0]):
        out[z] = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape[1:], dtype=np.float32)) * amp, s=shape[1:])
    out *= np.float32(sd / max(float(out[:, ::3, ::3].std()), 1e-6))
    return np.moveaxis(out, 0, axis)


def lower_dose(ct: CTImage, variance_factor: float, seed: int = 0) -> CTImage:
    """``ct`` with noise of its own texture added so the noise variance is ``variance_factor`` times (>= 1)."""
    if variance_factor <= 1.0:
        return ct
    nps = noise_power_spectrum(ct)
    add = textured_noise(ct, nps[2] * (variance_factor - 1.0) ** 0.5, np.random.default_rng(seed), nps)
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

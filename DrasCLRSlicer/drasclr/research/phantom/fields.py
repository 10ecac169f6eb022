"""Smooth random fields and separable linear upsampling (coarse grid -> fine grid), all vectorised.

Fields are float32 arrays indexed ``[z, y, x]``. A coarse grid is upsampled with one interpolation matrix per axis
(exact output shape, no per-voxel Python), which is how every smooth field of the phantom is made cheaply.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def interp_matrix(coarse_pos: np.ndarray, fine_pos: np.ndarray) -> np.ndarray:
    """``(n_fine, n_coarse)`` linear-interpolation weights from sorted coarse positions to fine positions
    (clamped at the ends)."""
    n = len(coarse_pos)
    m = np.zeros((len(fine_pos), n), np.float32)
    if n == 1:
        m[:, 0] = 1.0
        return m
    t = np.interp(fine_pos, coarse_pos, np.arange(n, dtype=float))
    i0 = np.clip(np.floor(t).astype(int), 0, n - 2)
    w = (t - i0).astype(np.float32)
    rows = np.arange(len(fine_pos))
    m[rows, i0] = 1.0 - w
    m[rows, i0 + 1] += w
    return m


def upsample(coarse: np.ndarray, coarse_axes: tuple[np.ndarray, ...], fine_axes: tuple[np.ndarray, ...]) -> np.ndarray:
    """Linear interpolation of ``coarse`` ``(cz, cy, cx)`` sampled at ``coarse_axes`` (positions per axis, mm)
    onto the grid ``fine_axes`` -> ``(nz, ny, nx)`` float32."""
    mz, my, mx = (interp_matrix(c, f) for c, f in zip(coarse_axes, fine_axes))
    a = coarse.astype(np.float32) @ mx.T  # (cz, cy, nx)
    a = np.einsum("yc,zcx->zyx", my, a, optimize=True)  # (cz, ny, nx)
    cz = a.shape[0]
    out = mz @ a.reshape(cz, -1)  # (nz, ny*nx)
    return out.reshape(len(fine_axes[0]), a.shape[1], a.shape[2])


def coarse_axes_for(fine_axes: tuple[np.ndarray, ...], step_mm: float) -> tuple[np.ndarray, ...]:
    """Coarse sample positions covering each fine axis with about ``step_mm`` spacing (one sample beyond each end)."""
    out = []
    for f in fine_axes:
        lo, hi = float(f.min()) - step_mm, float(f.max()) + step_mm
        n = max(2, int(np.ceil((hi - lo) / step_mm)) + 1)
        out.append(np.linspace(lo, hi, n))
    return tuple(out)


def smooth_field(rng: np.random.Generator, fine_axes: tuple[np.ndarray, ...], scale_mm: float) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length about ``scale_mm`` on the grid
    ``fine_axes`` (z, y, x positions in mm) -> ``(nz, ny, nx)`` float32."""
    step = scale_mm / 2.0
    axes = coarse_axes_for(fine_axes, step)
    white = rng.standard_normal(tuple(len(a) for a in axes)).astype(np.float32)
    coarse = ndi.gaussian_filter(white, 1.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    return upsample(coarse, axes, fine_axes)


def coarse_field(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, scale_mm: float):
    """A unit-std smooth field on a coarse box grid from ``lo`` to ``hi`` (mm, z y x); returns ``(values, axes)``
    for :func:`sample_field` at arbitrary points."""
    step = scale_mm / 2.0
    axes = tuple(np.arange(lo[i] - step, hi[i] + 2 * step, step) for i in range(3))
    white = rng.standard_normal(tuple(len(a) for a in axes)).astype(np.float32)
    coarse = ndi.gaussian_filter(white, 1.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    return coarse, axes


def sample_field(values: np.ndarray, axes: tuple[np.ndarray, ...], pts_zyx: np.ndarray) -> np.ndarray:
    """Trilinear sample of a coarse field at ``(N, 3)`` points in mm (z, y, x) -> ``(N,)``."""
    idx = [np.interp(pts_zyx[:, i], axes[i], np.arange(len(axes[i]), dtype=float)) for i in range(3)]
    return ndi.map_coordinates(values, idx, order=1, mode="nearest")

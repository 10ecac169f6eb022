"""Scanner model: in-plane point-spread function (soft or sharp kernel), slice-thickness averaging (partial
volume), kernel-shaped noise, quantisation to int16 HU; and the matching down-sampling of label volumes.

- soft kernel: Gaussian PSF sigma 0.8 mm, smooth noise grain (like a B/STANDARD kernel);
- sharp kernel: Gaussian PSF sigma 0.45 mm plus edge enhancement (unsharp mask), fine-grained noise
  (like a lung L/B70 kernel). Noise std (HU) is set per case, typically 10-25 soft and 40-60 sharp.

Generator version 2 (``KERNELS_V2``, ``NOISE_V2``) models a 512-matrix HRCT: a narrower PSF, fine-grained noise
of 18-30 HU (what real HRCT shows in lung), no hard floor at -1024 (values down to ``FLOOR_V2``, as real
calibrated scanners give air -1000 to -1050). ``air_offset`` adds a constant to every voxel: a scanner whose air
reads -1000 + offset.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .grid import Grid

KERNELS = {
    "soft": {"psf_mm": 0.8, "sharpen": 0.0, "grain_mm": 0.9},
    "sharp": {"psf_mm": 0.45, "sharpen": 0.8, "grain_mm": 0.35},
}

KERNELS_V2 = {
    "soft": {"psf_mm": 0.55, "sharpen": 0.0, "grain_mm": 0.45},
    "sharp": {"psf_mm": 0.45, "sharpen": 0.3, "grain_mm": 0.35},
}
NOISE_V2 = {"soft": (12.0, 20.0), "sharp": (16.0, 24.0)}  # HU std range drawn per case
FLOOR_V2 = -1100.0


def acquire(grid: Grid, hu_fine: np.ndarray, kernel: str, noise_hu: float, rng: np.random.Generator,
            version: str = "1", air_offset: float = 0.0) -> np.ndarray:
    """Fine-grid true HU ``(nz*k, ny, nx)`` float32 -> reconstructed CT ``(nz, ny, nx)`` int16."""
    kp = (KERNELS_V2 if version == "2" else KERNELS)[kernel]
    sp = grid.spacing
    # slice profile: average the k sub-slices of each slice
    a = hu_fine.reshape(grid.nz, grid.k, grid.ny, grid.nx).mean(1, dtype=np.float32) if grid.k > 1 else hu_fine
    s = kp["psf_mm"] / sp
    img = ndi.gaussian_filter(a, (0, s, s), mode="nearest")
    if kp["sharpen"] > 0:
        wide = ndi.gaussian_filter(img, (0, 1.6 / sp, 1.6 / sp), mode="nearest")
        img = img + kp["sharpen"] * (img - wide)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    g = kp["grain_mm"] / sp
    if g > 0.3:
        noise = ndi.gaussian_filter(noise, (0, g, g), mode="wrap")
    if kp["sharpen"] > 0:
        noise = noise + 0.6 * (noise - ndi.uniform_filter(noise, (1, 3, 3), mode="wrap"))
    noise *= noise_hu / max(float(noise[:, ::4, ::4].std()), 1e-6)
    img = img + noise
    if air_offset:
        img = img + np.float32(air_offset)
    floor = FLOOR_V2 if version == "2" else -1024
    return np.clip(np.rint(img), floor + (air_offset if version == "2" else 0), 3071).astype(np.int16)


def downsample_labels(grid: Grid, lobes_fine: np.ndarray, sub_fine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fine-grid labels -> output grid: a voxel is lung when at least half its sub-slices are; it takes the most
    frequent lobe and the most frequent subtype among them. ``(nz, ny, nx)`` uint8 each."""
    if grid.k == 1:
        return lobes_fine.copy(), sub_fine.copy()
    shp = (grid.nz, grid.k, grid.ny, grid.nx)
    lf = lobes_fine.reshape(shp)
    sf = sub_fine.reshape(shp)
    lung = (lf > 0).sum(1) * 2 >= grid.k
    lobe_counts = np.stack([(lf == v).sum(1) for v in range(1, 6)])
    sub_counts = np.stack([(sf == v).sum(1) for v in range(1, 5)])
    lobes = np.where(lung, lobe_counts.argmax(0) + 1, 0).astype(np.uint8)
    sub = np.where(lung, sub_counts.argmax(0) + 1, 0).astype(np.uint8)
    return lobes, sub

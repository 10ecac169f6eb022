"""Acquisition perturbations of HU patches or slices, for measuring and training the reference classifier across
scanners (docs/reference_classifier.md): more noise, a sharper reconstruction kernel, an HU offset.

- **noise** (``noise_x``): the image's own noise SD is estimated from its finest scale (the median absolute
  deviation of the difference between horizontally adjacent pixels, / 0.6745 / √2 — texture makes this an upper
  bound, so the added noise errs on the harsh side); white Gaussian noise of SD ``σ·√(x² - 1)`` brings it to
  ``x`` times.
- **sharp kernel** (``sharp``): an unsharp mask ``p + a·(p - G_1px * p)``: a bone/lung-kernel look (edge
  overshoot and amplified fine-scale noise, as a B70f/L against a B30f/B kernel), ``a`` = 1 by default.
- **offset** (``offset_hu``): every pixel ``offset_hu`` HU higher (a miscalibrated scanner).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

KINDS = ("clean", "noise_x2", "sharp", "offset_+40", "offset_-40")


def noise_sd(img: np.ndarray) -> float:
    """Estimated noise SD (HU) of a 2-D image or a stack of them (last two axes in-plane)."""
    d = np.diff(np.asarray(img, np.float32), axis=-1)
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2.0))


def add_noise(img: np.ndarray, x: float, rng: np.random.Generator) -> np.ndarray:
    """Noise SD brought to ``x`` times the image's own (per 2-D image when given a stack)."""
    img = np.asarray(img, np.float32)
    flat = img.reshape(-1, *img.shape[-2:])
    out = np.stack([p + rng.normal(0.0, noise_sd(p) * np.sqrt(max(x * x - 1.0, 0.0)), p.shape) for p in flat])
    return out.reshape(img.shape)


def sharpen(img: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Unsharp mask in-plane (sigma 1 px), per 2-D image."""
    img = np.asarray(img, np.float32)
    sigma = (0,) * (img.ndim - 2) + (1.0, 1.0)
    return img + amount * (img - ndi.gaussian_filter(img, sigma))


def perturb(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` (HU, float32) under one of :data:`KINDS`."""
    img = np.asarray(img, np.float32)
    if kind == "clean":
        return img
    if kind.startswith("noise_x"):
        return add_noise(img, float(kind[len("noise_x"):]), rng)
    if kind == "sharp":
        return sharpen(img)
    if kind.startswith("offset_"):
        return img + float(kind[len("offset_"):])
    raise ValueError(f"unknown perturbation {kind!r}")

"""Synthetic HRCT windows and slices for the reference-classifier tests (no shared data needed).

Textures mimic what the real expert-labelled patches show: normal lung about -875 HU with 25-35 HU fine-grain
noise and small vessel dots; PLE homogeneous dark lung about -980 HU without vessels; CLE normal lung with many
small lucencies; PSE a row of large subpleural bullae beside the chest wall.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from drasclr.core.image import CTImage


def texture(rng, shape, base, sd, vessels_per_cm2=0.0, pixel_mm=0.65):
    a = base + ndi.gaussian_filter(rng.normal(0, 1, shape), 0.7) * sd * 2.2
    n = int(round(vessels_per_cm2 * shape[0] * shape[1] * (pixel_mm / 10) ** 2))
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    for y, x in rng.integers(0, min(shape), (n, 2)):
        a[(yy - y) ** 2 + (xx - x) ** 2 <= 1.5] = -50
    return a


def lucencies(rng, a, n, radius, hu):
    yy, xx = np.ogrid[: a.shape[0], : a.shape[1]]
    for y, x in zip(rng.integers(0, a.shape[0], n), rng.integers(0, a.shape[1], n)):
        disc = (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
        a[disc] = hu + rng.normal(0, 15, int(disc.sum()))
    return a


def with_wall(rng, a, frac):
    a = a.copy()
    w = int(round(frac * a.shape[1]))
    a[:, :w] = 40 + rng.normal(0, 20, (a.shape[0], w))
    return a


def window(rng, kind: str, n: int = 31) -> np.ndarray:
    """One ``n`` x ``n`` HU window of ``kind``: normal, ple, cle, pse, normal+wall."""
    s = (n, n)
    if kind == "normal":
        return texture(rng, s, -875, 30, 1.0)
    if kind == "ple":
        return texture(rng, s, -980, 14)
    if kind == "cle":
        return lucencies(rng, texture(rng, s, -880, 30, 1.0), 14, 3, -985)
    if kind == "pse":
        return with_wall(rng, lucencies(rng, texture(rng, s, -900, 30, 0.3), 3, 7, -995), 0.33)
    if kind == "normal+wall":
        return with_wall(rng, texture(rng, s, -875, 30, 1.0), 0.33)
    raise ValueError(kind)


def chest_slice(seed: int = 0, size: int = 320, pixel_mm: float = 0.7, left: str = "ple",
                right: str = "normal", n_slices: int = 1, slice_mm: float = 1.0) -> tuple[CTImage, np.ndarray]:
    """An axial HRCT-like image (``n_slices`` copies with fresh noise): air, an elliptical body, two lungs whose
    parenchyma is ``left`` / ``right`` texture (normal or ple). Returns ``(ct, truth)`` with truth 1 right lung,
    2 left lung (x index increasing = patient's left, LPS)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    body = ((xx - c) / (0.46 * size)) ** 2 + ((yy - c) / (0.36 * size)) ** 2 < 1
    truth = np.zeros((size, size), np.uint8)
    for label, cx in ((1, 0.30 * size), (2, 0.70 * size)):
        truth[((xx - cx) / (0.13 * size)) ** 2 + ((yy - c) / (0.25 * size)) ** 2 < 1] = label
    slices = []
    for _ in range(n_slices):
        img = np.full((size, size), -1000.0) + rng.normal(0, 20, (size, size))
        img[body] = 40 + rng.normal(0, 20, int(body.sum()))
        for label, kind in ((1, right), (2, left)):
            tex = texture(rng, (size, size), -980, 14) if kind == "ple" else texture(rng, (size, size), -875, 30, 1.0)
            img[truth == label] = tex[truth == label]
        slices.append(img)
    arr = np.stack(slices).round().astype(np.int16)
    ct = CTImage(arr, spacing=(pixel_mm, pixel_mm, slice_mm), origin=(-90.0, -90.0, -50.0))
    return ct, np.broadcast_to(truth, arr.shape).copy()

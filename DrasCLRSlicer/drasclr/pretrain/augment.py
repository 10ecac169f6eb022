"""Patch intensities and augmentations (MONAI), as in the DrasCLR reference.

Order: clip HU to [-1024, 240] and shift by +1024 (air = 0, so the affine's zero padding is air), random
affine, scale to about [-1, 1] (``/ 632 - 1``), then Gaussian noise and contrast on the scaled patch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandGaussianNoise

from ..core.intensity import HU_MAX, HU_MIN  # one definition of the intensity window

HALF_RANGE = (HU_MAX - HU_MIN) / 2.0  # 632


def shift_hu(patch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HU -> clipped to [-1024, 240] and shifted to [0, 1264] (float32 tensor, same shape)."""
    t = torch.as_tensor(np.array(patch, dtype=np.float32, copy=True))
    return t.clamp(HU_MIN, HU_MAX) - HU_MIN


def scale_shifted(t: torch.Tensor) -> torch.Tensor:
    """[0, 1264] -> [-1, 1]."""
    return t / HALF_RANGE - 1.0


def normalise_hu(patch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HU patch -> encoder input in [-1, 1] without augmentation (inference, feature extraction)."""
    return scale_shifted(shift_hu(patch))


class PatchAugment:
    """Random view of one patch: ``(1, 32, 32, 32)`` HU (int16 or float) -> ``(1, 32, 32, 32)`` float in ~[-1, 1].

    Defaults are the paper's: translate +-12 voxels, rotate +-10 degrees, scale +-0.1 (always applied),
    Gaussian noise (p 0.25) and contrast adjustment (p 0.25). ``strength`` 0 turns everything off.
    """

    def __init__(self, translate: float = 12.0, rotate_deg: float = 10.0, scale: float = 0.1,
                 noise_prob: float = 0.25, noise_std: float = 0.05, contrast_prob: float = 0.25,
                 gamma: tuple[float, float] = (0.7, 1.5), strength: float = 1.0, seed: int | None = None,
                 size: int = 32):
        self.enabled = strength > 0
        rot = math.radians(rotate_deg) * strength
        self.affine = RandAffine(prob=1.0, rotate_range=(rot, rot, rot), translate_range=(translate * strength,) * 3,
                                 scale_range=(scale * strength,) * 3, padding_mode="zeros", mode="bilinear",
                                 cache_grid=True, spatial_size=(size,) * 3)
        self.post = Compose([RandGaussianNoise(prob=noise_prob * strength, std=noise_std),
                             RandAdjustContrast(prob=contrast_prob * strength, gamma=gamma)])
        if seed is not None:
            self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        self.affine.set_random_state(seed)
        self.post.set_random_state(seed + 1)

    def __call__(self, patch: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = shift_hu(patch)
        if t.ndim == 3:
            t = t[None]
        if not self.enabled:
            return scale_shifted(t)
        t = scale_shifted(_plain(self.affine(t)))
        return _plain(self.post(t)).float()


def _plain(t) -> torch.Tensor:
    """MONAI returns MetaTensors; the batches want plain tensors."""
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)

"""CT intensity normalisation shared by pretraining, training and inference (one definition).

As in the reference: clip to [-1024, 240] HU, shift by +1024, then scale to [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch

HU_MIN, HU_MAX = -1024.0, 240.0


def normalise_hu(x):
    """HU (numpy array or tensor, any shape) -> float32 in [-1, 1]."""
    if isinstance(x, torch.Tensor):
        x = x.float().clamp(HU_MIN, HU_MAX)
    else:
        x = np.clip(np.asarray(x, dtype=np.float32), HU_MIN, HU_MAX)
    return (x - HU_MIN) / ((HU_MAX - HU_MIN) / 2.0) - 1.0

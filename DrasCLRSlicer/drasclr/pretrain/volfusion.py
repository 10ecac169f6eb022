"""Volume fusion (MIS-FM, Wang et al. 2023): segment the fusion coefficient of every voxel of a fused crop.

Sampling (``fusion_classes``): a foreground crop ``fg`` and a background crop ``bg`` (lung-centred, ``crop``^3 at
1 mm, normalised HU, usually from two different cases); cuboid blocks with random sides in
``[block_min, block_max]`` and a random class ``c`` in 1..K-1 are written one after another (later blocks
overwrite earlier ones) into a class map that starts at 0; the coefficient is ``alpha = c / (K - 1)`` (K = 4:
{0, 1/3, 2/3, 1}, class 0 = untouched background) and ``fused = (1 - alpha) * bg + alpha * fg``.

Network (``VolFusionObjective``): :class:`drasclr.dense.segmenter.SubtypeSegmenter` with K output classes, i.e.
a U-Net whose encoder IS the DrasCLR encoder (same widths) and whose decoder is the dense head's; after
pretraining, the encoder's weights load straight into the subtype segmenter (``finetune cohort --encoder``).
Loss: cross-entropy + soft Dice over the K classes. The location input is the crop centre's position in the
lung box (see :mod:`drasclr.pretrain.volumes`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .augment import normalise_hu
from .volumes import VolumeCache


def fusion_classes(size: int, rng: np.random.Generator, n_classes: int = 4, block_min: int = 8,
                   block_max: int = 32, max_blocks: int = 10) -> np.ndarray:
    """``(size, size, size)`` uint8 class map: 0 background, 1..K-1 blocks (1 to ``max_blocks`` of them)."""
    cls = np.zeros((size,) * 3, np.uint8)
    hi = min(block_max, size)
    lo = min(block_min, hi)
    for _ in range(int(rng.integers(1, max_blocks + 1))):
        side = rng.integers(lo, hi + 1, size=3)
        corner = rng.integers(0, size - side + 1)
        z, y, x = corner
        cls[z:z + side[0], y:y + side[1], x:x + side[2]] = rng.integers(1, n_classes)
    return cls


def coefficients(classes: np.ndarray | torch.Tensor, n_classes: int = 4):
    """Class map -> fusion coefficient ``alpha = class / (K - 1)`` (float32)."""
    if torch.is_tensor(classes):
        return classes.float() / (n_classes - 1)
    return classes.astype(np.float32) / (n_classes - 1)


def fuse(fg, bg, classes, n_classes: int = 4):
    """``(1 - alpha) * bg + alpha * fg`` with ``alpha`` from the class map (arrays or tensors of one shape)."""
    alpha = coefficients(classes, n_classes)
    return (1.0 - alpha) * bg + alpha * fg


class FusionSamples(Dataset):
    """Item ``g`` (a global sample number; the draw depends only on ``(seed, g)``) -> dict of tensors::

        image   (1, S, S, S) fused normalised intensities
        target  (S, S, S)    int64 coefficient class (0..K-1)
        loc     (3,)         the background crop centre in its lung box, [-1, 1]
        subject () int64     the background case
    """

    def __init__(self, cache: VolumeCache, crop: int = 64, n_classes: int = 4, block_min: int = 8,
                 block_max: int = 32, max_blocks: int = 10, seed: int = 0):
        self.cache, self.crop, self.k, self.seed = cache, int(crop), int(n_classes), int(seed)
        self.block_min, self.block_max, self.max_blocks = int(block_min), int(block_max), int(max_blocks)

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, g: int) -> dict:
        rng = np.random.default_rng([self.seed, int(g)])
        n = self.cache.n_subjects
        s_bg = int(rng.integers(n))
        s_fg = int((s_bg + rng.integers(1, n)) % n) if n > 1 else s_bg
        c_bg = self.cache.lung_centred_corner(s_bg, self.crop, rng)
        c_fg = self.cache.lung_centred_corner(s_fg, self.crop, rng)
        bg = normalise_hu(self.cache.crop(s_bg, c_bg, self.crop))
        fg = normalise_hu(self.cache.crop(s_fg, c_fg, self.crop))
        cls = torch.from_numpy(fusion_classes(self.crop, rng, self.k, self.block_min, self.block_max,
                                              self.max_blocks))
        loc = self.cache.location(s_bg, c_bg + self.crop / 2.0)
        return {"image": fuse(fg, bg, cls, self.k)[None], "target": cls.long(), "loc": torch.from_numpy(loc),
                "subject": torch.tensor(s_bg)}


def dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - mean soft Dice over the classes present). ``(B, K, ...)``, ``(B, ...)``."""
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits.float(), 1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dims = tuple(i for i in range(prob.ndim) if i != 1)
    inter, denom = (prob * onehot).sum(dims), prob.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * inter + 1) / (denom + 1)
    return ce + (1 - dice[present]).mean()


class VolFusionObjective(nn.Module):
    """U-Net = DrasCLR-family encoder (``encoder_q``) + the dense decoder with K outputs. ``forward(batch)``.

    ``batch``: ``image`` ``(B, 1, S, S, S)``, ``target`` ``(B, S, S, S)``, ``loc`` ``(B, 3)``.
    """

    def __init__(self, encoder_config: dict | None = None, n_classes: int = 4, encoder_arch: str = "DrasCLREncoder"):
        super().__init__()
        from ..dense.segmenter import SubtypeSegmenter

        self.net = SubtypeSegmenter(encoder=encoder_config, num_classes=n_classes, encoder_arch=encoder_arch)

    @property
    def encoder_q(self) -> nn.Module:
        return self.net.encoder

    def query_parameters(self):
        return list(self.net.parameters())

    def queue_bytes(self) -> int:
        return 0

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = self.net(batch["image"], batch["loc"])
        target = batch["target"]
        loss = dice_ce(logits.float(), target)
        acc = (logits.argmax(1) == target).float().mean()
        return loss, {"loss": loss.detach(), "acc_voxel": acc}

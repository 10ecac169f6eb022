"""VoCo (Wu et al., CVPR 2024): volume contrast by predicting where random crops lie among base crops.

Geometry (all at 1 mm, crops of ``crop``^3 voxels = the encoder's 32^3 patch): a lung-centred region of
``grid`` x ``grid`` x ``grid`` base crops (non-overlapping, tiling the region) acts as ``n = grid^3`` classes;
``m`` random crops of the same size are drawn inside the region, and each is labelled by its overlap fraction with
every base crop (``overlap_fractions``; inside the region a row sums to 1).

Objective (``VoCoObjective``), for one region with student encoder f/projector g and EMA teacher f_t/g_t:

- prediction: ``l_ij = ReLU(cos(g(f(random_i)), g_t(f_t(base_j))))`` and
  ``L_pred = -mean_ij log(1 - |y_ij - l_ij| + eps)`` (the paper's Eq. 3);
- regulariser: base crops of the student pushed apart, ``L_reg = mean_{j != k} |cos(g(f(base_j)), g(f(base_k)))|``;
- total = L_pred + ``reg_weight`` * L_reg; the teacher follows the student by EMA (momentum m).

The location input of the (location-conditioned) encoder is ZERO for every crop: giving it the crop's position
would hand the network the answer of this position-prediction task.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..model import DrasCLREncoder, ProjectionHead
from .augment import normalise_hu
from .volumes import VolumeCache

EPS = 1e-6


def base_corners(grid: int, crop: int) -> np.ndarray:
    """``(grid^3, 3)`` corners (z, y, x) of the base crops relative to the region corner, z slowest."""
    r = np.arange(grid) * crop
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def overlap_fractions(crops: np.ndarray, bases: np.ndarray, crop: int) -> np.ndarray:
    """Overlap volume of every crop with every base crop over ``crop``^3: ``(m, 3), (n, 3) -> (m, n)`` float32.

    All boxes are cubes of side ``crop`` given by their corners.
    """
    a = np.asarray(crops, np.float64)[:, None, :]
    b = np.asarray(bases, np.float64)[None, :, :]
    side = np.clip(np.minimum(a, b) + crop - np.maximum(a, b), 0, None)
    return (side.prod(-1) / float(crop) ** 3).astype(np.float32)


def random_corners(grid: int, crop: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``(m, 3)`` corners of random crops lying fully inside the ``grid * crop`` region."""
    return rng.integers(0, grid * crop - crop + 1, size=(m, 3))


class VoCoSamples(Dataset):
    """Item ``g`` (a global sample number; the draw depends only on ``(seed, g)``) -> dict of tensors::

        base    (n, 1, crop, crop, crop)  the base crops of one lung-centred region (normalised HU)
        crops   (m, 1, crop, crop, crop)  random crops inside the region
        labels  (m, n)                    overlap fractions
        subject () int64
    """

    def __init__(self, cache: VolumeCache, grid: int = 3, crops: int = 4, crop: int = 32, seed: int = 0):
        self.cache, self.grid, self.m, self.crop, self.seed = cache, int(grid), int(crops), int(crop), int(seed)
        self.bases = base_corners(self.grid, self.crop)

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, g: int) -> dict:
        rng = np.random.default_rng([self.seed, int(g)])
        subj = int(rng.integers(self.cache.n_subjects))
        size = self.grid * self.crop
        region = self.cache.crop(subj, self.cache.lung_centred_corner(subj, size, rng), size)
        rand = random_corners(self.grid, self.crop, self.m, rng)
        c = self.crop

        def cut(corners):
            return torch.stack([normalise_hu(region[z:z + c, y:y + c, x:x + c]) for z, y, x in corners])[:, None]

        return {"base": cut(self.bases), "crops": cut(rand),
                "labels": torch.from_numpy(overlap_fractions(rand, self.bases, c)), "subject": torch.tensor(subj)}


def prediction_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``-mean log(1 - |labels - logits| + eps)``; both ``(..., n)`` in [0, 1]."""
    return -torch.log(1.0 - (labels - logits).abs() + EPS).mean()


def regulariser(z: torch.Tensor) -> torch.Tensor:
    """Mean ``|cos|`` between different rows of ``z`` ``(B, n, d)`` (L2-normalised) -> scalar."""
    n = z.shape[1]
    sim = z @ z.transpose(1, 2)
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    return sim.abs()[:, off].mean()


class VoCoObjective(nn.Module):
    """Student (``encoder_q``, ``head_q``) and EMA teacher (``encoder_k``, ``head_k``). ``forward(batch)``.

    ``batch``: ``base`` ``(B, n, 1, c, c, c)``, ``crops`` ``(B, m, 1, c, c, c)``, ``labels`` ``(B, m, n)``.
    """

    def __init__(self, encoder_config: dict | None = None, dim: int = 128, momentum: float = 0.99,
                 reg_weight: float = 1.0, encoder_cls: type = DrasCLREncoder):
        super().__init__()
        self.encoder_q = encoder_cls(**(encoder_config or {}))
        self.head_q = ProjectionHead(self.encoder_q.rep_dim, dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.m, self.reg_weight = momentum, reg_weight

    def key_parameters(self):
        return list(self.encoder_k.parameters()) + list(self.head_k.parameters())

    def query_parameters(self):
        return list(self.encoder_q.parameters()) + list(self.head_q.parameters())

    def queue_bytes(self) -> int:
        return 0

    @torch.no_grad()
    def momentum_update(self) -> None:
        for pk, pq in zip(self.key_parameters(), self.query_parameters()):
            pk.mul_(self.m).add_(pq.detach(), alpha=1.0 - self.m)

    @staticmethod
    def _embed(enc, head, x: torch.Tensor) -> torch.Tensor:
        """``(B, k, 1, c, c, c)`` -> ``(B, k, d)`` L2-normalised, location input zero."""
        b, k = x.shape[:2]
        flat = x.flatten(0, 1)
        loc = torch.zeros(flat.shape[0], 3, dtype=flat.dtype, device=flat.device)
        return F.normalize(head(enc(flat, loc)).float(), dim=-1).view(b, k, -1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        base, crops, labels = batch["base"], batch["crops"], batch["labels"].float()
        zq = self._embed(self.encoder_q, self.head_q, crops)            # (B, m, d)
        zb = self._embed(self.encoder_q, self.head_q, base)             # (B, n, d)
        with torch.no_grad():
            self.momentum_update()
            zt = self._embed(self.encoder_k, self.head_k, base)         # (B, n, d)
        logits = F.relu(zq @ zt.transpose(1, 2))                        # (B, m, n)
        l_pred = prediction_loss(logits, labels)
        l_reg = regulariser(zb)
        loss = l_pred + self.reg_weight * l_reg
        hit = (logits.argmax(-1) == labels.argmax(-1)).float().mean()
        return loss, {"loss": loss.detach(), "loss_pred": l_pred.detach(), "loss_reg": l_reg.detach(),
                      "acc_position": hit}

"""Heads on top of the encoder's 128-d representation."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MoCo v2 projection for the contrastive loss: Linear(d, d) -> ReLU -> Linear(d, out).

    ``(B, d)`` -> ``(B, out)`` (not normalised; the objective L2-normalises).
    """

    def __init__(self, dim: int = 128, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)

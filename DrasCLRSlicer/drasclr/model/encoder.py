"""The DrasCLR encoder: a 3-D CNN whose every convolution is conditioned on anatomical location.

Layer list (as published; each conv 3x3x3, padding 1, followed by BatchNorm3d and ELU), for a 32^3 patch:

====== ============================ ===================== ==================
stage  layers                       output (channels)     output size
====== ============================ ===================== ==================
0      conv 1->8                    8                     32^3
1      conv 8->8 stride 2           8                     16^3
2      block 8->16 (conv, conv, s2) 16                    8^3
3      block 16->32                 32                    4^3
4      block 32->64                 64                    2^3
5      conv 64->128                 128                   2^3
6      conv 128->128 stride 2       128                   1^3  -> flattened: the 128-d representation
====== ============================ ===================== ==================

About 8.3 M parameters with 8 experts. ``channels`` and ``num_experts`` can be made smaller for tests.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.architecture import DEFAULT_CHANNELS, PATCH_SIZE  # noqa: F401 (re-exported by drasclr.model)
from .condconv import CondConv3d, set_condconv_mode


class ConvBNAct(nn.Module):
    """CondConv3d -> BatchNorm3d -> ELU. ``(B, C_in, D, H, W), (B, 3)`` -> ``(B, C_out, D', H', W')``."""

    def __init__(self, cin: int, cout: int, stride: int = 1, num_experts: int = 8):
        super().__init__()
        self.conv = CondConv3d(cin, cout, 3, stride=stride, padding=1, num_experts=num_experts)
        self.bn = nn.BatchNorm3d(cout)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, loc)))


class Block(nn.Module):
    """conv cin->cout, conv cout->cout, conv cout->cout stride 2 (each with BatchNorm3d and ELU)."""

    def __init__(self, cin: int, cout: int, num_experts: int = 8):
        super().__init__()
        self.layers = nn.ModuleList([ConvBNAct(cin, cout, 1, num_experts), ConvBNAct(cout, cout, 1, num_experts),
                                     ConvBNAct(cout, cout, 2, num_experts)])

    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, loc)
        return x


class DrasCLREncoder(nn.Module):
    """Anatomy-conditioned patch encoder.

    ``forward(x, loc)``: ``x`` ``(B, 1, 32, 32, 32)`` intensities scaled to about [-1, 1] (see
    ``drasclr.pretrain.augment.normalise_hu``), ``loc`` ``(B, 3)`` normalised atlas location in about [-1, 1]
    -> ``(B, rep_dim)`` representation (128-d by default).

    ``forward_features(x, loc)`` -> list of the 7 stage outputs (see the module docstring), for dense heads:
    ``[(B,8,32,32,32), (B,8,16,16,16), (B,16,8,8,8), (B,32,4,4,4), (B,64,2,2,2), (B,128,2,2,2), (B,128,1,1,1)]``
    with the default channels.
    """

    architecture = "DrasCLREncoder"

    def __init__(self, channels: tuple[int, ...] = DEFAULT_CHANNELS, num_experts: int = 8,
                 in_channels: int = 1):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 7:
            raise ValueError(f"channels needs 7 numbers (one per stage), got {channels}")
        self.channels, self.num_experts, self.in_channels = channels, int(num_experts), int(in_channels)
        c = channels
        e = self.num_experts
        self.stages = nn.ModuleList([
            ConvBNAct(in_channels, c[0], 1, e),
            ConvBNAct(c[0], c[1], 2, e),
            Block(c[1], c[2], e),
            Block(c[2], c[3], e),
            Block(c[3], c[4], e),
            ConvBNAct(c[4], c[5], 1, e),
            ConvBNAct(c[5], c[6], 2, e),
        ])

    @property
    def rep_dim(self) -> int:
        return self.channels[-1]

    def config(self) -> dict:
        """Constructor arguments (stored in model cards; ``DrasCLREncoder(**config)`` rebuilds it)."""
        return {"channels": list(self.channels), "num_experts": self.num_experts, "in_channels": self.in_channels}

    def _check(self, x: torch.Tensor, loc: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if loc.ndim != 2 or loc.shape[0] != x.shape[0] or loc.shape[1] != 3:
            raise ValueError(f"loc must be (B, 3) with B = {x.shape[0]}, got {tuple(loc.shape)}")

    def forward_features(self, x: torch.Tensor, loc: torch.Tensor) -> list[torch.Tensor]:
        """All stage outputs, from full resolution (stage 0) to the 1^3 map (stage 6)."""
        self._check(x, loc)
        loc = loc.to(x.dtype) if x.is_floating_point() else loc
        feats = []
        for stage in self.stages:
            x = stage(x, loc)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        self._check(x, loc)
        for stage in self.stages:
            x = stage(x, loc)
        # the last map is 1^3 for 32^3 patches; average over space so other patch sizes still give a vector
        return x.mean(dim=(2, 3, 4)) if x.shape[2:].numel() > 1 else x.flatten(1)

    def set_condconv_mode(self, mode: str) -> DrasCLREncoder:
        """Force one CondConv computation mode (see ``drasclr.model.condconv.MODES``)."""
        set_condconv_mode(self, mode)
        return self


class PlainEncoder(DrasCLREncoder):
    """The same network with plain ``nn.Conv3d`` layers (no location conditioning).

    Used as the speed floor in the benchmark and as the "no location" ablation; ``loc`` is accepted and ignored.
    """

    architecture = "PlainEncoder"

    def __init__(self, channels: tuple[int, ...] = DEFAULT_CHANNELS, num_experts: int = 8, in_channels: int = 1):
        super().__init__(channels, num_experts, in_channels)
        for m in list(self.modules()):
            if isinstance(m, ConvBNAct):
                cc = m.conv
                m.conv = _PlainConv(cc.in_channels, cc.out_channels, cc.stride)


class _PlainConv(nn.Conv3d):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(cin, cout, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor, loc: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        return super().forward(x)

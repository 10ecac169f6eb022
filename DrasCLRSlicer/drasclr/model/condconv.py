"""Location-conditioned 3-D convolution (CondConv) without a Python loop over samples.

A ``CondConv3d`` holds ``E`` expert kernels ``W_e`` of shape ``(C_out, C_in, k, k, k)`` and one bias
``(C_out,)``. For a sample at anatomical location ``loc`` (3 numbers in about [-1, 1]) the kernel is

    W(loc) = sum_e  sigmoid(Linear(3 -> E)(loc))_e * W_e

(routing by location only; the image content does not route), and the output is ``conv3d(x, W(loc)) + b``.

The naive way (the reference code) runs one ``conv3d`` per sample. Here the batch is computed in one of these
ways, chosen per call (``mode="auto"``) so that conditioning costs almost nothing over a plain ``Conv3d``:

- ``shared``: every sample has the same location (the training case: one location per mini-batch) -> one
  mixed kernel, one batched convolution.
- ``grouped``: several locations, large feature maps -> per-sample kernels (one small matrix product), one
  grouped convolution with ``groups = B`` (the batch folded into channels; channels-last when one input
  channel, where oneDNN runs it as a fast depthwise convolution).
- ``unique``: a few distinct locations (e.g. a query batch plus its neighbours) -> one shared-kernel
  convolution per distinct location.
- ``experts``: several locations, small feature maps -> one batched convolution with all ``E * C_out`` expert
  kernels, then the expert outputs are mixed per sample. It costs E times the FLOPs of a plain convolution,
  but on maps of a few voxels that is cheaper than building B mixed kernels.
- ``loop``: the naive per-sample loop, kept as the reference for tests and benchmarks.

All modes give the same result up to float rounding (tested against the loop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("auto", "shared", "unique", "grouped", "experts", "loop")

# "auto" mixes expert outputs when a layer's output has at most this many voxels (see bench/bench_condconv.py)
EXPERTS_MAX_VOXELS = 8


class CondConv3d(nn.Module):
    """Conditional 3-D convolution with ``num_experts`` kernels mixed by ``sigmoid(Linear(loc))``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv3d`` (cubic kernels, zero padding).
        num_experts: number of expert kernels ``E`` (8 in DrasCLR).
        loc_dim: size of the location code (3: normalised x, y, z).
        bias: one bias per output channel (shared by the experts, as in the reference).
        mode: ``auto`` (default), ``shared``, ``unique``, ``grouped``, ``experts`` or ``loop`` (module docstring).

    Shapes: ``x`` ``(B, C_in, D, H, W)``, ``loc`` ``(B, loc_dim)`` -> ``(B, C_out, D', H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, num_experts: int = 8, loc_dim: int = 3, bias: bool = True, mode: str = "auto"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.num_experts, self.mode = num_experts, mode
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels, k, k, k))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.routing = nn.Linear(loc_dim, num_experts)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # each expert initialised like nn.Conv3d (kaiming uniform, a = sqrt(5)), as the reference's _ConvNd does
        for e in range(self.num_experts):
            nn.init.kaiming_uniform_(self.weight[e], a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size ** 3
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, num_experts={self.num_experts}, mode={self.mode}")

    # --- routing ------------------------------------------------------------------------------------
    def routing_weights(self, loc: torch.Tensor) -> torch.Tensor:
        """``(B, loc_dim)`` -> ``(B, E)`` mixing weights in (0, 1)."""
        return torch.sigmoid(self.routing(loc))

    def kernels(self, loc: torch.Tensor) -> torch.Tensor:
        """Per-sample mixed kernels ``(B, C_out, C_in, k, k, k)`` (one small matrix product)."""
        r = self.routing_weights(loc).to(self.weight.dtype)
        return (r @ self.weight.flatten(1)).view(loc.shape[0], *self.weight.shape[1:])

    def _out_size(self, n: int) -> int:
        return (n + 2 * self.padding - self.kernel_size) // self.stride + 1

    # --- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != loc.shape[0]:
            raise ValueError(f"batch of {x.shape[0]} images but {loc.shape[0]} locations")
        mode = self.mode
        if mode == "auto":
            mode = self._pick_mode(x, loc)
        if mode == "loop":
            return self.forward_loop(x, loc)
        if mode == "shared":
            return self._conv(x, self.kernels(loc[:1])[0])
        if mode == "experts":
            return self._experts(x, loc)
        if mode == "unique":
            return self._unique(x, loc)
        return self._grouped(x, self.kernels(loc))

    def _pick_mode(self, x: torch.Tensor, loc: torch.Tensor) -> str:
        b = loc.shape[0]
        if b == 1 or bool((loc == loc[:1]).all()):
            return "shared"
        if b >= 8 and len(torch.unique(loc, dim=0)) <= b // 4:
            return "unique"
        if math.prod(self._out_size(n) for n in x.shape[2:]) <= EXPERTS_MAX_VOXELS:
            return "experts"
        return "grouped"

    def _conv(self, x: torch.Tensor, w: torch.Tensor, groups: int = 1, bias: torch.Tensor | None = None):
        return F.conv3d(x, w.to(x.dtype), self.bias.to(x.dtype) if bias is None and self.bias is not None else bias,
                        self.stride, self.padding, 1, groups)

    def _grouped(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """One grouped convolution: the batch folded into channels, ``groups = B``. ``w``: ``(B, Co, Ci, k^3)``."""
        b = x.shape[0]
        bias = None if self.bias is None else self.bias.to(x.dtype).repeat(b)
        xg = x.reshape(1, b * self.in_channels, *x.shape[2:])
        wg = w.to(x.dtype).flatten(0, 1)
        if self.in_channels == 1 and x.device.type == "cpu":  # depthwise-like: oneDNN is fastest channels-last
            xg = xg.contiguous(memory_format=torch.channels_last_3d)
            wg = wg.contiguous(memory_format=torch.channels_last_3d)
        y = F.conv3d(xg, wg, bias, self.stride, self.padding, 1, b)
        return y.view(b, self.out_channels, *y.shape[2:])

    def _unique(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """One shared-kernel convolution per distinct location, results put back in batch order."""
        uniq, inv = torch.unique(loc, dim=0, return_inverse=True)
        w = self.kernels(uniq)
        parts, order = [], []
        for u in range(len(uniq)):
            idx = (inv == u).nonzero().squeeze(1)
            parts.append(self._conv(x.index_select(0, idx), w[u]))
            order.append(idx)
        y = torch.cat(parts, 0)
        return y.index_select(0, torch.argsort(torch.cat(order)))

    def _experts(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """All expert kernels in one batched convolution, outputs mixed per sample."""
        b, e, co = x.shape[0], self.num_experts, self.out_channels
        r = self.routing_weights(loc).to(x.dtype)  # (B, E)
        y = F.conv3d(x, self.weight.to(x.dtype).flatten(0, 1), None, self.stride, self.padding)  # (B, E*Co, ...)
        out = torch.einsum("be,bev->bv", r, y.reshape(b, e, -1)).view(b, co, *y.shape[2:])
        if self.bias is not None:
            out = out + self.bias.to(x.dtype).view(1, co, 1, 1, 1)
        return out

    def forward_loop(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """The naive reference: one mixed kernel and one ``conv3d`` per sample."""
        out = []
        for i in range(x.shape[0]):
            r = self.routing_weights(loc[i:i + 1])[0]
            w = (r[:, None, None, None, None, None] * self.weight).sum(0)
            out.append(self._conv(x[i:i + 1], w))
        return torch.cat(out, 0)


def set_condconv_mode(module: nn.Module, mode: str) -> nn.Module:
    """Set the computation mode of every ``CondConv3d`` inside ``module`` (returns ``module``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for m in module.modules():
        if isinstance(m, CondConv3d):
            m.mode = mode
    return module

"""The CPU fast path of dense inference: an inference-only copy of a ``SubtypeSegmenter`` with the same answers.

:func:`fuse_for_inference` turns a trained segmenter into a :class:`FusedSegmenter` that computes the same
function (up to float rounding) with less memory traffic:

- every encoder BatchNorm (eval mode: a per-channel affine map) is folded into its convolution: into each of the
  ``E`` expert kernels and the shared bias of a ``CondConv3d`` (mixing is linear in the kernels, so
  ``s * conv(x, sum_e a_e W_e) + t = conv(x, sum_e a_e (s W_e)) + (s b + t)``), or into a plain ``Conv3d``;
- the CondConv computation mode (one shared kernel, per-sample kernels as one grouped convolution, or expert
  outputs mixed after) is chosen once per batch instead of once per layer;
- the decoder runs channels-last (``torch.channels_last_3d``), where oneDNN's 3-D convolutions, the trilinear
  upsampling and the 1x1 classifier are 2-8x faster on CPU than in the default layout; InstanceNorm + LeakyReLU
  is one fused scale-and-shift per (sample, channel) followed by an in-place activation.

The original model is not modified (fine-tuning keeps training it). Only ``SubtypeSegmenter`` with a
``DrasCLREncoder`` or ``PlainEncoder`` in eval mode is fused; anything else returns None and runs as is.
``DRASCLR_DENSE_PATH=reference`` in the environment turns the fast path off (benchmarks compare both).
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..model.condconv import EXPERTS_MAX_VOXELS, CondConv3d
from ..model.encoder import ConvBNAct, DrasCLREncoder, PlainEncoder
from .segmenter import SubtypeSegmenter, lung_window

CL = torch.channels_last_3d
ENV = "DRASCLR_DENSE_PATH"


def fast_path_enabled() -> bool:
    """False when ``DRASCLR_DENSE_PATH=reference`` (the unfused model runs, for comparison)."""
    return os.environ.get(ENV, "fast").strip().lower() != "reference"


def _bn_affine(bn: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = s * x + t``: ``(s, t)`` per channel, float32."""
    s = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    t = bn.bias.detach().float() - bn.running_mean.float() * s
    return s, t


class _FusedConv(nn.Module):
    """One encoder layer (conv -> BatchNorm -> ELU) with the BatchNorm folded into the conv.

    ``weight``: ``(E, C_out, C_in, k, k, k)`` expert kernels (``E = 1`` and no routing for a plain conv)."""

    def __init__(self, layer: ConvBNAct):
        super().__init__()
        conv = layer.conv
        s, t = _bn_affine(layer.bn)
        if isinstance(conv, CondConv3d):
            w = conv.weight.detach().float()
            self.routing = copy.deepcopy(conv.routing).float()
        else:  # a plain nn.Conv3d (PlainEncoder)
            w = conv.weight.detach().float()[None]
            self.routing = None
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[1])
        self.weight = nn.Parameter(w * s.view(1, -1, 1, 1, 1, 1), requires_grad=False)
        self.bias = nn.Parameter(bias * s + t, requires_grad=False)
        self.stride = conv.stride[0] if isinstance(conv.stride, tuple) else conv.stride
        self.padding = conv.padding[0] if isinstance(conv.padding, tuple) else conv.padding
        self.kernel_size = w.shape[-1]
        self.alpha = float(layer.act.alpha)

    def _out_voxels(self, x: torch.Tensor) -> int:
        n = 1
        for d in x.shape[2:]:
            n *= (d + 2 * self.padding - self.kernel_size) // self.stride + 1
        return n

    def forward(self, x: torch.Tensor, loc: torch.Tensor, shared: bool) -> torch.Tensor:
        b, e, co, ci = x.shape[0], self.weight.shape[0], self.weight.shape[1], self.weight.shape[2]
        if self.routing is None or shared:
            if self.routing is None:
                w = self.weight[0]
            else:
                r = torch.sigmoid(self.routing(loc[:1]))
                w = (r @ self.weight.flatten(1)).view(self.weight.shape[1:])
            y = F.conv3d(x, w, self.bias, self.stride, self.padding)
        elif self._out_voxels(x) <= EXPERTS_MAX_VOXELS:  # small maps: all experts, outputs mixed per sample
            r = torch.sigmoid(self.routing(loc))
            y = F.conv3d(x, self.weight.flatten(0, 1), None, self.stride, self.padding)
            y = torch.einsum("be,bev->bv", r, y.reshape(b, e, -1)).view(b, co, *y.shape[2:])
            y = y + self.bias.view(1, co, 1, 1, 1)
        else:  # per-sample kernels, one grouped convolution with the batch folded into channels
            r = torch.sigmoid(self.routing(loc))
            wg = (r @ self.weight.flatten(1)).view(b * co, ci, *self.weight.shape[3:])
            xg = x.reshape(1, b * ci, *x.shape[2:])
            if x.device.type == "cpu":  # oneDNN: as fast or faster channels-last; one layout, no reorders
                xg, wg = xg.contiguous(memory_format=CL), wg.contiguous(memory_format=CL)
            y = F.conv3d(xg, wg, self.bias.repeat(b), self.stride, self.padding, 1, b)
            y = y.view(b, co, *y.shape[2:])
        return F.elu(y, self.alpha, inplace=True)


class _FusedDecoderConv(nn.Module):
    """Conv3d (no bias) -> InstanceNorm3d (affine) -> LeakyReLU, channels-last, the norm as one scale-and-shift."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        conv, norm, act = seq
        if not (isinstance(norm, nn.InstanceNorm3d) and norm.affine and not norm.track_running_stats):
            raise TypeError("decoder layer is not Conv3d -> InstanceNorm3d(affine) -> LeakyReLU")
        self.weight = nn.Parameter(conv.weight.detach().float().contiguous(memory_format=CL), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().float(), requires_grad=False)
        self.padding = conv.padding
        self.gamma = nn.Parameter(norm.weight.detach().float().view(1, -1, 1, 1, 1), requires_grad=False)
        self.beta = nn.Parameter(norm.bias.detach().float().view(1, -1, 1, 1, 1), requires_grad=False)
        self.eps = float(norm.eps)
        self.slope = float(act.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv3d(x, self.weight, self.bias, 1, self.padding)
        var, mean = _var_mean(y)
        scale = self.gamma * torch.rsqrt(var + self.eps)
        y = torch.addcmul(self.beta - mean * scale, y, scale, out=y)  # in place: y stays channels-last
        return F.leaky_relu(y, self.slope, inplace=True)


def _var_mean(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, channel) variance and mean over space of a channels-last ``y``, as ``(B, C, 1, 1, 1)`` each.

    Two batched matrix products (``1^T Y`` and the diagonal of ``Y^T Y``) instead of a strided Welford reduction
    (4x faster on CPU); where the mean is large against the spread (``m^2 > 1e3 var``, where ``E[y^2] - m^2``
    would lose digits) it falls back to ``torch.var_mean``."""
    b, c = y.shape[:2]
    if not y.is_contiguous(memory_format=CL):
        y = y.contiguous(memory_format=CL)
    z = y.permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # a view: (B, N, C)
    n = z.shape[1]
    mean = torch.bmm(z.new_ones(b, 1, n), z)[:, 0] / n
    sq = torch.bmm(z.transpose(1, 2), z).diagonal(dim1=1, dim2=2) / n
    var = (sq - mean * mean).clamp_min(0.0)
    if bool((mean * mean > 1e3 * var).any()):
        var, mean = torch.var_mean(z, dim=1, correction=0)
    return var.view(b, c, 1, 1, 1), mean.view(b, c, 1, 1, 1)


def _cat_channels_last(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, dim=1)`` written straight into a channels-last tensor (one copy, not two)."""
    b, _, *size = parts[0].shape
    out = torch.empty(b, sum(p.shape[1] for p in parts), *size, dtype=parts[0].dtype, device=parts[0].device,
                      memory_format=CL)
    c0 = 0
    for p in parts:
        out[:, c0:c0 + p.shape[1]] = p
        c0 += p.shape[1]
    return out


class FusedSegmenter(nn.Module):
    """Inference-only twin of a :class:`SubtypeSegmenter`: ``forward(x, loc)`` -> the same logits
    ``(B, C, D, H, W)``. Built by :func:`fuse_for_inference`."""

    def __init__(self, model: SubtypeSegmenter):
        super().__init__()
        self.num_classes = model.num_classes
        self.stages = nn.ModuleList()
        for stage in model.encoder.stages:
            layers = list(stage.layers) if hasattr(stage, "layers") else [stage]
            self.stages.append(nn.ModuleList(_FusedConv(layer) for layer in layers))
        self.bottleneck = _FusedDecoderConv(model.bottleneck)
        self.up = nn.ModuleList(_FusedDecoderConv(layer) for layer in model.up)
        cls = model.classifier
        self.cls_weight = nn.Parameter(cls.weight.detach().float().contiguous(memory_format=CL), requires_grad=False)
        self.cls_bias = nn.Parameter(cls.bias.detach().float(), requires_grad=False)

    def encode(self, x: torch.Tensor, loc: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's 7 stage maps, as ``DrasCLREncoder.forward_features``."""
        loc = loc.to(x.dtype)
        shared = loc.shape[0] == 1 or bool((loc == loc[:1]).all())
        feats = []
        for stage in self.stages:
            for layer in stage:
                x = layer(x, loc, shared)
            feats.append(x)
        return feats

    @torch.inference_mode()
    def embed(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """The encoder's patch representation ``(B, 128)``, as ``SubtypeSegmenter.embed``."""
        x = self.encode(x, loc)[-1]
        return x.mean(dim=(2, 3, 4)) if x.shape[2:].numel() > 1 else x.flatten(1)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        f = self.encode(x, loc)
        b = f[5]
        rep = f[6].mean(dim=(2, 3, 4))
        ctx = torch.cat([rep, loc.to(b.dtype)], dim=1)[:, :, None, None, None].expand(-1, -1, *b.shape[2:])
        y = self.bottleneck(_cat_channels_last([b, ctx]))
        skips = ([f[3]], [f[2]], [f[1]], [f[0], lung_window(x)])
        for layer, skip in zip(self.up, skips):
            y = F.interpolate(y, size=skip[0].shape[2:], mode="trilinear", align_corners=False)
            y = layer(_cat_channels_last([y, *skip]))
        # the 1x1 classifier channels-last, then the 5 logits channels-first (what softmax and blending read fastest)
        return F.conv3d(y, self.cls_weight, self.cls_bias).contiguous()


def fuse_for_inference(model: nn.Module) -> FusedSegmenter | None:
    """A :class:`FusedSegmenter` computing what ``model`` computes in eval mode, or None when ``model`` is not a
    ``SubtypeSegmenter`` this module knows (other encoders, BatchNorm without running statistics)."""
    if type(model) is not SubtypeSegmenter or type(model.encoder) not in (DrasCLREncoder, PlainEncoder):
        return None
    if any(isinstance(m, nn.BatchNorm3d) and m.running_var is None for m in model.modules()):
        return None
    try:
        with torch.no_grad():
            return FusedSegmenter(model).eval().requires_grad_(False)
    except (TypeError, ValueError, AttributeError):
        return None

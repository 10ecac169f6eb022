"""``SubtypeSegmenter``: the DrasCLR encoder plus a light U-Net-style decoder giving voxel logits.

Input ``x`` ``(B, 1, 32, 32, 32)`` normalised HU and ``loc`` ``(B, 3)`` normalised atlas location; output
``(B, 5, 32, 32, 32)`` logits for the classes of :mod:`drasclr.core.labels` (0 outside lung, 1 normal, 2 CLE,
3 PSE, 4 PLE). The decoder is plain (unconditioned) convolutions; it starts from the encoder's 2³ map, to which
the 1³ patch representation and the location are appended as context, and climbs back through the encoder's
skip connections at 4³, 8³, 16³ and 32³. The last decoder stage also sees the input in a lung window
(-1000..-800 HU spread over a few units), so fine density differences reach it at full resolution.

``full_res_kernel``: the kernel of that last (32³) stage: 3 (demo-v5 and before) or 1, a pointwise stage that
mixes the upsampled context with the full-resolution skip and density voxel by voxel. The 3³ stage is about 60 % of
a patch's multiply-adds; its spatial reach is already in the upsampled 16³ map. :func:`pointwise_full_res` turns a
trained 3³ model into the lighter one (each 3³ kernel summed over space: the same response on smooth maps) as the
start of a fine-tuning run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import labels
from ..core.intensity import HU_MAX, HU_MIN
from ..model import DrasCLREncoder, PlainEncoder, register_architecture
from ..model.encoder import DEFAULT_CHANNELS

ENCODERS = {"DrasCLREncoder": DrasCLREncoder, "PlainEncoder": PlainEncoder}

DEFAULT_DECODER = (64, 48, 32, 16, 16)


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01, inplace=True))


def lung_window(x: torch.Tensor) -> torch.Tensor:
    """Encoder input (HU scaled to [-1, 1] by ``drasclr.core.intensity.normalise_hu``) -> (HU + 900) / 100, clipped
    to [-3, 3]: -1000 HU -> -1, -800 HU -> +1."""
    hu = (x + 1.0) * ((HU_MAX - HU_MIN) / 2.0) + HU_MIN
    return ((hu + 900.0) / 100.0).clamp(-3.0, 3.0)


@register_architecture
class SubtypeSegmenter(nn.Module):
    """Encoder + decoder. ``forward(x, loc) -> (B, num_classes, D, H, W)`` logits at the input resolution.

    ``encoder_arch``: ``DrasCLREncoder`` (default) or ``PlainEncoder`` (the unconditioned ablation's encoder).
    """

    architecture = "SubtypeSegmenter"

    def __init__(self, encoder: dict | None = None, decoder: tuple[int, ...] = DEFAULT_DECODER,
                 num_classes: int = labels.NUM_CLASSES, encoder_arch: str = "DrasCLREncoder",
                 full_res_kernel: int = 3):
        super().__init__()
        if full_res_kernel not in (1, 3):
            raise ValueError(f"full_res_kernel must be 1 or 3, got {full_res_kernel!r}")
        self.full_res_kernel = int(full_res_kernel)
        enc_cfg = dict(encoder or {"channels": list(DEFAULT_CHANNELS), "num_experts": 8, "in_channels": 1})
        if encoder_arch not in ENCODERS:
            raise ValueError(f"encoder_arch must be one of {sorted(ENCODERS)}, got {encoder_arch!r}")
        self.encoder_arch = encoder_arch
        self.encoder = ENCODERS[encoder_arch](**enc_cfg)
        self.decoder_widths = tuple(int(d) for d in decoder)
        self.num_classes = int(num_classes)
        c = self.encoder.channels
        d = self.decoder_widths
        # bottleneck at 2^3: stage-5 map + stage-6 vector + location
        self.bottleneck = _conv(c[5] + c[6] + 3, d[0])
        self.up = nn.ModuleList([
            _conv(d[0] + c[3], d[1]),  # 4^3, skip: stage 3
            _conv(d[1] + c[2], d[2]),  # 8^3, skip: stage 2
            _conv(d[2] + c[1], d[3]),  # 16^3, skip: stage 1
            _conv(d[3] + c[0] + 1, d[4], self.full_res_kernel),  # 32^3, skip: stage 0 + the lung-window input
        ])
        self.classifier = nn.Conv3d(d[4], self.num_classes, 1)

    def config(self) -> dict:
        cfg = {"encoder": self.encoder.config(), "decoder": list(self.decoder_widths),
               "num_classes": self.num_classes}
        if self.encoder_arch != "DrasCLREncoder":  # older cards (no key) keep loading as DrasCLREncoder
            cfg["encoder_arch"] = self.encoder_arch
        if self.full_res_kernel != 3:  # likewise: no key = the 3^3 stage
            cfg["full_res_kernel"] = self.full_res_kernel
        return cfg

    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        f = self.encoder.forward_features(x, loc)
        b = f[5]
        rep = f[6].mean(dim=(2, 3, 4))  # (B, C6): the 1^3 map of a 32^3 patch; averaged for larger inputs
        ctx = torch.cat([rep, loc.to(b.dtype)], dim=1)[:, :, None, None, None].expand(-1, -1, *b.shape[2:])
        y = self.bottleneck(torch.cat([b, ctx], dim=1))
        skips = (f[3], f[2], f[1], torch.cat([f[0], lung_window(x)], dim=1))
        for layer, skip in zip(self.up, skips):
            y = F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False)
            y = layer(torch.cat([y, skip], dim=1))
        return self.classifier(y)

    def embed(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """The encoder's patch representation ``(B, 128)`` (for patient-level embeddings)."""
        return self.encoder(x, loc)


def pointwise_full_res(model: SubtypeSegmenter) -> SubtypeSegmenter:
    """A copy of ``model`` whose 32³ stage is pointwise (``full_res_kernel=1``): every weight as in ``model`` except
    that stage's kernels, each summed over its 3³ taps (on a map constant over the kernel's reach both give the
    same output). ``model`` itself is not changed."""
    if model.full_res_kernel == 1:
        raise ValueError("the model's full-resolution stage is pointwise already")
    cfg = model.config()
    cfg.pop("encoder_arch", None)
    light = SubtypeSegmenter(**cfg, encoder_arch=model.encoder_arch, full_res_kernel=1)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    key = "up.3.0.weight"
    state[key] = state[key].sum(dim=(2, 3, 4), keepdim=True)
    light.load_state_dict(state)
    return light.train(model.training)

"""CondConv3d: every fast mode equals the naive per-sample loop of the reference code."""

from __future__ import annotations

import pytest
import torch

from drasclr.model import CondConv3d, DrasCLREncoder
from drasclr.model.condconv import EXPERTS_MAX_VOXELS


@pytest.mark.parametrize("mode", ["auto", "grouped", "experts", "unique"])
@pytest.mark.parametrize("cin,stride,size", [(3, 1, 8), (3, 2, 9), (3, 2, 4), (3, 1, 2), (1, 1, 6)])
def test_modes_equal_naive_loop(mode, cin, stride, size):
    torch.manual_seed(0)
    conv = CondConv3d(cin, 5, 3, stride=stride, padding=1, num_experts=8).double()
    x = torch.randn(7, cin, size, size, size, dtype=torch.float64)
    loc = torch.rand(7, 3, dtype=torch.float64) * 2 - 1
    ref = conv.forward_loop(x, loc)
    conv.mode = mode
    out = conv(x, loc)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)


def test_shared_location_is_one_kernel_and_matches_loop():
    torch.manual_seed(1)
    conv = CondConv3d(2, 4, 3, stride=2, padding=1)
    x = torch.randn(5, 2, 10, 10, 10)
    loc = torch.tensor([[0.3, -0.2, 0.9]]).repeat(5, 1)
    assert conv._pick_mode(x, loc) == "shared"
    assert torch.allclose(conv(x, loc), conv.forward_loop(x, loc), atol=1e-5, rtol=0)


def test_auto_mixes_expert_outputs_only_for_small_maps():
    conv = CondConv3d(2, 2)
    loc = torch.rand(3, 3)
    assert conv._pick_mode(torch.zeros(3, 2, 2, 2, 2), loc) == "experts"
    big = round(EXPERTS_MAX_VOXELS ** (1 / 3)) + 2
    assert conv._pick_mode(torch.zeros(3, 2, big, big, big), loc) == "grouped"


def test_location_changes_the_output_and_gradients_reach_routing():
    torch.manual_seed(2)
    conv = CondConv3d(1, 2, 3)
    x = torch.randn(1, 1, 6, 6, 6).repeat(2, 1, 1, 1, 1)
    loc = torch.tensor([[-0.8, 0.0, 0.5], [0.7, 0.4, -0.9]])
    y = conv(x, loc)
    assert not torch.allclose(y[0], y[1])  # same image, different place -> different kernel
    y.square().sum().backward()
    assert conv.routing.weight.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0


def test_full_encoder_float32_equivalence_within_1e5():
    """The whole encoder, fast path vs the reference loop, at many different locations (float32)."""
    torch.manual_seed(3)
    enc = DrasCLREncoder().eval()
    x = torch.randn(6, 1, 32, 32, 32)
    loc = torch.rand(6, 3) * 2 - 1
    with torch.no_grad():
        ref = enc.set_condconv_mode("loop")(x, loc)
        fast = enc.set_condconv_mode("auto")(x, loc)
    assert (fast - ref).abs().max().item() < 1e-5


def test_few_distinct_locations_use_one_kernel_each_and_match_loop():
    """A query batch plus neighbours: 3 distinct locations over 12 samples, in scrambled order."""
    torch.manual_seed(4)
    conv = CondConv3d(2, 3, 3, stride=1).double()
    x = torch.randn(12, 2, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    loc = torch.rand(3, 3, dtype=torch.float64)[torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1, 0, 1, 2])]
    assert conv._pick_mode(x, loc) == "unique"
    out = conv(x, loc)
    assert torch.allclose(out, conv.forward_loop(x, loc), atol=1e-10, rtol=0)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape

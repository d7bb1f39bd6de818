"""Depthwise5x5Conv2d computes nn.Conv2d's function: output, input gradient and weight gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bundle.networks.blocks.depthwise_conv import Depthwise5x5Conv2d, depthwise_5x5_weight_grad, split_grad_pass
from bundle.networks.blocks.reparam_conv import ConvNorm

CL = torch.channels_last


def _pair(channels: int) -> tuple[nn.Conv2d, Depthwise5x5Conv2d]:
    torch.manual_seed(channels)
    reference = nn.Conv2d(channels, channels, 5, padding=2, groups=channels, bias=False)
    fast = Depthwise5x5Conv2d(channels)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def _input(shape: tuple[int, ...], seed: int = 3, memory_format=CL) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) + 0.5).contiguous(memory_format=memory_format)


def _grads(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    gx, gw = torch.autograd.grad(y, (x, layer.weight), grad)
    return y, gx, gw


@pytest.mark.parametrize("shape", [(4, 24, 32, 32), (2, 12, 9, 17), (3, 48, 16, 8), (2, 3, 5, 3), (1, 16, 7, 4)])
def test_output_and_gradients_match_nn_conv2d(shape):
    channels = shape[1]
    reference, fast = _pair(channels)
    x, grad = _input(shape), _input(shape, seed=4)
    assert split_grad_pass(x.requires_grad_(), fast.weight, fast.bias is not None)
    y_ref, gx_ref, gw_ref = _grads(reference, x, grad)
    y, gx, gw = _grads(fast, x, grad)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)  # the forward is PyTorch's own convolution
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=0)  # so is the input gradient
    # the weight gradient sums in another order: as close to a float64 reference as PyTorch's own
    _, _, gw_exact = _grads(reference.double(), x.double(), grad.double())
    err_fast = (gw.double() - gw_exact).abs().max().item()
    err_ref = (gw_ref.double() - gw_exact).abs().max().item()
    scale = gw_exact.abs().max().item()
    assert err_fast <= max(8 * err_ref, 1e-6 * scale), (err_fast, err_ref, scale)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-5 * scale)


def test_weight_grad_function_on_its_own():
    x, g = _input((2, 8, 11, 13)), _input((2, 8, 11, 13), seed=5)
    weight = torch.zeros(8, 1, 5, 5)
    expected = torch.ops.aten.convolution_backward(g.double(), x.double(), weight.double(), None, (1, 1), (2, 2),
                                                   (1, 1), False, (0, 0), 8, (False, True, False))[1]
    torch.testing.assert_close(depthwise_5x5_weight_grad(g, x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["no_grad", "channels_first", "bias", "narrow", "autocast", "float64"])
def test_fallbacks_are_nn_conv2d(case):
    reference, fast = _pair(8)
    shape = (2, 8, 6, 2) if case == "narrow" else (2, 8, 6, 6)
    x = _input(shape, memory_format=torch.contiguous_format if case == "channels_first" else CL)
    if case == "bias":
        fast.bias = nn.Parameter(torch.randn(8))
        reference.bias = nn.Parameter(fast.bias.detach().clone())
    if case == "float64":
        reference, fast, x = reference.double(), fast.double(), x.double()
    if case not in ("no_grad", "autocast"):
        assert not split_grad_pass(x, fast.weight, fast.bias is not None)
    if case == "no_grad":
        with torch.no_grad():
            assert not split_grad_pass(x, fast.weight, fast.bias is not None)
            torch.testing.assert_close(fast(x), reference(x), rtol=0, atol=0)
        return
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not split_grad_pass(x, fast.weight, fast.bias is not None)
            torch.testing.assert_close(fast(x), reference(x), rtol=0, atol=0)
        return
    y_ref, gx_ref, gw_ref = _grads(reference, x, torch.ones_like(x))
    y, gx, gw = _grads(fast, x, torch.ones_like(x))
    for got, want in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_state_dict_initialization_and_torchscript():
    torch.manual_seed(11)
    reference = nn.Conv2d(12, 12, 5, padding=2, groups=12, bias=False)
    torch.manual_seed(11)
    fast = Depthwise5x5Conv2d(12)
    torch.testing.assert_close(fast.weight, reference.weight, rtol=0, atol=0)  # the same initialization draws
    assert fast.state_dict().keys() == reference.state_dict().keys()
    plain = nn.Conv2d(12, 12, 5, padding=2, groups=12, bias=False)
    plain.load_state_dict(fast.state_dict(), strict=True)
    x = _input((1, 12, 8, 8))
    scripted = torch.jit.script(fast)
    torch.testing.assert_close(scripted(x), reference(x), rtol=0, atol=0)


def test_conv_norm_picks_it_for_2d_5x5_depthwise_only():
    assert isinstance(ConvNorm(2, 8, 8, 5, groups=8).conv, Depthwise5x5Conv2d)
    assert type(ConvNorm(2, 8, 8, 3, groups=8).conv) is nn.Conv2d
    assert type(ConvNorm(2, 8, 8, (5, 3), groups=8).conv) is nn.Conv2d
    assert type(ConvNorm(2, 8, 16, 5).conv) is nn.Conv2d
    assert type(ConvNorm(2, 8, 8, 5, groups=8, deploy=True).conv) is nn.Conv2d
    assert type(ConvNorm(3, 8, 8, 5, groups=8).conv) is nn.Conv3d

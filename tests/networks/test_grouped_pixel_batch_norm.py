"""GroupedPixelBatchNorm2d computes nn.BatchNorm2d's function (outputs, gradients, running statistics)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from bundle.networks.blocks.grouped_pixel_batch_norm import GroupedPixelBatchNorm2d, pixel_group

CL = torch.channels_last


def _pair(channels: int, momentum: float | None = 0.1) -> tuple[nn.BatchNorm2d, GroupedPixelBatchNorm2d]:
    torch.manual_seed(channels)
    reference = nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1.0, 1.0)
        reference.running_mean.uniform_(-1.0, 1.0)
        reference.running_var.uniform_(0.5, 2.0)
    grouped = GroupedPixelBatchNorm2d(channels, momentum=momentum)
    grouped.load_state_dict(reference.state_dict())
    return reference, grouped


def _input(shape: tuple[int, ...], memory_format=CL) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=gen) * 3.0 + torch.linspace(-2.0, 2.0, shape[1]).view(1, -1, 1, 1)
    return x.contiguous(memory_format=memory_format)


def _run(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    gx, gw, gb = torch.autograd.grad(y, (x, layer.weight, layer.bias), grad)
    return y, gx, gw, gb


@pytest.mark.parametrize("shape", [(4, 24, 16, 32), (3, 12, 9, 20), (2, 20, 5, 8), (2, 3, 4, 32), (5, 24, 1, 2)])
def test_training_pass_equals_batch_norm(shape):
    reference, grouped = _pair(shape[1])
    x = _input(shape)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=CL)
    assert pixel_group(shape[1]) > 1 and grouped.grouped_pass(x)
    for _ in range(2):  # twice: the running statistics are updated from updated values
        expected, got = _run(reference, x, grad), _run(grouped, x, grad)
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * max(1.0, e.abs().max().item()))
        assert got[0].is_contiguous(memory_format=CL) and got[1].is_contiguous(memory_format=CL)
    torch.testing.assert_close(grouped.running_mean, reference.running_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grouped.running_var, reference.running_var, rtol=1e-5, atol=1e-5)
    assert int(grouped.num_batches_tracked) == int(reference.num_batches_tracked) == 2


def test_output_is_at_least_as_close_to_float64_as_pytorchs():
    reference, grouped = _pair(24)
    x = _input((8, 24, 32, 32))
    xd = x.double()
    mean, var = xd.mean((0, 2, 3), keepdim=True), xd.var((0, 2, 3), unbiased=False, keepdim=True)
    exact = (xd - mean) / torch.sqrt(var + reference.eps) * reference.weight.double().view(1, -1, 1, 1) \
        + reference.bias.double().view(1, -1, 1, 1)
    with torch.no_grad():
        err_reference = (reference(x).double() - exact).abs().max().item()
        err_grouped = (grouped(x).double() - exact).abs().max().item()
    assert err_grouped <= max(err_reference, 1e-6) * 1.5


def test_cumulative_average_momentum_none():
    reference, grouped = _pair(12, momentum=None)
    for seed in range(3):
        x = _input((2, 12, 6, 8)) + seed
        with torch.no_grad():
            reference(x), grouped(x)
    torch.testing.assert_close(grouped.running_mean, reference.running_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grouped.running_var, reference.running_var, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["eval", "channels_first", "odd_width", "full_vectors"])
def test_other_inputs_run_batch_norm_itself(case):
    channels = 48 if case == "full_vectors" else 24
    reference, grouped = _pair(channels)
    x = _input((2, channels, 6, 7 if case == "odd_width" else 8),
               torch.contiguous_format if case == "channels_first" else CL)
    if case == "eval":
        reference.eval(), grouped.eval()
    assert not grouped.grouped_pass(x)
    with torch.no_grad():
        assert torch.equal(grouped(x), reference(x))


def test_torchscript_runs_the_batch_norm():
    _, grouped = _pair(24)
    scripted = torch.jit.script(copy.deepcopy(grouped).eval())
    x = _input((2, 24, 4, 8))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), grouped.eval()(x))


def test_metatensor_input():
    from monai.data import MetaTensor

    reference, grouped = _pair(24)
    x = _input((2, 24, 4, 8))
    with torch.no_grad():
        got = grouped(MetaTensor(x, meta={"filename_or_obj": "slice.nii.gz"}))
        torch.testing.assert_close(torch.as_tensor(got), reference(x), rtol=1e-4, atol=1e-4)

"""LM-Net's training form on its CPU fast paths (GroupedPixelBatchNorm2d, Depthwise5x5Conv2d, ParallelDropout)
computes what the same network on PyTorch's own layers computes: outputs, every parameter's gradient and every
running statistic of a training step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from bundle.networks import LMNet
from bundle.networks.blocks import dropout as dropout_module
from bundle.networks.blocks.depthwise_conv import Depthwise5x5Conv2d
from bundle.networks.blocks.dropout import ParallelDropout
from bundle.networks.blocks.grouped_pixel_batch_norm import GroupedPixelBatchNorm2d

CL = torch.channels_last


def _pytorch_layers(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose batch norms are nn.BatchNorm2d and 5x5 depthwise convolutions nn.Conv2d, with the
    same state. Its dropouts stay ParallelDropout so that both networks draw the same masks (the dropout's own
    function is tested in tests/networks/blocks/test_dropout.py)."""
    plain = copy.deepcopy(network)
    for module in list(plain.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, GroupedPixelBatchNorm2d):
                layer: nn.Module = nn.BatchNorm2d(child.num_features, child.eps, child.momentum)
            elif isinstance(child, Depthwise5x5Conv2d):
                layer = nn.Conv2d(child.in_channels, child.out_channels, 5, padding=2, groups=child.groups, bias=False)
            else:
                continue
            layer.load_state_dict(child.state_dict())
            setattr(module, name, layer)
    return plain


class _ReplayedDropout(nn.Module):
    """Multiplies by the masks a ParallelDropout drew in another run, in the order it drew them."""

    def __init__(self, masks: list[torch.Tensor]) -> None:
        super().__init__()
        self.masks = masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.masks.pop(0).to(x.dtype)


def _step(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
    """Output, parameter gradients and buffers after one forward / backward of ``net`` (dropout masks from seed 1)."""
    torch.manual_seed(1)
    out = net(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad for n, p in net.named_parameters()}, dict(net.named_buffers())


def _recorded_step(net: nn.Module, x: torch.Tensor) -> tuple[tuple, list[torch.Tensor]]:
    """:func:`_step`, and the dropout masks it drew."""
    masks: list[torch.Tensor] = []
    drawn = dropout_module.parallel_dropout_mask

    def recording(like: torch.Tensor, p: float) -> torch.Tensor:
        masks.append(drawn(like, p))
        return masks[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dropout_module, "parallel_dropout_mask", recording)
        return _step(net, x), masks


def test_lmnet_training_step_is_as_exact_as_pytorchs_layers():
    """The network as it trains (channels-last, training mode, dropout on) and the same network on PyTorch's layers
    (the same dropout masks): the same output and running statistics, and every gradient as close to a float64 run
    of PyTorch's layers (replaying those masks) as PyTorch's own float32 run (within a factor 4)."""
    torch.manual_seed(0)
    network = LMNet(spatial_dims=2, in_channels=3, out_channels=2).to(memory_format=CL).train()
    for fast in (GroupedPixelBatchNorm2d, Depthwise5x5Conv2d, ParallelDropout):
        assert any(isinstance(m, fast) for m in network.modules()), fast
    plain = _pytorch_layers(network).train()
    assert not any(isinstance(m, (GroupedPixelBatchNorm2d, Depthwise5x5Conv2d)) for m in plain.modules())
    exact = copy.deepcopy(plain).double()
    x = torch.rand(4, 3, 64, 64).contiguous(memory_format=CL)

    results, masks = {}, {}
    for kind, net in (("plain", plain), ("fast", network)):
        results[kind], masks[kind] = _recorded_step(net, x)
    assert len(masks["fast"]) == len(masks["plain"]) > 0
    for mask_fast, mask_plain in zip(masks["fast"], masks["plain"], strict=True):
        assert torch.equal(mask_fast, mask_plain)
    replayed = list(masks["plain"])
    for module in list(exact.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ParallelDropout):
                setattr(module, name, _ReplayedDropout(replayed))
    out_exact, grads_exact, _ = _step(exact, x.double())
    assert not replayed  # every mask used

    (out_plain, _, buffers_plain), (out_fast, _, buffers_fast) = results["plain"], results["fast"]
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-4, atol=1e-4)
    for name, b_plain in buffers_plain.items():
        torch.testing.assert_close(buffers_fast[name].float(), b_plain.float(), rtol=1e-4, atol=1e-5, msg=name)
    errors = {}
    for kind, (out, grads, _) in results.items():
        errors[kind] = {"output": (out.double() - out_exact).abs().max().item()}
        errors[kind].update({n: (g.double() - grads_exact[n]).abs().max().item() for n, g in grads.items()})
    for name, err_plain in errors["plain"].items():
        scale = (out_exact if name == "output" else grads_exact[name]).abs().max().item()
        assert errors["fast"][name] <= 4 * err_plain + 1e-6 * scale, (name, errors["fast"][name], err_plain, scale)

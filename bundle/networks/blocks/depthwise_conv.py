"""A 2D 5x5 depthwise convolution whose weight gradient on CPU runs on oneDNN's depthwise kernels.

oneDNN (PyTorch's CPU convolution backend) has a dedicated depthwise kernel for the weight gradient only for
kernels at most 3 wide; a 5 x 5 depthwise weight gradient falls to its generic grouped kernel, which costs several
times the 3 x 3's. The weight gradient of a stride-1 depthwise convolution is a correlation of the input ``x`` with
the output gradient ``g``,

    dW[c, i, j] = sum over n, y, x of g[n, c, y, x] * x_pad[n, c, y + i, x + j]     (x_pad: x zero-padded by 2),

so its five kernel columns can come from three 5 x 3 weight gradients, which do run on the depthwise kernel:
columns 1-3 from a 5 x 3 convolution with padding (2, 1) on ``x`` and ``g`` themselves; column 0 from a 5 x 3
convolution without horizontal padding whose output gradient is ``g[..., 2:]`` (its left kernel column meets
``x[..., x - 2]``, and the two output columns it leaves out meet only zero padding); column 4 likewise from
``g[..., :-2]`` (its right kernel column). The forward and the input gradient are PyTorch's. The result is the same
gradient up to float rounding (the sums run in another order).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import channels_last_cpu_float32

__all__ = ["Depthwise5x5Conv2d", "depthwise_5x5_weight_grad", "split_grad_pass"]

_conv_backward = torch.ops.aten.convolution_backward


def _weight_grad(g: torch.Tensor, x: torch.Tensor, kernel_like: torch.Tensor, padding: tuple[int, int],
                 groups: int) -> torch.Tensor:
    """The weight gradient of a stride-1 depthwise convolution shaped like ``kernel_like`` (its values unused)."""
    return _conv_backward(g, x, kernel_like, None, (1, 1), padding, (1, 1), False, (0, 0), groups,
                          (False, True, False))[1]


def depthwise_5x5_weight_grad(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight gradient (C, 1, 5, 5) of a stride-1, padding-2, 5 x 5 depthwise convolution of ``x`` with output
    gradient ``g``, both channels-last (N, C, H, W) with W >= 3, from three 5 x 3 weight gradients (module doc)."""
    channels, width = x.shape[1], x.shape[3]
    kernel_like = torch.empty((channels, 1, 5, 3), dtype=x.dtype, device=x.device)
    center = _weight_grad(g, x, kernel_like, (2, 1), channels)
    left = _weight_grad(g[..., 2:].contiguous(memory_format=torch.channels_last), x, kernel_like, (2, 0), channels)
    right = _weight_grad(g[..., : width - 2].contiguous(memory_format=torch.channels_last), x, kernel_like, (2, 0),
                         channels)
    return torch.cat([left[..., 0:1], center, right[..., 2:3]], dim=-1)


class _Depthwise5x5Function(torch.autograd.Function):
    """``F.conv2d(x, weight, padding=2, groups=C)`` with the weight gradient of :func:`depthwise_5x5_weight_grad`."""

    @staticmethod
    def forward(ctx, x, weight):  # noqa: D102
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, None, 1, 2, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        channels = x.shape[1]
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_backward(grad, x, weight, None, (1, 1), (2, 2), (1, 1), False, (0, 0), channels,
                                    (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_5x5_weight_grad(grad, x)
        return grad_x, grad_w


@torch.jit.unused
def split_grad_pass(x: torch.Tensor, weight: torch.Tensor, has_bias: bool) -> bool:
    """Whether a 5 x 5 depthwise convolution with ``weight`` runs ``x`` through the autograd Function: a weight
    gradient is wanted, there is no bias, and it runs on oneDNN in fp32 (channels-last CPU tensors at least 3 wide, no
    autocast)."""
    return (
        torch.is_grad_enabled() and weight.requires_grad and not has_bias and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu") and channels_last_cpu_float32(x) and x.shape[3] >= 3
    )


@torch.jit.unused
def _depthwise_5x5(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _Depthwise5x5Function.apply(x, weight)


class Depthwise5x5Conv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, 5, padding=2, groups=channels, bias=False)`` (the same state dict) whose weight
    gradient on channels-last CPU fp32 tensors runs on oneDNN's depthwise kernels (see the module doc).

    Anything else (no gradient needed, a bias, CUDA, CPU autocast, other dtypes, channels-first memory, inputs
    narrower than 3, TorchScript and tracing) runs ``nn.Conv2d.forward`` unchanged.

    Args:
        channels: input = output channels.

    Shapes: (N, channels, H, W) -> (N, channels, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 5, padding=2, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # TorchScript compiles nothing after this return
            return self._conv_forward(x, self.weight, self.bias)
        if split_grad_pass(x, self.weight, self.bias is not None):
            return _depthwise_5x5(x, self.weight)
        return self._conv_forward(x, self.weight, self.bias)

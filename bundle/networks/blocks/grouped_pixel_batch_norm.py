"""2D batch norm whose training pass on narrow channels-last CPU tensors reads k neighbouring pixels as one row.

PyTorch's CPU batch norm vectorizes a channels-last tensor along its channels, 16 fp32 lanes at a time; with 24 or
12 channels (LM-Net's full-resolution level) every row ends in a partial vector, and the training forward and
backward cost 3-4 times per element what they cost at 48 channels. The memory of a channels-last (N, C, H, W)
tensor is also that of a channels-last (N, k * C, H, W / k) tensor whose channel ``j * C + c`` holds channel ``c`` of
every k-th pixel; with k * C a multiple of 16 PyTorch's kernels run on full vectors. This layer computes the batch
statistics of that view per (pixel phase, channel), combines the k phases exactly into the per-channel mean and
(biased) variance, and normalizes and back-propagates through the same view:

    mean_c = avg_j m_jc,    var_c = avg_j v_jc + avg_j (m_jc - mean_c)^2

The function is the batch norm's (PyTorch's own within float rounding, closer to a float64 reference in the tests);
running statistics, ``momentum`` (including ``None``, the cumulative average) and ``num_batches_tracked`` follow
``nn.BatchNorm2d``. Anything else (eval mode, CUDA, other dtypes, channels-first memory, a width k does not divide,
no affine parameters, TorchScript) runs ``nn.BatchNorm2d.forward`` unchanged. The state dict is ``BatchNorm2d``'s.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import channels_last_cpu_float32

__all__ = ["GroupedPixelBatchNorm2d", "pixel_group"]

def pixel_group(channels: int) -> int:
    """k: the number of neighbouring pixels read as one row so that k * ``channels`` fills whole vectors of 16 fp32
    lanes (an AVX-512 register, the width PyTorch's CPU kernels vectorize channels by)."""
    return 16 // math.gcd(channels, 16)


def _grouped(t: torch.Tensor, k: int) -> torch.Tensor:
    """The channels-last (N, C, H, W) tensor ``t`` as the channels-last (N, k * C, H, W / k) view of its memory."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n, h, w // k, k * c).permute(0, 3, 1, 2)


def _ungrouped(t: torch.Tensor, channels: int) -> torch.Tensor:
    """The inverse of :func:`_grouped`: the channels-last (N, k * C, H, W / k) tensor ``t`` as a channels-last
    (N, C, H, W) tensor on the same memory. A new tensor, not a view, so that autograd lets the layer's caller
    modify its output in place (a view made inside a custom Function may not be)."""
    n, kc, h, wk = t.shape
    w = wk * (kc // channels)
    out = torch.empty((0,), dtype=t.dtype, device=t.device)  # a plain tensor, also for a MetaTensor input
    return out.set_(t.untyped_storage(), t.storage_offset(), (n, channels, h, w), (h * w * channels, 1, w * channels,
                                                                                   channels))


class _GroupedPixelBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm of a channels-last (N, C, H, W) fp32 tensor through the k-pixel view."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, average_factor, eps, k):  # noqa: D102
        channels = x.shape[1]
        xg = _grouped(x, k)
        phase_mean, phase_var = torch.batch_norm_update_stats(xg, None, None, 0.0)  # per (phase, channel); biased
        phase_mean, phase_var = phase_mean.view(k, channels), phase_var.view(k, channels)
        mean = phase_mean.mean(0)
        var = phase_var.mean(0) + (phase_mean - mean).square().mean(0)
        invstd = torch.rsqrt(var + eps)
        count = x.numel() // channels
        if running_mean is not None and running_var is not None:
            running_mean.mul_(1.0 - average_factor).add_(mean, alpha=average_factor)
            running_var.mul_(1.0 - average_factor).add_(var * (count / max(count - 1, 1)), alpha=average_factor)
        y = torch.batch_norm(xg, weight.repeat(k), bias.repeat(k), mean.repeat(k), var.repeat(k), False, 0.0, eps,
                             False)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.k, ctx.count = k, count
        return _ungrouped(y, channels)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight, mean, invstd = ctx.saved_tensors
        k, count, channels = ctx.k, ctx.count, x.shape[1]
        xg = _grouped(x, k)
        gg = _grouped(grad.contiguous(memory_format=torch.channels_last), k)
        # per (phase, channel): sum(grad * xhat) and sum(grad), xhat with the true per-channel statistics
        _, phase_gw, phase_gb = torch.ops.aten.native_batch_norm_backward(
            gg, xg, weight.repeat(k), None, None, mean.repeat(k), invstd.repeat(k), True, 0.0, [False, True, True]
        )
        grad_weight = phase_gw.view(k, channels).sum(0)
        grad_bias = phase_gb.view(k, channels).sum(0)
        # dx = a * grad + b * x + c per channel (the training batch norm's input gradient, expanded)
        a = weight * invstd
        b = -a * invstd * grad_weight / count
        c = -a * grad_bias / count - b * mean
        ones, zeros = torch.ones_like(mean).repeat(k), torch.zeros_like(mean).repeat(k)
        dx = torch.batch_norm(xg, b.repeat(k), c.repeat(k), zeros, ones, False, 0.0, 0.0, False)  # b * x + c
        dx.addcmul_(gg, a.repeat(k).view(1, -1, 1, 1))
        return _ungrouped(dx, channels), grad_weight, grad_bias, None, None, None, None, None


@torch.jit.unused
def _grouped_batch_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None, factor: float, eps: float, k: int,
) -> torch.Tensor:
    return _GroupedPixelBatchNormFunction.apply(x, weight, bias, running_mean, running_var, factor, eps, k)


class GroupedPixelBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with a faster training pass for narrow channels-last CPU tensors (see the module doc).

    Args: as ``nn.BatchNorm2d``.

    Shapes: (N, C, H, W) -> (N, C, H, W), the input's memory format.
    """

    def grouped_pass(self, x: torch.Tensor) -> bool:
        """Whether a forward on ``x`` takes the k-pixel path (batch statistics of a channels-last CPU fp32 tensor
        whose channels do not fill whole vectors and whose width k divides)."""
        k = pixel_group(self.num_features)
        return (
            k > 1 and self.affine and (self.training or not self.track_running_stats)
            and channels_last_cpu_float32(x) and x.shape[3] % k == 0
        )

    def _average_factor(self) -> float:
        """The weight of this batch in the running statistics (counting the batch when training tracks them)."""
        momentum = self.momentum
        tracked = self.num_batches_tracked
        if not (self.training and self.track_running_stats) or tracked is None:
            return 0.0 if momentum is None else momentum
        tracked.add_(1)
        if momentum is None:  # the cumulative average
            return 1.0 / float(tracked)
        return momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        factor = self._average_factor()
        # running statistics are read in eval mode and updated in training mode when the layer tracks them
        tracked = not self.training or self.track_running_stats
        running_mean = self.running_mean if tracked else None
        running_var = self.running_var if tracked else None
        if not torch.jit.is_scripting() and self.grouped_pass(x):
            return _grouped_batch_norm(x, self.weight, self.bias, running_mean, running_var, factor, self.eps,
                                       pixel_group(self.num_features))
        batch_statistics = self.training or running_mean is None
        return F.batch_norm(x, running_mean, running_var, self.weight, self.bias, batch_statistics, factor, self.eps)

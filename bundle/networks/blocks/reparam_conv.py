"""Re-parameterizable convolutions: a conv followed by batch norm, and the multi-kernel depthwise conv of LM-Net.

Both follow the RepVGG / timm pattern: ``get_equivalent_kernel_bias()`` is pure (it computes the fused kernel and
bias and changes nothing), ``switch_to_deploy()`` performs the module surgery in place and is idempotent, and a
``deploy=True`` constructor builds only the fused convolution, so converted checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Norm

from .depthwise_conv import Depthwise5x5Conv2d
from .grouped_pixel_batch_norm import GroupedPixelBatchNorm2d
from .layers import conv_layer, kernel_tuple

__all__ = [
    "fuse_conv_bn", "ConvNorm", "MultiKernelDepthwiseConv", "batch_norm_layer", "conv_norm_conv",
    "default_branch_kernels",
]


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode batch norm into the convolution before it (paper eq. 6-7).

    Args:
        weight: conv kernel, shape (out, in / groups, *kernel).
        bias: conv bias of shape (out,) or ``None``.
        bn: the batch norm that follows the convolution (its running statistics are used).

    Returns:
        ``(kernel, bias)`` of the single convolution computing ``bn(conv(x))``.
    """
    running_var = bn.running_var if bn.running_var is not None else torch.ones_like(weight[:, 0, 0, 0])
    running_mean = bn.running_mean if bn.running_mean is not None else torch.zeros_like(running_var)
    std = torch.sqrt(running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    conv_bias = bias if bias is not None else torch.zeros_like(running_mean)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), beta + (conv_bias - running_mean) * scale


class ConvNorm(nn.Module):
    """Convolution + batch norm, foldable into one convolution with bias.

    Training form: ``conv`` (bias as given) then ``norm``. Deployed form: ``conv`` with bias, ``norm`` is ``None``.
    The state_dict key of the kernel (``conv.weight``) is the same in both forms.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size (int or per dimension), "same" padding.
        stride: stride in every dimension.
        groups: convolution groups.
        bias: whether the training-form conv has a bias (the deployed conv always has one).
        deploy: build the deployed form directly.

    Shapes: (B, in_channels, *S) -> (B, out_channels, *S / stride).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 1,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.conv = conv_norm_conv(spatial_dims, in_channels, out_channels, kernel_size, stride, groups, bias or deploy)
        self.norm: nn.Module | None = None if deploy else batch_norm_layer(spatial_dims, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return x

    def get_equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel and bias of the single convolution equal to this module in eval mode (pure)."""
        if self.norm is None:  # deployed: the conv always has a bias
            return self.conv.weight, self.conv.bias
        return fuse_conv_bn(self.conv.weight, self.conv.bias, self.norm)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fold the batch norm into the convolution, in place. Calling it again does nothing."""
        if self.norm is None:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        if self.conv.bias is None:
            self.conv.bias = nn.Parameter(torch.empty_like(bias))
        self.conv.weight.copy_(kernel)
        self.conv.bias.copy_(bias)
        self.norm = None


def conv_norm_conv(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride: int, groups: int,
    bias: bool,
) -> nn.Module:
    """The convolution of a :class:`ConvNorm` (arguments as :func:`conv_layer`): :class:`Depthwise5x5Conv2d` for a 2D
    5 x 5 depthwise one without bias (``nn.Conv2d``'s function, state dict and initialization, a faster weight gradient
    on CPU), :func:`conv_layer` otherwise."""
    depthwise = groups == in_channels == out_channels and stride == 1 and not bias
    if depthwise and spatial_dims == 2 and kernel_tuple(spatial_dims, kernel_size) == (5, 5):
        return Depthwise5x5Conv2d(in_channels)
    return conv_layer(spatial_dims, in_channels, out_channels, kernel_size, stride, groups, bias)


def batch_norm_layer(spatial_dims: int, channels: int) -> nn.modules.batchnorm._BatchNorm:
    """The batch norm of a :class:`ConvNorm`: :class:`GroupedPixelBatchNorm2d` in 2D (``nn.BatchNorm2d``'s function and
    state dict, a faster training pass on narrow channels-last CPU tensors), MONAI's batch norm otherwise."""
    if spatial_dims == 2:
        return GroupedPixelBatchNorm2d(channels)
    return Norm[Norm.BATCH, spatial_dims](channels)


def default_branch_kernels(spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """The paper's depthwise kernels: 5x5, 3x3, 3x1 and 1x3 in 2D (5^3, 3^3 and the three 3-long axes in 3D)."""
    if spatial_dims == 2:
        return (5, 5), (3, 3), (3, 1), (1, 3)
    if spatial_dims == 3:
        return (5, 5, 5), (3, 3, 3), (3, 1, 1), (1, 3, 1), (1, 1, 3)
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")


class MultiKernelDepthwiseConv(nn.Module):
    """Parallel depthwise conv + BN branches with different kernels, summed (paper section 3.2, eq. 5-9).

    In the deployed form one depthwise conv with bias, whose kernel is the largest branch kernel, replaces the
    branches: each branch's BN is folded into its kernel, the smaller kernels are zero-padded (centred) to the
    largest size, and kernels and biases are added.

    Args:
        spatial_dims: 2 or 3.
        channels: input = output channels (depthwise).
        kernel_sizes: odd kernel of each branch; defaults to :func:`default_branch_kernels`.
        deploy: build only the fused convolution.

    Shapes: (B, channels, *S) -> (B, channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        kernel_sizes: Sequence[Sequence[int]] | None = None,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        kernels = tuple(tuple(k) for k in (kernel_sizes or default_branch_kernels(spatial_dims)))
        if not kernels:
            raise ValueError("kernel_sizes must name at least one branch kernel.")
        self.kernel_size = tuple(max(k[d] for k in kernels) for d in range(spatial_dims))
        # the state: ``reparam_conv`` is None in the training form (as timm's re-parameterizable blocks)
        self.reparam_conv: nn.Module | None = None
        self.branches: nn.ModuleList | None = None
        if deploy:
            self.reparam_conv = conv_layer(spatial_dims, channels, channels, self.kernel_size, groups=channels,
                                           bias=True)
        else:
            self.branches = nn.ModuleList(
                [ConvNorm(spatial_dims, channels, channels, k, groups=channels, bias=False) for k in kernels]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        if self.branches is None:  # never: the training form has branches (refines the type for TorchScript)
            raise RuntimeError("MultiKernelDepthwiseConv has neither branches nor a re-parameterized convolution.")
        out: torch.Tensor | None = None
        for branch in self.branches:
            y = branch(x)
            out = y if out is None else out.add_(y)  # in place: a batch-norm output is not saved for backward
        if out is None:
            raise RuntimeError("MultiKernelDepthwiseConv has no branches.")
        return out

    def _pad_to_full(self, kernel: torch.Tensor) -> torch.Tensor:
        """Zero-pad a kernel (out, 1, *k) to ``self.kernel_size``, centred."""
        pad: list[int] = []
        for d in range(len(self.kernel_size) - 1, -1, -1):  # F.pad takes the last dimension first
            extra = self.kernel_size[d] - kernel.shape[2 + d]
            pad += [extra // 2, extra - extra // 2]
        return F.pad(kernel, pad)

    def get_equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernel (channels, 1, *kernel_size) and bias (channels,) of the fused depthwise conv (pure)."""
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        if self.branches is None:
            raise RuntimeError("MultiKernelDepthwiseConv has neither branches nor a re-parameterized convolution.")
        kernel: torch.Tensor | None = None
        bias: torch.Tensor | None = None
        for branch in self.branches:
            k, b = branch.get_equivalent_kernel_bias()
            k = self._pad_to_full(k)
            kernel = k if kernel is None else kernel + k
            bias = b if bias is None else bias + b
        return kernel, bias

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the branches by one fused depthwise convolution, in place. Calling it again does nothing."""
        if self.reparam_conv is not None:
            return
        kernel, bias = self.get_equivalent_kernel_bias()
        channels = kernel.shape[0]
        fused = conv_layer(len(self.kernel_size), channels, channels, self.kernel_size, groups=channels, bias=True)
        fused = fused.to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        self.reparam_conv = fused
        self.branches = None

"""Small layer helpers shared by the LM-Net blocks: factories that work for 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

__all__ = [
    "conv_layer", "kernel_tuple", "channels_last_cpu_float32", "check_heads",
    "interpolation_mode", "avg_pool_layer", "same_padding",
]


def check_heads(width: int, num_heads: int) -> None:
    """``num_heads`` attention heads must be at least one and divide the attention ``width`` (channels)."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}.")
    if width % num_heads != 0:
        raise ValueError(f"num_heads ({num_heads}) must divide the attention width ({width}).")


def same_padding(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the spatial size for an odd ``kernel_size`` at stride 1 ("same" padding)."""
    for k in kernel_size:
        if k % 2 != 1:
            raise ValueError(f"kernel_size must be odd in every dimension, got {tuple(kernel_size)}.")
    return tuple(k // 2 for k in kernel_size)


def kernel_tuple(spatial_dims: int, kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    """``kernel_size`` as one int per spatial dimension (an int k is k in every dimension)."""
    ks = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
    if len(ks) != spatial_dims:
        raise ValueError(f"kernel_size {ks} must have {spatial_dims} entries (spatial_dims={spatial_dims}).")
    return ks


def channels_last_cpu_float32(x: torch.Tensor) -> bool:
    """Whether ``x`` is a non-empty (N, C, H, W) float32 CPU tensor in channels-last memory (and not also contiguous,
    as tensors with a single pixel or channel are): the tensors the training form's CPU fast paths take."""
    return (
        x.dim() == 4 and x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[0] > 0
        and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    )


def conv_layer(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int] = 1,
    stride: int = 1,
    groups: int = 1,
    bias: bool = True,
) -> nn.Module:
    """A ``spatial_dims``-D convolution with "same" padding (the output is ``stride`` times smaller).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: an odd int or one odd int per spatial dimension.
        stride: the stride in every dimension.
        groups: convolution groups (``in_channels`` for a depthwise convolution).
        bias: whether the convolution has a bias.
    """
    ks = kernel_tuple(spatial_dims, kernel_size)
    conv_type = Conv[Conv.CONV, spatial_dims]
    return conv_type(
        in_channels, out_channels, kernel_size=ks, stride=stride, padding=same_padding(ks), groups=groups, bias=bias
    )


def avg_pool_layer(spatial_dims: int, factor: int) -> nn.Module:
    """Average pooling that shrinks every spatial side ``factor`` times (kernel = stride = ``factor``)."""
    return Pool[Pool.AVG, spatial_dims](kernel_size=factor, stride=factor)


def interpolation_mode(spatial_dims: int) -> str:
    """The linear interpolation mode for ``spatial_dims``: "bilinear" (2D) or "trilinear" (3D)."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]

"""The LM-Net multi-branch block (paper section 3.2, figure 2) and its squeeze-and-excitation layer."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer

from .layers import conv_layer
from .reparam_conv import ConvNorm, MultiKernelDepthwiseConv

__all__ = ["SqueezeExcitation", "MultiBranchBlock"]


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation with 1x1 convolutions: global average pool, reduce, ReLU, expand, hard-sigmoid, scale.

    Args:
        spatial_dims: 2 or 3.
        channels: input = output channels.
        reduction: the hidden width is ``max(1, channels // reduction)``.

    Shapes: (B, channels, *S) -> (B, channels, *S).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"se_reduction must be >= 1, got {reduction}.")
        hidden = max(1, channels // reduction)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.reduce = conv_layer(spatial_dims, channels, hidden, 1)
        self.act = get_act_layer("relu")
        self.expand = conv_layer(spatial_dims, hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MultiBranchBlock(nn.Module):
    """LM-Net's multi-branch block.

    1x1 expansion conv -> BN -> Hardswish -> parallel depthwise conv+BN branches (5x5, 3x3, 3x1, 1x3), summed ->
    GELU -> squeeze-and-excitation -> 1x1 pointwise conv to ``out_channels``; plus a 1x1 conv shortcut from the
    input, added (no activation after the add).

    ``switch_to_deploy()`` folds the depthwise branches into one 5x5 depthwise conv (the paper's
    re-parameterization) and also folds the expansion BN into the expansion conv; both are exact in eval mode.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        hidden_channels: width of the expanded tensor the depthwise branches work on.
        se_reduction: squeeze-and-excitation reduction factor.
        deploy: build the deployed (fused) form directly.
        branch_kernels: the depthwise branch kernels (``None``: the paper's, see ``default_branch_kernels``).

    Shapes: (B, in_channels, *S) -> (B, out_channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        se_reduction: int = 4,
        deploy: bool = False,
        branch_kernels: tuple | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if hidden_channels < 1:
            raise ValueError(f"hidden_channels must be >= 1, got {hidden_channels}.")
        self.expand = ConvNorm(spatial_dims, in_channels, hidden_channels, 1, bias=True, deploy=deploy)
        self.expand_act = nn.Hardswish()
        self.depthwise = MultiKernelDepthwiseConv(spatial_dims, hidden_channels, branch_kernels, deploy=deploy)
        self.depthwise_act = get_act_layer("gelu")
        self.se = SqueezeExcitation(spatial_dims, hidden_channels, se_reduction)
        self.pointwise = conv_layer(spatial_dims, hidden_channels, out_channels, 1)
        self.shortcut = conv_layer(spatial_dims, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand_act(self.expand(x))
        y = self.se(self.depthwise_act(self.depthwise(y)))
        return self.pointwise(y).add_(self.shortcut(x))  # in place: a conv output is not saved for backward

    def switch_to_deploy(self) -> None:
        """Fuse the training branches in place (idempotent)."""
        self.expand.switch_to_deploy()
        self.depthwise.switch_to_deploy()

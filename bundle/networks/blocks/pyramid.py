"""Feature-pyramid pieces of LM-Net: the up-sampling conv of the decoder and the local pyramids feeding each LFT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.utils import get_act_layer

from .layers import conv_layer, interpolation_mode
from .reparam_conv import ConvNorm

__all__ = ["UpConv", "LocalPyramid", "PYRAMID_MODES"]

PYRAMID_MODES = ("down", "same", "up")


class UpConv(nn.Module):
    """Linear interpolation x2 (align_corners=True, as the authors' code) followed by a 3x3 conv.

    Shapes: (B, in_channels, *S) -> (B, out_channels, *2S).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.mode = interpolation_mode(spatial_dims)
        self.conv = conv_layer(spatial_dims, in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode=self.mode, align_corners=True))


def _pyramid_conv(spatial_dims: int, in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """3x3 conv bringing a neighbouring encoder level to this level: stride 2 ("down"), 1 ("same") or after x2
    interpolation ("up")."""
    if mode == "down":
        return conv_layer(spatial_dims, in_channels, out_channels, 3, stride=2)
    if mode == "same":
        return conv_layer(spatial_dims, in_channels, out_channels, 3)
    if mode == "up":
        return UpConv(spatial_dims, in_channels, out_channels)
    raise ValueError(f"pyramid mode must be one of {PYRAMID_MODES}, got {mode!r}.")


class LocalPyramid(nn.Module):
    """A local feature pyramid: neighbouring encoder features brought to one level, concatenated, fused.

    Each input passes its own 3x3 conv to ``out_channels`` (stride 2 for the finer level, plain for the same level,
    x2 interpolation + conv for the coarser level); the concatenation then goes through 3x3 conv -> BN -> GELU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of each input, finest first.
        modes: for each input, "down", "same" or "up" (how it is brought to this level).
        out_channels: this level's width.
        deploy: build the fusion conv with its BN already folded.

    Shapes: inputs (B, in_channels[i], *S_i) with S_i = 2S, S or S/2 -> (B, out_channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        modes: Sequence[str],
        out_channels: int,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(modes) or not in_channels:
            raise ValueError(f"in_channels {tuple(in_channels)} and modes {tuple(modes)} must be non-empty and match.")
        self.convs = nn.ModuleList(
            [_pyramid_conv(spatial_dims, c, out_channels, m) for c, m in zip(in_channels, modes, strict=True)]
        )
        self.fuse = ConvNorm(spatial_dims, len(modes) * out_channels, out_channels, 3, bias=True, deploy=deploy)
        self.act = get_act_layer("gelu")

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        brought: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            brought.append(conv(features[i]))
        return self.act(self.fuse(torch.cat(brought, dim=1)))

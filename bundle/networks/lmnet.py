"""LM-Net (Lu et al., "LM-Net: A light-weight and multi-scale network for medical image segmentation",
Computers in Biology and Medicine, 2024), as a MONAI-style network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks.layers import avg_pool_layer, conv_layer
from .blocks.multi_branch import MultiBranchBlock
from .blocks.pyramid import LocalPyramid, UpConv
from .blocks.transformer import FeatureTransformer

__all__ = ["LMNet", "MIN_INPUT_SIZE", "SIZE_DIVISOR"]

SIZE_DIVISOR = 16  # four stride-2 stages
MIN_INPUT_SIZE = 16


GFT_INPUTS = ("pyramid", "last", "none")
SKIPS = ("lft", "pyramid", "plain")


def _stage(
    spatial_dims: int, in_ch: int, out_ch: int, ratio: float, se_reduction: int, deploy: bool, kernels: tuple
) -> nn.Module:
    """Two multi-branch blocks (in -> out, out -> out), each expanding to ``ratio * out`` channels."""
    hidden = max(1, int(round(ratio * out_ch)))
    return nn.Sequential(
        MultiBranchBlock(spatial_dims, in_ch, out_ch, hidden, se_reduction, deploy, kernels),
        MultiBranchBlock(spatial_dims, out_ch, out_ch, hidden, se_reduction, deploy, kernels),
    )


def _branch_kernels(value: Sequence | None, spatial_dims: int) -> tuple[tuple[int, ...], ...] | None:
    """``branch_kernels`` as a tuple of per-axis kernels (an int k is k x k); ``None`` keeps the paper's branches."""
    if value is None:
        return None
    kernels = tuple((int(k),) * spatial_dims if isinstance(k, int) else tuple(int(v) for v in k) for k in value)
    if not kernels or any(len(k) != spatial_dims or min(k) < 1 or any(v % 2 == 0 for v in k) for k in kernels):
        raise ValueError(f"branch_kernels must be one or more odd kernels of {spatial_dims} sizes, got {value!r}.")
    return kernels


def _as_level_tuple(value: int | Sequence[int], name: str) -> tuple[int, int, int, int]:
    values = (value,) * 4 if isinstance(value, int) else tuple(value)
    if len(values) != 4:
        raise ValueError(f"{name} must be an int or 4 ints (finest level first), got {value!r}.")
    return values  # type: ignore[return-value]


class LMNet(nn.Module):
    """LM-Net: multi-branch CNN encoder/decoder with a Global Feature Transformer (GFT) on the global feature
    pyramid and a Local Feature Transformer (LFT, neighborhood attention) on each local pyramid.

    The network pads its input inside (replicate padding, centred) to a multiple of 16 on every axis and crops the
    logits back, so any input of at least 16 pixels (voxels) a side works and the output has the input's size.

    In 3D every block is its volumetric analogue: 5x5x5 / 3x3x3 / axis-aligned 3-tap depthwise branches
    re-parameterized into one 5x5x5 kernel, trilinear up-sampling in the pyramids, the GFT on all voxel tokens of
    the pyramid (scaled dot-product attention) and k x k x k neighborhood attention in the LFTs. Every level halves
    every axis, so a volume needs at least 16 voxels on each axis (thin ones are padded): for thick-slice volumes
    resample to a more isotropic spacing first (e.g. ``Spacingd`` in the config) rather than padding a few slices.

    Args:
        spatial_dims: 2 (images, slices) or 3 (volumes).
        in_channels: input channels.
        out_channels: output channels (logits, no activation).
        features: the five widths f0..f4 of the encoder levels (full resolution to 1/16). Defaults to
            (12, 24, 48, 96, 276): the authors' code's f0..f3 with a wider bottleneck, chosen to land near the
            paper's parameter count (the counts: docs/architecture.md).
        expansion_ratio: the multi-branch blocks expand to ``expansion_ratio * out`` channels. Defaults to 2.
        se_reduction: squeeze-and-excitation reduction. Defaults to 4.
        lft_kernel_size: the odd neighborhood size k of the LFT attention (k x k window). Defaults to 3.
        lft_heads: attention heads of the four LFTs (finest level first), or one int for all. Defaults to
            (2, 4, 8, 16) (6 channels a head); each must divide its level width.
        gft_heads: attention heads of the GFT; must divide ``sum(features)``. Defaults to 12 (the authors').
        gft_depth: transformer layers in the GFT. Defaults to 1.
        mlp_ratio: MLP width of every transformer layer relative to its width. Defaults to 2.
        dropout: dropout in the transformer MLPs and the GFT attention projection. Defaults to 0.1.
        branch_kernels: the depthwise kernels of the multi-branch blocks (paper table 6), e.g. ``[[3, 3]]`` or
            ``[[5, 5], [3, 3]]``; re-parameterized into the largest. Defaults to ``None``: 5x5, 3x3, 3x1 and 1x3.
        gft_input: what the GFT reads (paper table 8): ``"pyramid"`` (default: every encoder level pooled to the
            bottleneck and concatenated), ``"last"`` (the bottleneck feature only) or ``"none"`` (no GFT: the
            decoder starts from the bottleneck feature).
        skips: the skip connections (paper tables 9-10): ``"lft"`` (default: an LFT on each local pyramid),
            ``"pyramid"`` (the local pyramids without LFT) or ``"plain"`` (the encoder feature of the level, as in
            a U-Net).
        deploy: build the re-parameterized (inference) form directly, to load converted weights strictly.

    Examples::

        # 2 classes from a 1-channel 2D image
        >>> net = LMNet(spatial_dims=2, in_channels=1, out_channels=2)
        >>> net(torch.rand(1, 1, 250, 317)).shape
        torch.Size([1, 2, 250, 317])

        # 2 classes from a 1-channel volume
        >>> LMNet(spatial_dims=3)(torch.rand(1, 1, 40, 48, 20)).shape
        torch.Size([1, 2, 40, 48, 20])

    Shapes of ``forward``: (B, in_channels, H, W) -> (B, out_channels, H, W), H, W >= 16; in 3D (B, in_channels,
    D, H, W) -> (B, out_channels, D, H, W), each >= 16.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (12, 24, 48, 96, 276),
        expansion_ratio: float = 2.0,
        se_reduction: int = 4,
        lft_kernel_size: int = 3,
        lft_heads: int | Sequence[int] = (2, 4, 8, 16),
        gft_heads: int = 12,
        gft_depth: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        branch_kernels: Sequence[int | Sequence[int]] | None = None,
        gft_input: str = "pyramid",
        skips: str = "lft",
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        f = tuple(int(v) for v in features)
        if len(f) != 5 or min(f) < 1:
            raise ValueError(f"features must be 5 positive widths (f0..f4), got {tuple(features)}.")
        if expansion_ratio <= 0:
            raise ValueError(f"expansion_ratio must be > 0, got {expansion_ratio}.")
        if lft_kernel_size < 1 or lft_kernel_size % 2 == 0:
            raise ValueError(f"lft_kernel_size must be a positive odd int, got {lft_kernel_size}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if gft_input not in GFT_INPUTS:
            raise ValueError(f"gft_input must be one of {GFT_INPUTS}, got {gft_input!r}.")
        if skips not in SKIPS:
            raise ValueError(f"skips must be one of {SKIPS}, got {skips!r}.")
        kernels = _branch_kernels(branch_kernels, spatial_dims)
        heads = _as_level_tuple(lft_heads, "lft_heads")
        gft_width = sum(f) if gft_input == "pyramid" else f[4]
        checked = [("gft_heads", gft_width, gft_heads)] if gft_input != "none" else []
        checked += [("lft_heads", f[i], heads[i]) for i in range(4)] if skips == "lft" else []
        for name, width, n in checked:
            if n < 1 or width % n != 0:
                raise ValueError(f"{name} ({n}) must be >= 1 and divide its transformer width ({width}).")
        self.spatial_dims = spatial_dims
        self.in_channels, self.out_channels = in_channels, out_channels
        self.features = f
        self.gft_input, self.skips = gft_input, skips
        self.size_divisor = SIZE_DIVISOR
        self.min_input_size = MIN_INPUT_SIZE
        sd, r, se, kb = spatial_dims, expansion_ratio, se_reduction, kernels

        self.enc1 = _stage(sd, in_channels, f[0], r, se, deploy, kb)
        self.enc2 = _stage(sd, f[1], f[1], r, se, deploy, kb)
        self.enc3 = _stage(sd, f[2], f[2], r, se, deploy, kb)
        self.enc4 = _stage(sd, f[3], f[3], r, se, deploy, kb)
        self.down1 = conv_layer(sd, f[0], f[1], 3, stride=2)
        self.down2 = conv_layer(sd, f[1], f[2], 3, stride=2)
        self.down3 = conv_layer(sd, f[2], f[3], 3, stride=2)
        self.down4 = conv_layer(sd, f[3], f[4], 3, stride=2)

        self.global_pools = nn.ModuleList([avg_pool_layer(sd, 2 ** (4 - i)) for i in range(4)])
        self.gft: nn.Module | None = None
        if gft_input != "none":
            self.gft = FeatureTransformer(sd, gft_width, f[4], gft_heads, gft_depth, mlp_ratio, dropout, None)

        # skips: local pyramid i (None for plain U-Net skips) and its LFT (None without); the attribute names are the
        # state-dict keys of the shipped weights
        plain, lft = skips == "plain", skips == "lft"
        self.pyramid1 = None if plain else LocalPyramid(sd, (f[0], f[1]), ("same", "up"), f[0], deploy)
        self.pyramid2 = None if plain else LocalPyramid(sd, (f[0], f[1], f[2]), ("down", "same", "up"), f[1], deploy)
        self.pyramid3 = None if plain else LocalPyramid(sd, (f[1], f[2], f[3]), ("down", "same", "up"), f[2], deploy)
        self.pyramid4 = None if plain else LocalPyramid(sd, (f[2], f[3]), ("down", "same"), f[3], deploy)
        lfts = [FeatureTransformer(sd, f[i], f[i], heads[i], 1, mlp_ratio, dropout, lft_kernel_size) if lft else None
                for i in range(4)]
        self.lft1, self.lft2, self.lft3, self.lft4 = lfts

        self.up4 = UpConv(sd, f[4], f[3])
        self.up3 = UpConv(sd, f[3], f[2])
        self.up2 = UpConv(sd, f[2], f[1])
        self.up1 = UpConv(sd, f[1], f[0])
        self.dec4 = _stage(sd, f[3], f[3], r, se, deploy, kb)
        self.dec3 = _stage(sd, f[2], f[2], r, se, deploy, kb)
        self.dec2 = _stage(sd, f[1], f[1], r, se, deploy, kb)
        self.dec1 = _stage(sd, f[0], f[0], r, se, deploy, kb)
        self.head = conv_layer(sd, f[0], out_channels, 1)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Check the size and replicate-pad (centred) every spatial axis to a multiple of 16; returns the padding
        in ``F.pad`` order (last axis first: left, right, then the axis before, ...)."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a (B, C, *spatial) input with {self.spatial_dims} spatial axes "
                             f"(spatial_dims={self.spatial_dims}), got {x.dim()} axes.")
        m, d = self.min_input_size, self.size_divisor
        sizes = [int(s) for s in x.shape[2:]]
        if min(sizes) < m:
            raise ValueError(f"input spatial size must be at least {m} a side, got {sizes}.")
        pad: list[int] = []
        for i in range(len(sizes) - 1, -1, -1):
            p = (d - sizes[i] % d) % d
            pad += [p // 2, p - p // 2]
        if sum(pad) == 0:
            return x, pad
        return F.pad(x, pad, mode="replicate"), pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *S) -> logits (B, out_channels, *S), S = (H, W) or (D, H, W)."""
        sizes = [int(s) for s in x.shape[2:]]
        x, pad = self._pad(x)
        x1 = self.enc1(x)
        x2 = self.enc2(self.down1(x1))
        x3 = self.enc3(self.down2(x2))
        x4 = self.enc4(self.down3(x3))
        x5 = self.down4(x4)

        g = x5
        if self.gft is not None:
            if self.gft_input == "pyramid":
                encoder = [x1, x2, x3, x4]
                pooled: list[torch.Tensor] = []
                for i, pool in enumerate(self.global_pools):
                    pooled.append(pool(encoder[i]))
                pooled.append(x5)
                g = self.gft(torch.cat(pooled, dim=1))
            else:
                g = self.gft(x5)

        # skips (written out per level: TorchScript takes no module as an argument)
        l1, l2, l3, l4 = x1, x2, x3, x4
        if self.pyramid1 is not None:
            l1 = self.pyramid1([x1, x2])
            l1 = self.lft1(l1) if self.lft1 is not None else l1
        if self.pyramid2 is not None:
            l2 = self.pyramid2([x1, x2, x3])
            l2 = self.lft2(l2) if self.lft2 is not None else l2
        if self.pyramid3 is not None:
            l3 = self.pyramid3([x2, x3, x4])
            l3 = self.lft3(l3) if self.lft3 is not None else l3
        if self.pyramid4 is not None:
            l4 = self.pyramid4([x3, x4])
            l4 = self.lft4(l4) if self.lft4 is not None else l4

        d = self.dec4(self.up4(g) + l4)
        d = self.dec3(self.up3(d) + l3)
        d = self.dec2(self.up2(d) + l2)
        d = self.dec1(self.up1(d) + l1)
        out = self.head(d)
        if self.spatial_dims == 3:
            return out[:, :, pad[4] : pad[4] + sizes[0], pad[2] : pad[2] + sizes[1], pad[0] : pad[0] + sizes[2]]
        return out[:, :, pad[2] : pad[2] + sizes[0], pad[0] : pad[0] + sizes[1]]

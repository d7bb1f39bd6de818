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


def _stage(spatial_dims: int, in_ch: int, out_ch: int, ratio: float, se_reduction: int, deploy: bool) -> nn.Module:
    """Two multi-branch blocks (in -> out, out -> out), each expanding to ``ratio * out`` channels."""
    hidden = max(1, int(round(ratio * out_ch)))
    return nn.Sequential(
        MultiBranchBlock(spatial_dims, in_ch, out_ch, hidden, se_reduction, deploy),
        MultiBranchBlock(spatial_dims, out_ch, out_ch, hidden, se_reduction, deploy),
    )


def _as_level_tuple(value: int | Sequence[int], name: str) -> tuple[int, int, int, int]:
    values = (value,) * 4 if isinstance(value, int) else tuple(value)
    if len(values) != 4:
        raise ValueError(f"{name} must be an int or 4 ints (finest level first), got {value!r}.")
    return values  # type: ignore[return-value]


class LMNet(nn.Module):
    """LM-Net: multi-branch CNN encoder/decoder with a Global Feature Transformer (GFT) on the global feature
    pyramid and a Local Feature Transformer (LFT, neighborhood attention) on each local pyramid.

    The network pads its input inside (replicate padding, centred) to a multiple of 16 and crops the logits back,
    so any input of at least 16 pixels a side works and the output has the input's spatial size.

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported (the LFT's neighborhood attention is 2D).
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
        deploy: build the re-parameterized (inference) form directly, to load converted weights strictly.

    Examples::

        # 2 classes from a 1-channel 2D image
        >>> net = LMNet(spatial_dims=2, in_channels=1, out_channels=2)
        >>> net(torch.rand(1, 1, 250, 317)).shape
        torch.Size([1, 2, 250, 317])

    Shapes of ``forward``: (B, in_channels, H, W) -> (B, out_channels, H, W), H, W >= 16.
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
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"spatial_dims must be 2 (LM-Net's neighborhood attention is 2D), got {spatial_dims}.")
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
        heads = _as_level_tuple(lft_heads, "lft_heads")
        for name, width, n in [("gft_heads", sum(f), gft_heads)] + [("lft_heads", f[i], heads[i]) for i in range(4)]:
            if n < 1 or width % n != 0:
                raise ValueError(f"{name} ({n}) must be >= 1 and divide its transformer width ({width}).")
        self.spatial_dims = spatial_dims
        self.features = f
        self.size_divisor = SIZE_DIVISOR
        self.min_input_size = MIN_INPUT_SIZE
        sd, r, se = spatial_dims, expansion_ratio, se_reduction

        self.enc1 = _stage(sd, in_channels, f[0], r, se, deploy)
        self.enc2 = _stage(sd, f[1], f[1], r, se, deploy)
        self.enc3 = _stage(sd, f[2], f[2], r, se, deploy)
        self.enc4 = _stage(sd, f[3], f[3], r, se, deploy)
        self.down1 = conv_layer(sd, f[0], f[1], 3, stride=2)
        self.down2 = conv_layer(sd, f[1], f[2], 3, stride=2)
        self.down3 = conv_layer(sd, f[2], f[3], 3, stride=2)
        self.down4 = conv_layer(sd, f[3], f[4], 3, stride=2)

        self.global_pools = nn.ModuleList([avg_pool_layer(sd, 2 ** (4 - i)) for i in range(4)])
        self.gft = FeatureTransformer(sd, sum(f), f[4], gft_heads, gft_depth, mlp_ratio, dropout, kernel_size=None)

        self.pyramid1 = LocalPyramid(sd, (f[0], f[1]), ("same", "up"), f[0], deploy)
        self.pyramid2 = LocalPyramid(sd, (f[0], f[1], f[2]), ("down", "same", "up"), f[1], deploy)
        self.pyramid3 = LocalPyramid(sd, (f[1], f[2], f[3]), ("down", "same", "up"), f[2], deploy)
        self.pyramid4 = LocalPyramid(sd, (f[2], f[3]), ("down", "same"), f[3], deploy)
        lft = [
            FeatureTransformer(sd, f[i], f[i], heads[i], 1, mlp_ratio, dropout, lft_kernel_size)
            for i in range(4)
        ]
        self.lft1, self.lft2, self.lft3, self.lft4 = lft

        self.up4 = UpConv(sd, f[4], f[3])
        self.up3 = UpConv(sd, f[3], f[2])
        self.up2 = UpConv(sd, f[2], f[1])
        self.up1 = UpConv(sd, f[1], f[0])
        self.dec4 = _stage(sd, f[3], f[3], r, se, deploy)
        self.dec3 = _stage(sd, f[2], f[2], r, se, deploy)
        self.dec2 = _stage(sd, f[1], f[1], r, se, deploy)
        self.dec1 = _stage(sd, f[0], f[0], r, se, deploy)
        self.head = conv_layer(sd, f[0], out_channels, 1)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Check the size and replicate-pad (centred) H and W to multiples of 16; returns the padding used."""
        h, w = x.shape[-2], x.shape[-1]
        m, d = self.min_input_size, self.size_divisor
        if h < m or w < m:
            raise ValueError(f"input spatial size must be at least {m} a side, got {h} x {w}.")
        ph = (d - h % d) % d
        pw = (d - w % d) % d
        pad = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]
        if ph == 0 and pw == 0:
            return x, pad
        return F.pad(x, pad, mode="replicate"), pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        h, w = x.shape[-2], x.shape[-1]
        x, pad = self._pad(x)
        x1 = self.enc1(x)
        x2 = self.enc2(self.down1(x1))
        x3 = self.enc3(self.down2(x2))
        x4 = self.enc4(self.down3(x3))
        x5 = self.down4(x4)

        pooled: list[torch.Tensor] = []
        encoder = [x1, x2, x3, x4]
        for i, pool in enumerate(self.global_pools):
            pooled.append(pool(encoder[i]))
        pooled.append(x5)
        g = self.gft(torch.cat(pooled, dim=1))

        l4 = self.lft4(self.pyramid4([x3, x4]))
        l3 = self.lft3(self.pyramid3([x2, x3, x4]))
        l2 = self.lft2(self.pyramid2([x1, x2, x3]))
        l1 = self.lft1(self.pyramid1([x1, x2]))

        d = self.dec4(self.up4(g) + l4)
        d = self.dec3(self.up3(d) + l3)
        d = self.dec2(self.up2(d) + l2)
        d = self.dec1(self.up1(d) + l1)
        out = self.head(d)
        return out[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w]

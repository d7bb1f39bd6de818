"""LM-Net's feature transformers: the Global Feature Transformer (GFT) and Local Feature Transformer (LFT).

Both are: a 3x3 convolutional embedding (which also supplies position information, so there is no positional
encoding), pre-LN transformer layers on channels-last features, and (GFT only) a 1x1 conv to the output width.
The GFT attends globally through ``torch.nn.functional.scaled_dot_product_attention``; the LFT uses
neighborhood attention (each pixel attends to its k x k neighbours).

A traced 2D LFT in eval mode (the graph that OpenVINO's converter and the ONNX exporter record) runs its layers on
the channel-first maps instead (:meth:`TransformerLayer.forward_channels_first`): the same function, with the layer
norms taken over the channel axis and the linear layers as matrix products and 1x1 convolutions, so that a graph
runtime never transposes the maps between the convolutions and the attention.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock

from .dropout import ParallelDropout
from .layers import check_heads, conv_layer
from .neighborhood_attention import NeighborhoodAttention

__all__ = ["GlobalSelfAttention", "TransformerLayer", "FeatureTransformer"]


class GlobalSelfAttention(nn.Module):
    """Multi-head self-attention over all positions, through ``scaled_dot_product_attention``.

    Args:
        hidden_size: channels C.
        num_heads: attention heads (must divide ``hidden_size``).
        qkv_bias: bias in the fused q/k/v projection.
        dropout_rate: dropout on the output projection.

    Shapes: (B, *S, C) -> (B, *S, C) (any number of spatial dimensions, flattened internally).
    """

    def __init__(self, hidden_size: int, num_heads: int, qkv_bias: bool = True, dropout_rate: float = 0.0) -> None:
        super().__init__()
        check_heads(hidden_size, num_heads)
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.proj_drop = ParallelDropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        b, c = shape[0], shape[-1]
        qkv = self.qkv(x.reshape(b, -1, c)).reshape(b, -1, 3, self.num_heads, c // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, heads, N, C / heads)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = out.transpose(1, 2).reshape(b, -1, c)
        return self.proj_drop(self.proj(out)).reshape(shape)


def _layer_norm_over_channels(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm`` (a LayerNorm over C) applied to channel-first (B, C, H, W) ``x`` at every pixel -> (B, C, H, W)."""
    centred = x - x.mean(1, keepdim=True)
    variance = (centred * centred).mean(1, keepdim=True)
    return centred * torch.rsqrt(variance + norm.eps) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


def _pointwise(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear`` applied to channel-first (B, C, H, W) ``x`` at every pixel, as a 1x1 convolution."""
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


class TransformerLayer(nn.Module):
    """Pre-LN transformer layer: ``x + attn(LN(x))`` then ``x + MLP(LN(x))`` (MLP: MONAI's ``MLPBlock``, Linear, GELU,
    dropout, Linear, dropout; its dropouts are :class:`ParallelDropout`, the same function with a faster CPU mask).

    Args:
        hidden_size: channels C.
        attention: a module mapping (B, *S, C) -> (B, *S, C).
        mlp_ratio: hidden width of the MLP relative to C.
        dropout_rate: dropout inside the MLP.

    Shapes: (B, *S, C) -> (B, *S, C).
    """

    def __init__(self, hidden_size: int, attention: nn.Module, mlp_ratio: float = 2.0, dropout_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.attn = attention
        self.norm2 = nn.LayerNorm(hidden_size)
        mlp_dim = int(round(hidden_size * mlp_ratio))
        self.mlp = MLPBlock(hidden_size, mlp_dim, dropout_rate, act="GELU", dropout_mode="vit")
        self.mlp.drop1, self.mlp.drop2 = ParallelDropout(dropout_rate), ParallelDropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` in eval mode on channel-first maps, (B, C, H, W) -> (B, C, H, W), for a 2D attention
        with a ``forward_channels_first`` of its own (:class:`NeighborhoodAttention`)."""
        x = x + self.attn.forward_channels_first(_layer_norm_over_channels(x, self.norm1))
        hidden = self.mlp.fn(_pointwise(_layer_norm_over_channels(x, self.norm2), self.mlp.linear1))
        return x + _pointwise(hidden, self.mlp.linear2)


class FeatureTransformer(nn.Module):
    """Convolutional embedding + transformer layers (+ optional 1x1 output conv), on channel-first feature maps.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the (concatenated) pyramid features, also the transformer width.
        out_channels: output channels; a 1x1 conv maps to it when given and different from ``in_channels``.
        num_heads: attention heads.
        depth: number of transformer layers.
        mlp_ratio: MLP width relative to ``in_channels``.
        dropout_rate: MLP dropout.
        kernel_size: ``None`` for global attention (GFT), else the odd neighborhood size (LFT).

    Shapes: (B, in_channels, *S) -> (B, out_channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int | None,
        num_heads: int,
        depth: int = 1,
        mlp_ratio: float = 2.0,
        dropout_rate: float = 0.0,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"transformer depth must be >= 1, got {depth}.")
        check_heads(in_channels, num_heads)
        self.embed = conv_layer(spatial_dims, in_channels, in_channels, 3)
        layers = []
        for _ in range(depth):
            if kernel_size is None:
                attention: nn.Module = GlobalSelfAttention(in_channels, num_heads, dropout_rate=dropout_rate)
            else:
                attention = NeighborhoodAttention(in_channels, num_heads, kernel_size)
            layers.append(TransformerLayer(in_channels, attention, mlp_ratio, dropout_rate))
        self.layers = nn.Sequential(*layers)
        # explicit permutations (not movedim with -1, which the ONNX exporter mistranslates)
        self.to_channels_last = [0] + list(range(2, spatial_dims + 2)) + [1]
        self.to_channels_first = [0, spatial_dims + 1] + list(range(1, spatial_dims + 1))
        out = out_channels if out_channels is not None else in_channels
        self.out_conv = conv_layer(spatial_dims, in_channels, out, 1) if out != in_channels else nn.Identity()
        self.channels_first_trace = spatial_dims == 2 and kernel_size is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if not torch.jit.is_scripting():  # TorchScript compiles nothing inside
            if self.channels_first_trace and torch.jit.is_tracing() and not self.training:
                return self.out_conv(self._traced_layers(x))
        x = self.layers(x.permute(self.to_channels_last))  # channels-last tokens
        return self.out_conv(x.permute(self.to_channels_first))  # a channels-last view: no copy

    def _traced_layers(self, x: torch.Tensor) -> torch.Tensor:
        """The layers on the channel-first maps (B, C, H, W) of a traced 2D LFT in eval mode; see the module note."""
        for layer in self.layers:
            x = layer.forward_channels_first(x)
        return x

"""2D neighborhood attention (Hassani et al., "Neighborhood Attention Transformer", CVPR 2023, arXiv:2204.07143).

Every query pixel attends to the k x k keys around it. As in NATTEN, the window is centred on the pixel but shifts
inward near the border so that it always covers k x k real pixels (no zero padding): along an axis of length n, the
window of pixel i starts at ``clamp(i - k // 2, 0, n - k)``. An axis shorter than k is covered whole.

Implementation (plain PyTorch, no H*W x H*W tensors): pixel i's window equals the centred window of the clamped pixel
``clamp(i, k // 2, n - 1 - k // 2)``, so the keys at window offset (a, b) of all pixels are the slice
``k[a : a + H - k + 1, b : b + W - k + 1]`` replicate-padded back to H x W. One pass per offset (k * k in all)
computes the logits, and another accumulates the softmax-weighted values, on channel-first (B * heads, d, H, W)
tensors. This was the fastest of the variants benchmarked on CPU (index_select gathers, a one-shot unfold-style
gather + matmul, concatenated shifted slices); it scripts, traces and exports to ONNX (replicate pad -> Pad "edge").
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NeighborhoodAttention", "neighborhood_attention_2d"]


def _check_kernel_size(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")


def _window_keys(x: torch.Tensor, row: int, col: int, kh: int, kw: int) -> torch.Tensor:
    """For every pixel, the entry of ``x`` at offset (row, col) of that pixel's (kh x kw) neighborhood window.

    Args:
        x: (N, d, H, W) keys or values; ``kh <= H`` and ``kw <= W``.
        row: window row offset in ``[0, kh)``.
        col: window column offset in ``[0, kw)``.
        kh: window height, already clipped to H.
        kw: window width, already clipped to W.

    Returns:
        (N, d, H, W) tensor.
    """
    h, w = x.shape[-2], x.shape[-1]
    core = x[:, :, row : row + h - kh + 1, col : col + w - kw + 1]
    rh, rw = kh // 2, kw // 2
    return F.pad(core, [rw, kw - 1 - rw, rh, kh - 1 - rh], mode="replicate")


def _neighborhood_logits(q: torch.Tensor, k: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Attention logits ``q . k`` of every pixel with its window: (N, d, H, W) x2 -> (N, kh * kw, H, W).

    Offsets are ordered row-major (offset ``row * kw + col``); ``q`` should already be scaled.
    """
    logits: list[torch.Tensor] = []
    for row in range(kh):
        for col in range(kw):
            logits.append((q * _window_keys(k, row, col, kh, kw)).sum(1))
    return torch.stack(logits, 1)


def _neighborhood_aggregate(attn: torch.Tensor, v: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Attention-weighted sum of the window values: (N, kh * kw, H, W) weights, (N, d, H, W) values -> (N, d, H, W)."""
    out = attn[:, 0:1] * _window_keys(v, 0, 0, kh, kw)
    for offset in range(1, kh * kw):
        # in place: halves the memory traffic and allocations on CPU; autograd-safe (no backward reads ``out``)
        out.addcmul_(attn[:, offset : offset + 1], _window_keys(v, offset // kw, offset % kw, kh, kw))
    return out


def _to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, H, W, d) -> contiguous (B * heads, d, H, W)."""
    b, nh, h, w, d = x.shape
    return x.permute(0, 1, 4, 2, 3).reshape(b * nh, d, h, w)


def neighborhood_attention_2d(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, scale: float | None = None
) -> torch.Tensor:
    """Multi-head 2D neighborhood attention with NATTEN's border rule (windows shift inward at the border).

    Args:
        q: queries, (B, heads, H, W, d).
        k: keys, same shape as ``q``.
        v: values, same shape as ``q``.
        kernel_size: odd window size k; clipped per axis to the axis length (an axis shorter than k is covered whole).
        scale: logit scale; ``None`` means ``d ** -0.5``.

    Returns:
        (B, heads, H, W, d): for each query, the softmax(q . k * scale)-weighted sum of the values in its window.

    Raises:
        ValueError: ``kernel_size`` not a positive odd integer, or q/k/v not 5D tensors of one shape.
    """
    _check_kernel_size(kernel_size)
    if q.dim() != 5 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must all have shape (B, heads, H, W, d), got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}."
        )
    b, nh, h, w, d = q.shape
    kh, kw = min(kernel_size, h), min(kernel_size, w)
    q_scale = float(d) ** -0.5 if scale is None else scale
    qc = _to_channels_first(q) * q_scale
    attn = _neighborhood_logits(qc, _to_channels_first(k), kh, kw).softmax(1)
    out = _neighborhood_aggregate(attn, _to_channels_first(v), kh, kw)
    return out.reshape(b, nh, d, h, w).permute(0, 1, 3, 4, 2)


class NeighborhoodAttention(nn.Module):
    """Multi-head 2D neighborhood self-attention (Hassani et al., 2022), as used by LM-Net's Local Feature Transformer.

    Fused q/k/v linear projection, :func:`neighborhood_attention_2d` (no relative position bias), dropout on the
    attention weights, and an output linear projection. Channel ``c`` of q, k and v belongs to head ``c // (C / heads)``.

    Args:
        hidden_size: channels C.
        num_heads: attention heads (must divide ``hidden_size``).
        kernel_size: odd neighborhood size k (clipped to the feature-map size when larger).
        qkv_bias: bias in the fused q/k/v projection.
        dropout_rate: dropout probability on the attention weights.

    Shapes: channels-last (B, H, W, C) -> (B, H, W, C).

    Raises:
        ValueError: ``num_heads`` < 1, ``hidden_size`` not divisible by ``num_heads``, ``kernel_size`` not a positive
            odd integer, or ``dropout_rate`` outside [0, 1].
    """

    def __init__(
        self, hidden_size: int, num_heads: int, kernel_size: int = 3, qkv_bias: bool = True, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}.")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        _check_kernel_size(kernel_size)
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate}.")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.kernel_size = kernel_size
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.attn_drop = nn.Dropout(dropout_rate)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        nh, d = self.num_heads, self.head_dim
        # (B, H, W, 3 * C) -> contiguous (3, B * heads, d, H, W) in one copy
        qkv = self.qkv(x).reshape(b, h, w, 3, nh, d).permute(3, 0, 4, 5, 1, 2).reshape(3, b * nh, d, h, w)
        kh, kw = min(self.kernel_size, h), min(self.kernel_size, w)
        attn = _neighborhood_logits(qkv[0] * self.scale, qkv[1], kh, kw).softmax(1)
        out = _neighborhood_aggregate(self.attn_drop(attn), qkv[2], kh, kw)
        return self.proj(out.reshape(b, c, h, w).permute(0, 2, 3, 1))

"""2D neighborhood attention (Hassani et al., "Neighborhood Attention Transformer", CVPR 2023, arXiv:2204.07143).

Every query pixel attends to the k x k keys around it. As in NATTEN, the window is centred on the pixel but shifts
inward near the border so that it always covers k x k real pixels (no zero padding): along an axis of length n, the
window of pixel i starts at ``clamp(i - k // 2, 0, n - k)``. An axis shorter than k is covered whole.

Implementation (plain PyTorch, no H*W x H*W tensors): q, k and v are channel-first per head, (..., d, H, W); the
module projects its channels-last tokens straight into that layout with one batched matrix product (the transposes
are the matrix product's, not copies) and projects the result back the same way. For each of the k window rows, one
``index_select`` gathers every pixel's key row; along the columns, pixels split into a left border, an interior and
a right border, whose keys at window column ``col`` are a single column, the plain slice ``[col : col + W - k + 1]``
and a single column: views, broadcast, never copied. A pass per window offset (k * k in all) computes the logits and,
after the softmax, accumulates the weighted values in place. Under autograd a hand-written backward reuses the same
passes. It scripts, traces and exports to ONNX.

A traced graph (OpenVINO's converter, ONNX export) records another form of the same function, since a graph runtime
copies every slice and pays for every node: the keys and values are padded once with their own border entries
(:func:`_permutation_pad`), which turns NATTEN's shifted border windows into plain centred windows of the padded maps
(the same keys in another order), so each window offset is one slice per map, with no row gathers and no border
parts (:func:`_padded_window_attention`); and the logits' products are summed over the channels with a matrix
product (:func:`_channel_sum`). The traced LFT layers call that computation through a parameter-free module,
:class:`WindowAttention2D`, so that a converter can replace the module by one compiled operation (the OpenVINO
runtime does: ``bundle/openvino_kernels``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import check_heads

__all__ = ["NeighborhoodAttention", "WindowAttention2D", "neighborhood_attention_2d", "neighborhood_attention_3d"]


def _check_kernel_size(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")


def _row_starts(h: int, kh: int, device: torch.device) -> torch.Tensor:
    """First window row ``clamp(i - kh // 2, 0, h - kh)`` of every pixel row i (``kh <= h``): an (h,) int64 tensor."""
    return torch.clamp(torch.arange(h, device=device) - kh // 2, 0, h - kh)


def _column_parts(x: torch.Tensor, kw: int) -> list[torch.Tensor]:
    """Views of the left-border, interior and right-border columns of (..., W) ``x`` (empty parts left out)."""
    w, rw = x.shape[-1], kw // 2
    parts = [x[..., rw : rw + w - kw + 1]]
    if rw > 0:
        parts.insert(0, x[..., :rw])
    if kw - 1 - rw > 0:
        parts.append(x[..., rw + w - kw + 1 :])
    return parts


def _window_column_parts(x: torch.Tensor, col: int, kw: int) -> list[torch.Tensor]:
    """For the column parts of :func:`_column_parts`, views of ``x`` (..., d, H, W) holding the entry at window column
    ``col`` of every pixel: one column (broadcast) for each border, the slice ``[col : col + W - kw + 1]`` inside."""
    w, rw = x.shape[-1], kw // 2
    parts = [x[..., col : col + w - kw + 1]]
    if rw > 0:
        parts.insert(0, x[..., col : col + 1])
    if kw - 1 - rw > 0:
        parts.append(x[..., w - kw + col : w - kw + col + 1])
    return parts


def _channel_sum(p: torch.Tensor) -> torch.Tensor:
    """Sum over the channel axis of (..., d, H, W) -> (..., H, W). Traced (for a graph runtime: OpenVINO's converter,
    ONNX export) as a matrix product with a row of d ones, which OpenVINO's CPU plugin runs faster than a reduction
    over that axis (the reduction was about 15 % of LM-Net's forward in bf16: ``scripts/model_stats.py --profile
    --openvino bf16``); eager as a sum, since eager PyTorch gains nothing from the product."""
    if torch.jit.is_tracing():
        ones = torch.ones(1, p.shape[-3], dtype=p.dtype, device=p.device)
        return torch.matmul(ones, p.flatten(-2)).view_as(p[..., 0, :, :])
    return p.sum(-3)


def _neighborhood_logits(q: torch.Tensor, k: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Attention logits ``q . k`` of every pixel with its window: (..., d, H, W) x2 -> (..., kh * kw, H, W).

    Offsets are ordered row-major (offset ``row * kw + col``); ``q`` should already be scaled; ``kh <= H, kw <= W``.
    """
    q_parts = _column_parts(q, kw)
    starts = _row_starts(q.shape[-2], kh, q.device)
    logits: list[torch.Tensor] = []
    for row in range(kh):
        k_rows = k.index_select(-2, starts + row)  # row i: row ``row`` of pixel row i's window
        for col in range(kw):
            k_parts = _window_column_parts(k_rows, col, kw)
            logits.append(torch.cat([_channel_sum(q_parts[p] * k_parts[p]) for p in range(len(q_parts))], -1))
    return torch.stack(logits, -3)


def _neighborhood_aggregate(attn: torch.Tensor, v: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Attention-weighted sum of the window values: (..., kh * kw, H, W) weights, (..., d, H, W) values ->
    (..., d, H, W)."""
    a_parts = _column_parts(attn, kw)
    starts = _row_starts(v.shape[-2], kh, v.device)
    v_rows = v.index_select(-2, starts)
    v_parts = _window_column_parts(v_rows, 0, kw)
    out = [a_parts[p][..., 0:1, :, :] * v_parts[p] for p in range(len(a_parts))]
    for offset in range(1, kh * kw):
        row, col = offset // kw, offset % kw
        if col == 0:
            v_rows = v.index_select(-2, starts + row)
        v_parts = _window_column_parts(v_rows, col, kw)
        for p in range(len(out)):
            # in place: less memory traffic than out-of-place sums; autograd-safe (no backward reads ``out``)
            out[p].addcmul_(a_parts[p][..., offset : offset + 1, :, :], v_parts[p])
    return torch.cat(out, -1)


def _permutation_pad(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Pad axis ``dim`` (length n >= k, k odd) by r = k // 2 on each side with entries of ``x`` itself, so that every
    position's NATTEN window (shifted inward at the border) holds the same keys as its centred window in the padded
    axis, in another order: the left pad is ``x[r + 1 : 2r + 1]``, the right pad ``x[n - k : n - k + r]``.

    Position i < r: its centred window covers i + r + 1 real entries and the pads -(r - i) .. -1, which hold entries
    2r - (r - i) + 1 .. 2r = i + r + 1 .. k - 1, exactly the entries of its shifted window [0, k) that the centred one
    misses (the right border mirrors this). Attention without a position bias is invariant to that order.
    """
    r = k // 2
    if r == 0:
        return x
    n = x.shape[dim]
    return torch.cat([x.narrow(dim, r + 1, r), x, x.narrow(dim, n - k, r)], dim)


def _padded_window_attention(qkv: torch.Tensor, scale: float, kh: int, kw: int) -> torch.Tensor:
    """Neighborhood attention (B, 3, heads, d, H, W) -> (B, heads, d, H, W) as plain sliding windows over
    :func:`_permutation_pad`'s padded keys and values (odd ``kh <= H``, ``kw <= W``): per window offset, one slice of
    each padded map, with no gather and no border parts. The traced form: a graph runtime copies every slice and
    pays per node, and this has the fewest of both; eager PyTorch keeps the border-part passes, whose slices are free
    views and whose sums accumulate in place."""
    h, w = qkv.shape[-2], qkv.shape[-1]
    q = qkv[:, 0] * scale
    keys = _permutation_pad(_permutation_pad(qkv[:, 1], kh, -2), kw, -1)
    values = _permutation_pad(_permutation_pad(qkv[:, 2], kh, -2), kw, -1)
    logits: list[torch.Tensor] = []
    for offset in range(kh * kw):
        row, col = offset // kw, offset % kw
        logits.append(_channel_sum(q * keys[..., row : row + h, col : col + w]))
    attn = torch.stack(logits, -3).softmax(-3)
    out = attn[..., 0:1, :, :] * values[..., 0:h, 0:w]
    for offset in range(1, kh * kw):
        row, col = offset // kw, offset % kw
        out = out + attn[..., offset : offset + 1, :, :] * values[..., row : row + h, col : col + w]
    return out


class WindowAttention2D(nn.Module):
    """The attention core of a traced 2D LFT layer as a module of its own, with no parameters: stacked channel-first
    q, k, v (B, 3, heads, d, H, W) before their projection bias, and that bias (3 * heads * d,) -> (B, heads, d, H, W),
    the softmax(scale * q . k)-weighted sums of v over each pixel's ``kh x kw`` window (NATTEN's border rule;
    ``kh <= H``, ``kw <= W``, no dropout).

    Its forward adds the bias and runs :func:`_attend` (traced: the padded-window form above for odd windows). It
    exists so that a graph converter can swap the whole computation, bias included, for one operation
    of the same function: OpenVINO's converter does, with ``bundle.openvino_kernels`` (a ``ModuleExtension`` on this
    class).
    """

    def forward(self, qkv: torch.Tensor, bias: torch.Tensor, kh: int, kw: int, scale: float) -> torch.Tensor:
        return _attend(qkv + bias.view(1, 3, qkv.shape[2], qkv.shape[3], 1, 1), scale, kh, kw)


def _neighborhood_scatter(weights: torch.Tensor, x: torch.Tensor, kh: int, kw: int, out: torch.Tensor) -> None:
    """The adjoint of :func:`_neighborhood_aggregate` in its values, added to ``out``: every pixel's
    ``weights[o] * x`` goes back to the key pixel at window offset ``o``. (..., kh * kw, H, W) weights,
    (..., d, H, W) ``x`` and ``out`` (``out`` may be a view).

    Per window row, contributions are first summed in the row-gathered layout (columns: a slice for the interior, a
    single column for each border, all in-place adds into views), then added to their rows with one ``index_add_``.
    """
    h, w = x.shape[-2], x.shape[-1]
    rw = kw // 2
    interior = slice(rw, rw + w - kw + 1)
    tail = slice(rw + w - kw + 1, w)
    starts = _row_starts(h, kh, x.device)
    acc = torch.empty_like(x)
    for row in range(kh):
        acc.zero_()
        for col in range(kw):
            wo = weights[..., row * kw + col : row * kw + col + 1, :, :]
            acc[..., col : col + w - kw + 1].addcmul_(wo[..., interior], x[..., interior])
            if rw > 0:
                acc[..., col : col + 1] += (wo[..., :rw] * x[..., :rw]).sum(-1, keepdim=True)
            if kw - 1 - rw > 0:
                acc[..., w - kw + col : w - kw + col + 1] += (wo[..., tail] * x[..., tail]).sum(-1, keepdim=True)
        out.index_add_(-2, starts + row, acc)


class _NeighborhoodAttentionFunction(torch.autograd.Function):
    """Neighborhood attention on stacked channel-first q, k, v (B, 3, heads, d, H, W) with a hand-written backward.

    The forward is the inference computation; the backward reuses its window passes (logits of the output gradient
    with the values, aggregation of the logit gradients over the keys) plus their adjoint
    (:func:`_neighborhood_scatter`), and returns one gradient for the stacked input, instead of autograd's per-view
    zero-filled gradient buffers.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, scale: float, kh: int, kw: int) -> torch.Tensor:
        q = qkv[:, 0] * scale
        attn = _neighborhood_logits(q, qkv[:, 1], kh, kw).softmax(-3)
        ctx.save_for_backward(qkv, attn)
        ctx.settings = (scale, kh, kw)
        return _neighborhood_aggregate(attn, qkv[:, 2], kh, kw)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        qkv, attn = ctx.saved_tensors
        scale, kh, kw = ctx.settings
        grad = grad.contiguous()
        grad_attn = _neighborhood_logits(grad, qkv[:, 2], kh, kw)
        grad_logits = attn * (grad_attn - (attn * grad_attn).sum(-3, keepdim=True))
        grad_qkv = torch.empty_like(qkv)
        grad_qkv[:, 1:].zero_()  # the scatters below add into k's and v's gradients; q's is written whole
        grad_qkv[:, 0] = _neighborhood_aggregate(grad_logits, qkv[:, 1], kh, kw).mul_(scale)
        _neighborhood_scatter(grad_logits, qkv[:, 0] * scale, kh, kw, grad_qkv[:, 1])
        _neighborhood_scatter(attn, grad, kh, kw, grad_qkv[:, 2])
        return grad_qkv, None, None, None


@torch.jit.unused
def _attention_with_backward(qkv: torch.Tensor, scale: float, kh: int, kw: int) -> torch.Tensor:
    return _NeighborhoodAttentionFunction.apply(qkv, scale, kh, kw)


def _attend(qkv: torch.Tensor, scale: float, kh: int, kw: int, dropout: float = 0.0) -> torch.Tensor:
    """Neighborhood attention of stacked channel-first q, k, v (B, 3, heads, d, H, W) -> (B, heads, d, H, W): the
    softmax(scale * q . k)-weighted window sums of v (``kh <= H``, ``kw <= W``). Under autograd (eager, no dropout)
    through the hand-written backward, else the plain computation (scripting, tracing, no-grad; dropout on the
    attention weights through autograd)."""
    if dropout == 0.0 and not torch.jit.is_scripting() and not torch.jit.is_tracing():
        if torch.is_grad_enabled() and qkv.requires_grad:
            return _attention_with_backward(qkv, scale, kh, kw)
    if torch.jit.is_tracing() and dropout == 0.0 and kh % 2 == 1 and kw % 2 == 1:
        return _padded_window_attention(qkv, scale, kh, kw)
    attn = _neighborhood_logits(qkv[:, 0] * scale, qkv[:, 1], kh, kw).softmax(-3)
    if dropout > 0:
        attn = torch.nn.functional.dropout(attn, dropout)
    return _neighborhood_aggregate(attn, qkv[:, 2], kh, kw)


def neighborhood_attention_2d(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, scale: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Multi-head 2D neighborhood attention with NATTEN's border rule (windows shift inward at the border).

    Args:
        q: queries, (B, heads, H, W, d).
        k: keys, same shape as ``q``.
        v: values, same shape as ``q``.
        kernel_size: odd window size k; clipped per axis to the axis length (an axis shorter than k is covered whole).
        scale: logit scale; ``None`` means ``d ** -0.5``.
        dropout: dropout probability on the attention weights (pass 0 in eval mode).

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
    h, w, d = q.shape[2], q.shape[3], q.shape[4]
    kh, kw = min(kernel_size, h), min(kernel_size, w)
    q_scale = float(d) ** -0.5 if scale is None else scale
    qkv = torch.stack([t.permute(0, 1, 4, 2, 3) for t in (q, k, v)], 1)  # (B, 3, heads, d, H, W)
    return _attend(qkv, q_scale, kh, kw, dropout).permute(0, 1, 3, 4, 2)


def neighborhood_attention_3d(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, scale: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Multi-head 3D neighborhood attention with NATTEN's border rule: every voxel attends to the k x k x k voxels
    around it, the window shifting inward at the border (an axis shorter than k is covered whole).

    Plain PyTorch: for each of the k^3 window offsets, the keys / values at that offset of every voxel are gathered
    with one ``index_select`` per axis (nested, so the depth and height gathers are shared by the inner offsets);
    no per-voxel loop, no (D*H*W)^2 tensor. Autograd differentiates it; it scripts and exports to ONNX.

    Args:
        q: queries, (B, heads, D, H, W, d).
        k: keys, same shape as ``q``.
        v: values, same shape as ``q``.
        kernel_size: odd window size k; clipped per axis to the axis length.
        scale: logit scale; ``None`` means ``d ** -0.5``.
        dropout: dropout probability on the attention weights (pass 0 in eval mode).

    Returns:
        (B, heads, D, H, W, d): for each query, the softmax(q . k * scale)-weighted sum of the values in its window.

    Raises:
        ValueError: ``kernel_size`` not a positive odd integer, or q/k/v not 6D tensors of one shape.
    """
    _check_kernel_size(kernel_size)
    if q.dim() != 6 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all have shape (B, heads, D, H, W, d), got {list(q.shape)}, "
                         f"{list(k.shape)}, {list(v.shape)}.")
    b, nh, depth, h, w, d = q.shape
    kd, kh, kw = min(kernel_size, depth), min(kernel_size, h), min(kernel_size, w)
    q_scale = float(d) ** -0.5 if scale is None else scale
    q = (q * q_scale).reshape(b * nh, depth, h, w, d)
    k = k.reshape(b * nh, depth, h, w, d)
    v = v.reshape(b * nh, depth, h, w, d)
    starts_d = _row_starts(depth, kd, q.device)
    starts_h = _row_starts(h, kh, q.device)
    starts_w = _row_starts(w, kw, q.device)
    logits: list[torch.Tensor] = []
    for a in range(kd):
        k_a = k.index_select(1, starts_d + a)
        for bb in range(kh):
            k_ab = k_a.index_select(2, starts_h + bb)
            for c in range(kw):
                logits.append((q * k_ab.index_select(3, starts_w + c)).sum(-1))
    attn = torch.stack(logits, -1).softmax(-1)  # (N, D, H, W, kd * kh * kw), offsets row-major
    if dropout > 0:
        attn = torch.nn.functional.dropout(attn, dropout)
    out = torch.zeros_like(q)
    offset = 0
    for a in range(kd):
        v_a = v.index_select(1, starts_d + a)
        for bb in range(kh):
            v_ab = v_a.index_select(2, starts_h + bb)
            for c in range(kw):
                out = out + attn[..., offset : offset + 1] * v_ab.index_select(3, starts_w + c)
                offset += 1
    return out.reshape(b, nh, depth, h, w, d)


class NeighborhoodAttention(nn.Module):
    """Multi-head neighborhood self-attention (Hassani et al., 2022), as used by LM-Net's Local Feature Transformer,
    in 2D or 3D (by the input's rank).

    Fused q/k/v linear projection, :func:`neighborhood_attention_2d` / :func:`neighborhood_attention_3d` (no relative
    position bias), dropout on the attention weights, and an output linear projection. Channel ``c`` of q, k and v
    belongs to head ``c // (C / heads)``.

    Args:
        hidden_size: channels C.
        num_heads: attention heads (must divide ``hidden_size``).
        kernel_size: odd neighborhood size k (clipped to the feature-map size when larger).
        qkv_bias: bias in the fused q/k/v projection.
        dropout_rate: dropout probability on the attention weights.

    Shapes: channels-last (B, H, W, C) -> (B, H, W, C), or (B, D, H, W, C) -> (B, D, H, W, C).

    Raises:
        ValueError: ``num_heads`` < 1, ``hidden_size`` not divisible by ``num_heads``, ``kernel_size`` not a positive
            odd integer, or ``dropout_rate`` outside [0, 1].
    """

    def __init__(
        self, hidden_size: int, num_heads: int, kernel_size: int = 3, qkv_bias: bool = True, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        check_heads(hidden_size, num_heads)
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
        self.window_attention = WindowAttention2D()  # no parameters: the traced channel-first form calls it

    def forward_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without dropout on a channel-first 2D map, (B, C, H, W) -> (B, C, H, W): q, k and v come
        from one batched matrix product in the layout the attention takes (their bias added by
        :class:`WindowAttention2D`), and the output projection is a 1x1 convolution (the form a traced LFT records:
        :class:`~.transformer.FeatureTransformer`)."""
        b, c, h, w = x.shape
        qkv = torch.bmm(self.qkv.weight.expand(b, 3 * c, c), x.reshape(b, c, h * w))  # the bias: in the attention
        bias = self.qkv.bias if self.qkv.bias is not None else x.new_zeros(3 * c)
        kh, kw = min(self.kernel_size, h), min(self.kernel_size, w)
        out = self.window_attention(qkv.view(b, 3, self.num_heads, self.head_dim, h, w), bias, kh, kw, self.scale)
        return torch.nn.functional.conv2d(out.reshape(b, c, h, w), self.proj.weight[:, :, None, None], self.proj.bias)

    def _project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """The fused q/k/v projection of channel-first tokens (B, C, N) -> (B, 3C, N), one batched matrix product."""
        b, c = x.shape[0], x.shape[1]
        weight = self.qkv.weight.expand(b, 3 * c, c)
        bias = self.qkv.bias
        if bias is not None:
            return torch.baddbmm(bias.view(1, 3 * c, 1), weight, x)
        return torch.bmm(weight, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropout = self.attn_drop.p if self.training else 0.0
        if x.dim() == 5:
            b, depth, h, w, c = x.shape
            qkv = self.qkv(x).reshape(b, depth, h, w, 3, self.num_heads, self.head_dim).permute(4, 0, 5, 1, 2, 3, 6)
            out = neighborhood_attention_3d(qkv[0], qkv[1], qkv[2], self.kernel_size, self.scale, dropout)
            return self.proj(out.permute(0, 2, 3, 4, 1, 5).reshape(b, depth, h, w, c))
        b, h, w, c = x.shape
        kh, kw = min(self.kernel_size, h), min(self.kernel_size, w)
        # the projections as batched matrix products whose transposes are free: tokens (B, H*W, C) -> channel-first
        # q, k, v (B, 3C, H*W) -> attention per head -> tokens again, with no layout copy in between
        qkv = self._project_qkv(x.reshape(b, h * w, c).transpose(1, 2))
        out = _attend(qkv.view(b, 3, self.num_heads, self.head_dim, h, w), self.scale, kh, kw, dropout)
        out = torch.baddbmm(self.proj.bias.view(1, 1, c), out.reshape(b, c, h * w).transpose(1, 2),
                            self.proj.weight.t().expand(b, c, c))
        return out.view(b, h, w, c)

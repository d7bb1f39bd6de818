"""2D neighborhood attention: exactness against a per-pixel brute force, NATTEN's border rule, the module, export."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import bundle.networks.blocks.neighborhood_attention as na_module
from bundle.networks.blocks.neighborhood_attention import (
    NeighborhoodAttention,
    _neighborhood_aggregate,
    _neighborhood_logits,
    neighborhood_attention_2d,
)


def reference_attention(q, k, v, kernel_size, scale=None):
    """Brute force: loops over query pixels; the window shifts inward at the border and is clipped to short axes."""
    b, nh, h, w, d = q.shape
    scale = d**-0.5 if scale is None else scale
    kh, kw = min(kernel_size, h), min(kernel_size, w)
    out = torch.empty_like(q)
    for i in range(h):
        top = i - kh // 2
        top = 0 if top < 0 else (h - kh if top + kh > h else top)
        for j in range(w):
            left = j - kw // 2
            left = 0 if left < 0 else (w - kw if left + kw > w else left)
            keys = k[:, :, top : top + kh, left : left + kw].reshape(b, nh, kh * kw, d)
            values = v[:, :, top : top + kh, left : left + kw].reshape(b, nh, kh * kw, d)
            weights = torch.softmax(torch.einsum("bnd,bnkd->bnk", q[:, :, i, j], keys) * scale, -1)
            out[:, :, i, j] = torch.einsum("bnk,bnkd->bnd", weights, values)
    return out


def random_qkv(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(3)]


CASES = [  # (B, heads, H, W, d), kernel_size
    ((1, 1, 5, 7, 4), 3),
    ((2, 3, 9, 6, 8), 3),
    ((1, 2, 9, 6, 5), 5),
    ((2, 1, 13, 13, 4), 7),
    ((1, 2, 8, 11, 3), 5),
    ((2, 2, 2, 2, 4), 3),  # both axes shorter than the kernel
    ((1, 2, 1, 9, 4), 3),  # a single row
    ((1, 1, 6, 4, 2), 7),  # one axis shorter than the kernel
    ((1, 1, 6, 5, 2), 1),
]


@pytest.mark.parametrize("shape,kernel_size", CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_matches_brute_force(shape, kernel_size, dtype, tol):
    q, k, v = random_qkv(shape, dtype)
    out = neighborhood_attention_2d(q, k, v, kernel_size)
    assert out.shape == shape and out.dtype == dtype
    assert (out - reference_attention(q, k, v, kernel_size)).abs().max().item() <= tol


def test_custom_scale():
    q, k, v = random_qkv((1, 2, 7, 8, 4), torch.float64)
    out = neighborhood_attention_2d(q, k, v, 3, scale=0.3)
    assert (out - reference_attention(q, k, v, 3, scale=0.3)).abs().max().item() <= 1e-12
    assert (out - neighborhood_attention_2d(q, k, v, 3)).abs().max().item() > 1e-3


@pytest.mark.parametrize("shape,kernel_size", [((2, 2, 2, 2, 4), 3), ((1, 2, 5, 7, 4), 7), ((1, 1, 3, 3, 2), 5)])
def test_window_covering_the_map_is_global_attention(shape, kernel_size):
    q, k, v = random_qkv(shape, torch.float64)
    b, nh, h, w, d = shape
    tokens = [t.reshape(b, nh, h * w, d) for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*tokens).reshape(shape)
    torch.testing.assert_close(neighborhood_attention_2d(q, k, v, kernel_size), expected)


def test_gradients_match_brute_force():
    q, k, v = (t.requires_grad_() for t in random_qkv((2, 2, 7, 6, 3), torch.float64))
    weight = torch.randn(2, 2, 7, 6, 3, dtype=torch.float64)
    fast = torch.autograd.grad((neighborhood_attention_2d(q, k, v, 5) * weight).sum(), (q, k, v))
    slow = torch.autograd.grad((reference_attention(q, k, v, 5) * weight).sum(), (q, k, v))
    for g_fast, g_slow in zip(fast, slow, strict=True):
        torch.testing.assert_close(g_fast, g_slow)


def _autograd_attention(qkv: torch.Tensor, scale: float, kh: int, kw: int) -> torch.Tensor:
    """The reference: the inference computation differentiated by autograd (no hand-written backward)."""
    attn = _neighborhood_logits(qkv[:, 0] * scale, qkv[:, 1], kh, kw).softmax(-3)
    return _neighborhood_aggregate(attn, qkv[:, 2], kh, kw)


@pytest.mark.parametrize("shape,kernel_size", CASES)
def test_hand_written_backward_equals_autograd(shape, kernel_size):
    """The training path (``_NeighborhoodAttentionFunction``) has the same outputs and gradients as autograd through
    the inference computation, border windows and windows clipped to short axes included."""
    b, nh, h, w, d = shape
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(b, 3, nh, d, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(b, nh, d, h, w, generator=gen, dtype=torch.float64)
    kh, kw = min(kernel_size, h), min(kernel_size, w)
    fast = na_module._attend(qkv, 0.7, kh, kw)
    assert fast.grad_fn is not None and "NeighborhoodAttentionFunction" in type(fast.grad_fn).__name__
    slow = _autograd_attention(qkv, 0.7, kh, kw)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    (g_fast,) = torch.autograd.grad((fast * weight).sum(), qkv)
    (g_slow,) = torch.autograd.grad((slow * weight).sum(), qkv)
    torch.testing.assert_close(g_fast, g_slow, rtol=0, atol=1e-12)


def test_module_gradients_equal_autograd_in_float32(monkeypatch):
    """The whole module in training mode: parameter and input gradients through the hand-written backward equal
    those of autograd through the inference computation (swapped in as the reference)."""
    torch.manual_seed(6)
    module = NeighborhoodAttention(12, 2, kernel_size=3).train()
    x = torch.randn(2, 17, 23, 12, requires_grad=True)
    weight = torch.randn(2, 17, 23, 12)
    grads = torch.autograd.grad((module(x) * weight).sum(), [x, *module.parameters()])
    monkeypatch.setattr(na_module, "_attention_with_backward", _autograd_attention)
    reference = torch.autograd.grad((module(x) * weight).sum(), [x, *module.parameters()])
    for fast, slow in zip(grads, reference, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_border_window_shifts_inward():
    """Corner pixel (0, 0), k = 3: NATTEN's window is rows/cols 0..2, not the zero-padded -1..1."""
    q, k, v = random_qkv((1, 1, 6, 6, 4), torch.float64)
    base = neighborhood_attention_2d(q, k, v, 3)
    k2 = k.clone()
    k2[:, :, 2, 2] += 5.0  # outside a centred (zero-padded) window, inside the shifted one
    changed = neighborhood_attention_2d(q, k2, v, 3)
    assert (changed[:, :, 0, 0] - base[:, :, 0, 0]).abs().max().item() > 1e-3
    k3 = k.clone()
    k3[:, :, 3, 0] += 5.0  # outside the shifted window
    untouched = neighborhood_attention_2d(q, k3, v, 3)
    assert (untouched[:, :, 0, 0] - base[:, :, 0, 0]).abs().max().item() == 0.0
    # the corner output is exactly attention over the top-left 3 x 3 block
    block = [t[:, :, :3, :3].reshape(1, 1, 9, 4) for t in (k, v)]
    expected = F.scaled_dot_product_attention(q[:, :, 0:1, 0], *block)[:, :, 0]
    torch.testing.assert_close(base[:, :, 0, 0], expected)
    # k = 5: the last pixel (5, 5) of a 6 x 6 map sees rows/cols 1..5, so value (5, 1) matters (zero padding: 3..7)
    v4 = v.clone()
    v4[:, :, 5, 1] += 5.0
    last, last_changed = (neighborhood_attention_2d(q, k, vv, 5)[:, :, 5, 5] for vv in (v, v4))
    assert (last_changed - last).abs().max().item() > 1e-6


def test_function_rejects_bad_arguments():
    q, k, v = random_qkv((1, 1, 4, 4, 2))
    for kernel_size in (0, 2, -3):
        with pytest.raises(ValueError, match="kernel_size"):
            neighborhood_attention_2d(q, k, v, kernel_size)
    with pytest.raises(ValueError, match="shape"):
        neighborhood_attention_2d(q, k[:, :, :3], v, 3)


def test_module_shape_and_gradients():
    torch.manual_seed(0)
    module = NeighborhoodAttention(hidden_size=12, num_heads=3, kernel_size=3)
    x = torch.randn(2, 9, 11, 12, requires_grad=True)
    out = module(x)
    assert out.shape == (2, 9, 11, 12)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kernel_size,qkv_bias,size", [(3, True, (7, 9)), (5, False, (6, 5)), (3, True, (2, 2))])
def test_module_matches_manual_computation(kernel_size, qkv_bias, size):
    torch.manual_seed(1)
    hidden, heads = 8, 2
    module = NeighborhoodAttention(hidden, heads, kernel_size=kernel_size, qkv_bias=qkv_bias).double().eval()
    x = torch.randn(2, *size, hidden, dtype=torch.float64)
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias).reshape(2, *size, 3, heads, hidden // heads)
    q, k, v = (qkv[..., i, :, :].permute(0, 3, 1, 2, 4) for i in range(3))  # (B, heads, H, W, d)
    attn = reference_attention(q, k, v, kernel_size).permute(0, 2, 3, 1, 4).reshape(2, *size, hidden)
    expected = F.linear(attn, module.proj.weight, module.proj.bias)
    torch.testing.assert_close(module(x), expected)


def test_module_attention_dropout():
    torch.manual_seed(2)
    x = torch.randn(1, 6, 6, 8)
    module = NeighborhoodAttention(8, 2, dropout_rate=1.0).train()
    # every attention weight dropped: the output is the output projection's bias alone
    torch.testing.assert_close(module(x), module.proj.bias.expand(1, 6, 6, 8))
    module.eval()
    assert (module(x) - module.proj.bias).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(hidden_size=10, num_heads=3), r"num_heads \(3\) must divide the attention width \(10\)"),
        (dict(hidden_size=8, num_heads=0), "num_heads"),
        (dict(hidden_size=8, num_heads=2, kernel_size=4), "kernel_size"),
        (dict(hidden_size=8, num_heads=2, kernel_size=0), "kernel_size"),
        (dict(hidden_size=8, num_heads=2, dropout_rate=1.5), "dropout_rate"),
    ],
)
def test_module_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeighborhoodAttention(**kwargs)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("mode", ["script", "trace"])
def test_torchscript_round_trip(mode, tmp_path):
    torch.manual_seed(3)
    module = NeighborhoodAttention(8, 2, kernel_size=3).eval()
    x = torch.randn(2, 7, 9, 8)
    compiled = torch.jit.script(module) if mode == "script" else _quiet(torch.jit.trace, module, x)
    torch.jit.save(compiled, str(tmp_path / "na.pt"))
    loaded = torch.jit.load(str(tmp_path / "na.pt"))
    # scripting is shape-generic (small maps too); a trace fixes min(kernel, H/W), valid for maps >= the kernel
    others = [torch.randn(1, 5, 12, 8)] + ([torch.randn(1, 2, 1, 8)] if mode == "script" else [])
    for inp in [x, *others]:
        torch.testing.assert_close(loaded(inp), module(inp), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape,kernel_size", CASES)
def test_traced_attention_matches_brute_force(shape, kernel_size):
    q, k, v = random_qkv(shape)
    traced = _quiet(torch.jit.trace, lambda a, b, c: neighborhood_attention_2d(a, b, c, kernel_size), (q, k, v))
    assert (traced(q, k, v) - reference_attention(q, k, v, kernel_size)).abs().max().item() <= 1e-5
    if shape[2] >= kernel_size and shape[3] >= kernel_size:  # a trace fixes min(kernel, H/W): larger maps too
        q2, k2, v2 = random_qkv(shape[:2] + (shape[2] + 3, shape[3] + 2) + shape[4:], seed=1)
        assert (traced(q2, k2, v2) - reference_attention(q2, k2, v2, kernel_size)).abs().max().item() <= 1e-5


def test_a_trace_slides_over_padded_maps_and_sums_channels_by_matrix_products():
    """A trace records the padded-window form: no row gathers, one channel-sum matrix product per window offset;
    eager keeps the border-part passes and sums instead."""
    module = NeighborhoodAttention(8, 2, kernel_size=3).eval()
    x = torch.randn(1, 9, 11, 8)
    graph = _quiet(torch.jit.trace, module, x).inlined_graph
    kinds = [node.kind() for node in graph.nodes()]
    assert kinds.count("aten::matmul") == 3 * 3 and "aten::index_select" not in kinds
    with torch.no_grad(), torch.profiler.profile() as prof:
        module(x)
    events = {e.key for e in prof.key_averages()}
    assert "aten::matmul" not in events and "aten::index_select" in events


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_permutation_pad_holds_every_border_window(kernel_size):
    """Every position's centred window in the padded axis holds exactly the entries of its NATTEN window."""
    r = kernel_size // 2
    for n in range(kernel_size, kernel_size + 5):
        padded = na_module._permutation_pad(torch.arange(n), kernel_size, 0).tolist()
        assert len(padded) == n + 2 * r
        for i in range(n):
            start = min(max(i - r, 0), n - kernel_size)
            assert sorted(padded[i : i + kernel_size]) == list(range(start, start + kernel_size)), (n, i)


@pytest.mark.parametrize("shape,kernel_size", [((2, 3, 9, 6, 8), 3), ((1, 2, 9, 6, 5), 5), ((1, 1, 5, 3, 2), 7)])
def test_padded_window_form_equals_the_border_part_form(shape, kernel_size):
    """The traced (padded-window) computation and the eager one agree in float64, border windows and windows clipped
    to short (odd) axes included."""
    b, nh, h, w, d = shape
    gen = torch.Generator().manual_seed(8)
    qkv = torch.randn(b, 3, nh, d, h, w, generator=gen, dtype=torch.float64)
    kh, kw = min(kernel_size, h), min(kernel_size, w)
    padded = na_module._padded_window_attention(qkv, 0.4, kh, kw)
    torch.testing.assert_close(padded, _autograd_attention(qkv, 0.4, kh, kw), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_matches_pytorch(dynamo, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(4)
    module = NeighborhoodAttention(8, 2, kernel_size=3).eval()
    x = torch.randn(2, 7, 9, 8)
    path = str(tmp_path / "na.onnx")
    if dynamo:
        _quiet(torch.onnx.export, module, (x,), path, dynamo=True, verbose=False)
    else:
        axes = {"x": {0: "batch", 1: "height", 2: "width"}}
        _quiet(
            torch.onnx.export, module, (x,), path, dynamo=False, opset_version=17, input_names=["x"], dynamic_axes=axes
        )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    inputs = [x] if dynamo else [x, torch.randn(1, 5, 12, 8)]
    for inp in inputs:
        (out,) = session.run(None, {name: inp.numpy()})
        assert abs(out - module(inp).detach().numpy()).max() <= 1e-4

"""The feature transformers' traced form: a traced 2D LFT runs its layers on channel-first maps, the same function."""

from __future__ import annotations

import warnings

import pytest
import torch

from bundle.networks.blocks.neighborhood_attention import NeighborhoodAttention
from bundle.networks.blocks.transformer import FeatureTransformer


def _trace(module, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, x, check_trace=False)


def _randomized(module):
    """Non-trivial layer-norm affine parameters (they start at 1 and 0)."""
    gen = torch.Generator().manual_seed(1)
    for sub in module.modules():
        if isinstance(sub, torch.nn.LayerNorm):
            sub.weight.data = torch.rand(sub.weight.shape, generator=gen) + 0.5
            sub.bias.data = torch.randn(sub.bias.shape, generator=gen)
    return module


@pytest.mark.parametrize("width,heads,kernel_size,depth,size", [(12, 2, 3, 1, (17, 23)), (24, 4, 5, 2, (9, 7))])
def test_traced_lft_runs_channel_first_and_equals_eager(width, heads, kernel_size, depth, size):
    torch.manual_seed(0)
    lft = _randomized(FeatureTransformer(2, width, width, heads, depth, 2.0, 0.1, kernel_size)).eval()
    x = torch.randn(2, width, *size)
    traced = _trace(lft, x)
    kinds = [node.kind() for node in traced.inlined_graph.nodes()]
    assert "aten::permute" not in kinds and "aten::layer_norm" not in kinds
    with torch.no_grad():
        torch.testing.assert_close(traced(x), lft(x), rtol=1e-5, atol=1e-5)


def test_traced_lft_in_training_mode_keeps_the_token_layers():
    """Training mode (dropout) is traced as eager runs it: channels-last tokens, LayerNorm modules."""
    lft = FeatureTransformer(2, 12, 12, 2, 1, 2.0, 0.1, 3).train()
    kinds = [node.kind() for node in _trace(lft, torch.randn(1, 12, 9, 9)).inlined_graph.nodes()]
    assert "aten::permute" in kinds and "aten::layer_norm" in kinds


def test_traced_3d_lft_keeps_the_token_layers():
    torch.manual_seed(0)
    lft = FeatureTransformer(3, 8, 8, 2, 1, 2.0, 0.0, 3).eval()
    x = torch.randn(1, 8, 5, 6, 7)
    traced = _trace(lft, x)
    assert "aten::permute" in [node.kind() for node in traced.inlined_graph.nodes()]
    with torch.no_grad():
        torch.testing.assert_close(traced(x), lft(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_attention_channel_first_equals_tokens(qkv_bias):
    torch.manual_seed(2)
    attention = NeighborhoodAttention(12, 3, kernel_size=3, qkv_bias=qkv_bias).eval()
    x = torch.randn(2, 12, 10, 13)
    with torch.no_grad():
        tokens = attention(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(attention.forward_channels_first(x), tokens, rtol=1e-5, atol=1e-5)

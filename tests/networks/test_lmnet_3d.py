"""LMNet(spatial_dims=3): shapes, gradients, exact re-parameterization (blocks and whole model), strict loading of
converted weights, 3D neighborhood attention against a per-voxel brute force (TorchScript and ONNX: test_export)."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import LMNet, reparameterize_model
from bundle.networks.blocks import MultiBranchBlock
from bundle.networks.blocks.neighborhood_attention import NeighborhoodAttention, neighborhood_attention_3d
from bundle.networks.blocks.pyramid import LocalPyramid
from tests.helpers import randomize_batchnorm

SMALL = {"features": (8, 16, 16, 32, 32), "lft_heads": 2, "gft_heads": 8}


def reference_attention_3d(q, k, v, kernel_size, scale=None):
    """Brute force over query voxels; the window shifts inward at the border and is clipped to short axes."""
    b, nh, depth, h, w, d = q.shape
    scale = d**-0.5 if scale is None else scale
    kd, kh, kw = min(kernel_size, depth), min(kernel_size, h), min(kernel_size, w)

    def start(i, n, k):
        return min(max(i - k // 2, 0), n - k)

    out = torch.empty_like(q)
    for i in range(depth):
        for j in range(h):
            for m in range(w):
                a, bb, c = start(i, depth, kd), start(j, h, kh), start(m, w, kw)
                keys = k[:, :, a : a + kd, bb : bb + kh, c : c + kw].reshape(b, nh, -1, d)
                values = v[:, :, a : a + kd, bb : bb + kh, c : c + kw].reshape(b, nh, -1, d)
                weights = torch.softmax(torch.einsum("bnd,bnkd->bnk", q[:, :, i, j, m], keys) * scale, -1)
                out[:, :, i, j, m] = torch.einsum("bnk,bnkd->bnd", weights, values)
    return out


@pytest.mark.parametrize("shape,kernel_size", [
    ((1, 2, 5, 6, 4, 3), 3), ((2, 1, 4, 7, 5, 2), 5), ((1, 1, 2, 3, 6, 4), 3), ((1, 1, 3, 3, 3, 2), 7),
    ((1, 1, 4, 4, 4, 2), 1),
])
def test_3d_attention_matches_brute_force(shape, kernel_size):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(neighborhood_attention_3d(q, k, v, kernel_size),
                               reference_attention_3d(q, k, v, kernel_size), atol=1e-12, rtol=0)
    torch.testing.assert_close(neighborhood_attention_3d(q, k, v, kernel_size, scale=0.3),
                               reference_attention_3d(q, k, v, kernel_size, scale=0.3), atol=1e-12, rtol=0)


def test_3d_attention_gradients_match_brute_force():
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn((1, 2, 4, 5, 3, 3), generator=gen, dtype=torch.float64, requires_grad=True)
              for _ in range(3)]
    grads = torch.autograd.grad(neighborhood_attention_3d(*inputs, 3).square().sum(), inputs)
    expected = torch.autograd.grad(reference_attention_3d(*inputs, 3).square().sum(), inputs)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_3d_attention_rejects_bad_arguments():
    q = torch.randn(1, 1, 4, 4, 4, 2)
    with pytest.raises(ValueError, match="kernel_size"):
        neighborhood_attention_3d(q, q, q, 2)
    with pytest.raises(ValueError, match="D, H, W, d"):
        neighborhood_attention_3d(q, q, q[..., :1], 3)


def test_attention_module_takes_volumes():
    module = NeighborhoodAttention(8, 2, 3)
    x = torch.randn(2, 5, 6, 4, 8, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in module.parameters())


@pytest.mark.parametrize("in_channels", [1, 2])
@pytest.mark.parametrize("size", [(16, 16, 16), (64, 48, 32), (97, 80, 19)])
def test_shape(in_channels, size):
    net = LMNet(spatial_dims=3, in_channels=in_channels, out_channels=3, **SMALL).eval()
    with torch.no_grad():
        assert net(torch.randn(1, in_channels, *size)).shape == (1, 3, *size)


def test_default_widths_in_3d():
    net = LMNet(spatial_dims=3).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 16, 32, 16)).shape == (2, 2, 16, 32, 16)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = LMNet(spatial_dims=3, in_channels=2, **SMALL).train()
    net(torch.randn(2, 2, 16, 32, 16)).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def _close(got, want):
    """<= 1e-4 relative to unit-scale logits."""
    scale = max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= 1e-4 * scale


def test_blocks_reparameterize_exactly():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 10, 9)
    block = randomize_batchnorm(MultiBranchBlock(3, 8, 12, 16), seed=2).eval()
    with torch.no_grad():
        want = block(x)
        block.switch_to_deploy()
        _close(block(x), want)
    pyramid = randomize_batchnorm(LocalPyramid(3, (8, 16), ("same", "up"), 8), seed=3).eval()
    features = [torch.randn(1, 8, 8, 8, 8), torch.randn(1, 16, 4, 4, 4)]
    with torch.no_grad():
        want = pyramid(features)
        _close(reparameterize_model(pyramid)(features), want)


@pytest.mark.parametrize("kwargs", [SMALL, {}])
def test_reparameterized_model_is_equivalent_and_loads_strictly(kwargs):
    torch.manual_seed(0)
    net = randomize_batchnorm(LMNet(spatial_dims=3, **kwargs), seed=1).eval()
    x = torch.randn(1, 1, 32, 24, 20)
    deployed = reparameterize_model(net)
    with torch.no_grad():
        want = net(x)
        _close(deployed(x), want)
        twice = reparameterize_model(deployed)
        _close(twice(x), want)
        fresh = LMNet(spatial_dims=3, deploy=True, **kwargs).eval()
        fresh.load_state_dict(deployed.state_dict(), strict=True)
        _close(fresh(x), want)
    assert any(p.dim() == 5 and p.shape[-3:] == (5, 5, 5) for p in deployed.parameters())


def test_input_smaller_than_16_on_any_axis_raises():
    net = LMNet(spatial_dims=3, **SMALL)
    with pytest.raises(ValueError, match="input spatial size"):
        net(torch.randn(1, 1, 16, 16, 8))
    with pytest.raises(ValueError, match="spatial_dims=3"):
        net(torch.randn(1, 1, 16, 16))

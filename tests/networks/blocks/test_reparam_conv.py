"""Exact structural re-parameterization of the multi-kernel depthwise conv, conv + BN, and the multi-branch block."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import reparameterize_model
from bundle.networks.blocks import ConvNorm, MultiBranchBlock, MultiKernelDepthwiseConv
from tests.helpers import randomize_batchnorm

CASES_2D = [(8, (1, 8, 17, 23)), (5, (2, 5, 16, 16))]


@pytest.mark.parametrize("channels,shape", CASES_2D)
def test_depthwise_fusion_is_exact(channels, shape):
    torch.manual_seed(0)
    block = randomize_batchnorm(MultiKernelDepthwiseConv(2, channels)).eval()
    x = torch.randn(shape)
    expected = block(x)
    kernel, bias = block.get_equivalent_kernel_bias()
    assert kernel.shape == (channels, 1, 5, 5) and bias.shape == (channels,)
    block.switch_to_deploy()
    assert block.branches is None
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_get_equivalent_kernel_bias_is_pure():
    block = randomize_batchnorm(MultiKernelDepthwiseConv(2, 4)).eval()
    before = {k: v.clone() for k, v in block.state_dict().items()}
    block.get_equivalent_kernel_bias()
    after = block.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_convnorm_fusion_and_deploy_constructor_load_strictly():
    torch.manual_seed(1)
    layer = randomize_batchnorm(ConvNorm(2, 3, 6, 3, bias=True)).eval()
    x = torch.randn(2, 3, 9, 11)
    expected = layer(x)
    layer.switch_to_deploy()
    assert layer.norm is None
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    deployed = ConvNorm(2, 3, 6, 3, bias=True, deploy=True)
    deployed.load_state_dict(layer.state_dict(), strict=True)
    torch.testing.assert_close(deployed(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 6, 19, 13)), (3, (1, 6, 7, 9, 8))])
def test_multi_branch_block_switch_is_exact_and_idempotent(spatial_dims, shape):
    torch.manual_seed(2)
    block = randomize_batchnorm(MultiBranchBlock(spatial_dims, 6, 10, hidden_channels=12)).eval()
    x = torch.randn(shape)
    expected = block(x)
    assert expected.shape == (shape[0], 10, *shape[2:])
    block.switch_to_deploy()
    once = {k: v.clone() for k, v in block.state_dict().items()}
    block.switch_to_deploy()
    assert block.state_dict().keys() == once.keys()
    assert all(torch.equal(once[k], v) for k, v in block.state_dict().items())
    assert not any("branches" in k or "norm" in k for k in once)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-4)
    walked = reparameterize_model(randomize_batchnorm(MultiBranchBlock(spatial_dims, 6, 10, 12), seed=5))
    assert walked(x).shape == expected.shape  # the walker (channels-last layout) handles 2D and 3D
    fresh = MultiBranchBlock(spatial_dims, 6, 10, hidden_channels=12, deploy=True)
    fresh.load_state_dict(once, strict=True)
    torch.testing.assert_close(fresh(x), expected, atol=1e-5, rtol=1e-4)


def test_fusion_detects_a_wrong_branch():
    """The comparison is sensitive: dropping one branch after fusion changes the output."""
    block = randomize_batchnorm(MultiKernelDepthwiseConv(2, 4)).eval()
    x = torch.randn(1, 4, 12, 12)
    expected = block(x)
    del block.branches[3]
    block.switch_to_deploy()
    assert (block(x) - expected).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"in_channels": 0, "out_channels": 4, "hidden_channels": 8}, "in_channels"),
        ({"in_channels": 4, "out_channels": 4, "hidden_channels": 0}, "hidden_channels"),
        ({"in_channels": 4, "out_channels": 4, "hidden_channels": 8, "se_reduction": 0}, "se_reduction"),
    ],
)
def test_block_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MultiBranchBlock(2, **kwargs)

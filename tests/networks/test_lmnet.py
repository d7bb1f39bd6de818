"""LMNet: shapes, gradients, arguments, and exact re-parameterization of the whole model."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import LMNet, reparameterize_model
from tests.helpers import count_parameters, randomize_batchnorm

SMALL = {"features": (8, 16, 16, 32, 32), "lft_heads": 2, "gft_heads": 8}

# [kwargs, input_shape, expected_shape], in the style of MONAI's network tests
SHAPE_CASES = [
    [{"in_channels": 1, "out_channels": 2}, (1, 1, 16, 16), (1, 2, 16, 16)],
    [{"in_channels": 3, "out_channels": 1}, (2, 3, 64, 64), (2, 1, 64, 64)],
    [{"in_channels": 1, "out_channels": 1}, (1, 1, 256, 256), (1, 1, 256, 256)],
    [{"in_channels": 3, "out_channels": 2}, (1, 3, 250, 317), (1, 2, 250, 317)],
    [{"in_channels": 1, "out_channels": 2}, (1, 1, 513, 97), (1, 2, 513, 97)],
    [{"in_channels": 1, "out_channels": 2, **SMALL}, (1, 1, 33, 35), (1, 2, 33, 35)],
    [{"in_channels": 3, "out_channels": 2, "lft_kernel_size": 7}, (1, 3, 16, 40), (1, 2, 16, 40)],
]


@pytest.mark.parametrize("kwargs,input_shape,expected_shape", SHAPE_CASES)
def test_shape(kwargs, input_shape, expected_shape):
    net = LMNet(spatial_dims=2, **kwargs).eval()
    with torch.no_grad():
        out = net(torch.randn(input_shape))
    assert out.shape == expected_shape
    assert torch.isfinite(out).all()


def test_default_parameter_count_is_close_to_the_paper():
    train = LMNet()
    deployed = reparameterize_model(train)
    assert abs(count_parameters(train) - 5.45e6) / 5.45e6 < 0.05
    assert count_parameters(deployed) < count_parameters(train)


def test_authors_widths_match_their_public_code():
    """With the authors' widths (12..192) the parameter count matches their code's 3.97 M / 3.93 M."""
    net = LMNet(features=(12, 24, 48, 96, 192), gft_heads=12, lft_heads=(2, 4, 8, 8))
    assert round(count_parameters(net) / 1e6, 2) == 3.97
    assert round(count_parameters(reparameterize_model(net)) / 1e6, 2) == 3.93


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = LMNet(in_channels=1, out_channels=2, **SMALL).train()
    x = torch.randn(2, 1, 32, 48)
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def _unit_scale(net: LMNet, x: torch.Tensor) -> LMNet:
    """Rescale the head so the training-form logits have unit standard deviation."""
    with torch.no_grad():
        std = net(x).std()
        net.head.weight /= std
        net.head.bias /= std
    return net


@pytest.mark.parametrize("kwargs,shape", [({}, (2, 1, 64, 80)), (SMALL, (1, 1, 50, 37))])
def test_reparameterized_model_is_equivalent(kwargs, shape):
    torch.manual_seed(3)
    net = randomize_batchnorm(LMNet(**kwargs), seed=4).eval()
    x = torch.randn(shape)
    net = _unit_scale(net, x)
    with torch.no_grad():
        expected = net(x)
        deployed = reparameterize_model(net)
        got = deployed(x)
    assert 0.5 < expected.std() < 2.0
    assert (got - expected).abs().max() <= 1e-4
    # the original is untouched (inplace=False copies)
    assert any("branches" in k for k in net.state_dict())


def test_reparameterize_twice_is_harmless_and_deploy_constructor_loads_strictly():
    torch.manual_seed(5)
    net = randomize_batchnorm(LMNet(**SMALL), seed=6).eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        expected = net(x)
        once = reparameterize_model(net, inplace=True)
        assert once is net
        state = {k: v.clone() for k, v in once.state_dict().items()}
        twice = reparameterize_model(once, inplace=True)
        assert twice.state_dict().keys() == state.keys()
        assert all(torch.equal(state[k], v) for k, v in twice.state_dict().items())
        assert not any("branches" in k for k in state)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in twice.modules())
        fresh = LMNet(deploy=True, **SMALL).eval()
        fresh.load_state_dict(state, strict=True)
        torch.testing.assert_close(fresh(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"features": (8, 16, 32, 64)}, "features"),
        ({"gft_heads": 5}, "gft_heads"),
        ({"lft_heads": 5}, "lft_heads"),
        ({"lft_heads": (2, 2, 2)}, "lft_heads"),
        ({"lft_kernel_size": 4}, "lft_kernel_size"),
        ({"dropout": 1.5}, "dropout"),
        ({"expansion_ratio": 0}, "expansion_ratio"),
        ({"branch_kernels": [[4, 4]]}, "branch_kernels"),
        ({"branch_kernels": [[3, 3, 3]]}, "branch_kernels"),
        ({"branch_kernels": []}, "branch_kernels"),
        ({"gft_input": "first"}, "gft_input"),
        ({"skips": "dense"}, "skips"),
        ({"gft_input": "last", "gft_heads": 7}, "gft_heads"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LMNet(**kwargs)


@pytest.mark.parametrize("shape", [(1, 1, 15, 64), (1, 1, 64, 8)])
def test_input_smaller_than_16_raises(shape):
    net = LMNet(**SMALL)
    with pytest.raises(ValueError, match="input spatial size"):
        net(torch.randn(shape))


# the paper's ablations (tables 6, 8, 9, 10) as constructor switches: parameters of the training form and of the
# deployed form at the default widths (also listed by `python -m scripts.model_stats --ablations`)
ABLATIONS = [
    ({}, 5348438, 5313518),
    ({"branch_kernels": [[3, 3]]}, 5295158, 5290478),
    ({"branch_kernels": [[5, 5]]}, 5318198, 5313518),
    ({"branch_kernels": [[5, 5], [3, 3]]}, 5334038, 5313518),
    ({"gft_input": "last"}, 2980226, 2945306),
    ({"gft_input": "none"}, 1681922, 1647002),
    ({"skips": "pyramid"}, 5138198, 5103278),
    ({"skips": "plain"}, 4671962, 4637402),
]


@pytest.mark.parametrize("kwargs,training,deployed", ABLATIONS, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_ablation_parameter_counts(kwargs, training, deployed):
    net = LMNet(**kwargs)
    assert count_parameters(net) == training
    assert count_parameters(reparameterize_model(net)) == deployed


@pytest.mark.parametrize("kwargs", [a[0] for a in ABLATIONS], ids=lambda kw: str(kw) or "paper")
def test_ablation_switch_trains_and_reparameterizes_exactly(kwargs):
    torch.manual_seed(7)
    net = LMNet(**{**SMALL, **kwargs}).train()
    x = torch.randn(2, 1, 48, 32)
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]  # every parameter is in the graph
    assert missing == [] and sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0
    net = _unit_scale(randomize_batchnorm(net, seed=8).eval(), x)
    with torch.no_grad():
        expected = net(x)
        deployed = reparameterize_model(net)
        assert (deployed(x) - expected).abs().max() <= 1e-4
        fresh = LMNet(deploy=True, **{**SMALL, **kwargs}).eval()
        fresh.load_state_dict(deployed.state_dict(), strict=True)
        assert (fresh(x) - expected).abs().max() <= 1e-4

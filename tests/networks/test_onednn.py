"""The deployed LM-Net on oneDNN kernels (bundle.networks.onednn): the training form's function to 1e-4 for every
architecture switch and input shape, inference-only guards, copies, and the torch fp32 CPU runtime using it."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.networks.nets import UNet

from bundle.networks import LMNet, reparameterize_model, to_channels_last
from bundle.networks.onednn import PackedConv2d, PackedLinear, fuse_for_cpu, onednn_available, pack_for_cpu
from bundle.runtimes import runtime_network
from tests.helpers import randomize_batchnorm

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN")

SMALL = {"features": (8, 16, 24, 32, 48), "lft_heads": 2, "gft_heads": 4}


def _unit_scale(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Scale the head so that the logits on ``x`` have a standard deviation of about 1 (the 1e-4 is then relative)."""
    with torch.no_grad():
        std = net(x).std()
        net.head.weight /= std
        net.head.bias /= std
    return net


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, (1, 1, 256, 256)),
        ({"in_channels": 3}, (3, 3, 97, 130)),  # odd sizes: the network pads inside
        ({**SMALL, "gft_input": "last", "skips": "pyramid"}, (2, 1, 64, 48)),
        ({**SMALL, "gft_input": "none", "skips": "plain", "branch_kernels": [[3, 3]]}, (2, 1, 48, 64)),
        ({**SMALL, "lft_kernel_size": 5, "gft_depth": 2}, (1, 1, 80, 80)),
    ],
)
def test_fused_network_computes_the_training_form(kwargs, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    net = _unit_scale(randomize_batchnorm(LMNet(**kwargs), seed=1).eval(), x)
    fused = fuse_for_cpu(to_channels_last(reparameterize_model(net)))
    with torch.inference_mode():
        expected = net(x)
        got = fused(x)
        again = fused(MetaTensor(x))  # as the inferers pass it
    assert 0.5 < float(expected.std()) < 2.0
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-4
    assert torch.equal(torch.as_tensor(again), got)


def test_every_convolution_and_linear_layer_is_swapped():
    deployed = reparameterize_model(LMNet(**SMALL))
    fused = fuse_for_cpu(deployed)
    kinds = {type(m) for m in fused.modules()}
    assert PackedConv2d in kinds and PackedLinear in kinds and nn.Conv2d not in kinds
    linear = {name.rsplit(".", 2)[-2] for name, m in fused.named_modules() if type(m) is nn.Linear}
    assert linear == {"attn"}  # only the neighborhood attention's projections (batched matrix products) stay
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in deployed.parameters())


def test_packed_weights_follow_the_input_shape_and_survive_copies():
    torch.manual_seed(0)
    net = reparameterize_model(LMNet(**SMALL))
    fused = fuse_for_cpu(net)
    with torch.inference_mode():
        outputs = {shape: fused(torch.ones(shape)) for shape in ((1, 1, 32, 32), (4, 1, 48, 32), (1, 1, 32, 32))}
        for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):  # packed weights are re-made
            for shape, out in outputs.items():
                assert torch.equal(clone(torch.ones(shape)), out)
        assert float((net(torch.ones(4, 1, 48, 32)) - outputs[(4, 1, 48, 32)]).abs().max()) <= 1e-4


def test_new_weights_loaded_in_place_are_repacked():
    torch.manual_seed(0)
    first, second = reparameterize_model(LMNet(**SMALL)), reparameterize_model(LMNet(**SMALL))
    fused = fuse_for_cpu(first)
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        fused(x)  # packs the first network's weights
    fused.load_state_dict(fuse_for_cpu(second).state_dict())  # copied into the same parameters, in place
    with torch.inference_mode():
        assert float((fused(x) - second(x)).abs().max()) <= 1e-4


def test_the_original_network_is_left_untouched():
    net = reparameterize_model(LMNet(**SMALL))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    fuse_for_cpu(net)
    assert all(type(m) not in (PackedConv2d, PackedLinear) for m in net.modules())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_inference_only():
    fused = fuse_for_cpu(reparameterize_model(LMNet(**SMALL)))
    with pytest.raises(RuntimeError, match="inference kernel"):
        fused.train()
    with pytest.raises(TypeError, match="without gradients"):
        fused(torch.randn(1, 1, 32, 32, requires_grad=True))
    with pytest.raises(TypeError, match="float32 CPU"), torch.inference_mode():
        fused(torch.randn(1, 1, 32, 32, dtype=torch.float64))


def test_only_the_deployed_2d_lmnet_is_fused():
    with pytest.raises(ValueError, match="reparameterize_model first"):
        fuse_for_cpu(LMNet(**SMALL))
    with pytest.raises(ValueError, match="2D LMNet"):
        fuse_for_cpu(reparameterize_model(LMNet(spatial_dims=3, **SMALL)))
    with pytest.raises(ValueError, match="2D LMNet on the CPU with oneDNN present, got UNet"):
        fuse_for_cpu(UNet(2, 1, 2, (4, 8), (2,)))


def test_the_torch_fp32_cpu_runtime_runs_the_fused_form():
    torch.manual_seed(0)
    deployed = to_channels_last(reparameterize_model(LMNet(**SMALL)))
    runner = runtime_network(deployed, "torch", "fp32", device=torch.device("cpu"))
    assert any(isinstance(m, PackedConv2d) for m in runner.modules())
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        assert float((runner(x) - deployed(x)).abs().max()) <= 1e-4
    volumetric = reparameterize_model(LMNet(spatial_dims=3, **SMALL))
    assert runtime_network(volumetric, "torch", "fp32") is volumetric  # 3D: PyTorch's own modules
    unet = UNet(2, 1, 2, (4, 8), (2,)).eval()
    assert runtime_network(unet, "torch", "fp32") is unet  # MONAI's networks run as MONAI ships them


def test_pack_for_cpu_keeps_a_monai_network_exact():
    torch.manual_seed(0)
    unet = UNet(2, 1, 2, (8, 16, 32), (2, 2), num_res_units=2).eval()
    packed = pack_for_cpu(unet)
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in packed.modules())
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        expected = unet(x)
        assert float((packed(x) - expected).abs().max()) <= 1e-4 * float(expected.abs().max())


def test_the_runtime_keeps_pytorchs_modules_when_the_fused_copy_disagrees(monkeypatch, caplog):
    """The runtime checks the fused copy on a probe input before using it: a copy that drops its activations (as a
    oneDNN build with a different post-op would) is refused with a warning."""
    import bundle.networks.onednn as onednn

    monkeypatch.setattr(onednn, "_activation", lambda module: ("none", None))
    deployed = reparameterize_model(LMNet(**SMALL))
    with caplog.at_level("WARNING", logger="bundle.networks.onednn"):
        assert runtime_network(deployed, "torch", "fp32") is deployed
    assert "disagree with PyTorch's modules" in caplog.text

"""Flip test-time augmentation (``bundle.inferers.FlipAveraged``), the slice-wise inferer that applies it, and the
task settings the configs and ``bundle.tasks`` share."""

from __future__ import annotations

import pytest
import torch

from bundle.inferers import FlipAveraged, SliceWiseInferer
from bundle.networks import LMNet, reparameterize_model
from tests.conftest import ROOT

# named settings of both configs that must agree: what the network is trained on is what it is run on
SHARED_SETTINGS = ("roi_size", "channel_index", "context_slices", "intensity_percentiles", "tta_flips",
                   "keep_largest_component", "min_lesion_size", "lesion_threshold", "lesion_seed_threshold",
                   "branch_kernels", "gft_input", "skips")


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return reparameterize_model(LMNet(features=(8, 16, 32, 64, 128), lft_heads=2, gft_heads=8).eval())


@torch.inference_mode()
def test_flip_average_is_the_mean_of_the_mirrored_passes(network):
    x = torch.rand(2, 1, 32, 48)
    expected = (network(x) + network(x.flip(3)).flip(3) + network(x.flip(2)).flip(2)) / 3
    torch.testing.assert_close(FlipAveraged(network, (1, 0))(x), expected)
    torch.testing.assert_close(FlipAveraged(network, ())(x), network(x))


@torch.inference_mode()
def test_left_right_averaging_makes_the_network_mirror_equivariant(network):
    x = torch.rand(1, 1, 32, 48)
    assert not torch.allclose(network(x.flip(3)), network(x).flip(3), atol=1e-4)  # the plain network is not
    tta = FlipAveraged(network, (1,))
    torch.testing.assert_close(tta(x.flip(3)), tta(x).flip(3), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("flips", [(2,), (1, 1), (-1,)])
def test_bad_flip_axes_are_refused(flips):
    with pytest.raises(ValueError, match="flips must be distinct in-plane axes"):
        SliceWiseInferer(roi_size=(32, 32), tta_flips=flips)


@torch.inference_mode()
def test_slice_wise_inferer_applies_flips_to_images_and_volumes(network):
    inferer = SliceWiseInferer(roi_size=(32, 32), sw_batch_size=4, tta_flips=(1,))
    tta = FlipAveraged(network, (1,))
    image = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(inferer(image, network), tta(image), atol=1e-5, rtol=1e-5)
    volume = torch.rand(1, 1, 32, 32, 3)
    out = inferer(volume, network)
    for k in range(3):
        torch.testing.assert_close(out[..., k], tta(volume[..., k]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", ["lgg", "busi"])
def test_training_validates_with_the_inference_settings(task):
    """The settings the training config validates with are the inference config's (one value in each config's
    named settings, checked equal here; ``context_slices`` follows the task's shipped weights in both)."""
    from bundle.config import bundle_parser

    parsed = {}
    for kind in ("inference", "train"):
        parser = bundle_parser(ROOT, task, kind)
        parsed[kind] = {name: parser.get_parsed_content(name) for name in SHARED_SETTINGS}
    assert parsed["inference"] == parsed["train"]
    assert parsed["train"]["context_slices"] == {"lgg": 1, "busi": 0}[task]  # 2.5D LGG weights, 2D BUSI images


def test_networks_see_plain_tensors_and_the_batch_keeps_its_meta_data(network):
    """The inferers hand the network a plain tensor (MetaTensor bookkeeping on every operation slowed training
    about 1.5 x); the outputs are the same numbers."""
    from monai.data import MetaTensor

    from bundle.inferers import PlainTensorInferer

    seen = []

    def spy(x):
        seen.append(type(x))
        return network(x)

    image = MetaTensor(torch.rand(2, 1, 32, 32), meta={"filename_or_obj": "x.png"})
    with torch.inference_mode():
        out = PlainTensorInferer()(image, spy)
        torch.testing.assert_close(out, network(image.as_tensor()))
        SliceWiseInferer((32, 32), tta_flips=(1,))(image, spy)
    assert seen and all(t is torch.Tensor for t in seen)
    assert isinstance(image, MetaTensor) and image.meta["filename_or_obj"] == "x.png"


def test_bf16_training_forward_runs_in_bf16_and_returns_fp32_with_gradients():
    """``precision bf16`` of the training inferer: the convolutions compute in bfloat16 (CPU autocast), the output,
    the loss and the parameters' gradients stay fp32, and the numbers are those of fp32 up to bf16 rounding."""
    from bundle.inferers import PlainTensorInferer

    torch.manual_seed(0)
    net = LMNet(features=(8, 16, 32, 64, 128), lft_heads=2, gft_heads=8)
    conv_dtypes = []
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: conv_dtypes.append(o.dtype))
    x = torch.rand(2, 1, 32, 32)
    net.eval()  # fixed batch-norm statistics: the two precisions see the same normalisation
    reference = PlainTensorInferer()(x, net)
    out = PlainTensorInferer("bf16")(x, net)
    assert conv_dtypes == [torch.float32, torch.bfloat16]
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert not torch.equal(out, reference)
    assert (out - reference).norm() < 0.02 * reference.norm()  # bf16 rounding (8 significant bits), no more
    net.train()
    out = PlainTensorInferer("bf16")(x, net)
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("precision", "device", "match"), [
    ("fp16", None, "precision must be one of"),
    ("bf16", "cuda", "CPU setting"),
])
def test_training_inferer_refuses_unknown_or_cuda_precisions(precision, device, match):
    from bundle.inferers import PlainTensorInferer

    with pytest.raises(ValueError, match=match):
        PlainTensorInferer(precision, device)


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, caplog):
    """Without AVX512-BF16 / AMX, PyTorch emulates bfloat16 (slower than fp32): the bf16 settings say so."""
    import logging

    from bundle.inferers import PlainTensorInferer

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    with caplog.at_level(logging.WARNING, logger="bundle.runtimes"):
        PlainTensorInferer("bf16")
    assert "no native bfloat16" in caplog.text and "training precision bf16" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bundle.runtimes"):
        PlainTensorInferer("fp32")
    assert not caplog.text

"""Weights of fewer slices widened to a wider 2.5D network: widen_to_context and scripts/widen_input.py."""

from __future__ import annotations

import pytest
import torch

from bundle.checkpoints import read_state_dict, save_weights, sha256_file
from bundle.networks import LMNet
from bundle.warm_start import widen_to_context

SMALL = {"features": (8, 16, 32, 64, 128), "lft_heads": 2, "gft_heads": 8}


def _randomized(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in eval mode with random batch-norm statistics and affine (so the outputs are not trivially equal)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    return net.eval()


@pytest.mark.parametrize("narrow, context", [(1, 1), (1, 2), (3, 2)])
def test_the_widened_network_computes_the_narrow_function_on_the_centre_channels(narrow, context):
    """One-slice weights widened to 3 or 5 channels, and 3-channel (2.5D) weights to 5: the wide network's output on
    any input equals the narrow network's on the centre channels; the added outer channels' weights are zeros."""
    torch.manual_seed(0)
    small = _randomized(LMNet(in_channels=narrow, **SMALL))
    wide = LMNet(in_channels=2 * context + 1, **SMALL).eval()
    wide.load_state_dict(widen_to_context(small.state_dict(), wide.state_dict(), context))
    first = context - narrow // 2
    x = torch.rand(2, 2 * context + 1, 32, 32)  # neighbours differ from the centre slice
    with torch.no_grad():
        torch.testing.assert_close(wide(x), small(x[:, first : first + narrow]), rtol=1e-5, atol=1e-5)
    widened = [k for k, v in wide.state_dict().items() if v.dim() > 1 and v.shape[1] == 2 * context + 1]
    assert widened == ["enc1.0.expand.conv.weight", "enc1.0.shortcut.weight"]
    for key in widened:
        weight = wide.state_dict()[key]
        assert torch.equal(weight[:, first : first + narrow], small.state_dict()[key])
        assert not weight[:, :first].any() and not weight[:, first + narrow :].any()


def test_weights_that_are_not_narrower_weights_of_the_target_are_refused():
    one, three = LMNet(in_channels=1, **SMALL).state_dict(), LMNet(in_channels=3, **SMALL).state_dict()
    with pytest.raises(ValueError, match="already weights of 3 channels"):
        widen_to_context(three, three, 1)
    with pytest.raises(ValueError, match="not an input layer of fewer slices widened to 5 channels"):
        widen_to_context(one, LMNet(in_channels=3, **SMALL).state_dict(), 2)
    with pytest.raises(ValueError, match="not an input layer of fewer slices widened to 3 channels"):
        widen_to_context(LMNet(in_channels=5, **SMALL).state_dict(), three, 1)
    with pytest.raises(ValueError, match="not of the target network"):
        widen_to_context(one, LMNet(in_channels=3, skips="plain", **SMALL).state_dict(), 1)
    with pytest.raises(ValueError, match="context_slices must be an int >= 1"):
        widen_to_context(one, three, 0)


def test_script_widens_the_config_network_and_leaves_its_input(tmp_path, caplog):
    from scripts import widen_input

    weights = save_weights(_randomized(LMNet()), tmp_path / "one.pt")
    digest = sha256_file(weights)
    out = tmp_path / "wide" / "model.pt"
    assert widen_input.main(["--weights", str(weights), "--context-slices", "1", "--output", str(out)]) == 0
    before, after = read_state_dict(weights), read_state_dict(out)
    assert sha256_file(weights) == digest and after["enc1.0.expand.conv.weight"].shape[1] == 3
    assert torch.equal(after["enc1.0.expand.conv.weight"][:, 1], before["enc1.0.expand.conv.weight"][:, 0])
    assert not after["enc1.0.expand.conv.weight"][:, [0, 2]].any()
    with pytest.raises(SystemExit):  # never over the input
        widen_input.main(["--weights", str(weights), "--output", str(weights)])
    assert widen_input.main(["--weights", str(out), "--output", str(tmp_path / "x.pt")]) == 1  # already 2.5D
    assert "already weights of 3 channels" in caplog.text and not (tmp_path / "x.pt").exists()


def test_context_slices_are_read_from_the_weights_input_channels(tmp_path):
    from bundle.checkpoints import context_slices_of

    for channels, context in ((1, 0), (3, 1), (5, 2)):
        path = save_weights(LMNet(in_channels=channels, **SMALL), tmp_path / f"c{channels}.pt")
        assert context_slices_of(path) == context
    wrapped = tmp_path / "checkpoint.pt"  # a resumable checkpoint holding the network under "model"
    torch.save({"model": LMNet(in_channels=3, **SMALL).state_dict(), "epoch": 3}, wrapped)
    assert context_slices_of(wrapped) == 1
    assert context_slices_of(None) == context_slices_of("") == context_slices_of(tmp_path / "missing.pt") == 0
    with pytest.raises(ValueError, match="takes 2 input channels"):
        context_slices_of(save_weights(torch.nn.Conv2d(2, 4, 3), tmp_path / "two.pt"))
    with pytest.raises(ValueError, match="holds no convolution"):
        context_slices_of(save_weights(torch.nn.Linear(3, 2), tmp_path / "linear.pt"))


def test_an_unreadable_weights_file_is_named(tmp_path):
    from bundle.checkpoints import context_slices_of

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match=f"weights file {broken} cannot be read"):
        context_slices_of(broken)

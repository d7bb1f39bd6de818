"""Mean-probability ensembles (``bundle.networks.ensemble``, ``scripts/build_ensemble.py``): the output's softmax is
the members' mean probability; an ensemble file builds, loads and runs wherever the inference config's network does
(deployed form, the torch CPU runtime, TorchScript, the segmenter), and a file of another kind is refused by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bundle.checkpoints import context_slices_of, load_weights, read_state_dict, save_weights, sha256_file
from bundle.networks import LMNet, ProbabilityEnsemble, lmnet_ensemble, members_in_file, network_for_weights, one_member
from bundle.networks.ensemble import ensemble_state_dict, member_count, member_state_dict
from bundle.networks.onednn import PackedConv2d, onednn_available
from bundle.runtimes import runtime_network
from bundle.segmenter import Segmenter, deployed_network
from tests.conftest import ROOT
from tests.helpers import randomize_batchnorm

SMALL = {"features": (8, 16, 32, 64, 128), "lft_heads": 2, "gft_heads": 8}


def _member(seed: int, **kwargs) -> LMNet:
    torch.manual_seed(seed)
    return randomize_batchnorm(LMNet(**{**SMALL, **kwargs}), seed).eval()


def _member_files(tmp_path, seeds=(1, 2, 3), **kwargs) -> list[str]:
    return [str(save_weights(_member(s, **kwargs), tmp_path / f"m{s}.pt")) for s in seeds]


def _build(paths, out) -> None:
    from scripts import build_ensemble

    assert build_ensemble.main(["--weights", *map(str, paths), "--output", str(out)]) == 0


def test_softmax_of_the_output_is_the_members_mean_probability():
    members = [_member(s) for s in (1, 2, 3)]
    ensemble = ProbabilityEnsemble(members).eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean = sum(m(x).softmax(1) for m in members) / 3
        out = ensemble(x)
    assert out.shape == (2, 2, 32, 32) and torch.isfinite(out).all()
    torch.testing.assert_close(out.softmax(1), mean, atol=1e-6, rtol=0)
    assert not torch.allclose(mean, members[0](x).softmax(1), atol=1e-3)  # the members really differ

    # members certain of opposite classes: no class at log(0), the mean is one half
    sure = [nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1)]
    with torch.no_grad():
        for conv, sign in zip(sure, (1.0, -1.0), strict=True):
            conv.weight.zero_()
            conv.bias.copy_(torch.tensor([500.0 * sign, -500.0 * sign]))
        out = ProbabilityEnsemble(sure)(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.softmax(1), torch.full_like(out, 0.5))
    with pytest.raises(ValueError, match="at least two members"):
        ProbabilityEnsemble([sure[0]])


def test_build_script_writes_a_file_that_loads_into_copies_of_the_network(tmp_path):
    paths = _member_files(tmp_path, in_channels=3)
    digests = [sha256_file(p) for p in paths]
    out = tmp_path / "ensemble" / "model.pt"
    _build(paths, out)
    assert [sha256_file(p) for p in paths] == digests  # inputs untouched
    state = read_state_dict(out)
    assert member_count(state) == 3 and member_count(read_state_dict(paths[0])) == 0
    assert context_slices_of(out) == 1  # read from the first member, as for a single network

    template = LMNet(**SMALL, in_channels=3)
    assert network_for_weights(template, paths[0]) is template
    assert network_for_weights(template, None) is template
    ensemble = network_for_weights(template, out)
    assert isinstance(ensemble, ProbabilityEnsemble) and len(ensemble.members) == 3
    load_weights(ensemble, out)
    for member, path in zip(ensemble.members, paths, strict=True):
        expected = read_state_dict(path)
        assert all(torch.equal(member.state_dict()[k], v) for k, v in expected.items())

    with pytest.raises(ValueError, match=r"holds an ensemble of 3 networks .* give one member's weights file"):
        load_weights(LMNet(**SMALL, in_channels=3), out)


def test_the_network_definition_follows_the_weights_file(tmp_path):
    paths = _member_files(tmp_path, in_channels=3)
    out = tmp_path / "ensemble.pt"
    _build(paths, out)
    assert [members_in_file(p) for p in (out, paths[0], None, tmp_path / "missing.pt")] == [3, 1, 1, 1]

    # one member is one LM-Net, drawing from the global random state as LMNet does; more members leave that state
    # as one LM-Net leaves it (a training run's augmentations do not depend on the definition's member count)
    torch.manual_seed(7)
    single = lmnet_ensemble(1, **SMALL, in_channels=3)
    after_single = torch.rand(3)
    torch.manual_seed(7)
    ensemble = lmnet_ensemble(3, **SMALL, in_channels=3)
    after_ensemble = torch.rand(3)
    assert type(single) is LMNet and isinstance(ensemble, ProbabilityEnsemble) and len(ensemble.members) == 3
    assert torch.equal(after_single, after_ensemble)
    assert all(torch.equal(a, b) for a, b in zip(single.state_dict().values(),
                                                 ensemble.members[0].state_dict().values(), strict=True))
    assert set(ensemble.state_dict()) == set(read_state_dict(out))  # loads the file strictly
    load_weights(ensemble, out)
    with pytest.raises(ValueError, match="members must be 1 or more"):
        lmnet_ensemble(0, **SMALL)

    # what a training run trains, and a network for a weights file other than the definition's
    assert one_member(ensemble) is ensemble.members[0] and one_member(single) is single
    assert network_for_weights(ensemble, out) is ensemble
    assert network_for_weights(ensemble, paths[0]) is ensemble.members[0]
    _build(paths[:2], tmp_path / "pair.pt")
    pair = network_for_weights(ensemble, tmp_path / "pair.pt")
    assert isinstance(pair, ProbabilityEnsemble) and len(pair.members) == 2
    load_weights(pair, tmp_path / "pair.pt")

    # one member's weights, back out of the file
    first = member_state_dict(read_state_dict(out), 0)
    assert all(torch.equal(first[k], v) for k, v in read_state_dict(paths[0]).items()) and len(first) == len(
        read_state_dict(paths[0]))
    with pytest.raises(ValueError, match="no member 3"):
        member_state_dict(read_state_dict(out), 3)


def test_extract_member_writes_one_networks_weights(tmp_path, caplog):
    from scripts import extract_member

    paths = _member_files(tmp_path)
    out = tmp_path / "ensemble.pt"
    _build(paths, out)
    digest = sha256_file(out)
    assert extract_member.main(["--weights", str(out), "--member", "2", "--output", str(tmp_path / "two.pt")]) == 0
    assert sha256_file(out) == digest  # input untouched
    network = load_weights(LMNet(**SMALL), tmp_path / "two.pt")  # strictly, as one network
    assert all(torch.equal(network.state_dict()[k], v) for k, v in read_state_dict(paths[2]).items())
    assert extract_member.main(["--weights", str(out), "--member", "3", "--output", str(tmp_path / "x.pt")]) == 1
    assert extract_member.main(["--weights", paths[0], "--output", str(tmp_path / "y.pt")]) == 1
    assert "no member 3" in caplog.text and "holds the weights of one network" in caplog.text
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
    with pytest.raises(SystemExit):
        extract_member.main(["--weights", str(out), "--output", str(out)])


def test_build_script_refuses_what_is_not_an_ensemble_of_one_network(tmp_path, caplog):
    from scripts import build_ensemble

    paths = _member_files(tmp_path)
    with pytest.raises(SystemExit):  # never over an input
        build_ensemble.main(["--weights", *paths, "--output", paths[0]])
    with pytest.raises(SystemExit):  # one file twice
        build_ensemble.main(["--weights", paths[0], paths[0], "--output", str(tmp_path / "x.pt")])
    wider = str(save_weights(LMNet(**SMALL, in_channels=3), tmp_path / "wider.pt"))
    assert build_ensemble.main(["--weights", paths[0], wider, "--output", str(tmp_path / "y.pt")]) == 1
    assert f"{wider}'s" in caplog.text and "not the same architecture" in caplog.text
    assert not (tmp_path / "y.pt").exists()
    _build(paths[:2], tmp_path / "pair.pt")
    assert build_ensemble.main(["--weights", str(tmp_path / "pair.pt"), paths[2], "--output",
                                str(tmp_path / "z.pt")]) == 1
    assert "already holds an ensemble of 2 networks" in caplog.text
    with pytest.raises(ValueError, match="not an ensemble's state dict"):
        member_count({"members.0.w": torch.zeros(1), "members.2.w": torch.zeros(1)})
    with pytest.raises(ValueError, match="at least two members"):
        ensemble_state_dict([read_state_dict(paths[0])])


def test_deployed_ensemble_runs_each_member_on_the_cpu_runtime_and_scripts(tmp_path):
    paths = _member_files(tmp_path)
    out = tmp_path / "ensemble.pt"
    _build(paths, out)
    reference = ProbabilityEnsemble([_member(s) for s in (1, 2, 3)]).eval()  # training form, eval mode
    deployed = deployed_network(network_for_weights(LMNet(**SMALL), out), out, torch.device("cpu"))
    runtime = runtime_network(deployed)
    x = torch.randn(2, 1, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x).softmax(1)
        for network in (deployed, runtime, torch.jit.script(deployed)):
            torch.testing.assert_close(network(x).softmax(1), expected, atol=1e-5, rtol=0)
    assert not runtime.training
    if onednn_available():
        assert all(any(isinstance(m, PackedConv2d) for m in member.modules()) for member in runtime.members)


def test_segmenter_runs_an_ensemble_file_as_the_mean_of_its_members(synthetic_lgg, tmp_path):
    import nibabel as nib
    import numpy as np

    volume = np.asarray(nib.load(synthetic_lgg / "SYN_001_image.nii.gz").dataobj)[..., 1]
    # the inference config's own network (full width, one input channel, as context_slices_of reads the files)
    paths = [str(save_weights(randomize_batchnorm(LMNet(in_channels=1), s), tmp_path / f"f{s}.pt"))
             for s in (1, 2)]
    out = tmp_path / "ensemble.pt"
    _build(paths, out)
    overrides = {"min_lesion_size": 0}  # the probabilities as the network gives them, inverted to the source grid
    labels, probabilities = Segmenter.from_bundle(ROOT, "lgg", device="cpu", weights=out, overrides=overrides)(volume)
    members = [Segmenter.from_bundle(ROOT, "lgg", device="cpu", weights=p, overrides=overrides)(volume)[1]
               for p in paths]
    np.testing.assert_allclose(probabilities, (members[0] + members[1]) / 2, atol=1e-5)
    assert not np.allclose(members[0], members[1], atol=1e-2)
    assert labels.shape == volume.shape  # labels from the mean probability (threshold 0.2 of the config)
    assert (labels[probabilities[1] > 0.5] == 1).all() and (labels[probabilities[1] < 0.1] == 0).all()


def test_openvino_runs_the_deployed_ensemble_as_exactly_as_one_network(tmp_path):
    pytest.importorskip("openvino")
    paths = _member_files(tmp_path, seeds=(1, 2))
    out = tmp_path / "ensemble.pt"
    _build(paths, out)
    deployed = deployed_network(network_for_weights(LMNet(**SMALL), out), out, torch.device("cpu"))
    converted = runtime_network(deployed, "openvino", "fp32", out)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(converted(x).softmax(1), deployed(x).softmax(1), atol=1e-5, rtol=0)

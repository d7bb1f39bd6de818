"""Precise batch norm: bundle.batch_norm.recalibrate_batch_norm and scripts/recalibrate_bn.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bundle.batch_norm import batch_norm_layers, recalibrate_batch_norm
from bundle.checkpoints import read_state_dict, save_weights, sha256_file


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Conv2d(3, 2, 1))


def test_statistics_are_the_equal_weight_average_over_the_batches_without_dropout():
    net = _network()
    net.train()
    net(torch.randn(4, 2, 8, 8) * 5 + 3)  # running statistics of a training step, to be replaced
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 2, 8, 8, generator=gen) * (i + 1) for i in range(5)]

    used = recalibrate_batch_norm(net, iter(batches), max_batches=3)

    assert used == 3
    with torch.no_grad():  # what the layer saw: the conv output, dropout off (eval)
        features = [net[0](b) for b in batches[:3]]
    means = torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0)
    variances = torch.stack([f.var((0, 2, 3), unbiased=True) for f in features]).mean(0)
    bn = net[2]
    torch.testing.assert_close(bn.running_mean, means, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, variances, rtol=1e-5, atol=1e-5)
    assert bn.momentum == 0.1 and not net.training and not bn.training
    for key, value in weights.items():
        assert torch.equal(net.state_dict()[key], value), key


def test_fewer_batches_than_asked_are_all_used_and_bad_calls_are_refused():
    net = _network()
    assert recalibrate_batch_norm(net, iter([torch.randn(2, 2, 8, 8)] * 2), max_batches=10) == 2
    with pytest.raises(ValueError, match="empty"):
        recalibrate_batch_norm(net, iter([]), max_batches=5)
    with pytest.raises(ValueError, match="max_batches"):
        recalibrate_batch_norm(net, iter([torch.randn(2, 2, 8, 8)]), max_batches=0)
    with pytest.raises(ValueError, match="no batch-norm"):
        recalibrate_batch_norm(nn.Conv2d(2, 2, 1), iter([torch.randn(1, 2, 4, 4)]), max_batches=1)


def test_script_rewrites_only_the_statistics_of_the_bundle_network(synthetic_lgg, tmp_path, one_torch_thread,
                                                                   caplog):
    """scripts/recalibrate_bn.py on synthetic volumes: the training config's loader feeds LM-Net, the output holds
    the same weights with new batch-norm statistics, and the input file is untouched."""
    from bundle.data.datalist import build_datalist, write_datalist
    from bundle.networks import LMNet
    from scripts import recalibrate_bn

    split = write_datalist(build_datalist(synthetic_lgg, fractions=(0.5, 0.17, 0.33)), tmp_path / "split.json")
    weights = save_weights(LMNet(), tmp_path / "in.pt")
    digest = sha256_file(weights)
    out = tmp_path / "out" / "model.pt"
    data = ["--task", "lgg", "--dataset-dir", str(synthetic_lgg), "--split-file", str(split), "--bundle-arg",
            "roi_size=[32,32]", "--bundle-arg", "batch_size=1", "--bundle-arg", "num_samples=2"]
    common = [*data, "--weights", str(weights)]
    assert recalibrate_bn.main([*common, "--output", str(out), "--batches", "3"]) == 0

    before, after = read_state_dict(weights), read_state_dict(out)
    assert sha256_file(weights) == digest and before.keys() == after.keys()
    statistics = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert len(statistics) == 3 * len(batch_norm_layers(LMNet()))
    for key in before.keys() - statistics:
        assert torch.equal(before[key], after[key]), key
    assert all(not torch.equal(before[k], after[k]) for k in statistics if k.endswith("running_mean"))

    with pytest.raises(SystemExit):  # never over the input
        recalibrate_bn.main([*common, "--output", str(weights)])
    other = save_weights(nn.Conv2d(1, 2, 1), tmp_path / "other.pt")  # weights of another network: refused, named
    assert recalibrate_bn.main([*data, "--weights", str(other), "--output", str(tmp_path / "x.pt")]) == 1
    assert f"weights file {other} does not fit LMNet" in caplog.text and not (tmp_path / "x.pt").exists()

"""The uniform average of weights files: bundle.weight_average.average_state_dicts and scripts/average_weights.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bundle.checkpoints import read_state_dict, save_weights, sha256_file
from bundle.weight_average import average_state_dicts


def _network(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    nn.init.uniform_(net[1].weight, 0.5, 1.5)
    nn.init.uniform_(net[1].bias, -0.5, 0.5)
    net.train()
    net(torch.randn(2, 1, 6, 6) * (seed + 1))  # running statistics and num_batches_tracked that differ by seed
    if seed:
        net(torch.randn(2, 1, 6, 6))
    return net


def test_every_float_tensor_is_the_mean_and_counters_are_the_first_ones():
    states = [_network(s).state_dict() for s in range(3)]
    averaged = average_state_dicts(states)
    assert averaged.keys() == states[0].keys()
    for key, value in averaged.items():
        if value.is_floating_point():
            expected = (states[0][key] + states[1][key] + states[2][key]) / 3
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
            assert not torch.equal(value, states[0][key]), key  # each key really changed
        else:
            assert torch.equal(value, states[0][key]) and states[1][key].item() != value.item(), key
    # the average of one network's copies is that network
    same = average_state_dicts([states[1], states[1]])
    assert all(torch.equal(same[k], states[1][k]) for k in same)


def test_state_dicts_of_other_architectures_are_refused_by_name():
    state = _network(0).state_dict()
    with pytest.raises(ValueError, match="at least two"):
        average_state_dicts([state])
    wider = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match=r"b\.pt's 0\.weight is torch\.float32 \(4, 1, 3, 3\)"):
        average_state_dicts([state, wider.state_dict()], names=["a.pt", "b.pt"])
    with pytest.raises(ValueError, match="b.pt does not have the keys of a.pt"):
        average_state_dicts([state, nn.Conv2d(1, 3, 3).state_dict()], names=["a.pt", "b.pt"])


def test_script_writes_the_average_and_leaves_its_inputs(tmp_path, caplog):
    from scripts import average_weights

    paths = [save_weights(_network(s), tmp_path / f"w{s}.pt") for s in range(3)]
    digests = [sha256_file(p) for p in paths]
    out = tmp_path / "soup" / "model.pt"
    assert average_weights.main(["--weights", *map(str, paths), "--output", str(out)]) == 0
    written = read_state_dict(out)
    expected = average_state_dicts([read_state_dict(p) for p in paths])
    assert written.keys() == expected.keys() and all(torch.equal(written[k], expected[k]) for k in written)
    assert [sha256_file(p) for p in paths] == digests

    with pytest.raises(SystemExit):  # never over an input
        average_weights.main(["--weights", *map(str, paths), "--output", str(paths[1])])
    with pytest.raises(SystemExit):  # one file twice would weigh it double
        average_weights.main(["--weights", str(paths[0]), str(paths[0]), "--output", str(tmp_path / "x.pt")])
    other = save_weights(nn.Conv2d(1, 2, 1), tmp_path / "other.pt")
    assert average_weights.main(["--weights", str(paths[0]), str(other), "--output", str(tmp_path / "y.pt")]) == 1
    assert f"{other} does not have the keys of {paths[0]}" in caplog.text and not (tmp_path / "y.pt").exists()

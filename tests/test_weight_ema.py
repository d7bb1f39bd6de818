"""The exponential moving average of the weights (``ema_decay`` in train.json): the averaging arithmetic, buffers,
DDP unwrapping, the disabled default, and the handler that drives it from an ignite engine."""

from __future__ import annotations

import gc
import time

import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine

from bundle.training_state import enable_resume
from bundle.weight_average import WeightEMA, WeightEMAUpdater


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def _set(net: nn.Module, value: float) -> None:
    """Every parameter and batch-norm statistic of ``net`` set to ``value``."""
    with torch.no_grad():
        for tensor in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            tensor.fill_(value)


def test_average_follows_the_ema_formula_and_copies_batch_norm_statistics():
    net = _net()
    ema = WeightEMA(net, decay=0.75)
    assert ema.enabled and ema.updates == 0 and ema.network is not net
    _set(net, 2.0)
    ema.update()  # the first update copies
    assert ema.updates == 1
    assert all(torch.all(p == 2.0) for p in ema.network.parameters())
    _set(net, 6.0)
    ema.update()  # 0.75 * 2 + 0.25 * 6 = 3
    _set(net, 10.0)
    ema.update()  # 0.75 * 3 + 0.25 * 10 = 4.75
    for p in ema.network.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 4.75))
    # batch-norm statistics are the trained network's latest, not averaged
    torch.testing.assert_close(ema.network[1].running_mean, torch.full((2,), 10.0))
    torch.testing.assert_close(ema.network[1].running_var, torch.full((2,), 10.0))
    assert all(torch.all(p == 10.0) for p in net.parameters())  # the trained network is left alone
    assert set(ema.network.state_dict()) == set(net.state_dict())  # ships like the network


def test_average_resumes_from_its_state_dict():
    net = _net()
    ema = WeightEMA(net, decay=0.5)
    _set(net, 1.0)
    ema.update()
    _set(net, 3.0)
    ema.update()
    restored = WeightEMA(_net(), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 2
    restored.trained = net
    _set(net, 6.0)
    restored.update()  # 0.5 * 2 + 0.5 * 6 = 4: continues the average, does not restart it by copying
    assert all(torch.allclose(p, torch.full_like(p, 4.0)) for p in restored.network.parameters())


def test_disabled_average_is_the_trained_network():
    net = _net()
    ema = WeightEMA(net, decay=0)
    assert not ema.enabled and ema.network is net and ema.checkpoint_items() == {} and ema.updates == 0
    with pytest.raises(RuntimeError, match="no weight average is kept"):
        ema.update()


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5, "abc", None])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match=r"ema_decay must be (a number )?in \[0, 1\)"):
        WeightEMA(_net(), decay=decay)


def test_average_of_a_ddp_network_has_the_plain_keys(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(_net())
        ema = WeightEMA(wrapped, decay=0.9)
        ema.update()
        assert set(ema.network.state_dict()) == set(wrapped.module.state_dict())
        assert ema.checkpoint_items() == {"ema": ema}
        # free DDP while the group is still registered, then let gloo's worker thread finish releasing the
        # parameter broadcast of DDP's start (it needs the GIL): otherwise the group can be destroyed with DDP at the
        # test's end, joining that thread while holding the GIL (a deadlock seen once under load)
        del ema, wrapped
        gc.collect()
        time.sleep(0.2)
    finally:
        dist.destroy_process_group()


def test_updater_averages_once_per_iteration():
    net = _net()
    ema = WeightEMA(net, decay=0.9)
    engine = Engine(lambda e, batch: None)
    WeightEMAUpdater(ema).attach(engine)
    engine.run(range(5), max_epochs=3)
    assert ema.updates == 15
    # a disabled average attaches nothing: an update would raise and fail the run
    quiet = Engine(lambda e, batch: None)
    WeightEMAUpdater(WeightEMA(net, decay=0)).attach(quiet)
    quiet.run(range(5), max_epochs=1)
    assert quiet.state.iteration == 5


def test_resume_refuses_a_checkpoint_without_the_optimizer_naming_it(tmp_path):
    """Only a missing weight average starts afresh; any other entry the checkpoint lacks is an error naming the
    file, before any state is half-restored."""
    net = _net()
    torch.save({"model": net.state_dict()}, tmp_path / "latest_checkpoint_2.pt")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"latest_checkpoint_2\.pt lacks \['optimizer'\]"):
        enable_resume(Engine(lambda e, b: None), tmp_path, {"model": net, "optimizer": optimizer}, save=False)

"""Weight averages: an exponential moving average of a network's weights during training (and the trainer handler
that updates it), and the uniform average of finished weights files (a "model soup")."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .checkpoints import unwrap

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["WeightEMA", "WeightEMAUpdater", "average_state_dicts", "check_same_architecture"]

logger = logging.getLogger(__name__)


class WeightEMA:
    """An exponential moving average (EMA) of a network's parameters, updated after every training iteration (by
    :class:`WeightEMAUpdater`): ``avg <- decay * avg + (1 - decay) * w``, starting from the weights after the first
    iteration. The average has the network's architecture and state dict keys (unwrapped from
    ``DistributedDataParallel``), so it validates, checkpoints and ships like the network.

    Buffers (batch-norm running statistics) are not averaged but copied from the trained network at each update:
    averaged statistics of a fast-changing network do not describe the averaged weights (the model card tells how
    an average of both predicted no lesion at all on LGG).

    With ``decay == 0`` no average is kept and :attr:`network` is the trained network itself, so a config can
    always validate and save ``@ema.network``. A decay of ``d`` averages over about ``1 / (1 - d)`` iterations.

    Args:
        network: the trained network (plain or DDP-wrapped).
        decay: in ``[0, 1)``; ``0`` disables averaging.
    """

    def __init__(self, network: nn.Module, decay: float = 0.0) -> None:
        try:
            decay = float(decay)
        except (TypeError, ValueError):
            raise ValueError(f"ema_decay must be a number in [0, 1) (0 disables the average), got {decay!r}.") from None
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 disables the average), got {decay}.")
        self.decay = decay
        self.trained = network
        self.averaged = None
        if decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.averaged = AveragedModel(unwrap(network), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)

    @property
    def enabled(self) -> bool:
        return self.averaged is not None

    @property
    def network(self) -> nn.Module:
        """The averaged network when enabled, else the trained network."""
        return self.averaged.module if self.enabled else self.trained

    @property
    def updates(self) -> int:
        """How many iterations have been averaged (0 when disabled)."""
        return int(self.averaged.n_averaged.item()) if self.enabled else 0

    def update(self) -> None:
        """Fold the trained network's current parameters into the average and copy its buffers.

        Raises:
            RuntimeError: the average is disabled (``decay`` 0); :class:`WeightEMAUpdater` then never calls this.
        """
        if not self.enabled:
            raise RuntimeError("no weight average is kept (ema_decay 0): nothing to update.")
        trained = unwrap(self.trained)
        self.averaged.update_parameters(trained)
        with torch.no_grad():
            for mine, theirs in zip(self.averaged.module.buffers(), trained.buffers(), strict=True):
                mine.copy_(theirs)

    def checkpoint_items(self) -> dict:
        """``{"ema": self}`` when enabled, else ``{}``: the optional entries of a resumable checkpoint
        (:func:`enable_resume`), so checkpoints of runs without an average are written and read as before."""
        return {"ema": self} if self.enabled else {}

    def state_dict(self) -> dict:
        """The average's state (parameters, buffers, ``n_averaged``); only an enabled average is checkpointed."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)


class WeightEMAUpdater:
    """Training handler: :meth:`WeightEMA.update` after every iteration, and a log line per epoch. A handler of its
    own so a config lists it among the trainer's handlers (``{"_target_": ..., "ema": "@ema"}``) while the average
    itself is one object that the validator and the savers also reference."""

    def __init__(self, ema: WeightEMA) -> None:
        self.ema = ema

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.ema.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.ema.update())
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)

    def _log(self, engine: Engine) -> None:
        logger.info("weight EMA (decay %g): %d iterations averaged", self.ema.decay, self.ema.updates)


def check_same_architecture(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
                            ) -> None:
    """Check that state dicts come from one architecture: the same keys, and each tensor the same shape and dtype.

    Args:
        states: one or more state dicts.
        names: a name per state dict (e.g. its file) for the error messages; default ``#0``, ``#1``, ...

    Raises:
        ValueError: keys, shapes or dtypes that differ (the message names both state dicts), or a name count that is
            not the state dict count.
    """
    names = list(names) if names is not None else [f"#{i}" for i in range(len(states))]
    if len(names) != len(states):
        raise ValueError(f"got {len(names)} names for {len(states)} state dicts.")
    first, first_name = states[0], names[0]
    for state, name in zip(states[1:], names[1:], strict=True):
        missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
        if missing or extra:
            raise ValueError(f"{name} does not have the keys of {first_name}: missing {missing[:5]}, "
                             f"unexpected {extra[:5]} ({len(missing)} / {len(extra)} in all).")
        for key, value in first.items():
            other = state[key]
            if other.shape != value.shape or other.dtype != value.dtype:
                raise ValueError(f"{name}'s {key} is {other.dtype} {tuple(other.shape)}, {first_name}'s is "
                                 f"{value.dtype} {tuple(value.shape)}: not the same architecture.")


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
                        ) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts of one architecture (a "model soup", Wortsman et al. 2022).

    Every floating-point tensor (parameters, batch-norm running means and variances) is the plain mean of its
    copies, accumulated in float64 and returned in the first state dict's dtype; integer tensors (batch-norm's
    ``num_batches_tracked``) are the first state dict's. The average of solutions fine-tuned from one starting point
    is a network of the same size and cost; its batch-norm statistics, averaged too, need not describe the averaged
    weights (``bundle.batch_norm.recalibrate_batch_norm`` re-estimates them).

    Args:
        states: two or more state dicts with the same keys and shapes.
        names: a name per state dict (e.g. its file) for the error messages; default ``#0``, ``#1``, ...

    Raises:
        ValueError: fewer than two state dicts, or keys, shapes or dtypes that differ (the message names both).
    """
    if len(states) < 2:
        raise ValueError(f"averaging weights needs at least two state dicts, got {len(states)}.")
    check_same_architecture(states, names)
    first = states[0]
    averaged = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = sum(state[key].detach().to("cpu", torch.float64) for state in states)
            averaged[key] = (total / len(states)).to(value.dtype)
        else:
            averaged[key] = value.detach().cpu().clone()
    return averaged

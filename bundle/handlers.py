"""Ignite/MONAI engine handlers of this bundle: re-parameterization after loading weights, the training time budget
and the final weights. (The weight average is in :mod:`bundle.weight_average`, resumable training state in
:mod:`bundle.training_state`, metrics reports in :mod:`bundle.reports`.)"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch.nn as nn

from .checkpoints import save_weights
from .networks import reparameterize_model, to_channels_last

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ReparameterizeHandler", "TimeBudget", "FinalWeightsSaver"]

logger = logging.getLogger(__name__)


class ReparameterizeHandler:
    """At ``STARTED`` (after any ``CheckpointLoader``, so attach it later), fuse ``network`` in place into its
    deployed form, stored channels-last (as :func:`bundle.segmenter.deployed_network`). The engine then runs the
    re-parameterized network."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        to_channels_last(reparameterize_model(self.network, inplace=True))
        logger.info("network re-parameterized for inference")


class TimeBudget:
    """Stop training at an epoch boundary when another epoch would not fit in ``seconds`` of wall time (measured
    from the start of this run; ``seconds <= 0`` means no limit). Stopping between epochs keeps the per-epoch
    checkpoints whole, so a later run with the same budget resumes where this one stopped. Under DDP the ranks
    agree (the decision is all-reduced), so none is left waiting."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = float(seconds)
        self._start = 0.0
        self._epoch_start = 0.0

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.seconds <= 0:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()

    def _check(self, engine: Engine) -> None:
        import ignite.distributed as idist

        now = time.perf_counter()
        over = now - self._start + (now - self._epoch_start) > self.seconds
        if idist.all_reduce(float(over), op="MAX") > 0:  # all DDP ranks stop together
            logger.info(
                "time budget of %.0f s reached after epoch %d (%.0f s): stopping", self.seconds, engine.state.epoch,
                now - self._start,
            )
            engine.terminate()


class FinalWeightsSaver:
    """When training ends (all epochs done, or stopped by :class:`TimeBudget`), write the network's state dict, in
    its training form and unwrapped from ``DistributedDataParallel``, to ``<save_dir>/<filename>`` (atomically; on
    DDP rank 0 only). These are the weights to ship from a run that trains on its validation split too, where the
    best-validation ``model.pt`` means nothing."""

    def __init__(self, save_dir: str | os.PathLike, network: nn.Module, filename: str = "model_final.pt") -> None:
        self.path = Path(save_dir) / filename
        self.network = network

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import ignite.distributed as idist

        if idist.get_rank() != 0:
            return
        save_weights(self.network, self.path)
        logger.info("final weights (epoch %d) written to %s", engine.state.epoch, self.path)

"""Precise batch norm: a trained network's batch-norm statistics re-estimated with its weights fixed.

During training each batch-norm layer keeps an exponential average (PyTorch's ``momentum``) of the statistics of the
last few batches, taken while the weights were still changing. :func:`recalibrate_batch_norm` resets them and averages
them with equal weight over many batches, with everything else in eval mode (no dropout) and without gradients, so
the statistics describe the final weights on the training data. Weights and every other buffer stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn as nn

__all__ = ["batch_norm_layers", "recalibrate_batch_norm"]

logger = logging.getLogger(__name__)


def batch_norm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``network`` that keep running statistics."""
    return [m for m in network.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batch_norm(network: nn.Module, batches: Iterable[torch.Tensor], max_batches: int,
                           device: torch.device | str | None = None) -> int:
    """Replace the running statistics of every batch-norm layer of ``network`` by their equal-weight average over
    ``max_batches`` input batches (fewer if ``batches`` ends first), in place.

    Each layer's ``running_mean`` becomes the mean of its per-batch means and ``running_var`` the mean of its
    per-batch unbiased variances (PyTorch's cumulative average, ``momentum=None``). Only the batch-norm layers run in
    training mode while the batches pass; dropout and every other layer run in eval mode. Afterwards the network is
    in eval mode and each layer's ``momentum`` is restored.

    Args:
        network: the trained network (training form, with batch-norm layers).
        batches: input tensors (B, C, *S) as the network takes them.
        max_batches: how many batches to average over (>= 1).
        device: where the batches are moved (``None``: the network's device).

    Returns:
        The number of batches used.

    Raises:
        ValueError: ``max_batches`` < 1, the network has no batch-norm layer, or ``batches`` yields none.
    """
    if max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}.")
    layers = batch_norm_layers(network)
    if not layers:
        raise ValueError(f"{type(network).__name__} has no batch-norm layer with running statistics to re-estimate.")
    if device is None:
        device = next(network.parameters()).device
    momenta = [layer.momentum for layer in layers]
    network.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative (equal-weight) average over the batches seen
        layer.train()
    used = 0
    try:
        for batch in batches:
            if used == max_batches:
                break
            network(batch.to(device))
            used += 1
            if used % 50 == 0:
                logger.info("batch-norm statistics: %d of %d batches", used, max_batches)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        network.eval()
    if used == 0:
        raise ValueError("no batch to re-estimate the batch-norm statistics with: the loader is empty.")
    logger.info("batch-norm statistics of %d layers re-estimated over %d batches", len(layers), used)
    return used

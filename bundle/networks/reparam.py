"""Whole-model structural re-parameterization (the one walker; blocks expose ``switch_to_deploy()``)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["reparameterize_model", "to_channels_last"]


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fuse every re-parameterizable module of ``model`` into its inference form.

    Calls ``switch_to_deploy()`` on each module that has one (multi-kernel depthwise convs, conv + BN pairs).
    The result computes the same function as ``model`` in eval mode, to float32 precision, and is returned in
    eval mode. Safe to apply to an already re-parameterized model. The memory format is left alone (see
    :func:`to_channels_last`).

    Args:
        model: any module, e.g. :class:`bundle.networks.LMNet`.
        inplace: modify ``model`` itself; by default a deep copy is converted and ``model`` is left untouched.

    Returns:
        The re-parameterized model (``model`` itself when ``inplace``).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        switch = getattr(module, "switch_to_deploy", None)
        if callable(switch):
            switch()
    return model


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the convolution weights of ``model`` channels-last (NHWC for 2D, NDHWC for 3D models), in place: the
    convolutions and the channels-last transformer layers run faster on CPU and on GPU tensor cores; values are
    unchanged. Returns ``model``."""
    volumetric = any(p.dim() == 5 for p in model.parameters())
    return model.to(memory_format=torch.channels_last_3d if volumetric else torch.channels_last)

"""Whole-model structural re-parameterization (the one walker; blocks expose ``switch_to_deploy()``)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["reparameterize_model"]


def reparameterize_model(model: nn.Module, inplace: bool = False, channels_last: bool = True) -> nn.Module:
    """Fuse every re-parameterizable module of ``model`` into its inference form.

    Calls ``switch_to_deploy()`` on each module that has one (multi-kernel depthwise convs, conv + BN pairs).
    The result computes the same function as ``model`` in eval mode, to float32 precision, and is returned in
    eval mode. Safe to apply to an already re-parameterized model.

    Args:
        model: any module, e.g. :class:`bundle.networks.LMNet`.
        inplace: modify ``model`` itself; by default a deep copy is converted and ``model`` is left untouched.
        channels_last: also store the conv weights channels-last (NHWC for 2D, NDHWC for 3D models), which makes
            the convolutions and the channels-last transformer layers faster on CPU and on GPU tensor cores;
            values are unchanged.

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
    if channels_last:
        volumetric = any(p.dim() == 5 for p in model.parameters())
        model.to(memory_format=torch.channels_last_3d if volumetric else torch.channels_last)
    return model

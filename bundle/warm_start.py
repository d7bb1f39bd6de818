"""Weights of a one-slice network as the starting point of a 2.5D one (``context_slices`` > 0) that computes the same
function: the weights on the input are moved to the centre slice's channel, and its neighbours' get zeros, so training
starts from the trained network and learns what the neighbouring slices add."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["widen_to_context"]


def widen_to_context(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], context: int
                     ) -> dict[str, torch.Tensor]:
    """``state`` (a network taking one input channel) laid out for ``target`` (the same network taking
    ``2 * context + 1`` channels: a slice and its ``context`` neighbours on each side, the slice itself in channel
    ``context``, as ``bundle.transforms.NeighbourSlicesd`` orders them).

    Every tensor of ``state`` whose shape differs from ``target``'s only in dimension 1, 1 against ``2 * context + 1``
    (the layers that read the input), becomes zeros but for channel ``context``, which holds the original weights;
    all other tensors are copied. The widened network's output on any 2.5D input equals the original network's output
    on the centre channel.

    Raises:
        ValueError: ``context`` < 1, different keys, or a tensor whose shapes differ in any other way (the message
            names it).
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context_slices must be an int >= 1 to widen the input, got {context!r}.")
    channels = 2 * context + 1
    if set(state) != set(target):
        missing, extra = sorted(set(target) - set(state)), sorted(set(state) - set(target))
        raise ValueError(f"the weights are not of the target network: missing {missing[:5]}, unexpected {extra[:5]}.")
    widened, changed = {}, 0
    for key, value in state.items():
        shape, wanted = tuple(value.shape), tuple(target[key].shape)
        if shape == wanted:
            widened[key] = value.detach().clone()
            continue
        if len(shape) < 2 or shape[1] != 1 or wanted[1] != channels or shape[:1] + shape[2:] != wanted[:1] + wanted[2:]:
            raise ValueError(f"{key} is {shape} in the weights and {wanted} in the target network: not a one-channel "
                             f"input layer widened to {channels} channels.")
        new = value.new_zeros(wanted)
        new[:, context] = value[:, 0]
        widened[key] = new
        changed += 1
    if changed == 0:
        raise ValueError(f"no tensor of the weights reads a one-channel input that the target reads as {channels}: "
                         "are they already 2.5D weights?")
    return widened

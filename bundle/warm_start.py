"""Weights of a network with fewer neighbouring slices (one slice, or a narrower 2.5D input) as the starting point of
a wider 2.5D one (``context_slices`` > 0) that computes the same function: the weights on the input keep their slices,
centred, and the added outer neighbours get zeros, so training starts from the trained network and learns what the
added slices bring."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["widen_to_context"]


def widen_to_context(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], context: int
                     ) -> dict[str, torch.Tensor]:
    """``state`` (a network taking ``2 * c + 1`` input channels, c >= 0 neighbours on each side) laid out for
    ``target`` (the same network taking ``2 * context + 1`` channels, ``context`` > c; channel ``context + j`` holds
    slice ``z + j``, as ``bundle.transforms.NeighbourSlicesd`` orders them).

    Every tensor of ``state`` whose shape differs from ``target``'s only in dimension 1, an odd number below
    ``2 * context + 1`` (the layers that read the input), keeps its weights on the slices it read (channels
    ``context - c .. context + c`` of the wider tensor) and gets zeros on the added outer neighbours; all other tensors
    are copied. The widened network's output on any wider input equals the original network's output on the centre
    ``2 * c + 1`` channels (at the ends of a volume too: the repeated edge slice is the same slice in both layouts).

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
        narrower = len(shape) >= 2 and shape[1] % 2 == 1 and shape[1] < channels and wanted[1] == channels
        if not narrower or shape[:1] + shape[2:] != wanted[:1] + wanted[2:]:
            raise ValueError(f"{key} is {shape} in the weights and {wanted} in the target network: not an input layer "
                             f"of fewer slices widened to {channels} channels.")
        first = context - shape[1] // 2
        new = value.new_zeros(wanted)
        new[:, first : first + shape[1]] = value
        widened[key] = new
        changed += 1
    if changed == 0:
        raise ValueError(f"no tensor of the weights reads fewer input channels than the target's {channels}: are they "
                         f"already weights of {channels} channels?")
    return widened

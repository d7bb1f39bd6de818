"""Mean-probability ensembles of segmentation networks, stored and loaded as one weights file.

An ensemble file is the state dict of a :class:`ProbabilityEnsemble`: the members' state dicts under the prefixes
``members.0.``, ``members.1.``, ... (``python -m scripts.build_ensemble`` writes one from the members' files). The
configs build their network with :func:`network_for_weights`, so a plain weights file gives the network itself and an
ensemble file gives the ensemble of that many copies of it: the weights file alone decides, and every path that loads
weights into the config's network (the inference and evaluation workflows, the segmenter, the predictor, the bundle's
MONAI Label app) runs either. MONAI's own loaders (``monai.bundle.load``, the stock MONAI Label app) build
``network_def``, one network, and cannot load an ensemble file.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoints import peek_state_dict
from ..weight_average import check_same_architecture

__all__ = ["ProbabilityEnsemble", "ensemble_state_dict", "mean_probability", "member_count", "network_for_weights"]

_MEMBER_KEY = re.compile(r"^members\.(\d+)\.")


def mean_probability(logits: list[torch.Tensor]) -> torch.Tensor:
    """The mean over networks of their softmax class probabilities: K tensors (B, C, *S) of logits -> (B, C, *S)
    float32 (the ensemble's output and the distillation targets of :mod:`bundle.distillation`)."""
    return torch.stack([torch.softmax(one.float(), dim=1) for one in logits]).mean(0)


class ProbabilityEnsemble(nn.Module):
    """The mean of the members' softmax class probabilities, returned as its logarithm.

    A softmax over the channels of the output gives the members' mean probabilities back (to float rounding), so the
    inference config's score transforms (softmax, lesion threshold, minimum lesion size, inversion to the source
    grid) run unchanged on an ensemble; an argmax of the output is the argmax of the mean probability.

    Args:
        members: two or more networks that map the same input to class logits of the same shape.

    Shapes: (B, C_in, *S) -> (B, num_classes, *S) log-probabilities (the probabilities floored at 1e-30, so no class
    is ``-inf``).

    Raises:
        ValueError: fewer than two members.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}.")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = mean_probability([member(x) for member in self.members])
        return mean.clamp_min(1e-30).log()  # its log is about -69, never -inf

    def map_members(self, fn) -> ProbabilityEnsemble:
        """A new ensemble of ``fn(member)`` for each member (e.g. each member's inference runtime), in this
        ensemble's training / eval mode (its own flag only: the members keep the mode ``fn`` gave them)."""
        ensemble = ProbabilityEnsemble([fn(member) for member in self.members])
        ensemble.training = self.training
        return ensemble


def ensemble_state_dict(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
                        ) -> dict[str, torch.Tensor]:
    """The state dict of a :class:`ProbabilityEnsemble` of networks with the state dicts ``states``, in order.

    Raises:
        ValueError: fewer than two state dicts, a state dict that is already an ensemble's, or state dicts of
            different architectures (the message names both, with ``names``).
    """
    if len(states) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(states)}.")
    names = list(names) if names is not None else [f"#{i}" for i in range(len(states))]
    for state, name in zip(states, names, strict=True):
        if member_count(state):
            raise ValueError(f"{name} already holds an ensemble of {member_count(state)} networks; give its members.")
    check_same_architecture(states, names)
    return {f"members.{i}.{key}": value.detach().cpu()
            for i, state in enumerate(states) for key, value in state.items()}


def member_count(state: Mapping[str, torch.Tensor]) -> int:
    """The number of members in an ensemble's state dict; 0 for any other state dict.

    Raises:
        ValueError: a state dict with member keys that are not numbered 0 .. n - 1, or with keys outside the members.
    """
    indices = set()
    outside = []
    for key in state:
        match = _MEMBER_KEY.match(key)
        if match:
            indices.add(int(match.group(1)))
        else:
            outside.append(key)
    if not indices:
        return 0
    if indices != set(range(len(indices))) or outside:
        raise ValueError(f"not an ensemble's state dict: members {sorted(indices)}, other keys {outside[:5]}.")
    return len(indices)


def network_for_weights(network: nn.Module, path: str | os.PathLike | None) -> nn.Module:
    """``network`` for a plain weights file (or no file), or a :class:`ProbabilityEnsemble` of as many deep copies of
    ``network`` as the ensemble file at ``path`` holds. Only the file's keys are read
    (:func:`bundle.checkpoints.peek_state_dict`); the loader that uses the weights reads and digest-checks it itself.

    Raises:
        ValueError: a file that cannot be read, or an ensemble file whose keys are not numbered members.
    """
    if not path or not Path(path).is_file():
        return network
    state = peek_state_dict(path)
    try:
        count = member_count(state)
    except ValueError as err:
        raise ValueError(f"weights file {path}: {err}") from err
    if count == 0:
        return network
    return ProbabilityEnsemble([network] + [copy.deepcopy(network) for _ in range(count - 1)])

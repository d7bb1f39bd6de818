"""Mean-probability ensembles of segmentation networks, stored and loaded as one weights file.

An ensemble file is the state dict of a :class:`ProbabilityEnsemble`: the members' state dicts under the prefixes
``members.0.``, ``members.1.``, ... (``python -m scripts.build_ensemble`` writes one from the members' files). The
configs' ``network_def`` is :func:`lmnet_ensemble` with as many members as their weights file holds
(:func:`members_in_file`), so a plain weights file gives one LM-Net and an ensemble file the ensemble, through every
loader that builds ``network_def``: the bundle's workflows, segmenter and predictor, ``monai.bundle.load``, the
model zoo's ``ckpt_export`` and the stock MONAI Label app. The training config trains one member
(:func:`one_member`); an ensemble is several training runs put together by the script.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoints import peek_state_dict, read_state_dict, save_weights
from ..weight_average import check_same_architecture
from .lmnet import LMNet

__all__ = [
    "ProbabilityEnsemble",
    "ensemble_of",
    "ensemble_state_dict",
    "lmnet_ensemble",
    "mean_probability",
    "member_count",
    "member_state_dict",
    "members_in_file",
    "network_for_weights",
    "one_member",
    "write_member",
]

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


def member_state_dict(state: Mapping[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The state dict of member ``index`` of an ensemble's state dict (its keys without the ``members.<index>.``
    prefix).

    Raises:
        ValueError: ``state`` is not an ensemble's, or has no member ``index``.
    """
    count = member_count(state)
    if not 0 <= index < count:
        raise ValueError(f"no member {index} in a state dict of {count} ensemble members.")
    prefix = f"members.{index}."
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def write_member(path: str | os.PathLike, index: int, output: str | os.PathLike) -> Path:
    """Write member ``index`` of the ensemble file at ``path`` (read digest-checked, never modified) as the weights
    file of one network at ``output`` (atomically). Returns ``output``.

    Raises:
        ValueError: ``path`` is not an ensemble file or has no member ``index``; an unreadable file.
        FileNotFoundError: ``path`` does not exist.
    """
    state = read_state_dict(path)
    if member_count(state) == 0:
        raise ValueError(f"{path} holds the weights of one network, not an ensemble.")
    return save_weights(member_state_dict(state, index), output)


def members_in_file(path: str | os.PathLike | None) -> int:
    """How many networks the weights file at ``path`` holds: its member count for an ensemble file, 1 for a plain
    weights file, and 1 for no path or a missing file (whoever loads the weights reports that). Only the keys are
    read (:func:`bundle.checkpoints.peek_state_dict`).

    Raises:
        ValueError: a file that cannot be read, or an ensemble file whose keys are not numbered members.
    """
    if not path or not Path(path).is_file():
        return 1
    state = peek_state_dict(path)  # its errors name the file
    try:
        return max(1, member_count(state))
    except ValueError as err:
        raise ValueError(f"weights file {path}: {err}") from err


def ensemble_of(network: nn.Module, members: int = 1) -> nn.Module:
    """``network`` for one member, else a :class:`ProbabilityEnsemble` of ``network`` and ``members - 1`` deep copies
    of it (the same architecture: weights are loaded into them afterwards).

    Raises:
        ValueError: ``members`` below 1.
    """
    if int(members) < 1:
        raise ValueError(f"members must be 1 or more, got {members}.")
    if int(members) == 1:
        return network
    return ProbabilityEnsemble([network] + [copy.deepcopy(network) for _ in range(int(members) - 1)])


def lmnet_ensemble(members: int = 1, **kwargs) -> nn.Module:
    """The bundle's network definition: ``members`` LM-Nets of one architecture (``kwargs``: the arguments of
    :class:`bundle.networks.LMNet`), as one :class:`LMNet` for one member and as a :class:`ProbabilityEnsemble` of
    copies for more (:func:`ensemble_of`). It draws from the global random state exactly as one LM-Net does, so a
    training run's initialisation and augmentations do not depend on the member count.

    Raises:
        ValueError: ``members`` below 1.
    """
    return ensemble_of(LMNet(**kwargs), members)


def one_member(network: nn.Module) -> nn.Module:
    """The network one training run trains for the definition ``network``: ``network`` itself, or the first member
    of an ensemble (a fresh network of the members' architecture until weights are loaded into it)."""
    return network.members[0] if isinstance(network, ProbabilityEnsemble) else network


def network_for_weights(network: nn.Module, path: str | os.PathLike | None) -> nn.Module:
    """A network of ``network``'s architecture for the weights file at ``path`` (not loaded): one network (``network``
    or, for an ensemble, its first member) for a plain file or no file, an ensemble of that many networks for an
    ensemble file (``network`` itself when it already has that many members, deep copies of one member otherwise).
    For a weights file other than the one the config's ``network_def`` was built for (MONAI Label's fine-tuned
    weights).

    Raises:
        ValueError: a file that cannot be read, or an ensemble file whose keys are not numbered members.
    """
    count = members_in_file(path)
    if isinstance(network, ProbabilityEnsemble) and len(network.members) == count:
        return network
    return ensemble_of(one_member(network), count)

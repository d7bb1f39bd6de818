"""Knowledge distillation from an ensemble of trained networks into the network being trained.

The teachers are weight files of the student's own architecture (e.g. several seeds of one recipe). For every
training batch they run in their deployed inference form on the batch's (augmented) images, and the student is
trained on its usual loss plus the Kullback-Leibler divergence from the teachers' mean class probabilities to its
own (Hinton et al. 2015, temperature 1): one network of the student's size and speed learns what the ensemble
predicts. ``configs/distill.json`` wires it into ``configs/train.json``::

    python -m monai.bundle run --config_file "['configs/train.json','configs/distill.json']" \\
        --distill_teachers "['a/model.pt','b/model.pt']" ...
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.engines.utils import default_prepare_batch

from .checkpoints import unwrap
from .inferers import plain_tensor
from .networks.ensemble import mean_probability
from .runtimes import runtime_network
from .segmenter import deployed_network

logger = logging.getLogger(__name__)

__all__ = ["EnsembleDistillation", "teacher_network"]


def teacher_network(student: nn.Module, weights: str | os.PathLike, device: torch.device | str | None = None
                    ) -> nn.Module:
    """A copy of the student's architecture with ``weights``, frozen, as the inference config runs it: deployed
    (:func:`bundle.segmenter.deployed_network`) on the torch fp32 runtime of ``device`` (default: the student's).

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the weights do not fit the student's architecture.
    """
    device = torch.device(device) if device is not None else next(student.parameters()).device
    network = deployed_network(copy.deepcopy(unwrap(student)), weights, device).requires_grad_(False)
    return runtime_network(network, "torch", "fp32", weights, device)


class EnsembleDistillation(nn.Module):
    """``loss(logits, target) + weight * KL(mean teacher probabilities || softmax(logits))``, the KL summed over
    classes and averaged over pixels and samples.

    Use it as the trainer's ``loss_function`` and its :meth:`prepare_batch` as the trainer's ``prepare_batch``:
    ``prepare_batch`` moves the batch to the device as MONAI's default does and runs the teachers on its images;
    the next call of the loss adds the divergence for that batch. Without teachers it is ``loss`` itself and
    ``prepare_batch`` is MONAI's default.

    Args:
        loss: the supervised loss, (logits, target) -> scalar.
        student: the network being trained (its architecture builds the teachers).
        teachers: weight files of the student's architecture; empty for no distillation.
        weight: factor of the divergence term.
        device: where the teachers run (default: the student's device).

    Shapes: logits (B, K, *S), target (B, 1, *S) -> scalar.

    Raises:
        ValueError: ``weight`` negative, or a teacher file that does not fit the student.
        FileNotFoundError: a teacher file that does not exist.
    """

    def __init__(self, loss: nn.Module, student: nn.Module, teachers: Sequence[str | os.PathLike] = (),
                 weight: float = 1.0, device: torch.device | str | None = None) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"the distillation weight must be >= 0, got {weight}.")
        self.loss = loss
        self.weight = float(weight)
        # a plain list, not submodules: the teachers are neither trained nor saved with the loss
        self.teachers = [teacher_network(student, path, device) for path in teachers]
        self._targets: torch.Tensor | None = None
        if self.teachers:
            logger.info("distilling from %d teachers: %s (weight %g)", len(self.teachers),
                        ", ".join(str(p) for p in teachers), self.weight)

    @torch.no_grad()
    def teacher_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The teachers' mean softmax over classes: (B, C, *S) images -> (B, K, *S) float32 probabilities."""
        images = plain_tensor(images)
        return mean_probability([teacher(images) for teacher in self.teachers])

    def prepare_batch(self, batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False,
                      **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """MONAI's ``default_prepare_batch`` (image, label), with the teachers' probabilities of the images kept
        for the next call of the loss."""
        images, labels = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if self.teachers:
            self._targets = self.teacher_probabilities(images)
        return images, labels

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss(logits, target)
        if not self.teachers:
            return loss
        targets, self._targets = self._targets, None
        if targets is None or targets.shape != logits.shape:
            got = "none" if targets is None else list(targets.shape)
            raise RuntimeError(f"no teacher probabilities for logits of shape {list(logits.shape)} (have {got}): "
                               "the trainer's prepare_batch must be this loss's prepare_batch.")
        log_student = torch.log_softmax(logits.float(), dim=1)
        divergence = torch.xlogy(targets, targets) - targets * log_student
        return loss + self.weight * divergence.sum(1).mean()

"""The training loss of the paper: class-weighted cross-entropy plus Dice."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.losses import DiceLoss

__all__ = ["WeightedCEDiceLoss"]


class WeightedCEDiceLoss(nn.Module):
    """``lambda_ce * CE(logits, y; class_weights) + lambda_dice * Dice(softmax(logits), onehot(y))``.

    Args:
        class_weights: cross-entropy weight of each class (the authors weight the lesion 4x: (1, 4)).
        lambda_ce: weight of the cross-entropy term.
        lambda_dice: weight of the Dice term.
        batch_dice: compute the Dice term over the batch's samples together (per class, nnU-Net's "batch Dice" for 2D
            slices) instead of per sample and then averaged; a slice without lesion then adds to the batch's lesion
            Dice instead of being a term of its own.

    Shapes: logits (B, K, *S), target (B, 1, *S) with class indices -> scalar.
    """

    def __init__(
        self, class_weights: Sequence[float] = (1.0, 4.0), lambda_ce: float = 1.0, lambda_dice: float = 1.0,
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("class_weights", torch.as_tensor(class_weights, dtype=torch.float32))
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=bool(batch_dice))
        self.lambda_ce = lambda_ce
        self.lambda_dice = lambda_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.class_weights.numel():
            n = self.class_weights.numel()
            raise ValueError(f"logits have {logits.shape[1]} classes but class_weights has {n}.")
        indices = target[:, 0].long()
        ce = nn.functional.cross_entropy(logits.float(), indices, weight=self.class_weights.to(logits.device))
        return self.lambda_ce * ce + self.lambda_dice * self.dice(logits.float(), target)

"""The training loss (bundle.losses.WeightedCEDiceLoss): per-sample and batch Dice against hand-computed values."""

from __future__ import annotations

import torch

from bundle.losses import WeightedCEDiceLoss


def _dice_loss(probabilities: torch.Tensor, onehot: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """1 - (2 |P.T| + s) / (|P| + |T| + s) per class (and per sample unless ``dims`` includes the batch), averaged."""
    smooth = 1e-5
    intersection = (probabilities * onehot).sum(dims)
    total = probabilities.sum(dims) + onehot.sum(dims)
    return (1 - (2 * intersection + smooth) / (total + smooth)).mean()


def test_batch_dice_pools_the_slices_of_a_batch():
    gen = torch.Generator().manual_seed(0)
    target = torch.zeros(4, 1, 8, 8, dtype=torch.float64)
    target[0, 0, 2:4, 2:5] = 1  # one slice with a small lesion, three without (as the random half of a batch)
    # a nearly right prediction: confident background, the lesion found, some noise
    logits = torch.cat([-4 * (2 * target - 1), 4 * (2 * target - 1)], 1)
    logits = logits + 0.5 * torch.randn(4, 2, 8, 8, generator=gen, dtype=torch.float64)
    probabilities = logits.softmax(1)
    onehot = torch.cat([1 - target, target], 1)
    ce = torch.nn.functional.cross_entropy(logits.float(), target[:, 0].long(), weight=torch.tensor([1.0, 2.0]))
    per_sample = WeightedCEDiceLoss((1.0, 2.0))(logits, target)
    pooled = WeightedCEDiceLoss((1.0, 2.0), batch_dice=True)(logits, target)
    torch.testing.assert_close(per_sample.double(), ce.double() + _dice_loss(probabilities, onehot, (2, 3)))
    torch.testing.assert_close(pooled.double(), ce.double() + _dice_loss(probabilities, onehot, (0, 2, 3)))
    # per slice, each empty slice's lesion term is about 1 (its few false-positive probabilities against a smoothing
    # constant); pooled over the batch, the nearly right prediction scores nearly perfectly
    assert float(per_sample - pooled) > 0.3

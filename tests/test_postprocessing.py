"""Lesion post-processing: the largest-component and size filters (what they keep, in 2D, in 3D across slices,
one-hot, switched off) and the lesion probability threshold that turns scores into labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import AsDiscrete

from bundle.transforms import KeepLargestLesiond, LesionFilterd, LesionLabeld, keep_largest_lesion, scores_to_label


def _two_lesions_3d() -> np.ndarray:
    label = np.zeros((20, 20, 6), np.uint8)
    label[2:8, 2:8, 1:5] = 1  # 144 voxels, spread over slices 1..4
    label[14:17, 14:17, 2] = 1  # 9 voxels, a separate focus
    return label


def test_keeps_the_largest_component_of_a_volume_as_a_whole():
    label = _two_lesions_3d()
    kept = np.asarray(keep_largest_lesion(torch.as_tensor(label)))
    assert kept.sum() == 144 and kept[14:17, 14:17, 2].sum() == 0
    # diagonal neighbours across slices are connected (full connectivity), so this stays one component
    label[8, 8, 5] = 1
    assert np.asarray(keep_largest_lesion(torch.as_tensor(label))).sum() == 145


def test_dictionary_transform_on_indices_and_one_hot_and_disabled():
    label = torch.as_tensor(_two_lesions_3d())[None]  # (1, H, W, D)
    out = KeepLargestLesiond("pred")({"pred": label})["pred"]
    assert out.shape == label.shape and int(out.sum()) == 144
    onehot = torch.cat([1 - label, label]).float()  # (2, H, W, D), as the evaluators hold it
    out = KeepLargestLesiond("pred", is_onehot=True)({"pred": onehot})["pred"]
    assert int(out[1].sum()) == 144
    out = KeepLargestLesiond("pred", enabled=False)({"pred": label})["pred"]
    assert torch.equal(out, label)


def test_keeps_the_largest_component_of_a_2d_label():
    label = np.zeros((20, 24), np.uint8)
    label[2:8, 2:8] = 1  # 36 pixels
    label[14:17, 18:21] = 1  # 9 pixels
    kept = np.asarray(keep_largest_lesion(torch.as_tensor(label)))
    assert kept.shape == (20, 24) and kept.sum() == 36 and kept[14:17, 18:21].sum() == 0


def _three_lesions() -> torch.Tensor:
    label = torch.zeros(1, 20, 20, 4)
    label[0, 2:8, 2:8, 0:3] = 1  # 108 voxels
    label[0, 12:15, 12:15, 1] = 1  # 9 voxels
    label[0, 18, 2, 3] = 1  # 1 voxel
    return label


@pytest.mark.parametrize("keep_largest,min_size,kept", [
    (False, 0, 118), (False, 1, 118), (False, 2, 117), (False, 9, 117), (False, 10, 108), (False, 500, 0),
    (True, 0, 108), (True, 10, 108), (True, 500, 0),
])
def test_lesion_filter_on_labels(keep_largest, min_size, kept):
    out = LesionFilterd("pred", keep_largest=keep_largest, min_size=min_size)({"pred": _three_lesions()})["pred"]
    assert int(out.sum()) == kept


def test_lesion_filter_on_scores_makes_removed_voxels_background():
    label = _three_lesions()
    probs = torch.cat([1 - label, label]) * 0.8 + 0.1  # lesion where the label is, probabilities 0.9 / 0.1
    out = LesionFilterd("pred", min_size=10, scores=True)({"pred": probs})["pred"]
    assert int((out.argmax(0) == 1).sum()) == 108
    assert torch.equal(out[:, 12:15, 12:15, 1], torch.tensor([1.0, 0.0])[:, None, None].expand(2, 3, 3))
    assert torch.equal(out[:, 2:8, 2:8, 0:3], probs[:, 2:8, 2:8, 0:3])  # kept voxels keep their scores
    assert torch.equal(probs, torch.cat([1 - label, label]) * 0.8 + 0.1)  # the input is not modified


def test_lesion_filter_off_passes_the_data_through():
    label = _three_lesions()
    assert LesionFilterd("pred", keep_largest="false", min_size=0)({"pred": label})["pred"] is label


@pytest.mark.parametrize("min_size", [-1, 2.5, "ten"])
def test_lesion_filter_refuses_a_bad_size(min_size):
    with pytest.raises(ValueError, match="min_lesion_size"):
        LesionFilterd("pred", min_size=min_size)


def _probabilities(seed: int = 0, classes: int = 2) -> torch.Tensor:
    logits = torch.randn(classes, 24, 20, 3, generator=torch.Generator().manual_seed(seed)) * 3
    return torch.softmax(logits, dim=0)


def test_threshold_half_is_monais_argmax():
    probs = _probabilities()
    assert torch.equal(scores_to_label(probs, 0.5), AsDiscrete(argmax=True)(probs))
    three = _probabilities(classes=3)
    assert torch.equal(scores_to_label(three, 0.5), AsDiscrete(argmax=True)(three))
    assert torch.equal(LesionLabeld("pred")({"pred": probs})["pred"], AsDiscrete(argmax=True)(probs))


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.7])
def test_a_voxel_is_lesion_when_its_probability_exceeds_the_threshold(threshold):
    probs = _probabilities(1)
    label = LesionLabeld("pred", threshold=threshold)({"pred": probs})["pred"]
    assert label.shape == (1, 24, 20, 3) and label.dtype == probs.dtype
    assert torch.equal(label[0] > 0, probs[1] > threshold)
    # a lower threshold marks a superset of a higher one's lesion, and more of it than argmax at these probabilities
    assert bool(((scores_to_label(probs, 0.1) > 0) | (label == 0)).all())
    assert int(scores_to_label(probs, 0.1).sum()) > int(scores_to_label(probs, 0.5).sum())


def test_the_size_filter_decides_lesion_with_the_same_threshold():
    probs = torch.zeros(2, 20, 20)
    probs[1, 2:6, 2:6] = 0.4  # 16 voxels of lesion probability 0.4: background by argmax, lesion at threshold 0.3
    probs[1, 10:12, 10:12] = 0.35  # 4 voxels, a small component at threshold 0.3
    probs[0] = 1 - probs[1]
    out = LesionFilterd("pred", min_size=10, scores=True, threshold=0.3)({"pred": probs})["pred"]
    label = scores_to_label(out, 0.3)[0]
    assert int(label.sum()) == 16 and int(label[10:12, 10:12].sum()) == 0
    assert int(scores_to_label(LesionFilterd("pred", min_size=10, scores=True)({"pred": probs})["pred"])[0].sum()) == 0


@pytest.mark.parametrize("threshold", [0, 1, 1.5, -0.2, "half", None, True])
def test_a_bad_threshold_is_refused_by_name(threshold):
    with pytest.raises(ValueError, match="lesion_threshold"):
        LesionLabeld("pred", threshold=threshold)
    with pytest.raises(ValueError, match="lesion_threshold"):
        LesionFilterd("pred", min_size=5, scores=True, threshold=threshold)


def test_a_threshold_other_than_half_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        LesionLabeld("pred", threshold=0.3)({"pred": _probabilities(classes=3)})


def _seeded_volume() -> torch.Tensor:
    """Two-class scores (2, 12, 12, 6): region A (a 4 x 4 x 4 block at 0.35 but for one voxel at 0.9, three slices
    away from its first), region B (a larger 4 x 4 x 5 block at 0.4 everywhere), background 0.05."""
    lesion = torch.full((12, 12, 6), 0.05)
    lesion[1:5, 1:5, 0:4] = 0.35  # region A: weak everywhere...
    lesion[2, 2, 3] = 0.9  # ...but one confident voxel, three slices away from the first
    lesion[7:11, 7:11, 1:6] = 0.4  # region B: larger, never confident
    return torch.stack([1 - lesion, lesion])


def test_a_seed_threshold_keeps_only_regions_with_a_confident_voxel_across_slices():
    scores = _seeded_volume()
    plain = scores_to_label(scores, 0.3)[0] > 0
    seeded = scores_to_label(scores, 0.3, seed_threshold=0.7)[0] > 0
    region_a = torch.zeros_like(plain)
    region_a[1:5, 1:5, 0:4] = True
    assert plain.sum() == 4 * 4 * 4 + 4 * 4 * 5
    assert torch.equal(seeded, region_a)  # A whole (its slice 0 too, grown through the volume), B dropped
    # at or below the threshold the seed changes nothing; above every probability it removes every region
    assert torch.equal(scores_to_label(scores, 0.3, seed_threshold=0.3), scores_to_label(scores, 0.3))
    assert torch.equal(scores_to_label(scores, 0.3, seed_threshold=0.0), scores_to_label(scores, 0.3))
    assert not scores_to_label(scores, 0.3, seed_threshold=0.95).any()
    # with argmax (0.5) only region A's confident voxel is lesion, and a seed keeps it
    assert scores_to_label(scores, 0.5, seed_threshold=0.7).sum() == 1
    # the dictionary transforms: the label step, and the component filter on scores, which counts only seeded regions
    label = LesionLabeld("pred", threshold=0.3, seed_threshold=0.7)({"pred": scores})["pred"]
    assert label.shape == (1, 12, 12, 6) and torch.equal(label[0] > 0, region_a)
    seeded_filter = LesionFilterd("pred", keep_largest=True, scores=True, threshold=0.3, seed_threshold=0.7)
    assert torch.equal(scores_to_label(seeded_filter({"pred": scores})["pred"], 0.3, 0.7)[0] > 0, region_a)
    plain_filter = LesionFilterd("pred", keep_largest=True, scores=True, threshold=0.3)  # keeps B, the larger
    assert not scores_to_label(plain_filter({"pred": scores})["pred"], 0.3, 0.7).any()


@pytest.mark.parametrize("seed", [1, 1.5, -0.2, "high", None, True])
def test_a_bad_seed_threshold_is_refused_by_name(seed):
    with pytest.raises(ValueError, match="lesion_seed_threshold"):
        LesionLabeld("pred", threshold=0.3, seed_threshold=seed)
    with pytest.raises(ValueError, match="lesion_seed_threshold"):
        LesionFilterd("pred", min_size=5, scores=True, seed_threshold=seed)


def test_a_seed_threshold_needs_two_classes():
    with pytest.raises(ValueError, match="lesion_seed_threshold 0.7 needs two classes"):
        LesionLabeld("pred", seed_threshold=0.7)({"pred": _probabilities(classes=3)})

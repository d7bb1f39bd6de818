"""Largest-component post-processing: what it keeps, in 2D, in 3D across slices, one-hot, and switched off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.transforms import KeepLargestLesiond, LesionFilterd, keep_largest_lesion


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

"""Largest-component post-processing: what it keeps, in 2D, in 3D across slices, one-hot, and switched off."""

from __future__ import annotations

import numpy as np
import torch

from bundle.transforms import KeepLargestLesiond, keep_largest_lesion


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

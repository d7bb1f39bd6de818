"""2.5D input (``NeighbourSlicesd``): neighbours as channels, edge slices repeated, meta data kept for inversion."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from bundle.transforms import NeighbourSlicesd, ResizeInPlaned


def _volume(depth: int = 5) -> MetaTensor:
    # slice z holds the value z everywhere, so each output channel shows which slice it came from
    values = torch.arange(depth, dtype=torch.float32).expand(1, 4, 6, depth).clone()
    return MetaTensor(values, affine=torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0])), meta={"filename_or_obj": "v.nii"})


@pytest.mark.parametrize("context", [1, 2])
def test_channels_hold_the_neighbouring_slices_with_edges_repeated(context):
    out = NeighbourSlicesd("image", context)({"image": _volume()})["image"]
    assert out.shape == (2 * context + 1, 4, 6, 5)
    for channel in range(2 * context + 1):
        expected = torch.clamp(torch.arange(5) + channel - context, 0, 4).float()
        assert torch.equal(out[channel, 0, 0], expected), channel
    assert torch.equal(out[context], _volume()[0])  # the middle channel is the slice itself


def test_zero_context_passes_through_and_2d_images_repeat():
    volume = _volume()
    assert NeighbourSlicesd("image", 0)({"image": volume})["image"] is volume
    image = torch.rand(1, 7, 9)
    out = NeighbourSlicesd("image", 1)({"image": image})["image"]
    assert out.shape == (3, 7, 9) and all(torch.equal(out[c], image[0]) for c in range(3))


def test_meta_data_survive_so_a_prediction_inverts_to_the_source_grid():
    transform = Compose([ResizeInPlaned("image", (8, 12)), NeighbourSlicesd("image", 1)])
    data = transform({"image": _volume()})
    assert isinstance(data["image"], MetaTensor) and data["image"].meta["filename_or_obj"] == "v.nii"
    pred = MetaTensor(torch.rand(2, 8, 12, 5))
    pred.applied_operations = data["image"].applied_operations
    inverted = Invertd("pred", transform=transform, orig_keys="image")({**data, "pred": pred})["pred"]
    assert inverted.shape == (2, 4, 6, 5)


@pytest.mark.parametrize("context", [-1, 0.5, "1"])
def test_bad_context_is_refused_by_name(context):
    with pytest.raises(ValueError, match="context_slices"):
        NeighbourSlicesd("image", context)


def test_multi_channel_input_is_refused_naming_the_file():
    image = MetaTensor(torch.rand(2, 4, 4, 3), meta={"filename_or_obj": "two_channels.nii.gz"})
    with pytest.raises(ValueError, match="two_channels.nii.gz: 2.5D input needs one channel, got shape"):
        NeighbourSlicesd("image", 1)({"image": image})

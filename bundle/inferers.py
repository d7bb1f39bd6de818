"""An inferer that runs the 2D network on 2D images and slice by slice on 3D volumes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer

__all__ = ["SliceWiseInferer"]


class SliceWiseInferer(Inferer):
    """2D inputs (B, C, H, W) go through MONAI's ``SlidingWindowInferer`` with ``roi_size``; 3D inputs
    (B, C, H, W, D) through MONAI's ``SliceInferer`` over the last axis (each slice through the same sliding
    window), so one inference config serves PNG images and NIfTI/DICOM volumes.

    Args:
        roi_size: (H, W) window of the 2D network.
        sw_batch_size: windows (slices) per forward pass.
        overlap: sliding-window overlap.
        mode: sliding-window blending ("constant" or "gaussian").
    """

    def __init__(
        self, roi_size: Sequence[int], sw_batch_size: int = 8, overlap: float = 0.25, mode: str = "constant"
    ) -> None:
        super().__init__()
        if len(roi_size) != 2:
            raise ValueError(f"roi_size must be (H, W), got {roi_size!r}.")
        kwargs = {"roi_size": tuple(roi_size), "sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode}
        self.image_inferer = SlidingWindowInferer(**kwargs)
        self.volume_inferer = SliceInferer(spatial_dim=2, **kwargs)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if inputs.ndim == 4:
            return self.image_inferer(inputs, network, *args, **kwargs)
        if inputs.ndim == 5:
            return self.volume_inferer(inputs, network, *args, **kwargs)
        raise ValueError(f"expected a batch of 2D images (B, C, H, W) or volumes (B, C, H, W, D), got {inputs.shape}.")

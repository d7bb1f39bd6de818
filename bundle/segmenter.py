"""Slice-wise segmentation of 2D images and 3D volumes with the 2D network, outside the MONAI config machinery.

The preprocessing and postprocessing are MONAI's own array transforms with the same settings as
``configs/inference.json``, so the predictor and ``monai.bundle run`` give the same labels.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from monai.inferers import SliceInferer
from monai.transforms import Resize, ScaleIntensityRangePercentiles

from .checkpoints import load_weights
from .device import resolve_device, use_amp
from .inferers import FlipAveraged
from .networks import LMNet, reparameterize_model
from .tasks import TaskSettings, get_task
from .transforms import keep_largest_lesion

__all__ = ["SliceSegmenter", "load_network"]

logger = logging.getLogger(__name__)


def load_network(weights: str | os.PathLike | None, num_classes: int = 2, in_channels: int = 1) -> nn.Module:
    """Build the default LMNet, load ``weights`` strictly (training-form state_dict, or a checkpoint dict holding
    one under ``"model"``/``"network"``; a shipped file must match its recorded SHA-256, see
    :func:`bundle.checkpoints.load_weights`), and return the re-parameterized model in eval mode.

    ``weights=None`` keeps the random initialisation (for tests and benchmarks only).
    """
    net = load_weights(LMNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes), weights)
    return reparameterize_model(net, inplace=True)


class SliceSegmenter:
    """Runs a 2D segmentation network on a 2D image, or on every slice (last axis) of a 3D volume.

    Steps: percentile intensity scaling to [0, 1] over the whole input -> in-plane resize to the task's size ->
    batched network forward per slice -> softmax -> resize back -> argmax.

    Args:
        network: a 2D network mapping (B, 1, H, W) -> (B, num_classes, H, W) logits (put in eval mode here).
        task: a :class:`~bundle.tasks.TaskSettings` or its name.
        device: "auto" (CUDA when available), "cpu", "cuda:0", ...
        batch_size: slices per forward pass.
    """

    def __init__(
        self, network: nn.Module, task: TaskSettings | str = "lgg", device: str | torch.device = "auto",
        batch_size: int = 16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.task = get_task(task) if isinstance(task, str) else task
        self.device = resolve_device(device)
        self.amp = use_amp(self.device)
        self.network = network.to(self.device).eval()
        if self.device.type == "cuda":
            self.network = self.network.to(memory_format=torch.channels_last)
        lower, upper = self.task.percentiles
        self.scale = ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=1.0, clip=True)
        self.inferer = SliceInferer(roi_size=self.task.spatial_size, sw_batch_size=batch_size, spatial_dim=2)

    @classmethod
    def from_bundle(
        cls, bundle_root: str | os.PathLike = ".", task: str = "lgg", device: str | torch.device = "auto",
        batch_size: int = 16, weights: str | os.PathLike | None = None,
    ) -> SliceSegmenter:
        """Load the task's shipped weights (``weights`` overrides the path) from ``bundle_root``."""
        settings = get_task(task)
        path = Path(weights) if weights is not None else Path(bundle_root) / settings.weights
        network = load_network(path, settings.num_classes)
        return cls(network, settings, device, batch_size)

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment one image.

        Args:
            image: (H, W) 2D image or (H, W, D) volume with slices along the last axis, one channel, any dtype.

        Returns:
            ``(labels, probabilities)``: uint8 labels with ``image``'s shape and float32 class probabilities of
            shape (num_classes, *image.shape).
        """
        if image.ndim not in (2, 3):
            raise ValueError(f"image must be 2D (H, W) or 3D (H, W, D), got shape {image.shape}.")
        if min(image.shape[:2]) < 2:
            raise ValueError(f"image is too small in-plane: shape {image.shape}.")
        volume = image if image.ndim == 3 else image[..., None]
        x = torch.as_tensor(np.ascontiguousarray(volume, dtype=np.float32))[None]  # (1, H, W, D)
        x = self.scale(x)
        size = tuple(volume.shape[:2])
        x = Resize((*self.task.spatial_size, -1), mode="bilinear")(x)
        x = torch.as_tensor(x)[None].to(self.device)  # (1, 1, h, w, D)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.inferer(x, FlipAveraged(self.network, self.task.tta_flips))
        probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)[0]  # (C, h, w, D)
        probs = torch.as_tensor(Resize((*size, -1), mode="bilinear")(probs.cpu()))
        labels = probs.argmax(0).to(torch.uint8)
        if self.task.keep_largest_component:
            labels = keep_largest_lesion(labels)
        labels = np.asarray(labels)
        probs_np = probs.numpy().astype(np.float32, copy=False)
        if image.ndim == 2:
            return labels[..., 0], probs_np[..., 0]
        return labels, probs_np

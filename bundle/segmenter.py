"""Segmentation of in-memory images with the pipeline of the bundle's inference config.

The :class:`Segmenter` holds the pieces that ``configs/inference.json`` (plus the task overlay and any overrides)
defines: the network with its weights, the image transforms after file reading, the inferer, and the post-processing
up to the class scores and the labels. It defines no processing of its own, so the batch predictor, the Python API
and MONAI Label give the labels that ``monai.bundle run --config_file configs/inference.json`` writes.

    segmenter = Segmenter.from_bundle(".", task="lgg", overrides={"tta_flips": []})
    labels, probabilities = segmenter(volume)        # (H, W, D) float array -> (H, W, D) uint8, (2, H, W, D)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.transforms import Compose

from .checkpoints import load_weights
from .device import resolve_device
from .networks import reparameterize_model, to_channels_last
from .runtimes import runtime_network
from .settings import as_bool

__all__ = ["Segmenter", "deployed_network"]

logger = logging.getLogger(__name__)


def deployed_network(network: nn.Module, weights: str | os.PathLike | None, device: torch.device) -> nn.Module:
    """``network`` with ``weights`` loaded strictly (shipped files checked against their recorded SHA-256, see
    :func:`bundle.checkpoints.load_weights`; ``None`` keeps the initialisation, for tests and benchmarks), in its
    re-parameterized inference form when it has one, stored channels-last, in eval mode on ``device`` (as
    ``configs/inference.json``'s ``ReparameterizeHandler`` leaves it, so both run the same kernels)."""
    load_weights(network, weights)
    if any(callable(getattr(m, "switch_to_deploy", None)) for m in network.modules()):
        network = reparameterize_model(network, inplace=True)
    return to_channels_last(network.to(device)).eval()


class Segmenter:
    """Runs the inference config's pipeline on one image array.

    Args:
        network: the config's ``network`` (built from ``network_def``).
        weights: the weights file (``ckpt_path``), loaded strictly; ``None`` keeps the network as it is.
        image_transforms: the config's ``image_transforms``: the preprocessing after file reading, on
            ``{"image": MetaTensor (C, *S)}``.
        inferer: the config's ``inferer``.
        score_transforms: the config's ``score_transforms``: network output -> class scores on the source grid
            (they invert ``image_transforms``).
        label_transforms: the config's ``label_transforms``: scores -> class indices (1, *S).
        device: the config's ``device``, or "auto".
        amp: automatic mixed precision (CUDA only), the config's ``amp``.
        class_names: output classes, background first.
        runtime: "torch" or "openvino" (CPU), the config's ``runtime`` (:mod:`bundle.runtimes`).
        precision: "fp32" or "bf16" (CPU), the config's ``precision``.

    Shapes of ``__call__``: (H, W) or (H, W, D) -> labels uint8 of the same shape, probabilities float32
    (num_classes, H, W[, D]).
    """

    def __init__(
        self, network: nn.Module, weights: str | os.PathLike | None, image_transforms: Sequence[Callable],
        inferer: Callable, score_transforms: Sequence[Callable], label_transforms: Sequence[Callable],
        device: str | torch.device = "auto", amp: bool = False,
        class_names: Sequence[str] = ("background", "lesion"), runtime: str = "torch", precision: str = "fp32",
    ) -> None:
        self.device = resolve_device(device)
        self.amp = as_bool(amp, "amp") and self.device.type == "cuda"
        self.network = runtime_network(deployed_network(network, weights, self.device), runtime, precision, weights,
                                       self.device)
        self.weights = None if weights is None else str(weights)
        self.image_transforms = Compose(list(image_transforms))
        self.inferer = inferer
        self.score_transforms = Compose(list(score_transforms))
        self.label_transforms = Compose(list(label_transforms))
        self.class_names = tuple(class_names)

    @classmethod
    def from_bundle(
        cls, bundle_root: str | os.PathLike = ".", task: str = "lgg", device: str | torch.device = "auto",
        weights: str | os.PathLike | None = None, overrides: dict | None = None,
    ) -> Segmenter:
        """The ``segmenter`` of the task's inference configs under ``bundle_root`` with ``overrides`` (config ids ->
        values, as ``monai.bundle run --id value``); ``weights`` replaces ``ckpt_path``."""
        from .config import inference_parser, parsed

        return parsed(inference_parser(bundle_root, task, device, weights, overrides), "segmenter")

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, color: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Segment a (H, W) image or a (H, W, D) volume (slices along the last axis), or with ``color`` an (H, W, C)
        colour image (channels last, as image files hold them); any numeric dtype."""
        image = np.asarray(image)
        if color:
            if image.ndim != 3:
                raise ValueError(f"a colour image must be (H, W, C), got shape {image.shape}.")
            pixels = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32))
            data = {"image": MetaTensor(pixels)}
            spatial = image.shape[:2]
        elif image.ndim not in (2, 3):
            raise ValueError(f"image must be 2D (H, W) or 3D (H, W, D), got shape {image.shape}.")
        else:
            data = {"image": MetaTensor(torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))[None])}
            spatial = image.shape
        data = self.image_transforms(data)
        x = data["image"].to(self.device)[None]
        with torch.autocast(self.device.type, enabled=self.amp):
            pred = self.inferer(x, self.network)
        data["pred"] = pred[0].float().cpu()
        data["image"] = data["image"].cpu()
        data = self.score_transforms(data)
        probabilities = np.asarray(torch.as_tensor(data["pred"]), dtype=np.float32)
        labels = np.asarray(torch.as_tensor(self.label_transforms(data)["pred"]))[0].astype(np.uint8)
        if labels.shape != spatial:
            raise RuntimeError(f"the inference pipeline returned labels of shape {labels.shape} for {image.shape}.")
        return labels, probabilities

"""Inferers: the 2D network on 2D images and slice by slice on volumes, the 3D network on whole volumes by sliding
window, optionally averaging the logits over mirrored inputs (flip test-time augmentation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer

from .runtimes import bf16_forward, check_cpu_precision, warn_unless_native_bf16

__all__ = ["SliceWiseInferer", "VolumeInferer", "FlipAveraged", "PlainTensorInferer", "plain_tensor"]


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor`` (a MetaTensor's data, shared, without its meta data).

    Networks run on plain tensors: every operation on a MetaTensor also goes through its meta-data bookkeeping,
    which made an LM-Net training step about 1.5 x slower on CPU. The meta data stays with the batch (the engines
    keep the input image for ``Invertd``)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def check_flips(flips: Sequence[int]) -> tuple[int, ...]:
    """``flips`` as a tuple of distinct in-plane axes (0 = H, 1 = W); raises ``ValueError`` otherwise."""
    axes = tuple(int(a) for a in flips)
    if any(a not in (0, 1) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"flips must be distinct in-plane axes (0 = H, 1 = W), got {tuple(flips)!r}.")
    return axes


class FlipAveraged:
    """``network`` evaluated on the input and on its mirror images, logits flipped back and averaged: flip
    test-time augmentation as a drop-in callable for any MONAI inferer.

    Args:
        network: maps (B, C, H, W) to logits (B, K, H, W).
        flips: the spatial axes to mirror, one entry per extra pass: ``(0,)`` adds the up-down mirror, ``(1,)`` the
            left-right one, ``(0, 1)`` both (3 passes). Axis 0 is H. An empty tuple is the plain network.

    Shapes: (B, C, H, W) -> (B, K, H, W); the cost is ``1 + len(flips)`` forward passes.
    """

    def __init__(self, network: Callable[..., torch.Tensor], flips: Sequence[int] = (1,)) -> None:
        self.network = network
        self.dims = [(a + 2,) for a in check_flips(flips)]

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        total = self.network(x, *args, **kwargs)
        for dims in self.dims:
            total = total + torch.flip(self.network(torch.flip(x, dims), *args, **kwargs), dims)
        return total / (1 + len(self.dims))


class SliceWiseInferer(Inferer):
    """2D inputs (B, C, H, W) go through MONAI's ``SlidingWindowInferer`` with ``roi_size``; 3D inputs
    (B, C, H, W, D) through MONAI's ``SliceInferer`` over the last axis (each slice through the same sliding
    window), so one inference config serves PNG images and NIfTI/DICOM volumes.

    Args:
        roi_size: (H, W) window of the 2D network.
        sw_batch_size: windows (slices) per forward pass.
        overlap: sliding-window overlap.
        mode: sliding-window blending ("constant" or "gaussian").
        tta_flips: in-plane axes (0 = H, 1 = W) to mirror for flip test-time augmentation (see
            :class:`FlipAveraged`); empty (the default) runs the network once.
    """

    def __init__(
        self, roi_size: Sequence[int], sw_batch_size: int = 8, overlap: float = 0.25, mode: str = "constant",
        tta_flips: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if len(roi_size) != 2:
            raise ValueError(f"roi_size must be (H, W), got {roi_size!r}.")
        kwargs = {"roi_size": tuple(roi_size), "sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode}
        self.image_inferer = SlidingWindowInferer(**kwargs)
        self.volume_inferer = SliceInferer(spatial_dim=2, **kwargs)
        self.tta_flips = check_flips(tta_flips)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        inputs = plain_tensor(inputs)
        if self.tta_flips:
            network = FlipAveraged(network, self.tta_flips)
        if inputs.ndim == 4:
            return self.image_inferer(inputs, network, *args, **kwargs)
        if inputs.ndim == 5:
            return self.volume_inferer(inputs, network, *args, **kwargs)
        raise ValueError(f"expected a batch of 2D images (B, C, H, W) or volumes (B, C, H, W, D), got {inputs.shape}.")


class VolumeInferer(Inferer):
    """A 3D network on whole volumes: MONAI's ``SlidingWindowInferer`` with ``roi_size`` (H, W, D) windows, on plain
    tensors (see :func:`plain_tensor`), with optional in-plane flip averaging (:class:`FlipAveraged`). A volume
    smaller than the window on an axis is padded by the inferer and cropped back.

    Args:
        roi_size: (H, W, D) window of the 3D network.
        sw_batch_size: windows per forward pass.
        overlap: fraction of a window shared with its neighbours.
        mode: blending of overlapping windows, "gaussian" (default) or "constant".
        tta_flips: in-plane axes (0 = H, 1 = W) to mirror; empty (the default) runs the network once.

    Shapes: (B, C, H, W, D) -> (B, K, H, W, D).
    """

    def __init__(
        self, roi_size: Sequence[int], sw_batch_size: int = 1, overlap: float = 0.25, mode: str = "gaussian",
        tta_flips: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if len(roi_size) != 3:
            raise ValueError(f"roi_size must be (H, W, D) for volumes, got {roi_size!r}.")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        self.inferer = SlidingWindowInferer(roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap,
                                            mode=mode)
        self.tta_flips = check_flips(tta_flips)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        inputs = plain_tensor(inputs)
        if inputs.ndim != 5:
            raise ValueError(f"expected a batch of volumes (B, C, H, W, D), got shape {tuple(inputs.shape)}.")
        if self.tta_flips:
            network = FlipAveraged(network, self.tta_flips)
        return self.inferer(inputs, network, *args, **kwargs)


class PlainTensorInferer(Inferer):
    """The network on the whole input, as MONAI's ``SimpleInferer``, on a plain tensor (see :func:`plain_tensor`):
    the training inferer.

    Args:
        precision: ``"fp32"`` (default) or ``"bf16"``: the forward under CPU bfloat16 autocast, output in fp32, so
            that the loss and the backward's gradient accumulation stay in fp32 (a CPU setting: on CUDA, MONAI's
            ``amp``). On CPUs with AVX512-BF16 / AMX this makes a training step faster; it changes the numbers.
        device: the device the network runs on, to refuse ``bf16`` on CUDA when the config is parsed (the inputs'
            device is checked on every call as well).

    Shapes: (B, C, *S) -> the network's output (fp32 with ``bf16``).

    Raises:
        ValueError: an unknown ``precision``, or ``bf16`` on inputs on a CUDA device.
    """

    def __init__(self, precision: str = "fp32", device: torch.device | str | None = None) -> None:
        super().__init__()
        check_cpu_precision(precision, device)
        if precision == "bf16":
            warn_unless_native_bf16("training precision bf16")
        self.precision = precision

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if self.precision == "fp32":
            return network(plain_tensor(inputs), *args, **kwargs)
        check_cpu_precision(self.precision, inputs.device)
        return bf16_forward(lambda x: network(x, *args, **kwargs), plain_tensor(inputs))

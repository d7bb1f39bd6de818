"""Export of LMNet (training or deployed form) to ONNX and TorchScript."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["export_onnx", "export_torchscript"]

logger = logging.getLogger(__name__)


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    in_channels: int,
    spatial_size: Sequence[int] = (256, 256),
    opset_version: int = 17,
) -> Path:
    """Export ``model`` to ONNX with a dynamic batch dimension, written atomically.

    The graph is traced at ``spatial_size`` (H, W): the inner padding to a multiple of 16 is fixed for that size,
    so run the ONNX model on inputs of that size (resize or tile, e.g. MONAI's sliding-window inferer).

    Args:
        model: an ``LMNet`` (training or re-parameterized form); it is put in eval mode.
        path: output ``.onnx`` file.
        in_channels: channels of the example input.
        spatial_size: (H, W) or (D, H, W) of the example input.
        opset_version: ONNX opset.

    Returns:
        The written path.
    """
    path = Path(path)
    model.eval()
    example = torch.zeros(1, in_channels, *spatial_size)
    tmp = _atomic_target(path)
    try:
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset_version,
            dynamo=False,
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote ONNX model %s (input 1 x %d x %s)", path, in_channels, tuple(spatial_size))
    return path


def export_torchscript(model: nn.Module, path: str | os.PathLike) -> Path:
    """Script ``model`` (any input size keeps working) and save it atomically to ``path``."""
    path = Path(path)
    scripted = torch.jit.script(model.eval())
    tmp = _atomic_target(path)
    try:
        torch.jit.save(scripted, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote TorchScript model %s", path)
    return path

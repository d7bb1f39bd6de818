"""Device selection shared by the configs, the predictor and the scripts."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "use_amp"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> the first CUDA GPU if there is one, else the CPU; anything else as ``torch.device``.

    Raises ``ValueError`` when a CUDA device is asked for and none is available.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available on this machine.")
    return resolved


def use_amp(device: torch.device) -> bool:
    """Automatic mixed precision helps on CUDA only; on the CPU it is off."""
    return device.type == "cuda"

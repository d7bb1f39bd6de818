"""LM-Net: a lightweight multi-scale CNN + transformer network for medical image segmentation, as a MONAI bundle.

Importing ``bundle`` makes every name the configs use reachable as ``bundle.<module>.<name>``.
"""

from __future__ import annotations

from . import checkpoints, data, handlers, inferers, losses, metrics, networks, tasks, transforms

__version__ = "0.5.1"

__all__ = [
    "checkpoints", "data", "handlers", "inferers", "losses", "metrics", "networks", "tasks", "transforms",
    "__version__",
]

"""LM-Net: a lightweight multi-scale CNN + transformer network for medical image segmentation, as a MONAI bundle.

Every module the configs use is reachable as ``bundle.<module>.<name>``; modules are imported on first access
(``import bundle`` itself is cheap, so every command-line tool starts fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.15.0"

_MODULES = (
    "allocator", "batch_norm", "benchmark", "checkpoints", "config", "data", "device", "fileio", "handlers", "inferers",
    "io", "losses", "metrics", "networks", "predictor", "reports", "segmenter", "settings", "tasks", "tracking",
    "training_state", "transforms", "warm_start", "weight_average",
)

__all__ = [*_MODULES, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the modules load on first access
    from . import (  # noqa: F401
        allocator,
        batch_norm,
        checkpoints,
        config,
        data,
        handlers,
        inferers,
        losses,
        metrics,
        networks,
        predictor,
        reports,
        segmenter,
        settings,
        tasks,
        tracking,
        training_state,
        transforms,
        warm_start,
        weight_average,
    )


def __getattr__(name: str):
    if name in _MODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""Experiment tracking: the trained weights as artifacts of the MLflow run that ``monai.bundle run ... --tracking
mlflow`` (MONAI's built-in settings) keeps for a training run.

MONAI's ``MLFlowHandler`` logs the parameters, the losses, the validation metrics and the executed config; this
handler adds the checkpoint files (the best-validation ``model.pt`` and the final ``model_final.pt``) to the same
run when training completes. Without tracking it does nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["CheckpointArtifacts"]

logger = logging.getLogger(__name__)


def _tracking_handlers(engine: Engine) -> list:
    """The MONAI ``MLFlowHandler`` objects attached to ``engine`` (their ``complete`` runs at COMPLETED)."""
    found = []
    for handler, _, _ in getattr(engine, "_event_handlers", {}).get(Events.COMPLETED, []):
        owner = getattr(handler, "__self__", None)
        if type(owner).__name__ == "MLFlowHandler" and owner not in found:
            found.append(owner)
    return found


class CheckpointArtifacts:
    """Log checkpoint files to the trainer's MLflow run when training completes (before MONAI's handler closes it).

    Args:
        paths: files to log (missing ones are skipped: a run without validation has no ``model.pt``).
        artifact_path: folder of the artifacts inside the run.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], artifact_path: str = "checkpoints") -> None:
        self.paths = [Path(p) for p in paths]
        self.artifact_path = artifact_path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for tracker in _tracking_handlers(engine):
            run = getattr(tracker, "cur_run", None)
            if run is None or getattr(tracker, "client", None) is None:
                continue
            for path in self.paths:
                if path.is_file():
                    tracker.client.log_artifact(run.info.run_id, str(path), self.artifact_path)
                    logger.info("logged %s to MLflow run %s", path, run.info.run_id)

"""The bundle's segmentation tasks: names, descriptions and weights files (what no config holds; the class names are
``channel_def`` in ``configs/metadata.json``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TaskSettings", "TASKS", "get_task", "config_files"]


@dataclass(frozen=True)
class TaskSettings:
    """What no config holds about a segmentation task; everything between reading and writing an image (sizes,
    channels, intensities, flips, post-processing) is in ``configs/inference.json`` and the task's overlay, the class
    names in ``configs/metadata.json``.

    Attributes:
        name: task id used on the command line and as the overlay folder ``configs/<name>/``.
        description: one line for humans.
        weights: weights file relative to the bundle root.
        training_dimension: 3 when the task's training config samples slices out of volumes (``configs/train.json``),
            2 when it trains on 2D images (an overlay that drops the slice sampling). Inference takes both.
        shipped: whether the bundle ships weights for the task (else it is trained by the user: ``--weights``).
    """

    name: str
    description: str
    weights: str = "models/model.pt"
    training_dimension: int = 3
    shipped: bool = True


TASKS: dict[str, TaskSettings] = {
    "lgg": TaskSettings(
        name="lgg",
        description="FLAIR abnormality in low-grade glioma brain MRI (one FLAIR channel, slice by slice)",
        weights="models/model.pt",
    ),
    "lgg3d": TaskSettings(
        name="lgg3d",
        description="FLAIR abnormality in low-grade glioma brain MRI, whole volumes with a 3D LM-Net (sliding window)",
        weights="models/lgg3d/model.pt",
        shipped=False,
    ),
    "busi": TaskSettings(
        name="busi",
        description="Breast lesion in 2D B-mode ultrasound (one grayscale channel)",
        weights="models/busi/model.pt",
        training_dimension=2,
    ),
    "kvasir": TaskSettings(
        name="kvasir",
        description="Polyp in colonoscopy frames (Kvasir-SEG: RGB images, images/ + masks/)",
        weights="models/kvasir/model.pt",
        training_dimension=2,
        shipped=False,
    ),
}


def config_files(bundle_root: str | os.PathLike, task: str, kind: str) -> tuple[Path, ...]:
    """The configs of ``task`` for workflow ``kind`` (``"train"``, ``"inference"``, ...): ``configs/<kind>.json``
    then the task's overlay ``configs/<task>/<kind>.json`` where there is one, under ``bundle_root``.

    Raises:
        FileNotFoundError: ``bundle_root`` has no ``configs/<kind>.json``.
    """
    base = Path(bundle_root) / "configs" / f"{kind}.json"
    if not base.is_file():
        raise FileNotFoundError(f"bundle config {base} does not exist (is {bundle_root} a bundle root?).")
    overlay = base.parent / task / base.name
    return (base, overlay) if overlay.is_file() else (base,)


def get_task(name: str) -> TaskSettings:
    """The settings of task ``name``; raises ``ValueError`` listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}.") from None

"""The bundle's segmentation tasks and the settings that preprocessing and inference share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TaskSettings", "TASKS", "get_task", "config_files"]


@dataclass(frozen=True)
class TaskSettings:
    """Settings of one segmentation task.

    Attributes:
        name: task id used on the command line and in configs.
        description: one line for humans.
        spatial_size: in-plane size (H, W) in pixels every 2D image / slice is resized to for the network.
        percentiles: (lower, upper) intensity percentiles mapped to [0, 1] (clipped), over the whole image/volume,
            so scanner values and 8-bit exports land alike.
        channel_index: channel taken from a multi-channel volume (H, W, D, C), e.g. FLAIR = 1 in LGG kaggle_3m.
        class_names: output channel names, background first.
        weights: weights file relative to the bundle root.
        keep_largest_component: keep only the largest connected lesion of each prediction (a volume as a whole).
        tta_flips: in-plane axes (0 = H, 1 = W) mirrored for flip test-time augmentation (logits averaged over the
            plain and mirrored passes, see :class:`bundle.inferers.FlipAveraged`); empty for one pass.
        training_dimension: 3 when the task's training config samples slices out of volumes (``configs/train.json``),
            2 when it trains on 2D images (an overlay that drops the slice sampling). Inference takes both.
    """

    name: str
    description: str
    spatial_size: tuple[int, int] = (256, 256)
    percentiles: tuple[float, float] = (0.5, 99.5)
    channel_index: int = 0
    class_names: tuple[str, ...] = ("background", "lesion")
    weights: str = "models/model.pt"
    keep_largest_component: bool = False
    tta_flips: tuple[int, ...] = ()
    training_dimension: int = 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


TASKS: dict[str, TaskSettings] = {
    "lgg": TaskSettings(
        name="lgg",
        description="FLAIR abnormality in low-grade glioma brain MRI (one FLAIR channel, slice by slice)",
        channel_index=1,
        weights="models/model.pt",
        keep_largest_component=True,
        tta_flips=(1,),
    ),
    "busi": TaskSettings(
        name="busi",
        description="Breast lesion in 2D B-mode ultrasound (one grayscale channel)",
        spatial_size=(128, 128),
        weights="models/busi/model.pt",
        tta_flips=(1,),
        training_dimension=2,
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

"""What the MONAI Label app serves, read from the bundle itself: one model per bundle task, its configs, weights,
label names and the datastore items it can train on.

This module does not import MONAI Label, so the main environment can import and test it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..suffixes import image_kind
from ..tasks import TASKS, config_files, get_task

__all__ = [
    "ModelSpec",
    "model_specs",
    "label_names",
    "is_2d_image",
    "training_items",
    "split_items",
]


MODEL_PREFIX = "lmnet_"


@dataclass(frozen=True)
class ModelSpec:
    """One MONAI Label model: a bundle task with its configs and weights.

    Attributes:
        name: MONAI Label model name (``lmnet_<task>``).
        task: the bundle task (``lgg``, ``busi``; see :mod:`bundle.tasks`).
        bundle_root: the bundle folder (``configs/``, ``models/``).
        inference_configs: ``configs/inference.json`` then the task's overlay, if any.
        train_configs: ``configs/train.json`` then the task's overlay, if any.
        weights: the shipped weights of the task.
        finetuned: where fine-tuning on the datastore's labels publishes its weights (served once present).
        labels: label name -> value in the label map, from the metadata's ``channel_def`` without background.
        dimension: 3 when the task trains on volumes, 2 when it trains on 2D images.
        description: one line for the annotators.
    """

    name: str
    task: str
    bundle_root: Path
    inference_configs: tuple[Path, ...]
    train_configs: tuple[Path, ...]
    weights: Path
    finetuned: Path
    labels: dict[str, int]
    dimension: int
    description: str

    @property
    def run_dir(self) -> Path:
        """Folder of this model's fine-tuning runs and statistics."""
        return self.finetuned.parent


def label_names(bundle_root: str | os.PathLike) -> dict[str, int]:
    """``{name: value}`` of the output classes other than background, from ``outputs.pred.channel_def`` of
    ``<bundle_root>/configs/metadata.json`` (as MONAI Label's own bundle app names them)."""
    meta_path = Path(bundle_root) / "configs" / "metadata.json"
    with open(meta_path, encoding="utf-8") as handle:
        meta = json.load(handle)
    outputs = meta.get("network_data_format", {}).get("outputs", {})
    if not outputs:
        raise ValueError(f"{meta_path}: network_data_format.outputs is missing.")
    channel_def = next(iter(outputs.values())).get("channel_def")
    if not channel_def:
        raise ValueError(f"{meta_path}: the first output has no channel_def to name the labels from.")
    labels = {str(v).lower(): int(k) for k, v in channel_def.items() if str(v).lower() != "background"}
    if not labels:
        raise ValueError(f"{meta_path}: channel_def {channel_def} names no class other than background.")
    return labels


def model_specs(
    bundle_root: str | os.PathLike, output_dir: str | os.PathLike, tasks: Sequence[str] | None = None
) -> dict[str, ModelSpec]:
    """The models of ``tasks`` (default: every task of the bundle), keyed by model name.

    Args:
        bundle_root: the bundle folder.
        output_dir: fine-tuned weights go to ``<output_dir>/<model name>/model.pt``.
        tasks: task names (``lgg``, ``busi``) or model names (``lmnet_lgg``).
    """
    root = Path(bundle_root).resolve()
    labels = label_names(root)
    specs = {}
    for requested in tasks if tasks else list(TASKS):
        task = get_task(requested.removeprefix(MODEL_PREFIX))
        name = MODEL_PREFIX + task.name
        specs[name] = ModelSpec(
            name=name,
            task=task.name,
            bundle_root=root,
            inference_configs=config_files(root, task.name, "inference"),
            train_configs=config_files(root, task.name, "train"),
            weights=root / task.weights,
            finetuned=Path(output_dir).resolve() / name / "model.pt",
            labels=dict(labels),
            dimension=task.training_dimension,
            description=f"LM-Net: {task.description}",
        )
    return specs


def is_2d_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a 2D image file (by suffix)."""
    return image_kind(path) == "image"


def training_items(datalist: Iterable[dict], dimension: int) -> list[dict[str, str]]:
    """The ``{"image", "label"}`` pairs of ``datalist`` that a model of ``dimension`` trains on (2D images for 2,
    volumes for 3), sorted by image path."""
    items = [
        {"image": str(d["image"]), "label": str(d["label"])}
        for d in datalist
        if d and d.get("label") and is_2d_image(d["image"]) == (dimension == 2)
    ]
    return sorted(items, key=lambda d: d["image"])


def split_items(items: Sequence[dict], val_split: float) -> tuple[list[dict], list[dict]]:
    """Split ``items`` into (training, validation): the last ``round(len * val_split)`` items validate, at least
    one and at most ``len - 1``. A single item, or ``val_split <= 0``, validates on the training items."""
    if val_split >= 1.0:
        raise ValueError(f"val_split must be below 1, got {val_split}.")
    items = list(items)
    if len(items) < 2 or val_split <= 0:
        return items, list(items)
    n_val = min(max(1, round(len(items) * val_split)), len(items) - 1)
    return items[:-n_val], items[-n_val:]

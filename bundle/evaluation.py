"""Scoring a bundle's predictions on a split of a dataset, for the result scripts (``reproduce_results``,
``compare``, ``make_figures``): run ``configs/inference.json`` on the split's cases in a subprocess, read every
written label back and compare it with the original label file (pixel units).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .config import bundle_run_command
from .metrics import case_metrics, slice_metrics
from .suffixes import strip_image_suffix

__all__ = [
    "BUNDLE_ROOT", "CHECK_TOLERANCE", "split_file_of", "read_label", "prediction_path", "parse_settings",
    "run_inference", "evaluate", "compare_summaries", "failure_cause", "failure_table",
]

logger = logging.getLogger(__name__)

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
CHECK_TOLERANCE = 1e-4  # absolute, on metrics in [0, 1]; distances and RAD compared relative to their size


def split_file_of(task: str, split_file: str | os.PathLike | None = None) -> Path:
    """``split_file``, or the task's committed split ``docs/splits/<task>.json``."""
    return Path(split_file) if split_file else BUNDLE_ROOT / "docs" / "splits" / f"{task}.json"


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label file as a (H, W) or (H, W, D) array in the orientation the bundle writes (PNG rows x cols)."""
    path = Path(path)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj)
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img)
    return arr if arr.ndim == 2 else arr[..., 0]


def prediction_path(pred_dir: str | os.PathLike, image_name: str) -> Path:
    """Where ``configs/inference.json`` writes the label of ``image_name`` (``SaveLabeld``: volumes as NIfTI,
    2D images as PNG)."""
    ext = ".nii.gz" if image_name.lower().endswith((".nii", ".nii.gz")) else ".png"
    return Path(pred_dir) / f"{strip_image_suffix(image_name)}_seg{ext}"


def parse_settings(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` items (``--bundle-arg``) as ``{KEY: VALUE}`` for ``monai.bundle run --KEY VALUE`` (the value is
    passed as typed, so the bundle parses it as it parses its own command line; a later KEY wins).

    Raises:
        ValueError: an item without ``=`` or without a key, naming it.
    """
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--bundle-arg {item!r}: expected KEY=VALUE.")
        overrides[key] = value
    return overrides


def run_inference(
    task: str, cases: Sequence[Mapping], dataset_dir: str | os.PathLike, weights: str | os.PathLike,
    out_dir: str | os.PathLike, extra_configs: Sequence[str] = (), overrides: Mapping[str, object] | None = None,
) -> None:
    """Run the bundle's inference config on ``cases`` (linked, never copied or modified, into a temporary folder).

    ``extra_configs`` are further config files applied last (e.g. another ``network_def``); ``overrides`` further
    settings (``{"keep_largest_component": "false"}``).
    """
    with tempfile.TemporaryDirectory(prefix=f"lmnet_{task}_inputs_") as tmp:
        for case in cases:
            source = (Path(dataset_dir) / case["image"]).resolve()
            link = Path(tmp) / source.name
            if link.exists():
                raise ValueError(f"two cases share the file name {source.name}; cannot run them in one folder.")
            os.symlink(source, link)
        settings = {"dataset_dir": tmp, "output_dir": str(out_dir), "ckpt_path": str(weights), **(overrides or {})}
        cmd = bundle_run_command(BUNDLE_ROOT, task, "inference", settings, extra_configs)
        logger.info("running: %s", " ".join(cmd))
        subprocess.run(cmd, cwd=BUNDLE_ROOT, check=True)


def evaluate(
    cases: Sequence[Mapping], dataset_dir: str | os.PathLike, pred_dir: str | os.PathLike
) -> tuple[list[dict], list[dict]]:
    """Per-case metrics of the predictions in ``pred_dir`` against the original labels (pixel units), and the
    per-slice metrics of the volumes among them (the paper's unit; empty for 2D images).

    Raises:
        FileNotFoundError: a case has no prediction.
    """
    rows, slice_rows = [], []
    for case in cases:
        image_name = Path(case["image"]).name
        pred_path = prediction_path(pred_dir, image_name)
        if not pred_path.is_file():
            raise FileNotFoundError(f"no prediction {pred_path} for case {case['image']}.")
        gt = read_label(Path(dataset_dir) / case["label"])
        pred = read_label(pred_path)
        row = {"case": case.get("case_id", strip_image_suffix(image_name))}
        row.update(case_metrics(pred, gt))
        rows.append(row)
        if gt.ndim == 3:
            slice_rows += [{"case": row["case"], "slice": z, **m} for z, m in enumerate(slice_metrics(pred, gt))]
    return rows, slice_rows


def compare_summaries(summary: Mapping, reference: Mapping) -> list[str]:
    """Differences between a fresh ``summary`` and a recorded one (empty when they agree): mean, std and n of
    every metric, to :data:`CHECK_TOLERANCE` (relative for values above 1)."""
    problems = [f"{key}: not in the record" for key in summary if key not in reference]
    for key, ref in reference.items():
        if key not in summary:
            problems.append(f"{key}: missing from the new summary")
            continue
        for stat in ("mean", "std", "n"):
            new, old = summary[key][stat], ref[stat]
            if math.isnan(old) and math.isnan(new):
                continue
            if not abs(new - old) <= CHECK_TOLERANCE * max(1.0, abs(old)):
                problems.append(f"{key} {stat}: recomputed {new:.6f}, card records {old:.6f}")
    return problems


def read_split(split_file: str | os.PathLike, split: str) -> list[dict]:
    """The cases of ``split`` in a split file (``docs/splits/<task>.json``)."""
    return json.loads(Path(split_file).read_text())[split]


def failure_cause(pred: np.ndarray, gt: np.ndarray) -> str:
    """Why a prediction scores low against its ground truth, in words: a missed lesion (nothing predicted where it
    is), a false region kept (most predicted voxels lie in components that do not touch the lesion), and/or
    under-segmentation (the lesion is found but mostly not covered) or over-segmentation (covered, with much more
    around it). Components use full connectivity, as the post-processing does."""
    from scipy import ndimage

    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    if not g.any():
        return "no lesion in the ground truth; a lesion predicted" if p.any() else "no lesion, none predicted"
    if not p.any():
        return "missed lesion: nothing predicted"
    components, _ = ndimage.label(p, structure=np.ones((3,) * p.ndim, bool))
    touching = np.setdiff1d(np.unique(components[g]), [0])
    away = p & ~np.isin(components, touching)
    tp = float((p & g).sum())
    recall, precision = tp / g.sum(), tp / p.sum()
    causes = []
    if touching.size == 0:
        causes.append("missed lesion: every predicted region lies away from it")
    if away.sum() > 0.5 * p.sum():
        n_away = len(np.setdiff1d(np.unique(components[away]), [0]))
        causes.append(f"false region kept: {int(away.sum())} of {int(p.sum())} predicted voxels in {n_away} "
                      "component(s) away from the lesion")
    if touching.size and recall < 0.5:
        causes.append(f"under-segmentation: recall {recall:.2f}")
    if touching.size and precision < 0.5 and away.sum() <= 0.5 * p.sum():
        causes.append(f"over-segmentation around the lesion: precision {precision:.2f}")
    return "; ".join(causes) or f"partial overlap: recall {recall:.2f}, precision {precision:.2f}"


def failure_table(cases: Sequence[Mapping], dataset_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                  rows: Sequence[Mapping], below: float = 0.5) -> str:
    """A markdown table of the cases whose lesion Dice is below ``below``, with :func:`failure_cause`."""
    lines = [f"| case | lesion Dice | lesion voxels (truth / predicted) | cause (lesion Dice < {below}) |",
             "| --- | --- | --- | --- |"]
    for case, row in zip(cases, rows, strict=True):
        if row["dice"] >= below:
            continue
        gt = read_label(Path(dataset_dir) / case["label"])
        pred = read_label(prediction_path(pred_dir, Path(case["image"]).name))
        lines.append(f"| {row['case']} | {row['dice']:.3f} | {int(row['gt_voxels'])} / {int(row['pred_voxels'])} | "
                     f"{failure_cause(pred, gt)} |")
    return "\n".join(lines) if len(lines) > 2 else f"no case below lesion Dice {below}"

"""Per-case segmentation metrics in the paper's and the model zoo's conventions.

Names: ``dice`` / ``iou`` are lesion-only (foreground); ``mdice`` / ``miou`` are the paper's means over background
and lesion; ``hd95`` / ``hd`` are the 95th-percentile and maximum symmetric surface distances (in mm when a spacing
is given, else in pixels/voxels); ``rad`` is the signed relative area (volume) difference in %, (|P| - |G|) / |G|.
An empty ground truth with an empty prediction counts as a perfect lesion Dice/IoU (1.0), with a non-empty
prediction as 0.0; distances and RAD are NaN where undefined (an empty prediction or ground truth).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

__all__ = ["METRIC_NAMES", "case_metrics", "summarize"]

METRIC_NAMES = ("dice", "mdice", "iou", "miou", "hd95", "hd", "precision", "recall", "accuracy", "rad")


def _ratio(num: float, den: float, empty: float) -> float:
    return num / den if den > 0 else empty


def _distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, float]:
    if not pred.any() or not gt.any():
        return math.nan, math.nan
    p = torch.as_tensor(pred)[None, None]
    g = torch.as_tensor(gt)[None, None]
    sp = None if spacing is None else [float(s) for s in spacing[: pred.ndim]]
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        hd95 = compute_hausdorff_distance(p, g, percentile=95, spacing=sp)
        hd = compute_hausdorff_distance(p, g, spacing=sp)
    return float(hd95.item()), float(hd.item())


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """All :data:`METRIC_NAMES` (plus ``has_lesion``, ``predicted_lesion``, voxel counts) for one case.

    Args:
        pred: binary prediction (H, W) or (H, W, D); anything > 0 is lesion.
        gt: binary ground truth of the same shape.
        spacing: voxel spacing per axis (mm) for the distances, or ``None`` for pixel units.
    """
    p = np.asarray(pred) > 0
    g = np.asarray(gt) > 0
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}.")
    tp = float(np.count_nonzero(p & g))
    fp = float(np.count_nonzero(p & ~g))
    fn = float(np.count_nonzero(~p & g))
    tn = float(p.size) - tp - fp - fn
    dice = _ratio(2 * tp, 2 * tp + fp + fn, 1.0)
    iou = _ratio(tp, tp + fp + fn, 1.0)
    dice_bg = _ratio(2 * tn, 2 * tn + fp + fn, 1.0)
    iou_bg = _ratio(tn, tn + fp + fn, 1.0)
    hd95, hd = _distances(p, g, spacing)
    return {
        "dice": dice,
        "mdice": (dice + dice_bg) / 2,
        "iou": iou,
        "miou": (iou + iou_bg) / 2,
        "hd95": hd95,
        "hd": hd,
        "precision": _ratio(tp, tp + fp, math.nan),
        "recall": _ratio(tp, tp + fn, math.nan),
        "accuracy": (tp + tn) / p.size,
        "rad": 100.0 * (tp + fp - (tp + fn)) / (tp + fn) if tp + fn > 0 else math.nan,
        "has_lesion": float(g.any()),
        "predicted_lesion": float(p.any()),
        "gt_voxels": tp + fn,
        "pred_voxels": tp + fp,
    }


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean (NaN-skipping), std and count of each metric over all cases and over the cases with a lesion, plus
    the rate of predicting a lesion on cases without one."""
    out: dict[str, dict[str, float]] = {}
    subsets = {"all": list(rows), "lesion": [r for r in rows if r["has_lesion"] > 0]}
    for subset, items in subsets.items():
        for name in METRIC_NAMES:
            values = np.array([r[name] for r in items], dtype=float)
            finite = values[np.isfinite(values)]
            out[f"{name}/{subset}"] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std()) if finite.size else math.nan,
                "n": float(finite.size),
            }
    normals = [r for r in rows if r["has_lesion"] == 0]
    rate = float(np.mean([r["predicted_lesion"] for r in normals])) if normals else math.nan
    out["false_lesion_rate/normal"] = {"mean": rate, "std": math.nan, "n": float(len(normals))}
    return out

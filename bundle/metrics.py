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

__all__ = [
    "METRIC_NAMES", "SLICE_METRIC_NAMES", "case_metrics", "slice_metrics", "summarize", "summarize_slices",
    "bootstrap_interval",
]

METRIC_NAMES = ("dice", "mdice", "iou", "miou", "hd95", "hd", "precision", "recall", "accuracy", "rad")
# the paper's unit: every 2D slice of the test volumes, empty ones included, overlap metrics only
SLICE_METRIC_NAMES = ("mdice", "miou", "dice", "iou")


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


def case_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, distances: bool = True
) -> dict[str, float]:
    """All :data:`METRIC_NAMES` (plus ``has_lesion``, ``predicted_lesion``, voxel counts) for one case.

    Args:
        pred: binary prediction (H, W) or (H, W, D); anything > 0 is lesion.
        gt: binary ground truth of the same shape.
        spacing: voxel spacing per axis (mm) for the distances, or ``None`` for pixel units.
        distances: compute HD95 / HD (``False``: NaN, for the many slices of :func:`slice_metrics`).
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
    hd95, hd = _distances(p, g, spacing) if distances else (math.nan, math.nan)
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
    """Mean (NaN-skipping), std and count of each metric over all cases and over the cases with a lesion (for the
    lesion Dice also a 95% bootstrap interval of the mean, ``ci95_low`` / ``ci95_high``), plus the rate of predicting
    a lesion on cases without one."""
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
            if name == "dice":  # 95% bootstrap interval of the mean over cases
                out[f"{name}/{subset}"]["ci95_low"], out[f"{name}/{subset}"]["ci95_high"] = bootstrap_interval(finite)
    normals = [r for r in rows if r["has_lesion"] == 0]
    rate = float(np.mean([r["predicted_lesion"] for r in normals])) if normals else math.nan
    out["false_lesion_rate/normal"] = {"mean": rate, "std": math.nan, "n": float(len(normals))}
    return out


def slice_metrics(pred: np.ndarray, gt: np.ndarray) -> list[dict[str, float]]:
    """:func:`case_metrics` (without distances) of every 2D slice (last axis) of a (H, W, D) prediction and ground
    truth: the paper's per-image unit. A slice where both are empty scores lesion Dice / IoU 1 (see module doc)."""
    p, g = np.asarray(pred), np.asarray(gt)
    if p.ndim != 3 or p.shape != g.shape:
        raise ValueError(f"expected two (H, W, D) volumes of one shape, got {p.shape} and {g.shape}.")
    return [case_metrics(p[..., z], g[..., z], distances=False) for z in range(p.shape[-1])]


def summarize_slices(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, std and count of :data:`SLICE_METRIC_NAMES` over all slices (``<name>/slices``) and over the slices
    with a lesion (``<name>/lesion_slices``)."""
    out: dict[str, dict[str, float]] = {}
    subsets = {"slices": list(rows), "lesion_slices": [r for r in rows if r["has_lesion"] > 0]}
    for subset, items in subsets.items():
        for name in SLICE_METRIC_NAMES:
            values = np.array([r[name] for r in items], dtype=float)
            out[f"{name}/{subset}"] = {
                "mean": float(values.mean()) if values.size else math.nan,
                "std": float(values.std()) if values.size else math.nan,
                "n": float(values.size),
            }
    return out


def bootstrap_interval(
    values: Sequence[float], level: float = 0.95, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (cases resampled with replacement, seeded).

    Returns:
        ``(low, high)``; NaN for no values.
    """
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(1)
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))

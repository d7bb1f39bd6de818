"""Per-case metrics reports: ``metrics.csv``, ``summary.json`` and ``summary.md`` of an evaluation, written by the
evaluator's handler or by the result scripts."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .fileio import atomic_path
from .metrics import METRIC_NAMES, SLICE_METRIC_NAMES, case_metrics, summarize, summarize_slices
from .suffixes import strip_image_suffix

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["SegmentationReport", "write_report"]

logger = logging.getLogger(__name__)


def _case_name(meta: dict, index: int) -> str:
    source = meta.get("filename_or_obj", f"case_{index}")
    return strip_image_suffix(Path(str(source)).name)


class SegmentationReport:
    """Collect :func:`bundle.metrics.case_metrics` for every case an evaluator sees and, at the end, write
    ``metrics.csv`` (one row per case), ``summary.json`` and ``summary.md`` (a table) to ``output_dir``.

    Expects ``engine.state.output`` items with ``pred`` and ``label`` as (K, *S) one-hot or (1, *S) label maps
    (channel first) and the image's meta data (``filename_or_obj``, ``pixdim``/``affine`` for spacing).

    Args:
        output_dir: where the files go (created).
        use_spacing: distances in mm from the image's affine; otherwise in pixels (as the paper's Hd).
    """

    def __init__(self, output_dir: str | os.PathLike, use_spacing: bool = False) -> None:
        self.output_dir = Path(output_dir)
        self.use_spacing = use_spacing
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    @staticmethod
    def _labels(x: torch.Tensor) -> np.ndarray:
        x = x.detach().cpu()
        return (x.argmax(0) if x.shape[0] > 1 else x[0]).numpy()

    def collect(self, engine: Engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else []
        for index, item in enumerate(engine.state.output):
            meta = getattr(item["label"], "meta", {}) or {}
            source = batch[index] if index < len(batch) and isinstance(batch[index], dict) else item
            spacing = None
            if self.use_spacing and "affine" in meta:
                affine = np.asarray(meta["affine"], dtype=float)
                spacing = np.sqrt((affine[:3, :3] ** 2).sum(0)).tolist()
            row = {"case": str(source.get("case_id") or _case_name(meta, len(self.rows)))}
            row.update(case_metrics(self._labels(item["pred"]), self._labels(item["label"]), spacing))
            self.rows.append(row)

    def write(self, engine: Engine) -> None:
        summary = write_report(self.rows, self.output_dir)
        for name in METRIC_NAMES:
            engine.state.metrics[f"{name}_all"] = summary[f"{name}/all"]["mean"]

    @staticmethod
    def table(summary: dict[str, dict[str, float]], n_cases: int) -> str:
        """A markdown table: one row per metric, columns for all cases and cases with a lesion."""
        def cell(key: str) -> str:
            v = summary[key]
            return "n/a" if math.isnan(v["mean"]) else f"{v['mean']:.4f} +- {v['std']:.4f} (n={int(v['n'])})"

        def interval(key: str) -> str:
            v = summary[key]
            return f" [95% CI {v['ci95_low']:.4f}, {v['ci95_high']:.4f}]" if "ci95_low" in v else ""

        lines = [f"| metric ({n_cases} cases) | all cases | cases with a lesion |", "| --- | --- | --- |"]
        lines += [f"| {name} | {cell(name + '/all')}{interval(name + '/all')} | {cell(name + '/lesion')} |"
                  for name in METRIC_NAMES]
        lines.append(f"| lesion predicted on lesion-free cases | {cell('false_lesion_rate/normal')} | |")
        lines += [f"| {name} per 2D slice | {cell(name + '/slices')} | {cell(name + '/lesion_slices')} |"
                  for name in SLICE_METRIC_NAMES if f"{name}/slices" in summary]
        return "\n".join(lines)


def write_report(
    rows: list[dict], output_dir: str | os.PathLike, slice_rows: list[dict] | None = None
) -> dict[str, dict[str, float]]:
    """Write per-case ``rows`` (``{"case", <metric>: value}``) to ``output_dir``: ``metrics.csv``, and their
    :func:`bundle.metrics.summarize` (plus :func:`bundle.metrics.summarize_slices` of per-slice ``slice_rows`` of
    volumes, the paper's unit) as ``summary.json`` and the markdown ``summary.md``. Returns the summary."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    if slice_rows:
        summary.update(summarize_slices(slice_rows))
    with atomic_path(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=4) + "\n")
    table = SegmentationReport.table(summary, len(rows))
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(table + "\n")
    logger.info("metrics of %d cases written to %s\n%s", len(rows), out, table)
    return summary

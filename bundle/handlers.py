"""Ignite/MONAI engine handlers and config helpers of this bundle: re-parameterization after loading weights,
an exponential moving average of the weights, resuming training from the latest checkpoint, the training time
budget, the final weights, and the per-case metrics report."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
from monai.handlers import CheckpointLoader

from .checkpoints import save_weights, unwrap
from .data.datalist import strip_image_suffix
from .metrics import METRIC_NAMES, SLICE_METRIC_NAMES, case_metrics, summarize, summarize_slices
from .networks import reparameterize_model
from .settings import as_bool

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "ReparameterizeHandler", "WeightEMA", "WeightEMAUpdater", "TimeBudget", "FinalWeightsSaver", "enable_resume",
    "SegmentationReport", "latest_checkpoint",
]

logger = logging.getLogger(__name__)


class ReparameterizeHandler:
    """At ``STARTED`` (after any ``CheckpointLoader``, so attach it later), fuse ``network`` in place into its
    deployed form. The engine then runs the re-parameterized network."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        reparameterize_model(self.network, inplace=True)
        logger.info("network re-parameterized for inference")


class WeightEMA:
    """An exponential moving average (EMA) of a network's parameters, updated after every training iteration (by
    :class:`WeightEMAUpdater`): ``avg <- decay * avg + (1 - decay) * w``, starting from the weights after the first
    iteration. The average has the network's architecture and state dict keys (unwrapped from
    ``DistributedDataParallel``), so it validates, checkpoints and ships like the network.

    Buffers (batch-norm running statistics) are not averaged but copied from the trained network at each update:
    averaged statistics of a fast-changing network do not describe the averaged weights (the model card tells how
    an average of both predicted no lesion at all on LGG).

    With ``decay == 0`` no average is kept and :attr:`network` is the trained network itself, so a config can
    always validate and save ``@ema.network``. A decay of ``d`` averages over about ``1 / (1 - d)`` iterations.

    Args:
        network: the trained network (plain or DDP-wrapped).
        decay: in ``[0, 1)``; ``0`` disables averaging.
    """

    def __init__(self, network: nn.Module, decay: float = 0.0) -> None:
        try:
            decay = float(decay)
        except (TypeError, ValueError):
            raise ValueError(f"ema_decay must be a number in [0, 1) (0 disables the average), got {decay!r}.") from None
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 disables the average), got {decay}.")
        self.decay = decay
        self.trained = network
        self.averaged = None
        if decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.averaged = AveragedModel(unwrap(network), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)

    @property
    def enabled(self) -> bool:
        return self.averaged is not None

    @property
    def network(self) -> nn.Module:
        """The averaged network when enabled, else the trained network."""
        return self.averaged.module if self.enabled else self.trained

    @property
    def updates(self) -> int:
        """How many iterations have been averaged (0 when disabled)."""
        return int(self.averaged.n_averaged.item()) if self.enabled else 0

    def update(self) -> None:
        """Fold the trained network's current parameters into the average and copy its buffers.

        Raises:
            RuntimeError: the average is disabled (``decay`` 0); :class:`WeightEMAUpdater` then never calls this.
        """
        if not self.enabled:
            raise RuntimeError("no weight average is kept (ema_decay 0): nothing to update.")
        trained = unwrap(self.trained)
        self.averaged.update_parameters(trained)
        with torch.no_grad():
            for mine, theirs in zip(self.averaged.module.buffers(), trained.buffers(), strict=True):
                mine.copy_(theirs)

    def checkpoint_items(self) -> dict:
        """``{"ema": self}`` when enabled, else ``{}``: the optional entries of a resumable checkpoint
        (:func:`enable_resume`), so checkpoints of runs without an average are written and read as before."""
        return {"ema": self} if self.enabled else {}

    def state_dict(self) -> dict:
        """The average's state (parameters, buffers, ``n_averaged``); only an enabled average is checkpointed."""
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)


class WeightEMAUpdater:
    """Training handler: :meth:`WeightEMA.update` after every iteration, and a log line per epoch. A handler of its
    own so a config lists it among the trainer's handlers (``{"_target_": ..., "ema": "@ema"}``) while the average
    itself is one object that the validator and the savers also reference."""

    def __init__(self, ema: WeightEMA) -> None:
        self.ema = ema

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.ema.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.ema.update())
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)

    def _log(self, engine: Engine) -> None:
        logger.info("weight EMA (decay %g): %d iterations averaged", self.ema.decay, self.ema.updates)


class TimeBudget:
    """Stop training at an epoch boundary when another epoch would not fit in ``seconds`` of wall time (measured
    from the start of this run; ``seconds <= 0`` means no limit). Stopping between epochs keeps the per-epoch
    checkpoints whole, so a later run with the same budget resumes where this one stopped. Under DDP the ranks
    agree (the decision is all-reduced), so none is left waiting."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = float(seconds)
        self._start = 0.0
        self._epoch_start = 0.0

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.seconds <= 0:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()

    def _check(self, engine: Engine) -> None:
        import ignite.distributed as idist

        now = time.perf_counter()
        over = now - self._start + (now - self._epoch_start) > self.seconds
        if idist.all_reduce(float(over), op="MAX") > 0:  # all DDP ranks stop together
            logger.info(
                "time budget of %.0f s reached after epoch %d (%.0f s): stopping", self.seconds, engine.state.epoch,
                now - self._start,
            )
            engine.terminate()


class FinalWeightsSaver:
    """When training ends (all epochs done, or stopped by :class:`TimeBudget`), write the network's state dict, in
    its training form and unwrapped from ``DistributedDataParallel``, to ``<save_dir>/<filename>`` (atomically; on
    DDP rank 0 only). These are the weights to ship from a run that trains on its validation split too, where the
    best-validation ``model.pt`` means nothing."""

    def __init__(self, save_dir: str | os.PathLike, network: nn.Module, filename: str = "model_final.pt") -> None:
        self.path = Path(save_dir) / filename
        self.network = network

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import ignite.distributed as idist

        if idist.get_rank() != 0:
            return
        save_weights(self.network, self.path)
        logger.info("final weights (epoch %d) written to %s", engine.state.epoch, self.path)


def latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "latest") -> Path | None:
    """The newest ``<prefix>*.pt`` checkpoint in ``ckpt_dir``, or ``None``."""
    folder = Path(ckpt_dir)
    found = sorted(folder.glob(f"{prefix}*.pt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return found[-1] if found else None


def enable_resume(
    trainer: Engine, ckpt_dir: str | os.PathLike, save_dict: dict, resume: bool = True, save: bool = True,
    optional: dict | None = None,
) -> Engine:
    """Make ``trainer`` resumable: save ``save_dict`` (network, optimizer, scheduler and the trainer itself) to
    ``ckpt_dir/latest_checkpoint_<epoch>.pt`` after every epoch (atomically, one file kept), and, when ``resume``
    and such a file exists, restore it before the first epoch so training continues at the saved epoch.

    Called from a config's ``run`` section, after the trainer exists (the trainer cannot name itself in its own
    handler list). ``save=False`` (e.g. DDP ranks other than 0) only loads. ``optional`` entries (the weight
    average, ``WeightEMA.checkpoint_items()``) are saved alike but restored only when the checkpoint holds them, so
    switching one on at a resume starts it there. Returns ``trainer``.

    Raises:
        ValueError: the checkpoint lacks an entry of ``save_dict`` (naming the file and the entries).
    """
    save_dict = {**save_dict, **(optional or {})}
    path = latest_checkpoint(ckpt_dir) if as_bool(resume, "resume") else None
    if path is not None:
        logger.info("resuming training from %s", path)
        load_dict = _resumable_entries(path, save_dict, optional or {})
        CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location="cpu").attach(trainer)
    if save:
        # ignite's own atomic saver (MONAI's CheckpointSaver writes in place: a kill mid-save leaves a torn file)
        from ignite.engine import Events
        from ignite.handlers import Checkpoint, DiskSaver

        saver = DiskSaver(str(ckpt_dir), require_empty=False, atomic=True)
        checkpoint = Checkpoint(
            save_dict, saver, filename_prefix="latest", n_saved=1, global_step_transform=lambda e, _: e.state.epoch
        )
        trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: _prune_latest(ckpt_dir, checkpoint.last_checkpoint))
    return trainer


def _resumable_entries(path: Path, save_dict: dict, optional: dict) -> dict:
    """The entries of ``save_dict`` to restore from the checkpoint at ``path``: all that it holds. Only its top-level
    keys are read here (memory-mapped: the tensors are not read), before the loader restores it."""
    saved = set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    missing = [key for key in save_dict if key not in saved]
    required = [key for key in missing if key not in optional]
    if required:
        raise ValueError(
            f"checkpoint {path} lacks {required} (it holds {sorted(saved)}); resume it with the settings that wrote "
            "it, or start over with --resume false."
        )
    for key in missing:
        logger.warning("%s holds no %r (it was written without one): it starts now", path, key)
    return {key: value for key, value in save_dict.items() if key in saved}


def _prune_latest(ckpt_dir: str | os.PathLike, keep: str | os.PathLike | None) -> None:
    """Remove ``latest*.pt`` files other than ``keep`` (e.g. the one a resumed run started from)."""
    if keep is None:
        return
    keep_name = Path(keep).name
    for path in Path(ckpt_dir).glob("latest*.pt"):
        if path.name != keep_name:
            path.unlink(missing_ok=True)


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
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=4) + "\n")
    table = SegmentationReport.table(summary, len(rows))
    (out / "summary.md").write_text(table + "\n")
    logger.info("metrics of %d cases written to %s\n%s", len(rows), out, table)
    return summary

"""Resumable training: the full training state (network, optimizer, scheduler, trainer, optional weight average)
saved after every epoch and restored at the start of a run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .settings import as_bool

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["latest_checkpoint", "enable_resume"]

logger = logging.getLogger(__name__)


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
        from monai.handlers import CheckpointLoader

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

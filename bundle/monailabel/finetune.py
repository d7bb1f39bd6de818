"""Fine-tuning a task's network on annotated images through the bundle's own ``train.json``.

The bundle's training workflow runs as it is (same transforms, loss, optimizer, validation) with the data, epochs
and output folder of the request, starting from given weights; the best-validation weights are then published
atomically where the MONAI Label inference task picks them up. This module does not import MONAI Label.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from ..checkpoints import read_state_dict, save_weights
from ..device import use_amp
from ..fileio import atomic_path
from ..networks.ensemble import members_in_file, one_member, write_member
from .spec import ModelSpec

__all__ = ["fine_tune"]

logger = logging.getLogger(__name__)


def _overrides(
    spec: ModelSpec, train: list[dict], val: list[dict], run_dir: Path, max_epochs: int, learning_rate: float,
    device: str, num_workers: int,
) -> dict:
    return {
        "bundle_root": str(spec.bundle_root),
        "output_dir": str(run_dir),
        "device": device,
        "amp": use_amp(torch.device(device)),
        "max_epochs": int(max_epochs),
        "val_interval": 1,  # so every run validates and saves its best weights, even a one-epoch run
        "learning_rate": float(learning_rate),
        "num_workers": int(num_workers),
        "resume": False,
        "train#dataset#data": train,
        "validate#dataset#data": val,
    }


def _single_network_weights(init_weights: str | os.PathLike | None, run_dir: Path) -> str | os.PathLike | None:
    """``init_weights``, or for an ensemble file the weights of its first member, written to ``run_dir`` (a
    fine-tuning run trains one network)."""
    members = 1 if init_weights is None else members_in_file(init_weights)
    if members == 1:
        return init_weights
    first = write_member(init_weights, 0, run_dir / "init_member0.pt")
    logger.info("%s holds an ensemble of %d networks: fine-tuning its first member (%s)", init_weights, members, first)
    return first


def _run(spec: ModelSpec, overrides: dict, init_weights: str | os.PathLike | None):
    """Run the bundle's training workflow with ``overrides`` from ``init_weights``; returns the workflow."""
    # train.json's ``init_weights`` setting loads them (digest-checked, strict) before the first epoch
    workflow = ConfigWorkflow(
        config_file=[str(p) for p in spec.train_configs],
        meta_file=str(spec.bundle_root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        init_weights=str(init_weights) if init_weights is not None else "",
        **overrides,
    )
    workflow.initialize()
    if init_weights is not None:
        logger.info("%s: fine-tuning from %s", spec.name, init_weights)
    else:
        logger.warning("%s: no weights to start from; training from a random initialisation", spec.name)
    workflow.run()
    workflow.finalize()
    return workflow


def _finite_or_none(value) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def fine_tune(
    spec: ModelSpec,
    train: list[dict],
    val: list[dict],
    run_dir: str | os.PathLike,
    init_weights: str | os.PathLike | None,
    max_epochs: int = 10,
    learning_rate: float = 1e-4,
    device: str = "cpu",
    num_workers: int = 0,
) -> dict:
    """Train ``spec``'s network with the bundle's training configs on ``train`` / ``val`` (``{"image", "label"}``
    items), starting from ``init_weights`` (strictly loaded; ``None`` starts from scratch), and publish the
    best-validation weights to ``spec.finetuned``.

    Returns statistics of the run (also written to ``<spec.run_dir>/train_stats.json``).
    """
    if not train:
        raise ValueError(f"{spec.name}: no training items.")
    run_dir = Path(run_dir)
    started = time.time()
    logger.info("%s: %d training and %d validation items, %d epochs", spec.name, len(train), len(val), max_epochs)
    overrides = _overrides(spec, train, val, run_dir, max_epochs, learning_rate, device, num_workers)
    workflow = _run(spec, overrides, _single_network_weights(init_weights, run_dir))
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    trainer = workflow.parser.get_parsed_content("train#trainer")

    # the best-validation weights; without a validation score, the final ones (both are the weight average when
    # the training config keeps one)
    best = run_dir / "checkpoints" / "model.pt"
    source = best if best.is_file() else run_dir / "checkpoints" / "model_final.pt"
    state = read_state_dict(source)
    # strict: what is published must load into the network that inference builds (the inference config's)
    inference = ConfigParser()
    inference.read_config([str(p) for p in spec.inference_configs])
    inference["bundle_root"] = str(spec.bundle_root)
    one_member(inference.get_parsed_content("network_def")).load_state_dict(state)
    save_weights(state, spec.finetuned)
    stats = {
        "model": spec.name,
        "checkpoint": str(spec.finetuned),
        "source": str(source),
        "init_weights": str(init_weights) if init_weights is not None else None,
        "epochs": int(trainer.state.epoch),
        "train_items": len(train),
        "val_items": len(val),
        "best_metric": _finite_or_none(evaluator.state.best_metric),
        "best_metric_epoch": int(evaluator.state.best_metric_epoch),
        "run_dir": str(run_dir),
        "seconds": round(time.time() - started, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with atomic_path(spec.run_dir / "train_stats.json") as tmp:  # the server's /info/ reads it any time
        tmp.write_text(json.dumps(stats, indent=4) + "\n", encoding="utf-8")
    logger.info("%s: published %s (best validation Dice %s)", spec.name, spec.finetuned, stats["best_metric"])
    return stats

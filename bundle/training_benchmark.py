"""Timing of one training step as ``configs/train.json`` runs it, for ``scripts/benchmark_training.py``.

A step is one iteration of the config's ``SupervisedTrainer`` (``train#trainer``: batch preparation, the training
inferer, forward, loss, backward, optimizer step, and the iteration handlers: the training metric's
post-processing and accumulation, the weight average), on a batch built as the data loader builds it
(MetaTensors collated by MONAI's ``list_data_collate``), on CPU. Only ``network_def``, the device, the data and the
handlers that write files or validate are replaced.

This module imports nothing of the bundle's own package, so that it can time the bundle at another git revision:
``scripts/benchmark_training.py --baseline-rev`` runs it in a subprocess whose ``bundle_root`` is a checkout of
that revision.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["STEP_HANDLERS", "time_training_step", "main"]

# the iteration-level handlers of train#handlers kept for timing (the others validate, log or write files)
STEP_HANDLERS = ("WeightEMAUpdater",)


def _batch(batch: int, channels: int, size: int, seed: int = 0) -> dict:
    """A batch as the training data loader yields it: image (B, C, S, S) float and label (B, 1, S, S) in {0, 1}."""
    import torch
    from monai.data import MetaTensor, list_data_collate

    gen = torch.Generator().manual_seed(seed)
    items = []
    for i in range(batch):
        image = torch.rand(channels, size, size, generator=gen)
        label = (torch.rand(1, size, size, generator=gen) > 0.9).float()
        meta = {"filename_or_obj": f"slice_{i}.nii.gz"}
        items.append({"image": MetaTensor(image, meta=dict(meta)), "label": MetaTensor(label, meta=dict(meta))})
    return list_data_collate(items)


def time_training_step(
    bundle_root: str | Path, network_def: dict | None = None, batch: int = 16, size: int = 128, repeats: int = 5,
    warmup: int = 2, threads: int = 2, overrides: dict | None = None,
) -> list[float]:
    """Milliseconds of each of ``repeats`` training steps (after ``warmup`` untimed ones) of ``train#trainer`` from
    ``<bundle_root>/configs/train.json``.

    Args:
        bundle_root: the bundle whose configs and package are timed.
        network_def: replaces the config's ``network_def`` (e.g. a MONAI UNet); ``None`` keeps LM-Net.
        batch: slices per step.
        size: square slice side in pixels.
        repeats: timed steps.
        warmup: untimed steps first.
        threads: CPU threads.
        overrides: further config settings (``{"learning_rate": 5e-4}``).
    """
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    torch.set_num_threads(threads)
    root = Path(bundle_root).resolve()
    if str(root) not in sys.path:  # as ConfigWorkflow does: the config's import statements run before its initialize
        sys.path.insert(1, str(root))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser.update({"bundle_root": str(root), "device": "$torch.device('cpu')", "amp": False, "max_epochs": 1,
                   **(overrides or {})})
    if network_def is not None:
        parser["network_def"] = network_def
    if "initialize" in parser:
        parser.get_parsed_content("initialize")  # puts bundle_root on sys.path, imports its package, seeds
    channels = int(parser.get_parsed_content("network_def#in_channels"))
    kept = [h for h in parser["train#handlers"] if str(h.get("_target_", "")).split(".")[-1] in STEP_HANDLERS]
    parser["train#handlers"] = kept
    parser["train#dataloader"] = "$[]"
    trainer = parser.get_parsed_content("train#trainer")
    batches = [_batch(batch, channels, size)] * (warmup + repeats)
    trainer.data_loader = batches
    trainer.state.epoch_length = len(batches)
    times: list[float] = []
    started: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(time.perf_counter()))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: times.append((time.perf_counter() - started[-1]) * 1e3)
    )
    trainer.run()
    return times[warmup:]


def main(argv: Sequence[str] | None = None) -> int:
    """``python training_benchmark.py '<json kwargs of time_training_step>'``: prints the step times as JSON (the
    subprocess entry of ``--baseline-rev``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    kwargs = json.loads(args[0])
    times = time_training_step(**kwargs)
    print(json.dumps({"ms": times, "median": statistics.median(times)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

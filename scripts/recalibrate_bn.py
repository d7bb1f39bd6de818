r"""Re-estimate the batch-norm statistics of trained weights over batches of the training config's loader
(precise batch norm, ``bundle.batch_norm``), and write the result as a new weights file.

    python -m scripts.recalibrate_bn --task lgg --dataset-dir ../shared/data/lgg \
        --weights models/model.pt --output outputs/precise_bn/model.pt --batches 200

The batches are the training patients of the split file (default ``docs/splits/<task>.json``), sampled and augmented
as ``configs/train.json`` (plus the task overlay and ``--bundle-arg`` settings) does, seeded by its ``seed``. Only the
batch-norm running statistics change; the input weights file is never modified. Score the result with
``python -m scripts.reproduce_results --split validation --weights <output>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from bundle.batch_norm import recalibrate_batch_norm
from bundle.checkpoints import load_weights, save_weights
from bundle.config import bundle_parser, parsed
from bundle.evaluation import BUNDLE_ROOT, parse_settings, split_file_of
from bundle.tasks import TASKS

logger = logging.getLogger("recalibrate_bn")


def _setting(value: str) -> object:
    """A ``--bundle-arg`` value as the config gets it: JSON (numbers, lists, true / false) where it parses, else the
    string as typed (e.g. a ``$`` expression)."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _images(loader) -> Iterator[torch.Tensor]:
    """The ``image`` tensors of ``loader``'s batches, epoch after epoch (a new shuffle each epoch)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield torch.as_tensor(batch["image"])
        if empty:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="lgg")
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, help="split JSON (default docs/splits/<task>.json)")
    parser.add_argument("--weights", type=Path, required=True, help="the trained weights (read only)")
    parser.add_argument("--output", type=Path, required=True, help="the weights file to write")
    parser.add_argument("--batches", type=int, default=200, help="training batches to average over")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--bundle-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further training-config setting (e.g. num_workers=1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.output.resolve() == args.weights.resolve():
        parser.error(f"--output {args.output} is the input weights file; write the result elsewhere.")
    if args.batches < 1:
        parser.error(f"--batches must be >= 1, got {args.batches}.")
    try:
        overrides: dict[str, object] = {"dataset_dir": str(args.dataset_dir.resolve()),
                                        "datalist": str(split_file_of(args.task, args.split_file).resolve()),
                                        "device": f"$torch.device({args.device!r})", "num_workers": 0,
                                        "init_weights": str(args.weights)}  # context_slices follows the weights
        overrides.update({k: _setting(v) for k, v in parse_settings(args.bundle_arg).items()})
        config = bundle_parser(BUNDLE_ROOT, args.task, "train", overrides)
        network = load_weights(parsed(config, "network"), args.weights)
        loader = parsed(config, "train#dataloader")
        used = recalibrate_batch_norm(network, _images(loader), args.batches)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
    save_weights(network, args.output)
    logger.info("wrote %s (batch-norm statistics over %d batches of %s)", args.output, used, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())

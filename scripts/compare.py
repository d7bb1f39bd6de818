"""Train LM-Net and MONAI's networks alike and score them on the same test split; print one table.

Every network trains through the bundle's own `configs/train.json` (the recipe of the shipped weights: the config's
defaults, plus the task overlay) with only `network_def` replaced, for the same wall-clock budget: a one-epoch probe
measures each network's epoch time, and its cosine schedule is set to the epochs that fit the budget (validated ten
times, best-validation checkpoint kept). Each is then run through `configs/inference.json` on the test split and
scored against the original labels as `scripts.reproduce_results` scores the shipped weights. `unet_plain` is the
15-minute plain UNet recipe of issue 14 (UNet 16..256, flips only, no post-processing, no flip averaging, the final
weights).

    python -m scripts.compare --task lgg --dataset-dir ../shared/data/lgg --budget-minutes 120
    python -m scripts.compare --task lgg --dataset-dir ../shared/data/lgg --models unet_plain
    # train only (no test scoring yet), then score finished runs of the same budget without training them again:
    python -m scripts.compare --task lgg --dataset-dir ../shared/data/lgg --models lmnet --budget-minutes 120 \
        --train-only --output outputs/compare_lmnet
    python -m scripts.compare --task lgg --dataset-dir ../shared/data/lgg --models lmnet basicunet \
        --run lmnet=outputs/compare_lmnet/lgg/lmnet/train --run basicunet=outputs/compare_bunet/lgg/basicunet/train
    # several runs of one network, comma-separated: the mean-probability ensemble of their checkpoints
    python -m scripts.compare --task lgg --dataset-dir ../shared/data/lgg --models lmnet \
        --run lmnet=outputs/seed0/train,outputs/seed2/train,outputs/seed3/train

Columns: parameters, MACs for one slice at the network input, train s/epoch (median over the training epochs), epochs,
training wall time, inference ms/slice (batch 1, `--threads` CPU threads, LM-Net re-parameterized), and on the test
split: lesion Dice per patient volume with its 95% bootstrap interval, mDice, lesion IoU, HD95 (pixels), RAD (%),
precision, recall (means over cases), and the paper's per-slice mDice / mIoU (all test slices, empty ones included).
Outputs: `<output>/<task>/<network>/` (training run, predictions, metrics) and `table.md`, `results.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from bundle.comparison import NETWORKS, ComparisonRun, table
from bundle.evaluation import parse_settings, read_split, split_file_of

logger = logging.getLogger("compare")

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["lgg", "busi"], default="lgg")
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, help="split JSON (default docs/splits/<task>.json)")
    parser.add_argument("--models", nargs="+", choices=sorted(NETWORKS), default=["lmnet", "basicunet", "unet_plain"])
    parser.add_argument("--budget-minutes", type=float, default=60.0,
                        help="training wall-clock budget of every network but unet_plain (15 minutes)")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR[,DIR...]",
                        help="a finished training run folder of network NAME, scored instead of training it; "
                             "several folders, comma-separated: the mean-probability ensemble of their checkpoints")
    parser.add_argument("--train-only", action="store_true",
                        help="train and stop: no cost, no test scoring (score later with --run)")
    parser.add_argument("--seed", type=int, help="the training runs' random seed (default: the configs' 0)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the inference timing")
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "compare")
    parser.add_argument("--bundle-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the configs (training and inference) for every network but unet_plain")
    args = parser.parse_args(argv)
    try:
        settings = parse_settings(args.bundle_arg)
        finished = {name: folder for name, _, folder in (item.partition("=") for item in args.run)}
    except ValueError as err:
        parser.error(str(err))
    unknown = sorted(set(finished) - set(args.models))
    if unknown or not all(str(folder) for folder in finished.values()):
        parser.error(f"--run takes NAME=DIR with NAME among --models; got {args.run}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    split_file = split_file_of(args.task, args.split_file).resolve()
    cases = read_split(split_file, "test")
    out_root = (args.output / args.task).resolve()
    started = time.perf_counter()
    results = {}
    for name in args.models:
        run = ComparisonRun(name, args.task, args.dataset_dir.resolve(), split_file, out_root / name, settings,
                            args.seed)
        if name in finished:
            folders = [Path(folder).resolve() for folder in finished[name].split(",")]
            trained = run.adopt(folders[0] if len(folders) == 1 else folders)
        else:
            trained = run.train(args.budget_minutes)
        if args.train_only:
            results[name] = trained
            logger.info("%s trained: %s", name, trained)
            continue
        results[name] = {**trained, **run.cost(args.threads), "summary": run.score(cases)}
        logger.info("%s done: %s", name, {k: v for k, v in results[name].items() if k != "summary"})
    if args.train_only:
        (out_root / "trained.json").write_text(json.dumps(results, indent=4) + "\n")
        return 0
    text = table(results, args.threads)
    (out_root / "table.md").write_text(text + "\n")
    (out_root / "results.json").write_text(json.dumps(results, indent=4) + "\n")
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)
    print(f"{args.task}: {len(cases)} test cases, split {split_file.name}, {minutes} min {seconds:02d} s wall in all\n"
          f"{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

r"""Re-compute the model card's test-split numbers with the shipped weights, through the bundle's own inference config.

For each test case of the split file, ``python -m monai.bundle run --config_file configs/inference.json`` (plus the
task overlay) writes the predicted label on the source image's grid; this script then compares every prediction
with the original ground truth (pixel units, like the paper's Hd) and prints / writes the summary.

    python -m scripts.reproduce_results --task lgg  --dataset-dir ../shared/data/lgg
    python -m scripts.reproduce_results --task busi --dataset-dir ../shared/data/busi
    # exit status 1 when the numbers differ from the card's record (docs/results/<task>_test.json):
    python -m scripts.reproduce_results --task lgg --dataset-dir ../shared/data/lgg --check
    # the validation patients, without the largest-component post-processing (how that setting was chosen):
    python -m scripts.reproduce_results --task lgg --dataset-dir ../shared/data/lgg --split validation \
        --bundle-arg keep_largest_component=false

Outputs (``--output``, default ``outputs/results/<task>``): ``pred/`` (the label files), ``metrics.csv`` (one row per
case), ``summary.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bundle.evaluation import (
    BUNDLE_ROOT,
    compare_summaries,
    evaluate,
    failure_table,
    parse_settings,
    read_split,
    run_inference,
    split_file_of,
)
from bundle.reports import SegmentationReport, write_report
from bundle.tasks import TASKS, get_task

logger = logging.getLogger("reproduce_results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--dataset-dir", type=Path, required=True, help="the shared data folder of the task")
    parser.add_argument("--split-file", type=Path, help="split JSON (default docs/splits/<task>.json)")
    parser.add_argument("--split", default="test", choices=["training", "validation", "test"])
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the task's shipped weights)")
    parser.add_argument("--output", type=Path, help="output folder (default outputs/results/<task>)")
    parser.add_argument("--check", action="store_true",
                        help="fail unless the numbers equal docs/results/<task>_test.json")
    parser.add_argument("--record", action="store_true", help="write the summary to docs/results/<task>_test.json")
    parser.add_argument("--failure-below", type=float, default=0.5,
                        help="list the cases below this lesion Dice with the cause (failures.md; default 0.5)")
    parser.add_argument("--bundle-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further setting of the inference config, e.g. keep_largest_component=false")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    settings = get_task(args.task)
    split_file = split_file_of(args.task, args.split_file)
    weights = (args.weights or BUNDLE_ROOT / settings.weights).resolve()
    output = (args.output or BUNDLE_ROOT / "outputs" / "results" / args.task).resolve()
    record = BUNDLE_ROOT / "docs" / "results" / f"{args.task}_{args.split}.json"
    cases = read_split(split_file, args.split)
    if not cases:
        parser.error(f"{split_file} has no {args.split!r} cases.")

    try:
        overrides = parse_settings(args.bundle_arg)
    except ValueError as err:
        parser.error(str(err))
    if (args.record or args.check) and (overrides or args.split != "test" or args.weights or args.split_file):
        parser.error("--record / --check compare the shipped weights on the test split with default settings only.")
    pred_dir = output / "pred"
    run_inference(args.task, cases, args.dataset_dir, weights, pred_dir, overrides=overrides)
    rows, slice_rows = evaluate(cases, args.dataset_dir, pred_dir)
    summary = write_report(rows, output, slice_rows)
    failures = failure_table(cases, args.dataset_dir, pred_dir, rows, args.failure_below)
    (output / "failures.md").write_text(failures + "\n")
    print(f"{args.task}: {len(rows)} {args.split} cases, weights {weights.name}, outputs in {output}\n"
          f"{SegmentationReport.table(summary, len(rows))}\n\n{failures}")

    if args.record:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(summary, indent=4) + "\n")
        logger.info("recorded %s", record)
    if args.check:
        problems = compare_summaries(summary, json.loads(record.read_text()))
        if problems:
            logger.error("the numbers differ from %s:\n  %s", record, "\n  ".join(problems))
            return 1
        logger.info("all numbers equal the card's record %s", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())

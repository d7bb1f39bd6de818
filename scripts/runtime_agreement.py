"""Measure how far each inference runtime / precision is from PyTorch fp32 on a real split, and time it.

For every variant (PyTorch fp32 as the reference, OpenVINO fp32, OpenVINO bf16, PyTorch bf16 autocast), the inference
config runs on the split's cases with the shipped (or given) weights; the script then scores each against the
original labels and against the reference's labels: lesion Dice difference, fraction of voxels whose label equals
the reference's, and the wall time of the inference run. A variant is "validated" when its mean lesion Dice is within
0.002 of the reference's and at least 99.9 % of voxels agree (the bar the README and the card quote).

    python -m scripts.runtime_agreement --task lgg --dataset-dir ../shared/data/lgg [--split test]
    python -m scripts.runtime_agreement --task lgg --dataset-dir ../shared/data/lgg --record  # docs/results/

Outputs: a markdown table on stdout, `<output>/agreement.json`; with `--record` also
`docs/results/<task>_runtime_agreement.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from bundle.checkpoints import sha256_file
from bundle.evaluation import (
    BUNDLE_ROOT,
    evaluate,
    parse_settings,
    prediction_path,
    read_label,
    read_split,
    run_inference,
    split_file_of,
)
from bundle.fileio import atomic_path
from bundle.tasks import get_task

VARIANTS = {"torch fp32": ("torch", "fp32"), "openvino fp32": ("openvino", "fp32"),
            "openvino bf16": ("openvino", "bf16"), "torch bf16": ("torch", "bf16")}
DICE_TOLERANCE, VOXEL_AGREEMENT = 0.002, 0.999

logger = logging.getLogger("runtime_agreement")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["lgg", "busi"], default="lgg")
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, help="split JSON (default docs/splits/<task>.json)")
    parser.add_argument("--split", choices=["training", "validation", "test"], default="test")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the task's shipped weights)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--output", type=Path, default=BUNDLE_ROOT / "outputs" / "runtime_agreement")
    parser.add_argument("--record", action="store_true", help="write docs/results/<task>_runtime_agreement.json")
    parser.add_argument("--bundle-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further setting of the inference config for every variant")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = parse_settings(args.bundle_arg)
    weights = args.weights or BUNDLE_ROOT / get_task(args.task).weights
    cases = read_split(split_file_of(args.task, args.split_file), args.split)
    variants = ["torch fp32", *[v for v in args.variants if v != "torch fp32"]]

    results: dict[str, dict] = {}
    for name in variants:
        runtime, precision = VARIANTS[name]
        pred = args.output / args.task / name.replace(" ", "_")
        start = time.perf_counter()
        run_inference(args.task, cases, args.dataset_dir, weights, pred, (),
                      {**settings, "runtime": runtime, "precision": precision})
        seconds = time.perf_counter() - start
        rows, _ = evaluate(cases, args.dataset_dir, pred)
        results[name] = {"pred": pred, "seconds": seconds, "dice": float(np.mean([r["dice"] for r in rows]))}

    reference = results["torch fp32"]
    names = [Path(case["image"]).name for case in cases]
    reference_labels = {n: read_label(prediction_path(reference["pred"], n)) for n in names}
    lines = ["| variant | lesion Dice | Dice - fp32 | voxels equal to fp32 | inference run (s) | validated |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        equal = total = 0
        for image_name, theirs in reference_labels.items():
            ours = read_label(prediction_path(r["pred"], image_name))
            equal += int((ours == theirs).sum())
            total += ours.size
        r["voxel_agreement"] = equal / total
        r["dice_difference"] = r["dice"] - reference["dice"]
        r["validated"] = abs(r["dice_difference"]) <= DICE_TOLERANCE and r["voxel_agreement"] >= VOXEL_AGREEMENT
        lines.append(f"| {name} | {r['dice']:.4f} | {r['dice_difference']:+.4f} | {100 * r['voxel_agreement']:.4f} % "
                     f"| {r['seconds']:.1f} | {'yes' if r['validated'] else 'NO'} |")
    record = {"task": args.task, "split": args.split, "cases": len(cases), "weights_sha256": sha256_file(weights),
              "settings": settings,
              "variants": {n: {k: v for k, v in r.items() if k != "pred"} for n, r in results.items()}}
    targets = [args.output / "agreement.json"]
    if args.record:
        targets.append(BUNDLE_ROOT / "docs" / "results" / f"{args.task}_runtime_agreement.json")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(record, indent=4) + "\n")
    print(f"{args.task} {args.split} split, {len(cases)} cases, weights {weights}\n" + "\n".join(lines))
    return 0 if all(r["validated"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

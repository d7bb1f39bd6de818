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
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bundle.data.datalist import strip_image_suffix
from bundle.handlers import SegmentationReport, write_report
from bundle.metrics import case_metrics, slice_metrics
from bundle.tasks import TASKS, config_files, get_task

logger = logging.getLogger("reproduce_results")

ROOT = Path(__file__).resolve().parents[1]
CHECK_TOLERANCE = 1e-4  # absolute, on metrics in [0, 1]; distances and RAD compared relative to their size


def task_configs(task: str, kind: str) -> list[str]:
    """:func:`bundle.tasks.config_files` of this bundle as strings, e.g. ``task_configs("busi", "train")``."""
    return [str(path) for path in config_files(ROOT, task, kind)]


def split_file_of(task: str, split_file: Path | None = None) -> Path:
    """``split_file``, or the task's committed split ``docs/splits/<task>.json``."""
    return split_file or ROOT / "docs" / "splits" / f"{task}.json"


def read_label(path: Path) -> np.ndarray:
    """A label file as a (H, W) or (H, W, D) array in the orientation the bundle writes (PNG rows x cols)."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj)
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img)
    return arr if arr.ndim == 2 else arr[..., 0]


def prediction_path(pred_dir: Path, image_name: str) -> Path:
    """Where ``configs/inference.json`` writes the label of ``image_name`` (``SaveLabeld``: volumes as NIfTI,
    2D images as PNG)."""
    ext = ".nii.gz" if image_name.lower().endswith((".nii", ".nii.gz")) else ".png"
    return pred_dir / f"{strip_image_suffix(image_name)}_seg{ext}"


def bundle_args(items: list[str]) -> dict[str, str]:
    """``--bundle-arg KEY=VALUE`` items as ``{KEY: VALUE}`` for ``monai.bundle run --KEY VALUE`` (the value is passed
    as typed, so the bundle parses it as it parses its own command line; a later KEY wins).

    Raises:
        ValueError: an item without ``=`` or without a key, naming it.
    """
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--bundle-arg {item!r}: expected KEY=VALUE.")
        overrides[key] = value
    return overrides


def run_inference(
    task: str, cases: list[dict], dataset_dir: Path, weights: Path, out_dir: Path, extra_configs: tuple[str, ...] = (),
    overrides: dict[str, str] | None = None,
) -> None:
    """Run the bundle's inference config on ``cases`` (linked, never copied or modified, into a temporary folder).

    ``extra_configs`` are further config files applied last (e.g. another ``network_def``); ``overrides`` are
    further ``--key value`` arguments of ``monai.bundle run`` (e.g. ``{"keep_largest_component": "false"}``).
    """
    configs = [*task_configs(task, "inference"), *extra_configs]
    with tempfile.TemporaryDirectory(prefix=f"lmnet_{task}_inputs_") as tmp:
        for case in cases:
            source = (dataset_dir / case["image"]).resolve()
            link = Path(tmp) / source.name
            if link.exists():
                raise ValueError(f"two test cases share the file name {source.name}; cannot run them in one folder.")
            os.symlink(source, link)
        cmd = [
            sys.executable, "-m", "monai.bundle", "run",
            "--config_file", json.dumps(configs),
            "--bundle_root", str(ROOT),
            "--dataset_dir", tmp,
            "--output_dir", str(out_dir),
            "--ckpt_path", str(weights),
        ]
        for key, value in (overrides or {}).items():
            cmd += [f"--{key}", value]
        logger.info("running: %s", " ".join(cmd))
        subprocess.run(cmd, cwd=ROOT, check=True)


def evaluate(cases: list[dict], dataset_dir: Path, pred_dir: Path) -> tuple[list[dict], list[dict]]:
    """Per-case metrics of the predictions in ``pred_dir`` against the original labels (pixel units), and the
    per-slice metrics of the volumes among them (the paper's unit; empty for 2D images)."""
    rows, slice_rows = [], []
    for case in cases:
        image_name = Path(case["image"]).name
        pred_path = prediction_path(pred_dir, image_name)
        if not pred_path.is_file():
            raise FileNotFoundError(f"no prediction {pred_path} for test case {case['image']}.")
        gt = read_label(dataset_dir / case["label"])
        pred = read_label(pred_path)
        row = {"case": case.get("case_id", strip_image_suffix(image_name))}
        row.update(case_metrics(pred, gt))
        rows.append(row)
        if gt.ndim == 3:
            slice_rows += [{"case": row["case"], "slice": z, **m} for z, m in enumerate(slice_metrics(pred, gt))]
    return rows, slice_rows


def compare(summary: dict, reference: dict) -> list[str]:
    """Differences between a fresh ``summary`` and the recorded one (empty when they agree)."""
    problems = [f"{key}: not in the record" for key in summary if key not in reference]
    for key, ref in reference.items():
        if key not in summary:
            problems.append(f"{key}: missing from the new summary")
            continue
        for stat in ("mean", "std", "n"):
            new, old = summary[key][stat], ref[stat]
            if math.isnan(old) and math.isnan(new):
                continue
            if not abs(new - old) <= CHECK_TOLERANCE * max(1.0, abs(old)):
                problems.append(f"{key} {stat}: recomputed {new:.6f}, card records {old:.6f}")
    return problems


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
    parser.add_argument("--bundle-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a further setting of the inference config, e.g. keep_largest_component=false")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    settings = get_task(args.task)
    split_file = split_file_of(args.task, args.split_file)
    weights = (args.weights or ROOT / settings.weights).resolve()
    output = (args.output or ROOT / "outputs" / "results" / args.task).resolve()
    record = ROOT / "docs" / "results" / f"{args.task}_{args.split}.json"
    cases = json.loads(split_file.read_text())[args.split]
    if not cases:
        parser.error(f"{split_file} has no {args.split!r} cases.")

    try:
        overrides = bundle_args(args.bundle_arg)
    except ValueError as err:
        parser.error(str(err))
    if (args.record or args.check) and (overrides or args.split != "test" or args.weights or args.split_file):
        parser.error("--record / --check compare the shipped weights on the test split with default settings only.")
    pred_dir = output / "pred"
    run_inference(args.task, cases, args.dataset_dir, weights, pred_dir, overrides=overrides)
    rows, slice_rows = evaluate(cases, args.dataset_dir, pred_dir)
    summary = write_report(rows, output, slice_rows)
    print(f"{args.task}: {len(rows)} {args.split} cases, weights {weights.name}, outputs in {output}\n"
          f"{SegmentationReport.table(summary, len(rows))}")

    if args.record:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(summary, indent=4) + "\n")
        logger.info("recorded %s", record)
    if args.check:
        problems = compare(summary, json.loads(record.read_text()))
        if problems:
            logger.error("the numbers differ from %s:\n  %s", record, "\n  ".join(problems))
            return 1
        logger.info("all numbers equal the card's record %s", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())

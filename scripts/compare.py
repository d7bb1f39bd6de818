"""Train and test LM-Net and MONAI's UNet, BasicUNet and SwinUNETR (2D) under the same data, transforms, epochs
and evaluation; print one table.

Every network goes through the bundle's own ``configs/train.json`` (plus the task overlay and a ``network_def``
overlay written here), with the same recipe as the shipped weights (the task's crop / batch settings), the same
number of epochs and validation interval, then through ``configs/inference.json`` on the test split of the split
file, scored against the original labels exactly as ``scripts.reproduce_results`` scores the shipped weights.

    python -m scripts.compare --task lgg --dataset-dir ../shared/data/lgg --epochs 10
    python -m scripts.compare --task busi --dataset-dir ../shared/data/busi --epochs 5 --models lmnet unet
    # another setting of the training config for every network (here the lesion class weight of LGG runs v4 / v5)
    python -m scripts.compare --task lgg --dataset-dir ../shared/data/lgg --epochs 6 --bundle-arg lesion_weight=4.0

Columns: params (M), MACs (G) for one image at the task's network input size, train s/epoch (median wall time of
the training epochs from the trainer's log; the median leaves out the epochs that end with a validation run),
inference ms/image (batch 1, ``--threads`` CPU threads, median of 10; LM-Net re-parameterized), lesion Dice /
mDice / IoU / HD95 (pixels) / RAD (%) on the test split (means over cases; for BUSI over the cases that contain a
lesion). Outputs: ``<output>/<task>/``: one folder
per network (training log, checkpoints, predictions, metrics.csv) and ``table.md`` / ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bundle.benchmark import REFERENCE_NETWORKS, count_macs, count_parameters, measure_latency, network_from_def
from bundle.handlers import write_report
from bundle.networks import reparameterize_model
from bundle.tasks import get_task
from scripts.reproduce_results import bundle_args, evaluate, run_inference, split_file_of, task_configs

logger = logging.getLogger("compare")

ROOT = Path(__file__).resolve().parents[1]

# The training recipe of the shipped weights (docs/README.md, "Training"): config overlays and overrides per task.
RECIPES: dict[str, dict] = {
    "lgg": {
        "configs": task_configs("lgg", "train"),
        "overrides": {"learning_rate": 0.0005, "crop_size": [128, 128], "crop_neg_min_intensity": 0.1,
                      "lesion_weight": 1.0, "batch_size": 2, "num_samples": 8, "num_workers": 1},
    },
    "busi": {
        "configs": task_configs("busi", "train"),
        "overrides": {"batch_size": 16, "num_workers": 1},
    },
}

NETWORKS: dict[str, tuple[str, dict]] = {
    "lmnet": ("LM-Net (this bundle)", {"_target_": "bundle.networks.LMNet"}),
    **REFERENCE_NETWORKS,
}

_EPOCH_TIME = re.compile(r"Epoch\[\d+\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def network_def(name: str) -> dict:
    """The ``network_def`` config of network ``name`` (2D, one input channel, background + lesion)."""
    return {**NETWORKS[name][1], "spatial_dims": 2, "in_channels": 1, "out_channels": 2}


def build_network(name: str) -> torch.nn.Module:
    """Instantiate ``network_def(name)`` the way the bundle configs do."""
    return network_from_def(network_def(name))


def epoch_seconds(log_text: str) -> list[float]:
    """Wall seconds of each training epoch, from the trainer's "Epoch[n] Complete. Time taken: h:m:s" log lines
    (the evaluator's lines, which look alike, are skipped)."""
    lines = "\n".join(line for line in log_text.splitlines() if "SupervisedTrainer" in line)
    return [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in _EPOCH_TIME.findall(lines)]


def training_command(
    task: str, overlay: Path, dataset_dir: Path, split_file: Path, out: Path, epochs: int, val_interval: int,
    settings: dict[str, str] | None = None,
) -> list[str]:
    """The ``monai.bundle run`` command line that trains the network of ``overlay`` with the task's recipe;
    ``settings`` (``--bundle-arg``: ``{KEY: VALUE}`` as typed) replace or add to the recipe's settings."""
    recipe = RECIPES[task]
    overrides = {key: json.dumps(value) for key, value in recipe["overrides"].items()}
    overrides.update(max_epochs=str(epochs), val_interval=str(val_interval), resume="false", **(settings or {}))
    cmd = [sys.executable, "-m", "monai.bundle", "run",
           "--config_file", json.dumps([*recipe["configs"], str(overlay)]),
           "--bundle_root", str(ROOT), "--dataset_dir", str(dataset_dir), "--datalist", str(split_file),
           "--output_dir", str(out / "train")]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    return cmd


def train(
    name: str, task: str, dataset_dir: Path, split_file: Path, out: Path, epochs: int, val_interval: int,
    settings: dict[str, str] | None = None,
) -> dict:
    """Train network ``name`` with the task's recipe (plus ``settings``, see :func:`training_command`); returns
    ``{"ckpt", "epochs", "s_per_epoch", "wall_s"}``."""
    overlay = out / "network.json"
    overlay.write_text(json.dumps({"network_def": network_def(name)}, indent=4) + "\n")
    cmd = training_command(task, overlay, dataset_dir, split_file, out, epochs, val_interval, settings)
    log_path = out / "train.log"
    logger.info("training %s: %s (log: %s)", name, " ".join(cmd), log_path)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        result = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    text = log_path.read_text()
    if result.returncode != 0:
        raise RuntimeError(f"training {name} failed (exit {result.returncode}); see {log_path}:\n{text[-3000:]}")
    seconds = epoch_seconds(text)
    ckpt = out / "train" / "checkpoints" / "model.pt"
    if not ckpt.is_file():
        raise RuntimeError(f"training {name} wrote no best checkpoint {ckpt}; see {log_path}.")
    # median: ignite's epoch time includes the validation run on validation epochs
    per_epoch = statistics.median(seconds) if seconds else math.nan
    return {"ckpt": str(ckpt), "epochs": len(seconds), "s_per_epoch": per_epoch, "wall_s": wall}


def cost(name: str, spatial_size: tuple[int, int], threads: int) -> dict:
    """Parameters (M), MACs (G) and inference ms/image (batch 1) of network ``name`` at ``spatial_size``."""
    torch.manual_seed(0)
    model = build_network(name).eval()
    shape = (1, 1, *spatial_size)
    if name == "lmnet":
        model = reparameterize_model(model)
    return {"params_m": count_parameters(model) / 1e6, "macs_g": count_macs(model, shape) / 1e9,
            "ms_per_image": measure_latency(model, shape, threads=threads, repeats=10)}


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def table(task: str, results: dict[str, dict], threads: int) -> str:
    """The comparison as a markdown table."""
    subset = "lesion" if task == "busi" else "all"
    head = ["network", "params (M)", "MACs (G)", "train s/epoch", "epochs", f"infer ms/image ({threads} thr)",
            "lesion Dice", "mDice", "lesion IoU", "HD95 (px)", "RAD (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results.items():
        s = r["summary"]
        cells = [NETWORKS[name][0], _fmt(r["params_m"], 2), _fmt(r["macs_g"], 2), _fmt(r["s_per_epoch"], 1),
                 str(r["epochs"]), _fmt(r["ms_per_image"], 1)]
        cells += [_fmt(s[f"{m}/{subset}"]["mean"], d) for m, d in
                  (("dice", 4), ("mdice", 4), ("iou", 4), ("hd95", 2), ("rad", 2))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(RECIPES), default="lgg")
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, help="split JSON (default docs/splits/<task>.json)")
    parser.add_argument("--models", nargs="+", choices=sorted(NETWORKS),
                        default=["lmnet", "unet", "basicunet", "swinunetr"])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs, the same for every network")
    parser.add_argument("--val-interval", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the inference timing")
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "compare")
    parser.add_argument("--bundle-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the training config for every network, replacing the recipe's, "
                             "e.g. lesion_weight=4.0")
    args = parser.parse_args(argv)
    try:
        settings = bundle_args(args.bundle_arg)
    except ValueError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    split_file = split_file_of(args.task, args.split_file).resolve()
    dataset_dir = args.dataset_dir.resolve()
    cases = json.loads(split_file.read_text())["test"]
    spatial_size = get_task(args.task).spatial_size
    out_root = (args.output / args.task).resolve()
    started = time.perf_counter()
    results: dict[str, dict] = {}
    for name in args.models:
        out = out_root / name
        out.mkdir(parents=True, exist_ok=True)
        trained = train(name, args.task, dataset_dir, split_file, out, args.epochs, args.val_interval,
                        settings)
        run_inference(args.task, cases, dataset_dir, Path(trained["ckpt"]), out / "pred",
                      extra_configs=(str(out / "network.json"),))
        rows, slice_rows = evaluate(cases, dataset_dir, out / "pred")
        summary = write_report(rows, out, slice_rows)  # metrics.csv, summary.json / .md beside the predictions
        results[name] = {**trained, **cost(name, spatial_size, args.threads), "summary": summary}
        logger.info("%s done: %s", name, {k: v for k, v in results[name].items() if k != "summary"})
    text = table(args.task, results, args.threads)
    (out_root / "table.md").write_text(text + "\n")
    (out_root / "results.json").write_text(json.dumps(results, indent=4) + "\n")
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)
    print(f"{args.task}: {len(cases)} test cases, {args.epochs} epochs each, split {split_file.name}, "
          f"{minutes} min {seconds:02d} s wall in all\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

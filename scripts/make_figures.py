r"""Figures for the model card: training / validation curves, and qualitative test examples.

    # curves from the TensorBoard logs of a training run (numbers only: safe to commit)
    python -m scripts.make_figures curves --log-dir outputs/train_lgg/logs --title "LM-Net, LGG" \
        --output docs/figures/lgg_training_curves.png
    # image | ground truth | prediction for test cases, after scripts.reproduce_results has written predictions.
    # These show patient / study images: they stay local (outputs/), the data terms forbid committing them.
    python -m scripts.make_figures examples --task lgg --dataset-dir ../shared/data/lgg \
        --pred-dir outputs/results/lgg/pred --output outputs/figures/lgg_examples.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bundle.config import bundle_parser  # noqa: E402
from bundle.evaluation import prediction_path, read_label, split_file_of  # noqa: E402
from bundle.io import discover_cases, load_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

logger = logging.getLogger("make_figures")


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series ``{tag: [(step, value), ...]}`` of the TensorBoard event files in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files in {log_dir}.")
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(dict(points).items()) for tag, points in series.items()}


def plot_curves(log_dir: Path, output: Path, title: str) -> None:
    """Training loss (mean per epoch), training Dice and validation Dice (lesion) against the epoch."""
    scalars = read_scalars(log_dir)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [step for step, _ in scalars.get("train_mean_dice", [])]
    loss = scalars.get("train_loss", [])
    if loss and epochs:
        per_epoch = np.array_split(np.array([v for _, v in loss]), len(epochs))
        ax_loss.plot(epochs, [chunk.mean() for chunk in per_epoch], label="training loss (epoch mean)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("weighted CE + Dice loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    labels = (("train_mean_dice", "training Dice (augmented batches)"), ("val_mean_dice", "validation Dice"))
    for tag, label in labels:
        if tag in scalars:
            steps, values = zip(*scalars[tag], strict=True)
            ax_dice.plot(steps, values, marker="o" if tag.startswith("val") else None, label=label)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("lesion Dice (per batch / case mean)")
    ax_dice.set_ylim(0, 1)
    ax_dice.grid(alpha=0.3)
    ax_dice.legend()
    fig.suptitle(title)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    logger.info("wrote %s", output)


def _read_image(path: Path, channel_index: int) -> np.ndarray:
    """The image as the predictor reads it: (H, W) or (H, W, D), the task's channel of a multi-channel volume."""
    return load_case(discover_cases(path)[0], channel_index).image


def plot_examples(task: str, dataset_dir: Path, split_file: Path, pred_dir: Path, output: Path, count: int) -> None:
    """Rows of image | ground truth | prediction for ``count`` test cases (the largest-lesion slice of a volume)."""
    channel_index = bundle_parser(ROOT, task, "inference").get_parsed_content("channel_index")
    cases = json.loads(split_file.read_text())["test"]
    chosen = []
    for case in cases:
        gt = read_label(dataset_dir / case["label"]) > 0
        if gt.any():
            chosen.append((case, gt))
        if len(chosen) == count:
            break
    fig, axes = plt.subplots(len(chosen), 3, figsize=(9, 3 * len(chosen)), squeeze=False)
    for row, (case, gt) in enumerate(chosen):
        image = _read_image(dataset_dir / case["image"], channel_index)
        pred = read_label(prediction_path(pred_dir, Path(case["image"]).name)) > 0
        if not image.shape == gt.shape == pred.shape:
            raise ValueError(f"{case['image']}: image {image.shape}, label {gt.shape} and prediction {pred.shape} "
                             "differ in shape.")
        if gt.ndim == 3:  # a volume: the slice with the largest lesion
            k = int(gt.reshape(-1, gt.shape[-1]).sum(0).argmax())
            image, gt, pred = image[..., k], gt[..., k], pred[..., k]
        for col, (mask, title) in enumerate(((None, "image"), (gt, "ground truth"), (pred, "prediction"))):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray")
            if mask is not None:
                ax.imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.5)
            ax.set_title(f"{case.get('case_id', '')}: {title}" if col == 0 else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    logger.info("wrote %s", output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    curves = sub.add_parser("curves", help="loss and Dice curves from TensorBoard logs")
    curves.add_argument("--log-dir", type=Path, required=True)
    curves.add_argument("--output", type=Path, required=True)
    curves.add_argument("--title", default="LM-Net training")
    examples = sub.add_parser("examples", help="image | ground truth | prediction for test cases")
    examples.add_argument("--task", required=True)
    examples.add_argument("--dataset-dir", type=Path, required=True)
    examples.add_argument("--split-file", type=Path)
    examples.add_argument("--pred-dir", type=Path, required=True)
    examples.add_argument("--output", type=Path, required=True)
    examples.add_argument("--count", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "curves":
        plot_curves(args.log_dir, args.output, args.title)
    else:
        split_file = split_file_of(args.task, args.split_file)
        plot_examples(args.task, args.dataset_dir, split_file, args.pred_dir, args.output, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())

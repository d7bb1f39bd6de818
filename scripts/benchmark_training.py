"""Time one LM-Net training step (forward, weighted CE + Dice loss, backward, AdamW) on CPU under the settings that
decide CPU training speed: input size, batch, memory format, bfloat16 autocast. Prints a markdown table.

    python -m scripts.benchmark_training            # all settings (about 2 minutes on 2 cores)
    python -m scripts.benchmark_training --threads 2 --repeats 3

ms/image is the median step time divided by the batch. The network, loss and optimizer are those `configs/train.json`
defines (parsed from it), so the step is the one training runs.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser

logger = logging.getLogger("benchmark_training")

TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train.json"

SETTINGS = [  # (size, batch, channels_last, bf16 autocast)
    (256, 8, False, False),
    (256, 8, True, False),
    (128, 16, False, False),
    (128, 16, True, False),
    (128, 32, True, False),
    (128, 16, True, True),
]


def step_ms(size: int, batch: int, channels_last: bool, bf16: bool, repeats: int) -> float:
    """Median milliseconds of one training step on a random batch (1 channel, ``size`` x ``size``)."""
    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    # train.json's own network_def / loss / optimizer; only the device and the memory format are set here
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    parser["network"] = f"$@network_def.to('cpu', memory_format={memory_format})"
    net = parser.get_parsed_content("network")
    optimizer = parser.get_parsed_content("optimizer")
    loss_fn = parser.get_parsed_content("loss")
    x = torch.randn(batch, 1, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.9).float()
    times = []
    for i in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss_fn(logits.float(), y).backward()
        optimizer.step()
        if i:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    lines = ["| input | batch | memory format | autocast | ms/step | ms/image | images/s |", "|" + " --- |" * 7]
    for size, batch, channels_last, bf16 in SETTINGS:
        ms = step_ms(size, batch, channels_last, bf16, args.repeats)
        lines.append(
            f"| {size} x {size} | {batch} | {'channels_last' if channels_last else 'contiguous'} | "
            f"{'bfloat16' if bf16 else 'off'} | {ms:.0f} | {ms / batch:.1f} | {1e3 * batch / ms:.1f} |"
        )
        logger.info(lines[-1])
    print(f"LM-Net training step, CPU, {args.threads} threads, median of {args.repeats}\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
